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

from collections.abc import Mapping
from typing import Any

from .. import errors
from ..context import Context
from ..store import outbox
from ..store.outbox import API, Origin
from ..store.roles import check_role
from ..store.users import Unset, find_by_identity
from ..store.users import create_user as store_create_user
from ..store.users import update_user as store_update_user
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


async def import_user(c: Context, *, origin: Origin = API, account_sid: str, service_sid: str, identity: str,
                      friendly_name: str | None = None, attributes: str | None = None, role_sid: str | None = None,
                      dry_run: bool = False) -> tuple[tuple[Mapping[str, Any] | None, str], list[Event]]:
    """((user, outcome), events): outcome is created, updated or unchanged; `None` for the user of
    a dry run's new identity. Values are validated by the caller as the API validates them; the
    role is checked here (50102). None means not given."""
    svc = await c.auth.service(service_sid)  # cached briefly, as on the token endpoint
    if svc is None or svc["account_sid"] != account_sid:
        raise errors.not_found()
    given = {name: value for name, value in zip(FIELDS, (friendly_name, attributes, role_sid), strict=True)
             if value is not None}
    ask = pre_user_add(c, svc, identity, Origin(origin.source, origin.client_identity), given)
    hooked = given
    if ask is not None or dry_run:
        found = await c.db.read(lambda conn: find_by_identity(conn, service_sid=service_sid, identity=identity))
        if dry_run:
            return await _dry_run(c, svc, found, given)
        if found is None and ask is not None:
            hooked = {**given, **await ask()}  # the hook's fields, validated as the caller's are

    def write(conn: Any) -> tuple[Mapping[str, Any], str]:
        current = find_by_identity(conn, service_sid=service_sid, identity=identity)
        if current is None:
            try:
                return store_create_user(conn, service=svc, identity=identity, role_sid=hooked.get("role_sid"),
                                         attributes=hooked.get("attributes"),
                                         friendly_name=hooked.get("friendly_name"),
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

    user, outcome = await c.db.write(write)
    events: list[Event] = ([UserAdded(user, first_encounter=False)] if outcome == CREATED else
                           [UserUpdated(user)] if outcome == UPDATED else [])
    return (user, outcome), events


async def _dry_run(c: Context, svc: Mapping[str, Any], found: Mapping[str, Any] | None,
                   given: Mapping[str, Any]) -> tuple[tuple[Mapping[str, Any] | None, str], list[Event]]:
    """The outcome import_user would have, its role checked, nothing written."""
    changed = given if found is None else changes_of(found, given)
    if found is not None and not changed:
        return (found, UNCHANGED), []
    role_sid = changed.get("role_sid")
    if role_sid is not None:
        await c.db.read(lambda conn: check_role(conn, service_sid=svc["sid"], role_sid=role_sid, type="deployment",
                                                param="RoleSid"))
    return (found, CREATED if found is None else UPDATED), []
