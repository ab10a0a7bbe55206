"""Importing a user (the CLI's `users import`, one call per line): get-or-create by identity with
the given fields.

- A new identity is created as POST /Users creates one: the service's onUserAdd hook is asked
  first (it may refuse, 403 50056 / 504 50076, or set fields, as for any first encounter), and
  onUserAdded is posted whatever the origin says (provisioning always posts, SPEC §10).
- An existing identity gets the given fields that differ from its own (a field not given is left
  as it is), with onUserUpdated when the origin posts; nothing differs: unchanged, no write.
- `dry_run` decides the outcome the same way and writes nothing (the hook is not asked).

Concurrent calls for one identity settle in the database as the token endpoint's do: the unique
constraint picks one creator, the others find its user and update it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..context import Context
from ..db import savepoint
from ..store import outbox
from ..store.outbox import API, Origin
from ..store.roles import check_role
from ..store.users import Unset, find_by_identity, get_many
from ..store.users import create_many as store_create_many
from ..store.users import create_user as store_create_user
from ..store.users import update_user as store_update_user
from .channels import transaction
from .events import Event, UserAdded, UserUpdated
from .users import pre_user_add

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
FIELDS = ("friendly_name", "attributes", "role_sid")


def changes_of(user: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The given fields whose value differs from the user's (attributes never set read as "{}",
    as the API renders them)."""
    changed: dict[str, Any] = {}
    for name, value in given.items():
        current = user[name]
        if name == "attributes" and current is None:
            current = "{}"
        if value != current:
            changed[name] = value
    return changed


@dataclass(frozen=True)
class Line:
    """One line of an import: the identity and the fields given (None: not given)."""

    identity: str
    friendly_name: str | None = None
    attributes: str | None = None
    role_sid: str | None = None

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in zip(FIELDS, (self.friendly_name, self.attributes, self.role_sid),
                                                   strict=True) if value is not None}


Outcome = tuple[Mapping[str, Any] | None, str]


_UNREAD: Any = object()


def _get_or_create(conn: Any, *, svc: Mapping[str, Any], origin: Origin, identity: str, given: Mapping[str, Any],
                   hooked: Mapping[str, Any], current: Mapping[str, Any] | None = _UNREAD) -> Outcome:
    """The one rule of an import, in the caller's transaction: create the identity with `hooked`
    (the given fields, plus what an onUserAdd hook set), or give its user the `given` fields
    that differ (onUserUpdated when the origin posts). `current`: the user as this transaction
    has just read it, when the caller has."""
    service_sid = svc["sid"]
    if current is _UNREAD:
        current = find_by_identity(conn, service_sid=service_sid, identity=identity)
    if current is None:
        try:
            return store_create_user(conn, service=svc, identity=identity, role_sid=hooked.get("role_sid"),
                                     attributes=hooked.get("attributes"), friendly_name=hooked.get("friendly_name"),
                                     origin=Origin(origin.source, origin.client_identity)), CREATED
        except errors.TwilioError as exc:
            if exc.code != errors.identity_taken().code:
                raise
        current = find_by_identity(conn, service_sid=service_sid, identity=identity)  # a concurrent creator's
        if current is None:
            raise errors.created_and_deleted()
    changed = changes_of(current, given)
    if not changed:
        return current, UNCHANGED
    user = store_update_user(conn, service_sid=service_sid, key=current["sid"],
                             **{name: changed.get(name, Unset) for name in FIELDS})
    outbox.record(conn, svc, "onUserUpdated", [user], origin)
    return user, UPDATED


def _events(outcome: Outcome) -> list[Event]:
    user, kind = outcome
    return ([UserAdded(user, first_encounter=False)] if kind == CREATED and user is not None else
            [UserUpdated(user)] if kind == UPDATED and user is not None else [])


async def _service(c: Context, account_sid: str, service_sid: str) -> Mapping[str, Any]:
    svc = await c.auth.service(service_sid)  # cached briefly, as on the token endpoint
    if svc is None or svc["account_sid"] != account_sid:
        raise errors.not_found()
    return svc


async def import_user(c: Context, *, origin: Origin = API, account_sid: str, service_sid: str, identity: str,
                      friendly_name: str | None = None, attributes: str | None = None, role_sid: str | None = None,
                      dry_run: bool = False) -> tuple[Outcome, list[Event]]:
    """((user, outcome), events): outcome is created, updated or unchanged; `None` for the user of
    a dry run's new identity. Values are validated by the caller as the API validates them; the
    role is checked here (50102). None means not given."""
    svc = await _service(c, account_sid, service_sid)
    given = Line(identity, friendly_name, attributes, role_sid).given()
    ask = pre_user_add(c, svc, identity, Origin(origin.source, origin.client_identity), given)
    hooked = given
    if ask is not None or dry_run:
        found = await c.db.read(lambda conn: find_by_identity(conn, service_sid=service_sid, identity=identity))
        if dry_run:
            return await _dry_run(c, svc, found, given)
        if found is None and ask is not None:
            hooked = {**given, **await ask()}  # the hook's fields, validated as the caller's are
    outcome = await c.db.write(lambda conn: _get_or_create(conn, svc=svc, origin=origin, identity=identity,
                                                          given=given, hooked=hooked))
    return outcome, _events(outcome)


def batchable(c: Context, svc: Mapping[str, Any]) -> bool:
    """Whether import_lines may take lines together: no onUserAdd hook to ask about each one."""
    return pre_user_add(c, svc, "", API) is None


async def import_lines(c: Context, *, origin: Origin = API, account_sid: str, service_sid: str,
                       lines: Sequence[Line]) -> tuple[list[Outcome | errors.TwilioError], list[Event]]:
    """import_user for many lines of a service that has no onUserAdd hook (`batchable`), in one
    write transaction, each line's outcome (or its error) in its place. The same rule as one line
    at a time, cheaper: the lines' identities are read at once (the write transaction's read:
    SQLite's BEGIN IMMEDIATE holds the write lock), each new identity is created with the
    others by one store.users.create_many (what create_user makes, row for row), and every
    other line (an existing identity, a later line of a new one) goes through `_get_or_create`
    in a savepoint of its own, so a line that fails (50102, …) is rolled back alone. When
    create_many refuses (a deleted service, a lost race on PostgreSQL), the new lines go through
    `_get_or_create` one by one too. A failure of the transaction itself fails every line."""
    svc = await _service(c, account_sid, service_sid)
    if not batchable(c, svc):
        raise errors.TwilioError(500, 20500, "import_lines: the service has an onUserAdd hook")  # a caller's bug
    creator = Origin(origin.source, origin.client_identity)  # onUserAdded posts whatever the origin says

    def job(conn: Any) -> list[Outcome | errors.TwilioError]:
        outcomes: list[Outcome | errors.TwilioError | None] = [None] * len(lines)
        found = get_many(conn, service_sid, {line.identity for line in lines})
        roles: dict[str, errors.TwilioError | None] = {}
        new: list[int] = []  # the first line of each new identity whose role is good
        claimed: set[str] = set()
        rest: list[int] = []
        for i, line in enumerate(lines):
            if line.identity in found or line.identity in claimed:
                rest.append(i)
                continue
            if line.role_sid is not None:  # create_user's check, once per role
                if line.role_sid not in roles:
                    roles[line.role_sid] = _role_error(conn, service_sid, line.role_sid)
                refused = roles[line.role_sid]
                if refused is not None:
                    outcomes[i] = refused
                    continue
            claimed.add(line.identity)
            new.append(i)
        if new:
            try:
                with savepoint(conn):
                    made = store_create_many(conn, service=svc, origin=creator,
                                             new=[(lines[i].identity, lines[i].given()) for i in new])
            except errors.TwilioError:
                rest.extend(new)  # each decided alone below: 404, a concurrent creator's user, …
            else:
                for i, user in zip(new, made, strict=True):
                    outcomes[i] = (user, CREATED)
        # In identity order (two transactions lock shared users in the same order), each
        # identity's lines in file order; the first line of an identity read above uses that read.
        seen: set[str] = set()
        for i in sorted(rest, key=lambda i: (lines[i].identity, i)):
            line, given = lines[i], lines[i].given()
            known = found.get(line.identity) if line.identity not in seen else None
            seen.add(line.identity)
            try:
                with savepoint(conn):
                    outcomes[i] = _get_or_create(conn, svc=svc, origin=origin, identity=line.identity, given=given,
                                                 hooked=given, current=_UNREAD if known is None else known)
            except errors.TwilioError as exc:
                outcomes[i] = exc
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(lines), "every line has its outcome"
        return done

    outcomes = await transaction(c, job)
    events = [event for outcome in outcomes if not isinstance(outcome, errors.TwilioError)
              for event in _events(outcome)]
    return outcomes, events


def _role_error(conn: Any, service_sid: str, role_sid: str) -> errors.TwilioError | None:
    try:
        check_role(conn, service_sid=service_sid, role_sid=role_sid, type="deployment", param="RoleSid")
    except errors.TwilioError as exc:
        return exc
    return None


async def _dry_run(c: Context, svc: Mapping[str, Any], found: Mapping[str, Any] | None,
                   given: Mapping[str, Any]) -> tuple[Outcome, list[Event]]:
    """The outcome import_user would have, its role checked, nothing written."""
    changed = given if found is None else changes_of(found, given)
    if found is not None and not changed:
        return (found, UNCHANGED), []
    role_sid = changed.get("role_sid")
    if role_sid is not None:
        await c.db.read(lambda conn: check_role(conn, service_sid=svc["sid"], role_sid=role_sid, type="deployment",
                                                param="RoleSid"))
    return (found, CREATED if found is None else UPDATED), []
