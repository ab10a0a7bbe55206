"""store/push.py under concurrency (both databases): one binding per key, and users.notifiable
always equal to whether a binding exists once racing registrations and deletions commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select

from conftest import Api, race
from tokensvc import errors
from tokensvc.store import push
from tokensvc.store.push_tables import bindings
from tokensvc.store.tables import users


def _setup(api: Api, service: dict, identity: str) -> tuple[Any, str]:
    ctx = api.app.state.ctx
    assert api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": identity}).status_code == 201
    cred = ctx.db.call(lambda conn: push.create_credential(conn, account_sid=api.account_sid, type="fcm",
                                                           friendly_name=None, sandbox=None, secrets={}, box=ctx.box))
    return ctx, cred["sid"]


def _register(api: Api, ctx: Any, service: dict, identity: str, cred: str, endpoint: str) -> Any:
    return ctx.db.call(lambda conn: push.register_binding(
        conn, account_sid=api.account_sid, service_sid=service["sid"], user_key=identity, binding_type="fcm",
        address="addr", credential_sid=cred, endpoint=endpoint, box=ctx.box))


def _state(ctx: Any, service: dict, identity: str) -> tuple[Any, bool]:
    """(users.notifiable, whether a binding exists) of the user."""
    def read(conn: Any) -> tuple[Any, bool]:
        row = conn.execute(select(users.c.notifiable, exists().where(bindings.c.user_sid == users.c.sid))
                           .where(users.c.service_sid == service["sid"], users.c.identity == identity)).one()
        return row[0], bool(row[1])
    return ctx.db.call(read)


def test_concurrent_registrations_of_one_key_make_one_binding(api: Api, service: dict) -> None:
    ctx, cred = _setup(api, service, "crowd")
    results = race(12, lambda: _register(api, ctx, service, "crowd", cred, "same-device"))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({binding["sid"] for binding, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert _state(ctx, service, "crowd") == (True, True)


def _race_each(*jobs: Any) -> list[Any]:
    """Run the jobs at once (one thread each); their results or exceptions."""
    pending = list(jobs)
    return race(len(pending), lambda: pending.pop()())


def _register_while_deleting(api: Api, ctx: Any, service: dict, cred: str, round_: int) -> None:
    old, _ = _register(api, ctx, service, "racer", cred, f"old-{round_}")
    results = _race_each(lambda: _register(api, ctx, service, "racer", cred, f"new-{round_}"),
                         lambda: ctx.db.call(lambda conn: push.delete_binding(conn, service_sid=service["sid"],
                                                                              sid=old["sid"])))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert _state(ctx, service, "racer") == (True, True)
    # Now delete everything concurrently: the flag must end false.
    sids = ctx.db.call(lambda conn: [r.sid for r in push.list_bindings(conn, service_sid=service["sid"],
                                                                       req=_first_page()).rows])
    results = _race_each(*(lambda sid=sid: ctx.db.call(lambda conn: push.delete_binding(
        conn, service_sid=service["sid"], sid=sid)) for sid in sids))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert _state(ctx, service, "racer") == (False, False)


def test_notifiable_follows_racing_registrations_and_deletions(api: Api, service: dict) -> None:
    ctx, cred = _setup(api, service, "racer")
    for round_ in range(4):
        _register_while_deleting(api, ctx, service, cred, round_)


def _register_while_deleting_credential(api: Api, service: dict, identity: str) -> None:
    ctx, cred = _setup(api, service, identity)
    results = _race_each(lambda: _register(api, ctx, service, identity, cred, "device"),
                         lambda: ctx.db.call(lambda conn: push.delete_credential(conn, account_sid=api.account_sid,
                                                                                 sid=cred)))
    errs = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(e, errors.TwilioError) and e.code == 52002 for e in errs), results
    notifiable, left = _state(ctx, service, identity)
    assert not left
    assert notifiable in (None, False)  # never true without a binding


def test_a_registration_racing_its_credentials_deletion_leaves_no_stale_flag(api: Api, service: dict) -> None:
    for round_ in range(4):
        _register_while_deleting_credential(api, service, f"late-{round_}")


def _first_page() -> Any:
    from tokensvc.paging import PageRequest
    return PageRequest(100, 0, None)
