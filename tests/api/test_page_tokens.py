"""PageTokens are opaque: they carry no row id another account could read (SPEC §3).

A token used to be base64 of `n<users.id>`, a sequence every account shares, so account B could
subtract the ids of two of its pages and learn how many users were created elsewhere meanwhile.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

from conftest import Api, assert_error


def _token(url: str) -> str:
    return parse_qs(urlparse(url).query)["PageToken"][0]


def _users(api: Api, service: dict[str, Any], n: int, prefix: str, auth: Any = None) -> None:
    for i in range(n):
        r = api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": f"{prefix}{i}"},
                     **({"auth": auth} if auth else {}))
        assert r.status_code == 201, r.text


def _decodes_to_digits(token: str) -> bool:
    body = token[2:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        return False
    return re.fullmatch(rb"[np]\d+", raw) is not None  # the readable `n<row id>` of old


def test_a_page_token_tells_nothing_of_other_accounts_activity(api: Api, service: dict[str, Any]) -> None:
    other_sid, other_token = api.new_account()
    other = api.post("/v2/Services", {"FriendlyName": "other"}, auth=(other_sid, other_token)).json()
    url = f"/v2/Services/{service['sid']}/Users?PageSize=2"
    _users(api, service, 2, "a")
    _users(api, other, 37, "x", auth=(other_sid, other_token))  # activity of another account
    _users(api, service, 2, "b")
    first = api.get(url).json()
    token = _token(first["meta"]["next_page_url"])
    assert token.startswith("PT")
    assert not _decodes_to_digits(token), token
    # Sealed with a fresh nonce each time: the same position never gives the same string.
    assert _token(api.get(url).json()["meta"]["next_page_url"]) != token
    # The cursor still works: the next page is the next two users, in creation order.
    nxt = api.get(first["meta"]["next_page_url"]).json()
    assert [u["identity"] for u in nxt["users"]] == ["b0", "b1"]
    back = api.get(nxt["meta"]["previous_page_url"]).json()
    assert [u["identity"] for u in back["users"]] == ["a0", "a1"]


def test_altered_foreign_and_old_tokens_are_21481(api: Api, service: dict[str, Any]) -> None:
    _users(api, service, 3, "u")
    users_url = f"/v2/Services/{service['sid']}/Users"
    token = _token(api.get(users_url, params={"PageSize": 1}).json()["meta"]["next_page_url"])
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    old_style = "PT" + base64.urlsafe_b64encode(b"n1").decode().rstrip("=")
    for bad in (flipped, old_style, token + "AAAA", "PT", "PT" + "A" * 200, "garbage"):
        assert_error(api.get(users_url, params={"PageToken": bad}), 400, 21481)
    # A token of one list is refused by another list, even of the same account.
    assert_error(api.get(f"/v2/Services/{service['sid']}/Roles", params={"PageToken": token}), 400, 21481)
    second = api.new_service("second")
    assert_error(api.get(f"/v2/Services/{second['sid']}/Users", params={"PageToken": token}), 400, 21481)


def test_api_key_list_tokens_are_opaque_too(api: Api) -> None:
    for _ in range(3):
        assert api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json").status_code == 201
    body = api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", params={"PageSize": 1}).json()
    token = _token(body["next_page_uri"])
    assert not _decodes_to_digits(token)
    assert api.get(body["next_page_uri"]).status_code == 200
