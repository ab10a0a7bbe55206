"""Crash safety: a token that was returned names a user that survives SIGKILL (SPEC §4, issue 6).

tokensvc commits the user before it signs the token, and SQLite runs in WAL mode with
synchronous=FULL, so a returned token implies a durable user. The test kills a real server
in the middle of a load of first encounters and restarts it on the same database and keys.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
import pytest

from conftest import PG_URL, Server, start_server
from tokensvc.config import Settings
from tokensvc.db import make_engine

THREADS = 8
KILL_AFTER_TOKENS = 300
SHARED = 20  # identities every thread asks for too: first-encounter races around the crash


def _load(server: Server, service_sid: str, worker: int, issued: list[dict], failed: list[str],
          stop: threading.Event) -> None:
    with httpx.Client(base_url=server.base, auth=server.auth, timeout=5) as client:
        i = 0
        while not stop.is_set():
            identity = f"shared-{i % SHARED}" if i % 4 == 3 else f"crash-{worker}-{i}"
            i += 1
            try:
                r = client.post(f"/v2/Services/{service_sid}/Tokens", data={"Identity": identity})
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code != 201:
                failed.append(r.text)
                return
            issued.append(r.json())  # list.append is atomic under the GIL


def _all_users(client: httpx.Client, service_sid: str) -> list[dict]:
    users: list[dict] = []
    url: str | None = f"/v2/Services/{service_sid}/Users?PageSize=100"
    while url:
        page = client.get(url).json()
        users += page["users"]
        url = page["meta"]["next_page_url"]
    return users


def test_tokens_returned_before_sigkill_name_durable_users(tmp_path: Path) -> None:
    before = start_server(tmp_path, name="before")
    try:
        service_sid = httpx.post(f"{before.base}/v2/Services", data={"FriendlyName": "crash"},
                                 auth=before.auth).json()["sid"]
        issued: list[dict] = []
        failed: list[str] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(before, service_sid, n, issued, failed, stop), daemon=True)
                   for n in range(THREADS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5  # on a slow machine: kill after 5 s, whatever was issued
        while len(issued) < KILL_AFTER_TOKENS and time.monotonic() < deadline:
            time.sleep(0.005)
        before.proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        before.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
        assert not failed, failed[:3]
        assert len(issued) >= 50, "the load never got going"
    finally:
        before.stop()

    after = start_server(tmp_path, database=before.env["TOKENSVC_DATABASE_URL"],
                         keys_dir=Path(before.env["TOKENSVC_KEYS_DIR"]), account=before.auth, name="after")
    try:
        with httpx.Client(base_url=after.base, auth=after.auth, timeout=10) as client:
            users = _all_users(client, service_sid)
            identities = [u["identity"] for u in users]
            assert len(identities) == len(set(identities)), "an identity exists twice"
            by_identity = {u["identity"]: u["sid"] for u in users}

            # Every returned token's user exists, and a racing identity got one user for everyone.
            for body in issued:
                assert by_identity.get(body["identity"]) == body["user_sid"], body["identity"]
            for body in issued[:: max(1, len(issued) // 100)]:
                r = client.get(f"/v2/Services/{service_sid}/Users/{quote(body['identity'], safe='')}")
                assert r.status_code == 200 and r.json()["sid"] == body["user_sid"], r.text

            # Tokens issued before the crash verify against the restarted server's JWKS ...
            jwks = {k["kid"]: jwt.PyJWK(k) for k in client.get("/.well-known/jwks.json").json()["keys"]}
            for body in issued:
                kid = jwt.get_unverified_header(body["token"])["kid"]
                claims = jwt.decode(body["token"], jwks[kid].key, algorithms=["ES256"],
                                    options={"verify_aud": False})
                assert claims["grants"]["identity"] == body["identity"]
                assert claims["grants"]["chat"]["service_sid"] == service_sid
            # ... and the restarted server itself accepts them.
            for body in issued[:: max(1, len(issued) // 50)]:
                r = httpx.get(f"{after.base}/v2/Services/{service_sid}/Users/{body['user_sid']}",
                              headers={"X-Twilio-Token": body["token"]}, timeout=10)
                assert r.status_code == 200, r.text
                assert r.json()["identity"] == body["identity"]
    finally:
        after.stop()
    if PG_URL is None:
        db_file = before.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///")
        with sqlite3.connect(db_file) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.skipif(PG_URL is not None, reason="SQLite durability settings")
def test_sqlite_runs_in_wal_mode_with_synchronous_full(tmp_path: Path) -> None:
    """A commit is on disk before the token that depends on it is returned (FULL = 2)."""
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'd.db'}", keys_dir=tmp_path / "keys"))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    finally:
        engine.dispose()
