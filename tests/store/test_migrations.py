"""Alembic migrations (issue 5): they build exactly the models' schema, from nothing and from the
previous revision with data in it, on SQLite and on PostgreSQL; `tokensvc serve` upgrades SQLite
by itself and refuses an out-of-date PostgreSQL schema unless `--migrate`.

Every test here gets its own empty database (tests/fresh_db.py): the session's shared one is
always at head.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, Index, MetaData, inspect, text
from starlette.testclient import TestClient

from conftest import start_server
from fresh_db import KINDS, fresh_database, needs_postgres
from tokensvc.app import create_app
from tokensvc.config import Settings
from tokensvc.crypto import SecretBox, hash_secret
from tokensvc.db import make_engine
from tokensvc.sids import new_sid
from tokensvc.store.schema import downgrade, head_revision, upgrade
from tokensvc.store.tables import metadata

PREVIOUS = "0001"  # the revision before head, which the data-carrying upgrade starts from


@pytest.fixture(params=KINDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def engine_for(url: str) -> Engine:
    return make_engine(Settings(database_url=url))


def differences(engine: Engine, target: MetaData = metadata) -> list[Any]:
    """What alembic autogenerate would change to turn the database into `target`."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, target)


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def cli(url: str, *args: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TOKENSVC_DATABASE_URL=url, TOKENSVC_KEYS_DIR=str(tmp_path / "keys"))
    return subprocess.run([sys.executable, "-m", "tokensvc.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_migrations_build_exactly_the_models_schema(empty_url: str) -> None:
    engine = engine_for(empty_url)
    try:
        upgrade(engine)
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_schema_comparison_notices_a_model_change(empty_url: str) -> None:
    # Guards the test above against comparing nothing: an index only the models have shows up.
    engine = engine_for(empty_url)
    try:
        upgrade(engine)
        changed = MetaData()
        for table in metadata.sorted_tables:
            table.to_metadata(changed)
        Index("ix_users_friendly_name", changed.tables["users"].c.friendly_name)
        diffs = differences(engine, changed)
        assert [d[0] for d in diffs] == ["add_index"], diffs
        assert diffs[0][1].name == "ix_users_friendly_name"
    finally:
        engine.dispose()


def test_db_upgrade_on_an_empty_database_reaches_head(empty_url: str, tmp_path: Path) -> None:
    before = cli(empty_url, "db", "current", tmp_path=tmp_path)
    assert before.returncode == 0, before.stderr
    assert "current: (empty)" in before.stdout

    done = cli(empty_url, "db", "upgrade", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    head = head_revision()
    assert f"current: {head}" in done.stdout and f"head:    {head}" in done.stdout

    engine = engine_for(empty_url)
    try:
        assert revision_of(engine) == head
        tables = set(inspect(engine).get_table_names())
        assert {"accounts", "api_keys", "services", "roles", "users", "connections", "alembic_version"} <= tables
        again = cli(empty_url, "db", "upgrade", tmp_path=tmp_path)  # idempotent
        assert again.returncode == 0, again.stderr
        assert revision_of(engine) == head
    finally:
        engine.dispose()


def _fill_previous_revision(engine: Engine, keys_dir: Path) -> dict[str, Any]:
    """Rows written with the previous revision's columns, as a deployment of it would have."""
    ts = 1_700_000_000
    d = {
        "account": new_sid("AC"), "auth_token": "t" * 43, "key": new_sid("SK"), "key_secret": "s" * 43,
        "service": new_sid("IS"), "role_user": new_sid("RL"), "role_admin": new_sid("RL"),
        "users": [new_sid("US") for _ in range(3)], "connection": new_sid("CN"),
    }
    box = SecretBox.load_or_create(keys_dir)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO accounts (sid, friendly_name, auth_token_hash, date_created, date_updated) "
            "VALUES (:sid, 'old account', :hash, :ts, :ts)"),
            {"sid": d["account"], "hash": hash_secret(d["auth_token"]), "ts": ts})
        conn.execute(text(
            "INSERT INTO api_keys (sid, account_sid, friendly_name, secret_hash, secret_enc, date_created, "
            "date_updated) "
            "VALUES (:sid, :acc, 'old key', :hash, :enc, :ts, :ts)"),
            {"sid": d["key"], "acc": d["account"], "hash": hash_secret(d["key_secret"]),
             "enc": box.encrypt(d["key_secret"], d["key"]), "ts": ts})
        conn.execute(text(
            "INSERT INTO services (sid, account_sid, friendly_name, default_service_role_sid, read_status_enabled, "
            "reachability_enabled, typing_indicator_timeout, consumption_report_interval, webhook_method, "
            "pre_webhook_retry_count, post_webhook_retry_count, webhook_filters, limits, notifications, media, "
            "date_created, date_updated) VALUES (:sid, :acc, 'old service', NULL, :t, :f, 5, 10, 'POST', 0, 0, "
            "'[]', :limits, :notes, :media, :ts, :ts)"),
            {"sid": d["service"], "acc": d["account"], "t": True, "f": False,
             "limits": '{"channel_members": 100, "user_channels": 250}', "ts": ts,
             "notes": '{"log_enabled": false}', "media": '{"size_limit_mb": 150, "compatibility_message": null}'})
        for sid, name, perms in ((d["role_user"], "service user", '["editOwnUserInfo"]'),
                                 (d["role_admin"], "service admin", '["editAnyUserInfo"]')):
            conn.execute(text(
                "INSERT INTO roles (sid, account_sid, service_sid, friendly_name, type, permissions, date_created, "
                "date_updated) VALUES (:sid, :acc, :svc, :name, 'deployment', :perms, :ts, :ts)"),
                {"sid": sid, "acc": d["account"], "svc": d["service"], "name": name, "perms": perms, "ts": ts})
        # Its default role once the role exists (as create_service does): from 0003 on the
        # database refuses a default role that does not exist.
        conn.execute(text("UPDATE services SET default_service_role_sid = :role WHERE sid = :svc"),
                     {"role": d["role_user"], "svc": d["service"]})
        for i, sid in enumerate(d["users"]):
            conn.execute(text(
                "INSERT INTO users (sid, account_sid, service_sid, role_sid, identity, attributes, friendly_name, "
                "joined_channels_count, was_online, date_created, date_updated) VALUES (:sid, :acc, :svc, :role, "
                ":identity, :attrs, :name, 0, :online, :ts, :ts)"),
                {"sid": sid, "acc": d["account"], "svc": d["service"], "identity": f"old-user-{i}@example.com",
                 "role": d["role_admin"] if i == 0 else d["role_user"], "attrs": f'{{"n": {i}}}',
                 "name": f"Old User {i}", "online": i == 0, "ts": ts + i})
        conn.execute(text(
            "INSERT INTO connections (id, user_sid, service_sid, node, heartbeat_at, date_created) "
            "VALUES (:id, :user, :svc, 'old-node', :ts, :ts)"),
            {"id": d["connection"], "user": d["users"][0], "svc": d["service"], "ts": ts})
    return d


def test_upgrade_from_previous_revision_keeps_the_data(empty_url: str, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    engine = engine_for(empty_url)
    try:
        upgrade(engine, PREVIOUS)
        assert revision_of(engine) == PREVIOUS
        assert "ix_users_role_sid" not in {i["name"] for i in inspect(engine).get_indexes("users")}
        d = _fill_previous_revision(engine, keys_dir)

        upgrade(engine)
        assert revision_of(engine) == head_revision()
        assert differences(engine) == []
        # 0002's index on role_sid, widened to (role_sid, id) by 0010 (the RoleSid list filter)
        assert "ix_users_role_id" in {i["name"] for i in inspect(engine).get_indexes("users")}
        with engine.connect() as conn:
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t} WHERE {col} = :acc"),
                                      {"acc": d["account"]}).scalar()
                      for t, col in (("accounts", "sid"), ("api_keys", "account_sid"), ("services", "account_sid"),
                                     ("roles", "account_sid"), ("users", "account_sid"))}
            assert counts == {"accounts": 1, "api_keys": 1, "services": 1, "roles": 2, "users": 3}
            assert conn.execute(text("SELECT user_sid FROM connections WHERE id = :id"),
                                {"id": d["connection"]}).scalar() == d["users"][0]
    finally:
        engine.dispose()

    # The upgraded data serves as before: credentials, users in order, get-or-create, role rules.
    app = create_app(Settings(database_url=empty_url, keys_dir=keys_dir), migrate=False)
    auth = (d["account"], d["auth_token"])
    svc = d["service"]
    with TestClient(app, raise_server_exceptions=False) as client:
        listed = client.get(f"/v2/Services/{svc}/Users", auth=auth)
        assert listed.status_code == 200, listed.text
        assert [u["sid"] for u in listed.json()["users"]] == d["users"]
        fetched = client.get(f"/v2/Services/{svc}/Users/old-user-1@example.com", auth=(d["key"], d["key_secret"]))
        assert fetched.status_code == 200, fetched.text
        body = fetched.json()
        assert (body["sid"], body["attributes"], body["friendly_name"]) == (d["users"][1], '{"n": 1}', "Old User 1")
        assert body["date_created"] == "2023-11-14T22:13:21Z"
        token = client.post(f"/v2/Services/{svc}/Tokens", data={"Identity": "old-user-2@example.com"}, auth=auth)
        assert token.status_code == 201, token.text
        assert (token.json()["user_sid"], token.json()["user_created"]) == (d["users"][2], False)
        in_use = client.delete(f"/v2/Services/{svc}/Roles/{d['role_admin']}", auth=auth)
        assert in_use.status_code == 409 and in_use.json()["code"] == 50100, in_use.text
        assert client.delete(f"/v2/Services/{svc}/Users/{d['users'][0]}", auth=auth).status_code == 204
        assert client.delete(f"/v2/Services/{svc}/Roles/{d['role_admin']}", auth=auth).status_code == 204


def test_head_downgrades_to_previous_and_upgrades_again(empty_url: str, tmp_path: Path) -> None:
    engine = engine_for(empty_url)
    try:
        upgrade(engine)
        d = _fill_previous_revision(engine, tmp_path / "keys")
        downgrade(engine, PREVIOUS)
        assert revision_of(engine) == PREVIOUS
        assert "ix_users_role_sid" not in {i["name"] for i in inspect(engine).get_indexes("users")}
        upgrade(engine)
        assert differences(engine) == []
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM users WHERE service_sid = :s"),
                                 {"s": d["service"]}).scalar()
            assert count == 3
    finally:
        engine.dispose()


@needs_postgres
def test_serve_refuses_an_out_of_date_postgresql_schema(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        env = dict(os.environ, TOKENSVC_DATABASE_URL=url, TOKENSVC_KEYS_DIR=str(tmp_path / "keys"),
                   TOKENSVC_PORT="0")
        serve = [sys.executable, "-m", "tokensvc.cli", "serve"]

        empty = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=60)
        assert empty.returncode != 0
        assert "schema is at revision (empty)" in empty.stderr and "--migrate" in empty.stderr, empty.stderr
        assert "Traceback" not in empty.stderr

        engine = engine_for(url)
        try:
            upgrade(engine, PREVIOUS)
            old = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=60)
            assert old.returncode != 0
            assert (f"schema is at revision {PREVIOUS} but this tokensvc needs {head_revision()}"
                    in old.stderr), old.stderr
            assert "tokensvc db upgrade" in old.stderr and "Traceback" not in old.stderr
            assert revision_of(engine) == PREVIOUS  # refused without touching the schema

            server = start_server(tmp_path, database=url, args=("--migrate",), name="migrating")
            try:
                assert revision_of(engine) == head_revision()
                assert httpx.get(f"{server.base}/readyz", timeout=5).status_code == 200
                made = httpx.post(f"{server.base}/v2/Services", data={"FriendlyName": "after migrate"},
                                  auth=server.auth, timeout=5)
                assert made.status_code == 201, made.text
            finally:
                server.stop()
        finally:
            engine.dispose()


@needs_postgres
def test_serve_refuses_a_schema_newer_than_it_knows(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        engine = engine_for(url)
        try:
            upgrade(engine)
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        finally:
            engine.dispose()
        env = dict(os.environ, TOKENSVC_DATABASE_URL=url, TOKENSVC_KEYS_DIR=str(tmp_path / "keys"),
                   TOKENSVC_PORT="0")
        for args in ((), ("--migrate",)):
            run = subprocess.run([sys.executable, "-m", "tokensvc.cli", "serve", *args], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode != 0
            assert "revision 9999, which this tokensvc does not know" in run.stderr, run.stderr
            assert "Traceback" not in run.stderr


_UPGRADE_AT = """
import sys, time
from tokensvc.config import Settings
from tokensvc.db import make_engine
from tokensvc.store.schema import upgrade
engine = make_engine(Settings(database_url=sys.argv[1]))
engine.connect().close()
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(engine)
"""


@needs_postgres
def test_concurrent_upgrades_of_one_postgresql_database_take_turns(tmp_path: Path) -> None:
    # Several hosts starting with --migrate at once: one migrates, the others wait and find head.
    with fresh_database("postgresql", tmp_path) as url:
        at = str(time.time() + 3)  # every process connected and waiting by then
        procs = [subprocess.Popen([sys.executable, "-c", _UPGRADE_AT, url, at], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [(p.wait(60), p.communicate()[1][-2000:]) for p in procs]
        assert [rc for rc, _ in results] == [0] * len(procs), results
        engine = engine_for(url)
        try:
            assert revision_of(engine) == head_revision()
            assert differences(engine) == []
        finally:
            engine.dispose()


def test_serve_upgrades_an_old_sqlite_database_by_itself(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        engine = engine_for(url)
        try:
            upgrade(engine, PREVIOUS)
            d = _fill_previous_revision(engine, tmp_path / "keys")
            server = start_server(tmp_path, database=url, account=(d["account"], d["auth_token"]))
            try:
                assert revision_of(engine) == head_revision()
                r = httpx.get(f"{server.base}/v2/Services/{d['service']}/Users/{d['users'][1]}", auth=server.auth,
                              timeout=5)
                assert r.status_code == 200 and r.json()["identity"] == "old-user-1@example.com", r.text
            finally:
                server.stop()
        finally:
            engine.dispose()
