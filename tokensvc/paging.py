"""Keyset paging of every list (SPEC §3): PageSize / Page / PageToken and the `meta` block.

The PageToken is a cursor naming the row id a page starts after (or ends before), so a page a
million rows deep costs what the first one does. OFFSET is used only for a bare `Page=N` without a
token, and only while it stays shallow. Row ids come from sequences every account shares, so a
readable id would tell one account how many rows others created between two of its pages: the
cursor is sealed (AES-GCM under the key that protects API key secrets, bound to the list it
belongs to), opaque to the caller and refused (21481) when altered or replayed on another list.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from cryptography.exceptions import InvalidTag
from sqlalchemy import Connection, Select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from .errors import invalid_page_token, invalid_param, page_too_deep
from .validation import integer

MAX_OFFSET_ROWS = 10_000
# The largest id an Integer primary key can hold on PostgreSQL: a cursor beyond it was not made
# by us, and comparing the column with it would fail in the database ("integer out of range").
MAX_ROW_ID = 2**31 - 1


# Where a page starts after (or ends before): a row id for lists in creation order; for the
# Users list filters (SPEC §11) the identity (IdentityPrefix) or (date_updated, sid) (UpdatedAfter).
Key = int | str | tuple[int, str]


@dataclass(frozen=True)
class PageRequest:
    page_size: int
    page: int
    token: str | None
    after: Key | None = None  # rows whose key is > after
    before: Key | None = None  # rows whose key is < before (a previous page)


class Sealer(Protocol):
    """What seals cursors: crypto.SecretBox."""

    def encrypt(self, plaintext: str, context: str) -> str: ...

    def decrypt(self, token: str, context: str) -> str: ...


_SEALED = "v1:"  # SecretBox's format prefix, left out of the token
MAX_TOKEN_LENGTH = 128
# An identity cursor seals up to 256 characters (1,024 UTF-8 bytes): base64 of that, the nonce and the tag.
MAX_IDENTITY_TOKEN_LENGTH = 2048
ROW_ID, IDENTITY, UPDATED = "id", "identity", "updated"  # what a list's cursors hold (Cursors.kind)
_UPDATED_KEY = re.compile(r"(0|[1-9][0-9]{0,18})\.([A-Z]{2}[0-9a-f]{32})")


@dataclass(frozen=True)
class Cursors:
    """PageTokens of one list (`scope`: its path, e.g. /v2/Services/IS…/Users) in one order
    (`kind`): a row id (creation order), an identity, or (date_updated, sid). Each kind seals
    under its own context, so a token of one order is refused (21481) by a list in another."""

    box: Sealer
    scope: str
    kind: str = ROW_ID

    @property
    def _context(self) -> str:
        return f"page-token:{self.scope}" if self.kind == ROW_ID else f"page-token:{self.scope}#{self.kind}"

    def encode(self, direction: str, key: Key) -> str:
        if isinstance(key, tuple):
            text = f"{key[0]}.{key[1]}"
        else:
            text = str(key)
        sealed = self.box.encrypt(f"{direction}{text}", self._context)
        return "PT" + sealed[len(_SEALED):].rstrip("=")

    def decode(self, token: str) -> tuple[str, Key]:
        """(direction, key) of a token this list issued; 21481 for anything else."""
        limit = MAX_IDENTITY_TOKEN_LENGTH if self.kind == IDENTITY else MAX_TOKEN_LENGTH
        if not token.startswith("PT") or len(token) > limit:
            raise invalid_page_token()
        body = token[2:]
        try:
            raw = self.box.decrypt(_SEALED + body + "=" * (-len(body) % 4), self._context)
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            raise invalid_page_token() from None
        direction, text = raw[:1], raw[1:]
        if direction not in ("n", "p"):
            raise invalid_page_token()
        return direction, self._key(text)

    def _key(self, text: str) -> Key:
        if self.kind == IDENTITY:
            if not text or "\x00" in text:
                raise invalid_page_token()
            return text
        if self.kind == UPDATED:
            match = _UPDATED_KEY.fullmatch(text)
            if match is None or int(match[1]) >= 2**62:
                raise invalid_page_token()
            return int(match[1]), match[2]
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_ROW_ID:
            raise invalid_page_token()
        return int(text)


def parse_page_request(query: Mapping[str, str], cursors: Cursors, *, max_size: int = 100,
                       default_size: int = 50) -> PageRequest:
    """PageSize (1..; above max_size is clamped), Page (>= 0) and PageToken from a query string."""
    size = default_size
    if "PageSize" in query:
        size = integer("PageSize", query["PageSize"], saturate=True)
        if size < 1:
            raise invalid_param("PageSize", "must be at least 1")
        size = min(size, max_size)
    page = 0
    if "Page" in query:
        page = integer("Page", query["Page"], saturate=True)
        if page < 0:
            raise invalid_param("Page", "must not be negative")
    token = query.get("PageToken") or None
    if token is None:
        if page * size > MAX_OFFSET_ROWS:
            raise page_too_deep()
        return PageRequest(size, page, None)
    direction, row_id = cursors.decode(token)
    if direction == "n":
        return PageRequest(size, page, token, after=row_id)
    return PageRequest(size, page, token, before=row_id)


@dataclass
class Page:
    rows: Sequence[Any]
    has_next: bool
    has_previous: bool


Order = ColumnElement[Any] | tuple[ColumnElement[Any], ...]


def _beyond(cols: tuple[ColumnElement[Any], ...], key: Key, *, after: bool) -> ColumnElement[bool]:
    """Rows past `key` in the order of `cols`; several columns compare as a row value, `(a, b) >
    (x, y)`, which SQLite (3.15+) and PostgreSQL both take as one index range."""
    values = key if isinstance(key, tuple) else (key,)
    if len(values) != len(cols):
        raise invalid_page_token()
    if len(cols) == 1:
        return cols[0] > values[0] if after else cols[0] < values[0]
    left, right = tuple_(*cols), tuple_(*values, types=[c.type for c in cols])
    return left > right if after else left < right


def fetch_page(conn: Connection, stmt: Select, order: Order, req: PageRequest) -> Page:
    """Run a filtered SELECT as one keyset page in the order of `order` (a unique column, the row
    id for creation order, or a tuple of columns ending in a unique one)."""
    cols = order if isinstance(order, tuple) else (order,)
    n = req.page_size
    if req.before is not None:
        rows = conn.execute(stmt.where(_beyond(cols, req.before, after=False))
                            .order_by(*(c.desc() for c in cols)).limit(n + 1)).all()
        has_previous = len(rows) > n
        return Page(list(reversed(rows[:n])), True, has_previous and req.page > 0)
    if req.after is not None:
        rows = conn.execute(stmt.where(_beyond(cols, req.after, after=True)).order_by(*cols).limit(n + 1)).all()
        return Page(rows[:n], len(rows) > n, req.page > 0)
    rows = conn.execute(stmt.order_by(*cols).offset(req.page * n).limit(n + 1)).all()
    return Page(rows[:n], len(rows) > n, req.page > 0)


@dataclass(frozen=True)
class Links:
    """The first, previous, current and next page links of one page of a list."""

    first: str
    previous: str | None
    current: str
    next: str | None


def page_links(url: str, cursors: Cursors, req: PageRequest, page: Page,
               row_id: Any = lambda r: r.id) -> Links:
    """Links for a page at `url` (absolute for Chat v2, a path for the 2010 API)."""

    def link(page_no: int, token: str | None) -> str:
        params: dict[str, Any] = {"PageSize": req.page_size, "Page": page_no}
        if token:
            params["PageToken"] = token
        return f"{url}?{urlencode(params)}"

    next_url = prev_url = None
    if page.has_next and page.rows:
        next_url = link(req.page + 1, cursors.encode("n", row_id(page.rows[-1])))
    if page.has_previous and page.rows and req.page > 0:
        prev_url = link(req.page - 1, cursors.encode("p", row_id(page.rows[0])))
    return Links(link(0, None), prev_url, link(req.page, req.token), next_url)


def page_meta(url: str, key: str, cursors: Cursors, req: PageRequest, page: Page,
              row_id: Any = lambda r: r.id) -> dict[str, Any]:
    """The Chat v2 `meta` block, with absolute URLs; next_page_url is null on the last page."""
    links = page_links(url, cursors, req, page, row_id)
    return {
        "page": req.page,
        "page_size": req.page_size,
        "first_page_url": links.first,
        "previous_page_url": links.previous,
        "url": links.current,
        "next_page_url": links.next,
        "key": key,
    }
