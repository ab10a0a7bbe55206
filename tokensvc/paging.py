"""Keyset paging of every list (SPEC §3): PageSize / Page / PageToken and the `meta` block.

The PageToken is an opaque cursor naming the row id a page starts after (or ends before), so a
page a million rows deep costs what the first one does. OFFSET is used only for a bare `Page=N`
without a token, and only while it stays shallow.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

from sqlalchemy import Column, Connection, Select

from .errors import TwilioError, invalid_page_token, invalid_param
from .validation import integer

MAX_OFFSET_ROWS = 10_000
# The largest id an Integer primary key can hold on PostgreSQL: a cursor beyond it was not made
# by us, and comparing the column with it would fail in the database ("integer out of range").
MAX_ROW_ID = 2**31 - 1


@dataclass(frozen=True)
class PageRequest:
    page_size: int
    page: int
    token: str | None
    after: int | None = None  # rows with id > after
    before: int | None = None  # rows with id < before (a previous page)


def encode_token(direction: str, row_id: int) -> str:
    return "PT" + base64.urlsafe_b64encode(f"{direction}{row_id}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, int]:
    if not token.startswith("PT") or len(token) > 64:
        raise invalid_page_token()
    body = token[2:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_page_token() from None
    if len(raw) < 2 or raw[0] not in "np" or not raw[1:].isdigit() or int(raw[1:]) > MAX_ROW_ID:
        raise invalid_page_token()
    return raw[0], int(raw[1:])


def parse_page_request(query: Mapping[str, str], *, max_size: int = 100, default_size: int = 50) -> PageRequest:
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
            raise TwilioError(400, 20001, "Page is too deep without a PageToken: follow next_page_url")
        return PageRequest(size, page, None)
    direction, row_id = _decode_token(token)
    if direction == "n":
        return PageRequest(size, page, token, after=row_id)
    return PageRequest(size, page, token, before=row_id)


@dataclass
class Page:
    rows: Sequence[Any]
    has_next: bool
    has_previous: bool


def fetch_page(conn: Connection, stmt: Select, id_col: Column, req: PageRequest) -> Page:
    """Run a filtered SELECT as one keyset page in creation order."""
    n = req.page_size
    if req.before is not None:
        rows = conn.execute(stmt.where(id_col < req.before).order_by(id_col.desc()).limit(n + 1)).all()
        has_previous = len(rows) > n
        return Page(list(reversed(rows[:n])), True, has_previous and req.page > 0)
    if req.after is not None:
        rows = conn.execute(stmt.where(id_col > req.after).order_by(id_col).limit(n + 1)).all()
        return Page(rows[:n], len(rows) > n, req.page > 0)
    rows = conn.execute(stmt.order_by(id_col).offset(req.page * n).limit(n + 1)).all()
    return Page(rows[:n], len(rows) > n, req.page > 0)


def page_meta(url: str, key: str, req: PageRequest, page: Page, row_id: Any = lambda r: r.id) -> dict[str, Any]:
    """The `meta` block, with absolute URLs; next_page_url is null on the last page."""

    def link(page_no: int, token: str | None) -> str:
        params: dict[str, Any] = {"PageSize": req.page_size, "Page": page_no}
        if token:
            params["PageToken"] = token
        return f"{url}?{urlencode(params)}"

    next_url = prev_url = None
    if page.has_next and page.rows:
        next_url = link(req.page + 1, encode_token("n", row_id(page.rows[-1])))
    if page.has_previous and page.rows and req.page > 0:
        prev_url = link(req.page - 1, encode_token("p", row_id(page.rows[0])))
    return {
        "page": req.page,
        "page_size": req.page_size,
        "first_page_url": link(0, None),
        "previous_page_url": prev_url,
        "url": link(req.page, req.token),
        "next_page_url": next_url,
        "key": key,
    }
