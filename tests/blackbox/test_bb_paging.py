"""List paging (SPEC §3 "All lists"): PageSize/Page/PageToken, meta, creation order, keyset cursors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from blackbox.blackbox_helpers import (
    BB,
    META_KEYS,
    assert_error,
    assert_not_5xx,
    bb,  # noqa: F401  (the server fixture, module-scoped)
)

N_USERS = 250


@pytest.fixture(scope="module")
def big(bb: BB) -> dict[str, Any]:
    """A service with 250 users created one after the other; returns the service and identities."""
    svc = bb.new_service("paging")
    identities = [f"user-{i:03d}" for i in range(N_USERS)]
    sids = []
    for identity in identities:
        r = bb.http.post(f"/v2/Services/{svc['sid']}/Users", data={"Identity": identity})
        assert r.status_code == 201, r.text
        sids.append(r.json()["sid"])
    return {"svc": svc, "identities": identities, "sids": sids, "url": f"/v2/Services/{svc['sid']}/Users"}


def walk(http: httpx.Client, first_url: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Follow next_page_url from the first page to the end; returns every page body."""
    pages = []
    r = http.get(first_url, params=params)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        nxt = body["meta"]["next_page_url"]
        if nxt is None:
            return pages
        assert len(pages) < 1000, "runaway paging"
        r = http.get(nxt)


def test_twilio_package_lists_all_250_users_once_in_creation_order(bb: BB, big: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(big["svc"]["sid"]).users
    listed = users.list(page_size=40)
    assert [u.identity for u in listed] == big["identities"]
    assert [u.sid for u in listed] == big["sids"]


def test_twilio_package_stream_with_limit(bb: BB, big: dict[str, Any]) -> None:
    users = bb.twilio().chat.v2.services(big["svc"]["sid"]).users
    assert [u.identity for u in users.list(limit=95, page_size=30)] == big["identities"][:95]


def test_raw_paging_meta_and_absolute_urls(bb: BB, big: dict[str, Any]) -> None:
    pages = walk(bb.http, big["url"], {"PageSize": 40})
    assert [len(p["users"]) for p in pages] == [40] * 6 + [10]
    seen = [u["identity"] for p in pages for u in p["users"]]
    assert seen == big["identities"]
    for i, page in enumerate(pages):
        meta = page["meta"]
        assert set(meta) == META_KEYS, meta
        assert meta["key"] == "users"
        assert meta["page"] == i
        assert meta["page_size"] == 40
        for name in ("first_page_url", "url"):
            assert meta[name].startswith(f"{bb.base}/v2/Services/{big['svc']['sid']}/Users"), meta
        if meta["previous_page_url"] is not None:
            assert meta["previous_page_url"].startswith(bb.base + "/"), meta
        if i < len(pages) - 1:
            assert meta["next_page_url"].startswith(f"{bb.base}/v2/Services/{big['svc']['sid']}/Users"), meta
            assert "PageToken=" in meta["next_page_url"], meta
        else:
            assert meta["next_page_url"] is None
    assert pages[0]["meta"]["previous_page_url"] is None
    first = pages[0]["meta"]["first_page_url"]
    assert parse_qs(urlsplit(first).query).get("PageSize") == ["40"]


def test_meta_url_of_a_page_reloads_that_page(bb: BB, big: dict[str, Any]) -> None:
    pages = walk(bb.http, big["url"], {"PageSize": 40})
    for page in pages[:3]:
        again = bb.http.get(page["meta"]["url"])
        assert again.status_code == 200
        assert [u["sid"] for u in again.json()["users"]] == [u["sid"] for u in page["users"]]
    first = bb.http.get(pages[3]["meta"]["first_page_url"]).json()
    assert [u["sid"] for u in first["users"]] == [u["sid"] for u in pages[0]["users"]]


def test_exactly_divisible_list_has_no_next_page_on_last_page(bb: BB, big: dict[str, Any]) -> None:
    pages = walk(bb.http, big["url"], {"PageSize": 50})
    assert [len(p["users"]) for p in pages] == [50] * 5
    assert pages[-1]["meta"]["next_page_url"] is None


def test_page_size_above_100_is_clamped(bb: BB, big: dict[str, Any]) -> None:
    for size in (101, 1000, 10**6):
        r = bb.http.get(big["url"], params={"PageSize": size})
        assert r.status_code == 200, (size, r.text)
        assert r.json()["meta"]["page_size"] == 100
        assert len(r.json()["users"]) == 100


def test_page_size_100_and_1(bb: BB, big: dict[str, Any]) -> None:
    assert len(bb.http.get(big["url"], params={"PageSize": 100}).json()["users"]) == 100
    one = bb.http.get(big["url"], params={"PageSize": 1}).json()
    assert [u["identity"] for u in one["users"]] == ["user-000"]
    assert one["meta"]["page_size"] == 1


def test_default_page_size_is_50(bb: BB, big: dict[str, Any]) -> None:
    body = bb.http.get(big["url"]).json()
    assert body["meta"]["page_size"] == 50 and len(body["users"]) == 50


@pytest.mark.parametrize("size", ["0", "-1", "-100", "abc", "1.5", "1e3", "0x10", "½"])
def test_bad_page_size_is_400_20001(bb: BB, big: dict[str, Any], size: str) -> None:
    assert_error(bb.http.get(big["url"], params={"PageSize": size}), 400, 20001)


@pytest.mark.parametrize("size", ["", " ", "99999999999999999999999999999999", "-99999999999999999999999", "\x00",
                                  "1" * 5000])
def test_odd_page_size_never_5xx(bb: BB, big: dict[str, Any], size: str) -> None:
    assert_not_5xx(bb.http.get(big["url"], params={"PageSize": size}))


@pytest.mark.parametrize("page", ["-1", "abc", "1.5"])
def test_bad_page_is_400_20001(bb: BB, big: dict[str, Any], page: str) -> None:
    assert_error(bb.http.get(big["url"], params={"Page": page}), 400, 20001)


def test_huge_page_never_5xx(bb: BB, big: dict[str, Any]) -> None:
    assert_not_5xx(bb.http.get(big["url"], params={"Page": "99999999999999999999999999"}))
    assert_not_5xx(bb.http.get(big["url"], params={"Page": "3"}))


@pytest.mark.parametrize("token", ["garbage", "!!!", "PT", "PA" * 200, "eyJmb28iOiJiYXIifQ", "%00", "' OR 1=1 --",
                                   "PTZXlKcFpDSTZJaTB4SW4w", "a" * 5000])
def test_garbage_page_token_is_400_21481(bb: BB, big: dict[str, Any], token: str) -> None:
    assert_error(bb.http.get(big["url"], params={"PageToken": token}), 400, 21481)


def test_tampered_page_token_is_400_or_a_valid_page(bb: BB, big: dict[str, Any]) -> None:
    nxt = bb.http.get(big["url"], params={"PageSize": 40}).json()["meta"]["next_page_url"]
    token = parse_qs(urlsplit(nxt).query)["PageToken"][0]
    for bad in (token[:-1], token + "x", token[::-1], token.upper()):
        r = bb.http.get(big["url"], params={"PageSize": 40, "PageToken": bad})
        assert_not_5xx(r)
        if r.status_code >= 400:
            assert_error(r, 400, 21481)


def test_keyset_paging_survives_deletes_and_inserts(bb: BB) -> None:
    """With OFFSET paging, deleting a row already seen would skip one; a keyset cursor does not."""
    svc = bb.new_service("keyset")
    url = f"/v2/Services/{svc['sid']}/Users"
    names = [f"k{i:02d}" for i in range(12)]
    for n in names:
        assert bb.http.post(url, data={"Identity": n}).status_code == 201
    first = bb.http.get(url, params={"PageSize": 4}).json()
    assert [u["identity"] for u in first["users"]] == names[:4]
    assert bb.http.delete(f"{url}/k00").status_code == 204
    assert bb.http.delete(f"{url}/k01").status_code == 204
    assert bb.http.post(url, data={"Identity": "k99"}).status_code == 201
    rest = walk(bb.http, first["meta"]["next_page_url"])
    seen = [u["identity"] for p in rest for u in p["users"]]
    assert seen == names[4:] + ["k99"]


def test_services_list_paging_covers_all_services(bb: BB) -> None:
    made = [bb.new_service(f"many-{i}")["sid"] for i in range(7)]
    pages = walk(bb.http, "/v2/Services", {"PageSize": 20})
    sids = [s["sid"] for p in pages for s in p["services"]]
    assert len(sids) == len(set(sids))
    positions = [sids.index(s) for s in made]
    assert positions == sorted(positions)
    assert all(p["meta"]["key"] == "services" for p in pages)


def test_page_token_of_another_list_never_5xx(bb: BB, big: dict[str, Any]) -> None:
    for i in range(3):
        bb.new_service(f"cursor-{i}")
    nxt = bb.http.get("/v2/Services", params={"PageSize": 1}).json()["meta"]["next_page_url"]
    token = parse_qs(urlsplit(nxt).query)["PageToken"][0]
    r = bb.http.get(big["url"], params={"PageToken": token})
    assert_not_5xx(r)
    if r.status_code >= 400:
        assert_error(r, 400, 21481)


LISTS = ["/v2/Services", "/v2/Services/{IS}/Roles", "/v2/Services/{IS}/Users", "/v2/Services/{IS}/Users/{US}/Channels",
         "/v2/Services/{IS}/Users/{US}/Bindings"]


@pytest.fixture(scope="module")
def small(bb: BB) -> dict[str, str]:
    svc = bb.new_service("small")
    user = bb.new_user(svc["sid"], "someone")
    return {"{IS}": svc["sid"], "{US}": user["sid"]}


def _fill(path: str, small: dict[str, str]) -> str:
    for k, v in small.items():
        path = path.replace(k, v)
    return path


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("params, code", [({"PageSize": "0"}, 20001), ({"PageSize": "abc"}, 20001),
                                          ({"PageSize": "-5"}, 20001), ({"Page": "-1"}, 20001),
                                          ({"PageToken": "garbage"}, 21481)])
def test_every_list_validates_paging_parameters(bb: BB, small: dict[str, str], path: str,
                                                params: dict[str, str], code: int) -> None:
    assert_error(bb.http.get(_fill(path, small), params=params), 400, code)


@pytest.mark.parametrize("path", LISTS)
def test_every_list_has_the_meta_shape(bb: BB, small: dict[str, str], path: str) -> None:
    r = bb.http.get(_fill(path, small), params={"PageSize": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    meta = body["meta"]
    assert set(meta) == META_KEYS, meta
    assert set(body) == {"meta", meta["key"]}
    assert isinstance(body[meta["key"]], list)
    assert meta["page"] == 0 and meta["page_size"] == 5
    assert meta["url"].startswith(bb.base + "/") and meta["first_page_url"].startswith(bb.base + "/")
    assert meta["previous_page_url"] is None
