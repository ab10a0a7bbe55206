"""Post-events from real `tokensvc serve` processes: a WebSocket connect provisions with
onUserAdded; a process killed with events in its outbox delivers them after a restart; two
replicas on PostgreSQL deliver every event, duplicates under one idempotency token."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import PG_URL, Server, database_url, free_port, replica_pair, start_server
from tokensvc.sids import new_sid
from tokensvc.signing import load_snapshot
from tokensvc.tokens import mint
from webhook_receiver import Receiver, serve


def hooked_service(srv: Server, url: str, retries: int = 3) -> dict[str, Any]:
    svc = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "hooked"}, auth=srv.auth).json()
    r = httpx.post(f"{srv.base}/v2/Services/{svc['sid']}", auth=srv.auth, data={
        "PostWebhookUrl": url, "WebhookFilters": ["onUserAdded"], "PostWebhookRetryCount": str(retries)})
    assert r.status_code == 200, r.text
    return svc


def test_connect_first_encounter_posts_signed_on_user_added(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        for receiver in serve():
            svc = hooked_service(srv, receiver.url)
            minted = mint(load_snapshot(Path(srv.env["TOKENSVC_KEYS_DIR"])), issuer="tokensvc",
                          account_sid=srv.account_sid, service_sid=svc["sid"], identity="ws-alice", ttl=600)
            url = srv.base.replace("http://", "ws://") + "/v2/Connect"
            with connect(url, additional_headers={"X-Twilio-Token": minted.token}, proxy=None, open_timeout=10) as ws:
                ws.recv(timeout=5)
            [hit] = receiver.wait(1, EventType="onUserAdded")
            assert hit.params["Identity"] == "ws-alice" and hit.params["Source"] == "SDK"
            assert hit.params["ClientIdentity"] == "ws-alice"
            assert RequestValidator(srv.auth[1]).validate(hit.url, hit.params, hit.headers["x-twilio-signature"])
    finally:
        srv.stop()


def test_given_up_is_logged_50057_without_pii_on_the_server_s_stderr(tmp_path: Path) -> None:
    srv = start_server(tmp_path)  # its stderr (which its delivery process shares) is srv.log_path
    try:
        for receiver in serve():
            svc = hooked_service(srv, receiver.url, retries=1)
            receiver.statuses = [500, 500]
            r = httpx.post(f"{srv.base}/v2/Services/{svc['sid']}/Tokens", auth=srv.auth,
                           data={"Identity": "secret-jay"})
            assert r.status_code == 201
            receiver.wait(2, timeout=20, EventType="onUserAdded")
            deadline = time.monotonic() + 10
            while "error 50057" not in srv.logs() and time.monotonic() < deadline:
                time.sleep(0.1)
            lines = [line for line in srv.logs().splitlines() if "error 50057" in line]
            assert len(lines) == 1 and svc["sid"] in lines[0] and "after 2 attempt(s)" in lines[0]
            assert "secret-jay" not in srv.logs()
    finally:
        srv.stop()


def test_connect_first_encounter_refused_by_on_user_add_writes_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        for receiver in serve():
            svc = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "policed"}, auth=srv.auth).json()
            httpx.post(f"{srv.base}/v2/Services/{svc['sid']}", auth=srv.auth,
                       data={"PreWebhookUrl": receiver.url, "WebhookFilters": "onUserAdd"})
            receiver.statuses = [403]
            minted = mint(load_snapshot(Path(srv.env["TOKENSVC_KEYS_DIR"])), issuer="tokensvc",
                          account_sid=srv.account_sid, service_sid=svc["sid"], identity="ws-no", ttl=600)
            url = srv.base.replace("http://", "ws://") + "/v2/Connect"
            with connect(url, additional_headers={"X-Twilio-Token": minted.token}, proxy=None, open_timeout=10) as ws:
                frame = json.loads(ws.recv(timeout=10))
                assert frame["type"] == "error" and frame["code"] == 50056
                with contextlib.suppress(ConnectionClosed):
                    ws.recv(timeout=5)
                assert ws.close_code == 4001
            [hit] = receiver.matching(EventType="onUserAdd")
            assert hit.params["Source"] == "SDK" and hit.params["ClientIdentity"] == "ws-no"
            gone = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users/ws-no", auth=srv.auth)
            assert gone.status_code == 404
    finally:
        srv.stop()


def test_events_another_process_committed_are_delivered(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        for receiver in serve():
            svc = hooked_service(srv, receiver.url)
            # `tokensvc token` provisions in a process of its own, with no dispatcher: the server,
            # which committed no post-event itself, finds the row and delivers it.
            made = subprocess.run([sys.executable, "-m", "tokensvc.cli", "token", "cli-made", "--service", svc["sid"]],
                                  env=srv.env, capture_output=True, timeout=60)
            assert made.returncode == 0, made.stderr
            [hit] = receiver.wait(1, timeout=20, EventType="onUserAdded")
            assert hit.params["Identity"] == "cli-made" and hit.params["Source"] == "API"
    finally:
        srv.stop()


def test_a_process_that_cannot_sign_an_account_leaves_its_events_to_one_that_can(tmp_path: Path) -> None:
    """Two deployments on one database, each with its own secrets.key (the suite's PostgreSQL
    database is shared so): B cannot open A's auth token copy, so it must not deliver A's events
    unsigned; it leaves them pending, and A delivers them signed once it runs."""
    url = database_url(tmp_path)
    account_a = (new_sid("AC"), secrets.token_urlsafe(24))
    for receiver in serve():
        a = start_server(tmp_path, database=url, keys_dir=tmp_path / "keys-a", account=account_a, name="A")
        try:
            svc = hooked_service(a, receiver.url)
        finally:
            a.stop()
        b = start_server(tmp_path, database=url, keys_dir=tmp_path / "keys-b", name="B")
        try:
            # A's event committed by a CLI process of A's deployment while only B runs.
            made = subprocess.run([sys.executable, "-m", "tokensvc.cli", "token", "foreign-1", "--service", svc["sid"]],
                                  env=a.env, capture_output=True, timeout=60)
            assert made.returncode == 0, made.stderr
            deadline = time.monotonic() + 20
            while b"left to another process" not in b.log_path.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert b"left to another process" in b.log_path.read_bytes()  # B claimed it and let it go
            time.sleep(1.0)
            assert receiver.matching(Identity="foreign-1") == []  # nothing sent unsigned
            # A policy hook B cannot sign is not asked unsigned either: closed, nothing written.
            r = httpx.post(f"{b.base}/v2/Services/{svc['sid']}", auth=account_a, data={
                "PreWebhookUrl": receiver.url, "WebhookFilters": ["onUserAdd", "onUserAdded"]})
            assert r.status_code == 200, r.text
            r = httpx.post(f"{b.base}/v2/Services/{svc['sid']}/Tokens", auth=account_a, data={"Identity": "foreign-2"})
            assert r.status_code == 504 and r.json()["code"] == 50076, r.text
            assert httpx.get(f"{b.base}/v2/Services/{svc['sid']}/Users/foreign-2", auth=account_a).status_code == 404
            assert receiver.matching(EventType="onUserAdd") == []
            a = start_server(tmp_path, database=url, keys_dir=tmp_path / "keys-a", account=account_a, name="A2")
            try:
                [hit] = receiver.wait(1, timeout=20, Identity="foreign-1")
                assert RequestValidator(account_a[1]).validate(hit.url, hit.params, hit.headers["x-twilio-signature"])
            finally:
                a.stop()
        finally:
            b.stop()


def _delivery_processes(server_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == server_pid and b"tokensvc.webhooks.worker" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _pending_rows(srv: Server) -> int:
    from sqlalchemy import func, select

    from tokensvc.config import Settings
    from tokensvc.db import make_engine
    from tokensvc.store.outbox_tables import outbox

    engine = make_engine(Settings(database_url=srv.env["TOKENSVC_DATABASE_URL"]))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox)
                                    .where(outbox.c.status == "pending")).scalar() or 0)
    finally:
        engine.dispose()


def test_a_delivery_process_that_dies_is_replaced(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        for receiver in serve():
            svc = hooked_service(srv, receiver.url)
            if not _pending_rows(srv):  # the suite's shared PostgreSQL database may hold others' rows
                assert _delivery_processes(srv.proc.pid) == []  # none before the first post-event
            tokens = f"{srv.base}/v2/Services/{svc['sid']}/Tokens"
            assert httpx.post(tokens, data={"Identity": "before"}, auth=srv.auth).status_code == 201
            receiver.wait(1, timeout=20, Identity="before")
            [child] = _delivery_processes(srv.proc.pid)
            os.kill(child, signal.SIGKILL)
            time.sleep(0.5)
            assert httpx.post(tokens, data={"Identity": "after"}, auth=srv.auth).status_code == 201
            [hit] = receiver.wait(1, timeout=20, Identity="after")
            assert hit.params["EventType"] == "onUserAdded"
            [again] = _delivery_processes(srv.proc.pid)
    finally:
        srv.stop()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{again}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{again}").exists()  # it ends with its server


def test_no_delivery_process_for_first_encounters_without_webhooks(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        plain = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "plain"}, auth=srv.auth).json()
        for i in range(20):  # postable events (onUserAdded), none wanted: no outbox row
            r = httpx.post(f"{srv.base}/v2/Services/{plain['sid']}/Tokens", data={"Identity": f"u{i}"}, auth=srv.auth)
            assert r.status_code == 201
        time.sleep(1.5)  # past a look at the outbox (CHECK_SECONDS)
        if not _pending_rows(srv):  # the suite's shared PostgreSQL database may hold others' rows
            assert _delivery_processes(srv.proc.pid) == []
        for receiver in serve():  # the first row written starts one at once
            svc = hooked_service(srv, receiver.url)
            r = httpx.post(f"{srv.base}/v2/Services/{svc['sid']}/Tokens", data={"Identity": "w"}, auth=srv.auth)
            assert r.status_code == 201
            receiver.wait(1, timeout=10, Identity="w")
            assert len(_delivery_processes(srv.proc.pid)) == 1
    finally:
        srv.stop()


def _delivered_tokens(receiver: Receiver) -> dict[str, set[str]]:
    by_identity: dict[str, set[str]] = {}
    for hit in receiver.matching(EventType="onUserAdded"):
        by_identity.setdefault(hit.params["Identity"], set()).add(hit.headers["i-twilio-idempotency-token"])
    return by_identity


def test_kill_9_with_the_receiver_down_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    env = {"TOKENSVC_WEBHOOK_LEASE": "10"}  # longer than one 5 s attempt; short enough to wait out
    db, keys = database_url(tmp_path), tmp_path / "keys"
    srv = start_server(tmp_path, database=db, keys_dir=keys, extra_env=env, name="first")
    account = (srv.account_sid, srv.auth[1])
    # The receiver is down as a black hole: a socket that listens and never accepts, so every
    # attempt hangs to its 5 s timeout and no event can use up its retries before the kill (a
    # refused connection fails in microseconds: on a loaded machine the first events would be
    # given up while the last ones still commit).
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", port))
    hole.listen(1)
    try:
        svc = hooked_service(srv, f"http://127.0.0.1:{port}/hook/crash")
        with httpx.Client(base_url=srv.base, auth=srv.auth) as client, ThreadPoolExecutor(8) as pool:
            made = pool.map(lambda n: client.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": f"crash{n}"}),
                            range(60))
            assert [r.status_code for r in made] == [201] * 60
    finally:
        srv.stop(signal.SIGKILL)
        hole.close()
    again = start_server(tmp_path, database=db, keys_dir=keys, account=account, extra_env=env, name="again")
    try:
        for receiver in serve(port, path="/hook/crash"):
            deadline = time.monotonic() + 60
            while len(_delivered_tokens(receiver)) < 60 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sorted(_delivered_tokens(receiver)) == sorted(f"crash{n}" for n in range(60))
    finally:
        again.stop()


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL: run under scripts/with-postgres")
def test_two_replicas_deliver_every_event_duplicates_share_their_token(tmp_path: Path) -> None:
    for receiver in serve():
        with replica_pair(tmp_path) as (a, b):
            svc = hooked_service(a, receiver.url)
            time.sleep(1.2)  # B's service cache sees the webhook settings
            with contextlib.ExitStack() as stack:
                clients = [stack.enter_context(httpx.Client(base_url=s.base, auth=s.auth)) for s in (a, b)]
                for n in range(100):
                    r = clients[n % 2].post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": f"rep{n}"})
                    assert r.status_code == 201
            deadline = time.monotonic() + 30
            while len(_delivered_tokens(receiver)) < 100 and time.monotonic() < deadline:
                time.sleep(0.1)
            delivered = _delivered_tokens(receiver)
            assert sorted(delivered) == sorted(f"rep{n}" for n in range(100))
            assert all(len(tokens) == 1 for tokens in delivered.values())
