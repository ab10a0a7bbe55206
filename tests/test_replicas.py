"""Stateless processes (SPEC §6, issue 5): `tokensvc serve` processes on different ports sharing
one PostgreSQL database and one keys directory behave as one service; `--workers N` works.

The two-replica tests need PostgreSQL (scripts/with-postgres sets TOKENSVC_TEST_DATABASE_URL);
the `--workers 2` smoke test and the secret-box start race run on whichever database the suite uses.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from conftest import PG_URL, Server, replica_pair, start_server
from fresh_db import needs_postgres
from test_connect import expect_close, open_ws, recv

TIMEOUT = 10


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Replicas A and B: one database, one keys directory, one bootstrap account."""
    if PG_URL is None:
        pytest.skip("needs PostgreSQL: run under scripts/with-postgres (sets TOKENSVC_TEST_DATABASE_URL)")
    with replica_pair(tmp_path_factory.mktemp("replicas")) as pair:
        yield pair


@pytest.fixture
def service(replicas: tuple[Server, Server]) -> str:
    a, _ = replicas
    r = httpx.post(f"{a.base}/v2/Services", data={"FriendlyName": "replicated"}, auth=a.auth, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["sid"]


def new_api_key(server: Server) -> tuple[str, str]:
    r = httpx.post(f"{server.base}/2010-04-01/Accounts/{server.account_sid}/Keys.json",
                   data={"FriendlyName": "replica test"}, auth=server.auth, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["sid"], r.json()["secret"]


@needs_postgres
def test_user_created_through_a_is_fetched_through_b(replicas: tuple[Server, Server], service: str) -> None:
    a, b = replicas
    made = httpx.post(f"{a.base}/v2/Services/{service}/Users", auth=a.auth, timeout=TIMEOUT,
                      data={"Identity": "ada@example.com", "FriendlyName": "Ada", "Attributes": '{"team": "x"}'})
    assert made.status_code == 201, made.text
    for key in (made.json()["sid"], "ada%40example.com"):
        got = httpx.get(f"{b.base}/v2/Services/{service}/Users/{key}", auth=b.auth, timeout=TIMEOUT)
        assert got.status_code == 200, got.text
        body = got.json()
        assert (body["sid"], body["friendly_name"], body["attributes"]) == (made.json()["sid"], "Ada", '{"team": "x"}')
        assert body["url"].startswith(b.base)  # each replica builds URLs from its own request


@needs_postgres
def test_user_deleted_through_a_is_gone_on_b_at_once(replicas: tuple[Server, Server], service: str) -> None:
    a, b = replicas
    sid = httpx.post(f"{a.base}/v2/Services/{service}/Users", data={"Identity": "gone"}, auth=a.auth,
                     timeout=TIMEOUT).json()["sid"]
    assert httpx.get(f"{b.base}/v2/Services/{service}/Users/{sid}", auth=b.auth, timeout=TIMEOUT).status_code == 200
    assert httpx.delete(f"{a.base}/v2/Services/{service}/Users/{sid}", auth=a.auth, timeout=TIMEOUT).status_code == 204
    for key in (sid, "gone"):
        r = httpx.get(f"{b.base}/v2/Services/{service}/Users/{key}", auth=b.auth, timeout=TIMEOUT)
        assert r.status_code == 404 and r.json()["code"] == 20404, r.text


@needs_postgres
def test_token_issued_by_a_is_accepted_by_b(replicas: tuple[Server, Server], service: str) -> None:
    a, b = replicas
    issued = httpx.post(f"{a.base}/v2/Services/{service}/Tokens", data={"Identity": "carol"}, auth=a.auth,
                        timeout=TIMEOUT)
    assert issued.status_code == 201, issued.text
    headers = {"X-Twilio-Token": issued.json()["token"]}
    me = httpx.get(f"{b.base}/v2/Services/{service}/Users/carol", headers=headers, timeout=TIMEOUT)
    assert me.status_code == 200, me.text
    assert me.json()["sid"] == issued.json()["user_sid"]
    listed = httpx.get(f"{b.base}/v2/Services/{service}/Users", headers=headers, timeout=TIMEOUT)
    assert listed.status_code == 200 and [u["identity"] for u in listed.json()["users"]] == ["carol"], listed.text
    edited = httpx.post(f"{b.base}/v2/Services/{service}/Users/carol", data={"FriendlyName": "Carol B"},
                        headers=headers, timeout=TIMEOUT)
    assert edited.status_code == 200 and edited.json()["friendly_name"] == "Carol B", edited.text
    seen_by_a = httpx.get(f"{a.base}/v2/Services/{service}/Users/carol", auth=a.auth, timeout=TIMEOUT)
    assert seen_by_a.json()["friendly_name"] == "Carol B"


@needs_postgres
def test_twilio_format_token_of_a_key_made_through_a_is_accepted_by_b(
        replicas: tuple[Server, Server], service: str) -> None:
    # B decrypts the key's secret, stored by A, with the secret box from the shared keys dir.
    a, b = replicas
    key_sid, secret = new_api_key(a)
    minted = AccessToken(a.account_sid, key_sid, secret, identity="dave", ttl=600)
    minted.add_grant(ChatGrant(service_sid=service))
    r = httpx.get(f"{b.base}/v2/Services/{service}/Users/dave", headers={"X-Twilio-Token": minted.to_jwt()},
                  timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["identity"] == "dave", r.text


@needs_postgres
def test_jwks_of_a_and_b_are_identical(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    ja = httpx.get(f"{a.base}/.well-known/jwks.json", timeout=TIMEOUT).json()
    jb = httpx.get(f"{b.base}/.well-known/jwks.json", timeout=TIMEOUT).json()
    assert ja == jb and ja["keys"], (ja, jb)


@needs_postgres
def test_api_key_deleted_through_a_fails_on_b_within_one_second(
        replicas: tuple[Server, Server], service: str) -> None:
    a, b = replicas
    key_sid, secret = new_api_key(a)
    minted = AccessToken(a.account_sid, key_sid, secret, identity="erin", ttl=600)
    minted.add_grant(ChatGrant(service_sid=service))
    probes = {
        "basic": lambda c: c.get(f"{b.base}/v2/Services/{service}", auth=(key_sid, secret)),
        "token": lambda c: c.get(f"{b.base}/v2/Services/{service}/Users/erin",
                                 headers={"X-Twilio-Token": minted.to_jwt()}),
    }
    with httpx.Client(timeout=TIMEOUT) as client:
        for name, probe in probes.items():  # B honours the key, and has it in its caches now
            assert probe(client).status_code == 200, name
        gone = client.delete(f"{a.base}/2010-04-01/Accounts/{a.account_sid}/Keys/{key_sid}.json", auth=a.auth)
        assert gone.status_code == 204, gone.text
        deleted_at = time.monotonic()
        last_success: dict[str, float] = {}
        refused: dict[str, float] = {}
        while len(refused) < len(probes) and time.monotonic() < deleted_at + 5:
            for name, probe in probes.items():
                if name in refused:
                    continue
                sent = time.monotonic() - deleted_at
                r = probe(client)
                if r.status_code == 200:
                    last_success[name] = sent
                else:
                    assert r.status_code == 401, r.text
                    assert r.json()["code"] == (20003 if name == "basic" else 20101)
                    refused[name] = sent
            time.sleep(0.02)
    assert set(refused) == set(probes), (refused, last_success)
    # No request sent a second or more after the deletion was honoured.
    assert all(t < 1.0 for t in last_success.values()), (last_success, refused)


@needs_postgres
def test_sessions_on_b_close_within_a_second_of_deletions_through_a(
        replicas: tuple[Server, Server], service: str) -> None:
    # One kick row per deletion (kicks.py), read by B's Hub every half second while it has sessions.
    a, b = replicas
    key_sid, secret = new_api_key(a)
    minted = AccessToken(a.account_sid, key_sid, secret, identity="kicked-by-key", ttl=600)
    minted.add_grant(ChatGrant(service_sid=service))
    doomed = httpx.post(f"{a.base}/v2/Services", data={"FriendlyName": "doomed"}, auth=a.auth,
                        timeout=TIMEOUT).json()["sid"]

    def token(svc: str, identity: str) -> str:
        r = httpx.post(f"{a.base}/v2/Services/{svc}/Tokens", data={"Identity": identity}, auth=a.auth, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        return r.json()["token"]

    deletions = {  # what is deleted through A -> (token of a session on B, close code, error frame code)
        "user": (token(service, "kicked-user"), f"/v2/Services/{service}/Users/kicked-user", 4003, None),
        "service": (token(doomed, "kicked-tenant"), f"/v2/Services/{doomed}", 4003, None),
        "api key": (minted.to_jwt(), f"/2010-04-01/Accounts/{a.account_sid}/Keys/{key_sid}.json", 4001, 20101),
    }
    for what, (tok, path, close, code) in deletions.items():
        with open_ws(b, tok) as ws:
            assert recv(ws)["type"] == "connected", what
            assert httpx.delete(f"{a.base}{path}", auth=a.auth, timeout=TIMEOUT).status_code == 204, what
            deleted = time.monotonic()
            if code is not None:
                frame = recv(ws, timeout=3)
                assert frame["type"] == "error" and frame["code"] == code, (what, frame)
            expect_close(ws, close, timeout=3)
            assert time.monotonic() - deleted < 1.2, what


async def _first_encounters(targets: list[tuple[str, tuple[str, str]]], service: str,
                            identity: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(targets))
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(base: str, auth: tuple[str, str]) -> httpx.Response:
            await start.wait()
            return await client.post(f"{base}/v2/Services/{service}/Tokens", data={"Identity": identity}, auth=auth)

        tasks = [asyncio.create_task(one(base, auth)) for base, auth in targets]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def assert_one_user(responses: list[httpx.Response], list_url: str, auth: tuple[str, str], identity: str) -> None:
    assert [r.status_code for r in responses] == [201] * len(responses), \
        [r.text for r in responses if r.status_code != 201]
    bodies = [r.json() for r in responses]
    assert len({body["user_sid"] for body in bodies}) == 1
    assert sum(body["user_created"] for body in bodies) == 1
    users = httpx.get(list_url, auth=auth, timeout=TIMEOUT).json()["users"]
    assert [(u["sid"], u["identity"]) for u in users] == [(bodies[0]["user_sid"], identity)]


@needs_postgres
def test_64_concurrent_first_encounters_split_across_a_and_b_create_one_user(
        replicas: tuple[Server, Server], service: str) -> None:
    a, b = replicas
    for round_ in range(3):
        identity = f"crowd-{round_}@example.com"
        responses = asyncio.run(_first_encounters([(a.base, a.auth), (b.base, b.auth)] * 32, service, identity))
        assert_one_user(responses, f"{a.base}/v2/Services/{service}/Users?PageSize=100", a.auth, identity)
        httpx.delete(f"{a.base}/v2/Services/{service}/Users/{identity}", auth=a.auth, timeout=TIMEOUT)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_serve_with_two_workers(tmp_path: Path) -> None:
    server = start_server(tmp_path, args=("--workers", "2"), name="workers")
    try:
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while time.monotonic() < deadline:
            workers = [p for p in _children(server.proc.pid)
                       if "multiprocessing.resource_tracker"
                       not in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
            ready = httpx.get(f"{server.base}/readyz", timeout=TIMEOUT).status_code == 200
            if len(workers) >= 2 and ready:
                break
            time.sleep(0.1)
        assert len(workers) == 2, (workers, server.logs())

        made = httpx.post(f"{server.base}/v2/Services", data={"FriendlyName": "workers"}, auth=server.auth,
                          timeout=TIMEOUT)
        assert made.status_code == 201, made.text
        service = made.json()["sid"]
        # Both workers race for one new identity: still exactly one user.
        responses = asyncio.run(_first_encounters([(server.base, server.auth)] * 64, service, "both-workers"))
        assert_one_user(responses, f"{server.base}/v2/Services/{service}/Users", server.auth, "both-workers")
        for _ in range(20):  # whichever worker answers knows what the other one did
            r = httpx.get(f"{server.base}/v2/Services/{service}/Users/both-workers", auth=server.auth, timeout=TIMEOUT)
            assert r.status_code == 200, r.text
    finally:
        server.stop(signal.SIGTERM)
    assert server.proc.returncode == 0, server.logs()
    assert "Traceback" not in server.logs(), server.logs()


@needs_postgres
def test_key_rotation_in_the_shared_keys_dir_reaches_both_replicas(
        replicas: tuple[Server, Server], service: str) -> None:
    import jwt

    a, b = replicas
    before = httpx.post(f"{a.base}/v2/Services/{service}/Tokens", data={"Identity": "rotating"}, auth=a.auth,
                        timeout=TIMEOUT).json()["token"]
    env = dict(a.env)
    made = subprocess.run([sys.executable, "-m", "tokensvc.cli", "keys", "generate"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    kid = made.stdout.strip().splitlines()[-1]
    done = subprocess.run([sys.executable, "-m", "tokensvc.cli", "keys", "activate", kid], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    deadline = time.monotonic() + 5  # each process re-reads the directory at most once a second
    after = before
    while time.monotonic() < deadline:
        after = httpx.post(f"{a.base}/v2/Services/{service}/Tokens", data={"Identity": "rotating"}, auth=a.auth,
                           timeout=TIMEOUT).json()["token"]
        if jwt.get_unverified_header(after)["kid"] == kid:
            break
        time.sleep(0.1)
    assert jwt.get_unverified_header(after)["kid"] == kid
    for token in (after, before):  # the new key at once, the old one until its tokens expire
        r = httpx.get(f"{b.base}/v2/Services/{service}/Users/rotating", headers={"X-Twilio-Token": token},
                      timeout=TIMEOUT)
        assert r.status_code == 200, r.text
    while time.monotonic() < deadline:
        ja = httpx.get(f"{a.base}/.well-known/jwks.json", timeout=TIMEOUT).json()
        jb = httpx.get(f"{b.base}/.well-known/jwks.json", timeout=TIMEOUT).json()
        if ja == jb:
            break
        time.sleep(0.1)
    assert ja == jb and kid in {k["kid"] for k in ja["keys"]}


_OPEN_BOX_AT = """
import sys, time
from pathlib import Path
from tokensvc.crypto import SecretBox
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(SecretBox.load_or_create(Path(sys.argv[1])).encrypt("probe", "ctx"))
"""


def test_processes_starting_together_on_a_new_keys_dir_share_one_secret_box_key(tmp_path: Path) -> None:
    # Workers of `serve --workers N` (and replicas) each open the secret box at start. Racing on a
    # new keys dir, every one of them must end up with the key that stays on disk, or the API-key
    # secrets it stored could not be decrypted by the others (or by itself after a restart).
    from tokensvc.crypto import SecretBox

    keys = tmp_path / "keys"
    at = str(time.time() + 2)
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_BOX_AT, str(keys), at], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    on_disk = SecretBox.load_or_create(keys)
    assert [on_disk.decrypt(out.strip(), "ctx") for out, _ in outputs] == ["probe"] * len(procs)
    assert sorted(p.name for p in keys.iterdir()) == ["secrets.key"]  # no temp files left behind
