"""tokensvc/paging.py on its own: sealed PageTokens, PageSize/Page parsing, keyset pages and the
`meta` links (SPEC §3), without HTTP. The keyset tests page through a real table (API keys) of
the suite's database: a SQLite file, or PostgreSQL under scripts/with-postgres.
"""

from __future__ import annotations

import base64
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import event, update

from conftest import database_url
from tokensvc import errors
from tokensvc.config import Settings
from tokensvc.crypto import SecretBox
from tokensvc.db import Database, make_engine
from tokensvc.paging import (
    MAX_OFFSET_ROWS,
    MAX_ROW_ID,
    MAX_TOKEN_LENGTH,
    Cursors,
    Page,
    PageRequest,
    page_links,
    page_meta,
    parse_page_request,
)
from tokensvc.sids import new_sid
from tokensvc.store.accounts import create_account
from tokensvc.store.api_keys import create_key, delete_key, list_keys
from tokensvc.store.schema import ensure_schema
from tokensvc.store.tables import api_keys

USERS = "/v2/Services/IS" + "a" * 32 + "/Users"
B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"  # in digit order


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox.load_or_create(tmp_path / "keys")


@pytest.fixture
def cursors(box: SecretBox) -> Cursors:
    return Cursors(box, USERS)


def refused(cursors: Cursors, token: str) -> errors.TwilioError:
    with pytest.raises(errors.TwilioError) as caught:
        cursors.decode(token)
    assert (caught.value.status, caught.value.code) == (400, 21481), (token, caught.value.body())
    return caught.value


def invalid(query: dict[str, str], cursors: Cursors, code: int = 20001, **kw: Any) -> errors.TwilioError:
    with pytest.raises(errors.TwilioError) as caught:
        parse_page_request(query, cursors, **kw)
    assert (caught.value.status, caught.value.code) == (400, code), (query, caught.value.body())
    return caught.value


# ---- Cursors: sealed, opaque, bound to their list ------------------------------------------------------


@pytest.mark.parametrize("direction", ["n", "p"])
@pytest.mark.parametrize("row_id", [0, 1, 42, 10**6, MAX_ROW_ID])
def test_a_cursor_opens_to_what_it_sealed(cursors: Cursors, direction: str, row_id: int) -> None:
    assert cursors.decode(cursors.encode(direction, row_id)) == (direction, row_id)


def test_a_cursor_is_an_opaque_url_safe_string_never_the_same_twice(cursors: Cursors) -> None:
    tokens = {cursors.encode("n", 7) for _ in range(20)}
    assert len(tokens) == 20  # a fresh nonce each time: equal positions are not linkable
    for token in tokens | {cursors.encode("p", MAX_ROW_ID)}:
        assert token.startswith("PT") and len(token) <= MAX_TOKEN_LENGTH
        assert set(token[2:]) <= set(B64URL), token  # no padding, nothing a URL must escape
    # AES-GCM: a 12-byte nonce, the ciphertext of `n7` and a 16-byte tag; the row id is not readable.
    raws = [base64.urlsafe_b64decode(t[2:] + "=" * (-len(t[2:]) % 4)) for t in tokens]
    assert {len(raw) for raw in raws} == {12 + 2 + 16}
    assert len({raw[12:14] for raw in raws}) > 1  # the same id seals to different bytes


@pytest.mark.parametrize("other_scope", [
    "/v2/Services/IS" + "b" * 32 + "/Users",  # the same list of another service
    "/v2/Services/IS" + "a" * 32 + "/Roles",  # another list of the same service
    "/v2/Services",
    f"/2010-04-01/Accounts/{'AC' + '1' * 32}/Keys.json",
    USERS + "/",
    USERS.upper(),
])
def test_a_cursor_is_refused_on_another_list(box: SecretBox, cursors: Cursors, other_scope: str) -> None:
    token = cursors.encode("n", 5)
    refused(Cursors(box, other_scope), token)
    assert cursors.decode(token) == ("n", 5)


def test_a_cursor_sealed_under_another_secrets_key_is_refused(cursors: Cursors, tmp_path: Path) -> None:
    foreign = Cursors(SecretBox.load_or_create(tmp_path / "other-keys"), USERS)
    refused(cursors, foreign.encode("n", 5))


def _flip(token: str, i: int) -> str:
    """The token with the top bit of its i-th base64 digit flipped: a different byte, always
    (a low bit of the last digit may be padding that decodes to the same bytes)."""
    c = B64URL[B64URL.index(token[i]) ^ 0b100000] if token[i] in B64URL else "A"
    return token[:i] + c + token[i + 1:]


def test_every_altered_character_is_refused(cursors: Cursors) -> None:
    token = cursors.encode("n", 12345)
    for i in range(len(token)):
        if i < 2:
            refused(cursors, token[:i] + token[i].lower() + token[i + 1:])
        else:
            refused(cursors, _flip(token, i))


def test_every_truncation_and_extension_is_refused(cursors: Cursors) -> None:
    token = cursors.encode("p", 99)
    for n in range(len(token)):
        refused(cursors, token[:n])
    for tail in ("A", "AA", "AAAA", token[2:]):
        refused(cursors, token + tail)


@pytest.mark.parametrize("garbage", [
    "", "PT", "garbage", "PT!!!!", "PT====", "PTé" + "A" * 40, "PT\x00" + "A" * 40, "PT" + "A" * 60,
    "PT" + "A" * (MAX_TOKEN_LENGTH - 2), "PT" + "A" * MAX_TOKEN_LENGTH,
    "PTv1:" + "A" * 40, "v1:" + "A" * 40,
    # What cursors were before they were sealed: base64 of `n<row id>`, and a bare number.
    "PT" + base64.urlsafe_b64encode(b"n5").decode().rstrip("="),
    "PT" + base64.urlsafe_b64encode(b"p5").decode().rstrip("="),
    "PT5", "PAn5",
])
def test_garbage_and_old_style_cursors_are_refused(cursors: Cursors, garbage: str) -> None:
    refused(cursors, garbage)


def _sealed(box: SecretBox, scope: str, raw: str) -> str:
    """A token holding `raw`, sealed as Cursors.encode seals (only the server's key can)."""
    return "PT" + box.encrypt(raw, f"page-token:{scope}")[len("v1:"):].rstrip("=")


@pytest.mark.parametrize("raw", ["", "n", "p", "x5", "5", "N5", "n-1", "n+1", "n 5", "n5 ", "n0x5",
                                 f"n{MAX_ROW_ID + 1}", "n" + "9" * 40])
def test_a_sealed_payload_that_is_no_cursor_is_refused(box: SecretBox, cursors: Cursors, raw: str) -> None:
    """Defence in depth behind the seal: direction n|p, then a row id an Integer column holds."""
    assert cursors.decode(_sealed(box, USERS, "n5")) == ("n", 5)  # the helper seals as encode does
    refused(cursors, _sealed(box, USERS, raw))


def test_a_sealed_payload_with_a_non_ascii_digit_is_refused(box: SecretBox, cursors: Cursors) -> None:
    refused(cursors, _sealed(box, USERS, "n²"))


# ---- parse_page_request: PageSize, Page, PageToken ---------------------------------------------------


def test_defaults_are_page_0_of_50_without_a_token(cursors: Cursors) -> None:
    assert parse_page_request({}, cursors) == PageRequest(50, 0, None)
    assert parse_page_request({"PageToken": ""}, cursors) == PageRequest(50, 0, None)  # empty is none
    assert parse_page_request({}, cursors, max_size=50, default_size=20) == PageRequest(20, 0, None)


@pytest.mark.parametrize(("given", "size"), [("1", 1), ("7", 7), (" 7 ", 7), ("+7", 7), ("100", 100),
                                             ("101", 100), ("1000000", 100), ("9" * 40, 100)])
def test_page_size_is_at_least_1_and_clamped_to_100(cursors: Cursors, given: str, size: int) -> None:
    assert parse_page_request({"PageSize": given}, cursors).page_size == size


def test_page_size_is_clamped_to_the_lists_own_maximum(cursors: Cursors) -> None:
    assert parse_page_request({"PageSize": "100"}, cursors, max_size=50).page_size == 50


@pytest.mark.parametrize("given", ["0", "-1", "-" + "9" * 40, "", "abc", "1.5", "1e2", "0x10", "１", "5 5"])
def test_a_bad_page_size_is_20001(cursors: Cursors, given: str) -> None:
    assert "PageSize" in invalid({"PageSize": given}, cursors).message


@pytest.mark.parametrize("given", ["-1", "", "x", "1.0"])
def test_a_bad_page_is_20001(cursors: Cursors, given: str) -> None:
    assert "Page" in invalid({"Page": given}, cursors).message


def test_offset_pages_stop_at_max_offset_rows(cursors: Cursors) -> None:
    last = MAX_OFFSET_ROWS // 50
    assert parse_page_request({"Page": str(last)}, cursors) == PageRequest(50, last, None)
    assert "PageToken" in invalid({"Page": str(last + 1)}, cursors).message
    invalid({"Page": "9" * 40}, cursors)  # saturated, then refused: never a huge OFFSET
    assert parse_page_request({"Page": str(last * 50), "PageSize": "1"}, cursors).page == last * 50


def test_a_token_sets_the_keyset_bound_and_any_page_number_is_only_a_label(cursors: Cursors) -> None:
    after, before = cursors.encode("n", 40), cursors.encode("p", 41)
    deep = str(MAX_OFFSET_ROWS * 10)
    assert parse_page_request({"PageToken": after, "Page": deep, "PageSize": "5"}, cursors) == PageRequest(
        5, MAX_OFFSET_ROWS * 10, after, after=40)
    assert parse_page_request({"PageToken": before, "Page": "3"}, cursors) == PageRequest(50, 3, before, before=41)


def test_a_bad_token_is_21481_whatever_else_is_right(box: SecretBox, cursors: Cursors) -> None:
    invalid({"PageToken": "PTnope", "PageSize": "5", "Page": "1"}, cursors, code=21481)
    foreign = Cursors(box, "/v2/Services").encode("n", 1)
    invalid({"PageToken": foreign}, cursors, code=21481)


# ---- keyset pages of a real table, and their links -------------------------------------------------


@dataclass
class Keys:
    """An account with API keys whose ids are interleaved with another account's and whose
    creation times are all the same second (ties a date order could not break)."""

    db: Database
    account_sid: str
    sids: list[str]  # in creation order
    cursors: Cursors
    url: str

    def page(self, query: dict[str, str]) -> tuple[PageRequest, Page]:
        req = parse_page_request(query, self.cursors)
        return req, self.db.call(lambda conn: list_keys(conn, account_sid=self.account_sid, req=req))

    def follow(self, link: str | None) -> tuple[PageRequest, Page]:
        assert link is not None and link.startswith(self.url + "?"), link
        return self.page(dict(parse_qsl(urlsplit(link).query, keep_blank_values=True)))

    def make(self, n: int) -> None:
        def insert(conn: Any) -> None:
            other = create_account(conn).sid
            box = self.cursors.box
            assert isinstance(box, SecretBox)
            for _ in range(n):
                self.sids.append(create_key(conn, account_sid=self.account_sid, friendly_name=None, box=box)[0]["sid"])
                create_key(conn, account_sid=other, friendly_name=None, box=box)
            conn.execute(update(api_keys).where(api_keys.c.account_sid == self.account_sid)
                         .values(date_created=1_700_000_000, date_updated=1_700_000_000))
        self.db.call(insert)


@pytest.fixture
def keys(tmp_path: Path, box: SecretBox) -> Iterator[Keys]:
    settings = Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys")
    ensure_schema(settings)
    db = Database(make_engine(settings))
    account = db.call(lambda conn: create_account(conn)).sid
    url = f"/2010-04-01/Accounts/{account}/Keys.json"
    try:
        yield Keys(db, account, [], Cursors(box, url), url)
    finally:
        db.dispose()


def sids(page: Page) -> list[str]:
    return [row.sid for row in page.rows]


def test_following_next_then_previous_walks_every_row_once_in_creation_order(keys: Keys) -> None:
    keys.make(7)
    req, page = keys.page({"PageSize": "3"})
    seen, stack = [sids(page)], [(req, page)]
    while (link := page_links(keys.url, keys.cursors, req, page).next) is not None:
        req, page = keys.follow(link)
        seen.append(sids(page))
        stack.append((req, page))
    assert seen == [keys.sids[0:3], keys.sids[3:6], keys.sids[6:7]]
    assert [r.page for r, _ in stack] == [0, 1, 2]
    back = []
    while (link := page_links(keys.url, keys.cursors, req, page).previous) is not None:
        req, page = keys.follow(link)
        back.append((req.page, sids(page)))
    assert back == [(1, keys.sids[3:6]), (0, keys.sids[0:3])]
    assert page_links(keys.url, keys.cursors, req, page).previous is None  # page 0 again


def test_the_last_page_has_no_next_even_when_full(keys: Keys) -> None:
    keys.make(6)
    req, page = keys.page({"PageSize": "3"})
    req, page = keys.follow(page_links(keys.url, keys.cursors, req, page).next)
    assert sids(page) == keys.sids[3:6] and not page.has_next
    assert page_links(keys.url, keys.cursors, req, page).next is None


def test_an_empty_list_has_neither_next_nor_previous(keys: Keys) -> None:
    req, page = keys.page({})
    assert page.rows == [] and (page.has_next, page.has_previous) == (False, False)
    links = page_links(keys.url, keys.cursors, req, page)
    assert (links.previous, links.next) == (None, None)
    assert links.first == links.current == f"{keys.url}?PageSize=50&Page=0"


def test_an_offset_page_links_back_by_cursor(keys: Keys) -> None:
    keys.make(5)
    req, page = keys.page({"PageSize": "2", "Page": "1"})
    assert sids(page) == keys.sids[2:4] and page.has_previous and page.has_next
    links = page_links(keys.url, keys.cursors, req, page)
    assert "PageToken=" in (links.previous or "") and "PageToken=" in (links.next or "")
    assert sids(keys.follow(links.previous)[1]) == keys.sids[0:2]
    assert sids(keys.follow(links.next)[1]) == keys.sids[4:5]


def test_a_cursor_survives_the_deletion_of_its_row(keys: Keys) -> None:
    keys.make(5)
    req, page = keys.page({"PageSize": "2"})
    link = page_links(keys.url, keys.cursors, req, page).next
    keys.db.call(lambda conn: delete_key(conn, account_sid=keys.account_sid, sid=keys.sids[1]))  # its bound
    assert sids(keys.follow(link)[1]) == keys.sids[2:4]


def test_pages_with_a_cursor_use_no_offset(keys: Keys) -> None:
    """SPEC §3: the server never uses OFFSET for deep pages; the cursor is a WHERE id > bound."""
    keys.make(4)
    offsets: list[Any] = []
    keyset: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "api_keys" not in statement:
            return
        keyset.append(statement)
        # SQLite's dialect writes LIMIT ? OFFSET ? even for a bare LIMIT: the value is what counts.
        m = re.search(r"OFFSET (\?|%\((\w+)\)s)", statement)
        if m:
            offsets.append(parameters[-1] if m.group(1) == "?" else parameters[m.group(2)])

    req, page = keys.page({"PageSize": "1", "Page": "1"})  # an offset page, to see what one looks like
    links = page_links(keys.url, keys.cursors, req, page)
    event.listen(keys.db.engine, "before_cursor_execute", record)
    try:
        keys.page({"PageSize": "1", "Page": "1"})
        req, page = keys.follow(links.next)
        req, page = keys.follow(page_links(keys.url, keys.cursors, req, page).next)
        keys.follow(page_links(keys.url, keys.cursors, req, page).previous)
    finally:
        event.remove(keys.db.engine, "before_cursor_execute", record)
    assert len(keyset) == 4 and offsets[0] == 1, (keyset, offsets)  # the recorder sees an OFFSET
    assert all(re.search(r"api_keys\.id [<>]", s) for s in keyset[1:]), keyset
    assert all(o in (0, None) for o in offsets[1:]), offsets


def test_meta_is_twilios_shape_with_absolute_links(box: SecretBox) -> None:
    """SPEC §3 / Twilio's meta: page, page_size, first_page_url (Page=0, no token),
    previous_page_url, url (the page asked for), next_page_url (null on the last page), key."""
    url = "https://chat.example.com" + USERS
    cursors = Cursors(box, USERS)
    rows = [SimpleNamespace(id=i) for i in (11, 12)]
    first = page_meta(url, "users", cursors, PageRequest(2, 0, None), Page(rows, True, False))
    assert list(first) == ["page", "page_size", "first_page_url", "previous_page_url", "url", "next_page_url", "key"]
    assert first["page"] == 0 and first["page_size"] == 2 and first["key"] == "users"
    assert first["first_page_url"] == first["url"] == f"{url}?PageSize=2&Page=0"
    assert first["previous_page_url"] is None
    nxt = first["next_page_url"]
    assert re.fullmatch(re.escape(url) + r"\?PageSize=2&Page=1&PageToken=PT[A-Za-z0-9_-]+", nxt), nxt
    token = dict(parse_qsl(urlsplit(nxt).query))["PageToken"]
    assert cursors.decode(token) == ("n", 12)  # after the page's last row

    req = parse_page_request({"PageSize": "2", "Page": "1", "PageToken": token}, cursors)
    second = page_meta(url, "users", cursors, req, Page(rows, False, True))
    assert second["url"] == f"{url}?PageSize=2&Page=1&PageToken={token}"  # the page asked for, as asked
    assert second["first_page_url"] == f"{url}?PageSize=2&Page=0"
    assert second["next_page_url"] is None
    prev = second["previous_page_url"]
    assert re.fullmatch(re.escape(url) + r"\?PageSize=2&Page=0&PageToken=PT[A-Za-z0-9_-]+", prev), prev
    assert cursors.decode(dict(parse_qsl(urlsplit(prev).query))["PageToken"]) == ("p", 11)  # before its first


def test_a_2010_api_list_links_are_paths(box: SecretBox) -> None:
    path = f"/2010-04-01/Accounts/{new_sid('AC')}/Keys.json"
    links = page_links(path, Cursors(box, path), PageRequest(50, 0, None), Page([], False, False))
    assert links.first == links.current == f"{path}?PageSize=50&Page=0"
