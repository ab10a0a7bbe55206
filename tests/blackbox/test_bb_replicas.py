"""Two `tokensvc serve` processes on one database and one keys directory (SPEC §6: no state lives
only in a process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from blackbox.blackbox_helpers import assert_error, start_server

REVOCATION_BUDGET = 1.25  # seconds; the brief allows about 1 s for a deleted key to stop working


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    tmp = tmp_path_factory.mktemp("replicas")
    a = start_server(tmp, name="a")
    try:
        b = start_server(tmp, name="b", database=a.env["TOKENSVC_DATABASE_URL"],
                         keys_dir=Path(a.env["TOKENSVC_KEYS_DIR"]), account=a.auth)
    except Exception:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def clients(pair: tuple[Any, Any]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    a, b = pair
    with httpx.Client(base_url=a.base, auth=a.auth, timeout=30) as ca, \
            httpx.Client(base_url=b.base, auth=b.auth, timeout=30) as cb:
        yield ca, cb


def test_both_replicas_serve_the_same_data_and_keys(clients: tuple[httpx.Client, httpx.Client]) -> None:
    ca, cb = clients
    svc = ca.post("/v2/Services", data={"FriendlyName": "shared"}).json()
    user = ca.post(f"/v2/Services/{svc['sid']}/Users", data={"Identity": "shared-user"}).json()
    assert cb.get(f"/v2/Services/{svc['sid']}/Users/shared-user").json()["sid"] == user["sid"]
    assert ca.get("/.well-known/jwks.json").json() == cb.get("/.well-known/jwks.json").json()
    tok = ca.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "shared-user"}).json()["token"]
    r = cb.get(f"/v2/Services/{svc['sid']}/Users/shared-user", headers={"X-Twilio-Token": tok}, auth=None)
    assert r.status_code == 200, r.text
    assert ca.delete(f"/v2/Services/{svc['sid']}/Users/shared-user").status_code == 204
    assert_error(cb.get(f"/v2/Services/{svc['sid']}/Users/shared-user"), 404, 20404)


def test_same_identity_created_on_both_replicas_at_once_yields_one_user(
        pair: tuple[Any, Any], clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = pair
    ca, _ = clients
    svc = ca.post("/v2/Services", data={"FriendlyName": "cross-race"}).json()
    n = 32
    barrier = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        srv = (a, b)[i % 2]
        with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=60) as c:
            c.get("/healthz")
            barrier.wait()
            if i % 4 < 2:
                return c.post(f"/v2/Services/{svc['sid']}/Users", data={"Identity": "both"})
            return c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "both"})

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(one, range(n)))
    sids = set()
    for r in responses:
        assert r.status_code in (201, 409), (r.status_code, r.text[:200])
        if r.status_code == 409:
            assert_error(r, 409, 50201)
        else:
            sids.add(r.json().get("user_sid") or r.json()["sid"])
    assert len(sids) == 1
    listed = ca.get(f"/v2/Services/{svc['sid']}/Users").json()["users"]
    assert [u["identity"] for u in listed] == ["both"]


def test_key_deleted_on_one_replica_stops_working_on_the_other(clients: tuple[httpx.Client, httpx.Client],
                                                               pair: tuple[Any, Any]) -> None:
    a, _ = pair
    ca, cb = clients
    svc = ca.post("/v2/Services", data={"FriendlyName": "revocation"}).json()
    key = ca.post(f"/2010-04-01/Accounts/{a.account_sid}/Keys.json", data={"FriendlyName": "r"}).json()
    at = AccessToken(a.account_sid, key["sid"], key["secret"], identity="revoked")
    at.add_grant(ChatGrant(service_sid=svc["sid"]))
    token = at.to_jwt()
    basic = (key["sid"], key["secret"])
    # Warm whatever the other replica caches.
    assert cb.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "x"}, auth=basic).status_code == 201
    assert cb.get(f"/v2/Services/{svc['sid']}/Users/revoked", headers={"X-Twilio-Token": token},
                  auth=None).status_code == 200

    assert ca.delete(f"/2010-04-01/Accounts/{a.account_sid}/Keys/{key['sid']}.json").status_code == 204
    deadline = time.monotonic() + REVOCATION_BUDGET
    while True:
        r1 = cb.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "x"}, auth=basic)
        r2 = cb.get(f"/v2/Services/{svc['sid']}/Users/revoked", headers={"X-Twilio-Token": token}, auth=None)
        if (r1.status_code == 401 and r2.status_code == 401) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert_error(r1, 401, 20003)
    assert_error(r2, 401, 20101)
