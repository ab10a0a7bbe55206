"""Races: one identity, many simultaneous first encounters, exactly one User (SPEC intro, §4)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
)


def _race(bb: BB, n: int, url: str, data: dict[str, str]) -> list[httpx.Response]:
    barrier = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            c.get("/healthz")  # connect first, so the posts really go out together
            barrier.wait()
            return c.post(url, data=data)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _users_named(bb: BB, svc: dict[str, Any], identity: str) -> list[dict[str, Any]]:
    body = bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()
    assert body["meta"]["next_page_url"] is None
    return [u for u in body["users"] if u["identity"] == identity]


def test_32_threads_creating_the_same_identity_yield_one_user(bb: BB) -> None:
    svc = bb.new_service("race-users")
    responses = _race(bb, 32, f"/v2/Services/{svc['sid']}/Users", {"Identity": "racer"})
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    for r in responses:
        if r.status_code != 201:
            assert_error(r, 409, 50201)
    users = _users_named(bb, svc, "racer")
    assert len(users) == 1
    winner = next(r for r in responses if r.status_code == 201).json()
    assert users[0]["sid"] == winner["sid"]


def test_64_concurrent_token_requests_for_a_new_identity_yield_one_user(bb: BB) -> None:
    svc = bb.new_service("race-tokens")
    responses = _race(bb, 64, f"/v2/Services/{svc['sid']}/Tokens", {"Identity": "token-racer"})
    assert all(r.status_code == 201 for r in responses), sorted({(r.status_code, r.text[:200]) for r in responses})
    bodies = [r.json() for r in responses]
    assert len({b["user_sid"] for b in bodies}) == 1
    assert sum(1 for b in bodies if b["user_created"]) == 1
    users = _users_named(bb, svc, "token-racer")
    assert len(users) == 1 and users[0]["sid"] == bodies[0]["user_sid"]


def test_many_identities_concurrently_each_get_one_user(bb: BB) -> None:
    svc = bb.new_service("race-many")
    url = f"/v2/Services/{svc['sid']}/Tokens"

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            return c.post(url, data={"Identity": f"id-{i % 8}"})

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(one, range(64)))
    assert all(r.status_code == 201 for r in responses)
    per_identity: dict[str, set[str]] = {}
    for r in responses:
        per_identity.setdefault(r.json()["identity"], set()).add(r.json()["user_sid"])
    assert all(len(s) == 1 for s in per_identity.values()), per_identity
    listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()["users"]
    assert sorted(u["identity"] for u in listed) == sorted(f"id-{i}" for i in range(8))


def test_concurrent_deletes_of_one_user_yield_one_204(bb: BB) -> None:
    svc = bb.new_service("race-delete")
    bb.new_user(svc["sid"], "doomed")
    n = 16
    barrier = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            c.get("/healthz")
            barrier.wait()
            return c.delete(f"/v2/Services/{svc['sid']}/Users/doomed")

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(one, range(n)))
    assert sorted(r.status_code for r in responses).count(204) == 1, [r.status_code for r in responses]
    for r in responses:
        if r.status_code != 204:
            assert_error(r, 404, 20404)


def test_writes_racing_a_service_delete_never_5xx(bb: BB) -> None:
    svc = bb.new_service("race-service-delete")
    base = f"/v2/Services/{svc['sid']}"
    n = 24
    barrier = threading.Barrier(n)

    def one(i: int) -> list[httpx.Response]:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            c.get("/healthz")
            barrier.wait()
            if i == 0:
                return [c.delete(base)]
            out = []
            for j in range(4):
                out.append(c.post(f"{base}/Users", data={"Identity": f"late-{i}-{j}"}))
                out.append(c.post(f"{base}/Tokens", data={"Identity": f"late-tok-{i}-{j}"}))
            return out

    with ThreadPoolExecutor(n) as pool:
        results = [r for rs in pool.map(one, range(n)) for r in rs]
    for r in results:
        assert r.status_code in (201, 204, 404), (str(r.request.url), r.status_code, r.text[:300])
        if r.status_code == 404:
            assert_error(r, 404, 20404)
    assert_error(bb.http.get(base), 404, 20404)
    assert_error(bb.http.get(f"{base}/Users"), 404, 20404)


def test_concurrent_updates_of_one_user_never_5xx(bb: BB) -> None:
    svc = bb.new_service("race-update")
    bb.new_user(svc["sid"], "busy")
    url = f"/v2/Services/{svc['sid']}/Users/busy"

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=bb.base, auth=bb.auth, timeout=60) as c:
            return c.post(url, data={"FriendlyName": f"name-{i}", "Attributes": f'{{"i": {i}}}'})

    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(one, range(48)))
    assert all(r.status_code == 200 for r in responses), sorted({r.status_code for r in responses})
    final = bb.http.get(url).json()
    i = int(final["friendly_name"].split("-")[1])
    assert final["attributes"] in (f'{{"i": {i}}}', f'{{"i":{i}}}'), "both fields from the same request"
