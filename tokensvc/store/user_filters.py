"""The Users list of a service, filtered (SPEC §3, §11): `list_users(conn, *, service_sid, req,
filters)`, one keyset page, each filter one index range (migration 0010). Re-exported by
store/users.py, where callers find it with the rest of the users' store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ..paging import IDENTITY, ROW_ID, UPDATED, Key, Order, Page, PageRequest, fetch_page
from .tables import users


@dataclass(frozen=True)
class UserFilters:
    """The Users list filters of SPEC §11, parsed (usecases.users.user_filters parses them from
    text); every one given must hold (AND), `identities` matching any of its values.

    The order of the list follows from them (`order`, the kind of its PageTokens): with
    `updated_after`, (date_updated, sid); else with `identity_prefix`, the identity in code
    point order (byte order of UTF-8: one index range over the prefix); else creation order.
    Each is one range of an index; a combination scans the range of the one that sets the order
    and checks the others on its rows."""

    identities: tuple[str, ...] = ()  # exact identities; empty: no such filter
    identity_prefix: str | None = None  # literal (no wildcards), case-sensitive, not empty
    role_sid: str | None = None
    updated_after: int | None = None  # epoch seconds: users with date_updated > this

    def __bool__(self) -> bool:
        return bool(self.identities) or any(
            v is not None for v in (self.identity_prefix, self.role_sid, self.updated_after))

    @property
    def may_scan(self) -> bool:
        """Whether a page may read rows it does not return: two range filters together, the
        order's range checked row by row against the other (a prefix of many users and a role
        of few). Identities are a few lookups whatever else is given."""
        return not self.identities and sum(
            v is not None for v in (self.identity_prefix, self.role_sid, self.updated_after)) > 1

    @property
    def order(self) -> str:
        """paging.UPDATED, IDENTITY or ROW_ID: what this list is ordered and paged by."""
        if self.updated_after is not None:
            return UPDATED
        return IDENTITY if self.identity_prefix is not None else ROW_ID


NO_FILTERS = UserFilters()
_ORDER: dict[str, Order] = {ROW_ID: users.c.id, IDENTITY: users.c.identity,
                             UPDATED: (users.c.date_updated, users.c.sid)}


def page_key(row: Any, order: str) -> Key:
    """Where a page ending (or starting) at this user row continues, in the list's `order`."""
    if order == UPDATED:
        return (row.date_updated, row.sid)
    return row.identity if order == IDENTITY else row.id


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code point order (the
    order of UTF-8 bytes, SQLite's BINARY and PostgreSQL's "C" collation): the prefix with its
    last character incremented (a surrogate skipped, U+10FFFF carried), None when there is none
    (a prefix of U+10FFFF only). Then `prefix <= s < end` is exactly `s.startswith(prefix)`."""
    chars = list(prefix)
    while chars:
        following = ord(chars.pop()) + 1
        if 0xD800 <= following <= 0xDFFF:
            following = 0xE000  # no text holds a surrogate: nothing sorts between
        if following <= 0x10FFFF:
            return "".join(chars) + chr(following)
    return None


def list_users(conn: Connection, *, service_sid: str, req: PageRequest, filters: UserFilters = NO_FILTERS) -> Page:
    """One keyset page of a service's users, filtered (SPEC §11); its order is `filters.order`,
    and `req`'s cursor must be of that kind (paging.Cursors(kind=filters.order))."""
    f = filters
    stmt = select(users).where(users.c.service_sid == service_sid)
    if f.identities:
        stmt = stmt.where(users.c.identity.in_(sorted(set(f.identities))))
    if f.role_sid is not None:
        stmt = stmt.where(users.c.role_sid == f.role_sid)
    # SQLite takes the first of two bounds on one column as the index range: a filter's bound is
    # left out where the page's cursor is tighter (fetch_page adds the cursor's).
    order = f.order
    if f.identity_prefix is not None:
        end = prefix_end(f.identity_prefix)
        if order != IDENTITY or not (isinstance(req.after, str) and req.after >= f.identity_prefix):
            stmt = stmt.where(users.c.identity >= f.identity_prefix)
        if end is not None and (order != IDENTITY or not (isinstance(req.before, str) and req.before <= end)):
            stmt = stmt.where(users.c.identity < end)
    if f.updated_after is not None and not (isinstance(req.after, tuple) and req.after[0] > f.updated_after):
        stmt = stmt.where(users.c.date_updated > f.updated_after)
    return fetch_page(conn, stmt, _ORDER[order], req)
