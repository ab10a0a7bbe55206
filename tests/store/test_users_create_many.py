"""store.users.create_many, the import's bulk create, makes what create_user makes: the same
columns, defaults and outbox event, row for row; and it refuses the lot when one cannot be made."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from tokensvc import errors
from tokensvc.db import Database
from tokensvc.store import users as store_users
from tokensvc.store.accounts import create_account
from tokensvc.store.outbox import API, Origin
from tokensvc.store.outbox_tables import outbox
from tokensvc.store.services import create_service, delete_service
from tokensvc.store.tables import roles, services, users
from tokensvc.store.users import create_many, create_user, get_many
from tokensvc.webhooks.params import render


def _service(db: Database) -> dict[str, Any]:
    acc = db.call(lambda conn: create_account(conn))
    svc = db.call(lambda conn: dict(create_service(conn, account_sid=acc.sid, friendly_name="s")))
    db.call(lambda conn: conn.execute(services.update().where(services.c.sid == svc["sid"]).values(
        post_webhook_url="https://hooks.example/post", webhook_filters='["onUserAdded"]')))
    return {**svc, "post_webhook_url": "https://hooks.example/post", "webhook_filters": '["onUserAdded"]'}


def _role(db: Database, svc: dict[str, Any], name: str) -> str:
    return db.call(lambda conn: conn.execute(select(roles.c.sid).where(
        roles.c.service_sid == svc["sid"], roles.c.friendly_name == name)).scalar_one())


def _events(db: Database, sid: str) -> list[dict[str, str]]:
    rows = db.call(lambda conn: [dict(r._mapping) for r in conn.execute(
        select(outbox).where(outbox.c.resource_sid == sid))])
    return [render(row, 0) for row in rows]


def _count(db: Database, service_sid: str) -> int:
    return db.call(lambda conn: conn.execute(select(func.count()).select_from(users)
                                             .where(users.c.service_sid == service_sid)).scalar())


@pytest.mark.parametrize("fields", [{}, {"friendly_name": "Ann", "attributes": '{"a":1}', "role": "service admin"}])
def test_create_many_makes_what_create_user_makes(db: Database, monkeypatch: pytest.MonkeyPatch,
                                                  fields: dict[str, Any]) -> None:
    monkeypatch.setattr(store_users, "now", lambda: 1_700_000_000)  # both in the same second
    svc = _service(db)
    given = {k: v for k, v in fields.items() if k != "role"}
    if "role" in fields:
        given["role_sid"] = _role(db, svc, fields["role"])
    origin = Origin(API.source, API.client_identity)
    one = db.call(lambda conn: dict(create_user(conn, service=svc, identity="one", origin=origin, **given)))
    many = db.call(lambda conn: create_many(conn, service=svc, new=[("two", given), ("three", {})], origin=origin))
    two = many[0]
    stored = db.call(lambda conn: get_many(conn, svc["sid"], ["one", "two", "three"]))
    assert {k: dict(v) for k, v in stored.items()} == {"one": one, "two": two, "three": many[1]}  # as returned
    assert list(two) == list(one)  # the same columns, in the same order (the outbox's JSON too)
    differ = {"id", "sid", "identity"}
    assert {k: v for k, v in two.items() if k not in differ} == {k: v for k, v in one.items() if k not in differ}
    assert two["role_sid"] == given.get("role_sid", svc["default_service_role_sid"])
    assert many[1]["role_sid"] == svc["default_service_role_sid"] and many[1]["friendly_name"] is None
    assert two["id"] < many[1]["id"]  # created in the order given
    params_one, params_two = _events(db, one["sid"]), _events(db, two["sid"])
    assert len(params_one) == len(params_two) == 1 and params_one[0]["EventType"] == "onUserAdded"
    assert params_two[0]["UserSid"] == two["sid"] and params_two[0]["Identity"] == "two"
    keep = {"UserSid", "Identity"}
    assert ({k: v for k, v in params_two[0].items() if k not in keep}
            == {k: v for k, v in params_one[0].items() if k not in keep})
    assert len(_events(db, many[1]["sid"])) == 1


def test_create_many_refuses_the_lot_when_one_cannot_be_made(db: Database) -> None:
    svc = _service(db)
    db.call(lambda conn: create_user(conn, service=svc, identity="taken"))
    with pytest.raises(errors.TwilioError) as taken:
        db.call(lambda conn: create_many(conn, service=svc, new=[("fresh", {}), ("taken", {})]))
    assert taken.value.code == 50201
    with pytest.raises(errors.TwilioError) as role:
        db.call(lambda conn: create_many(conn, service=svc, new=[("fresh", {}), ("x", {"role_sid": "RL" + "0" * 32})]))
    assert role.value.code == 50102
    channel_role = _role(db, svc, "channel user")  # a role of the wrong type
    with pytest.raises(errors.TwilioError) as wrong:
        db.call(lambda conn: create_many(conn, service=svc, new=[("x", {"role_sid": channel_role})]))
    assert wrong.value.code == 50102
    assert _count(db, svc["sid"]) == 1  # nothing of the refused lots was written
    db.call(lambda conn: delete_service(conn, account_sid=svc["account_sid"], sid=svc["sid"]))
    with pytest.raises(errors.TwilioError) as gone:
        db.call(lambda conn: create_many(conn, service=svc, new=[("orphan", {})]))
    assert (gone.value.status, gone.value.code) == (404, 20404)
