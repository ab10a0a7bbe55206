"""No user holds a role that does not exist (migration 0003): a role deleted while a user is
created with it, a default role switched and deleted while another process still caches the old
one, a direct insert, and the rows such races left behind before 0003."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from conftest import Server, start_server
from fresh_db import KINDS, fresh_database, needs_postgres
from tokensvc.config import Settings
from tokensvc.db import make_engine
from tokensvc.sids import new_sid
from tokensvc.store.schema import head_revision, upgrade

DANGLING = "SELECT count(*) FROM users u WHERE NOT EXISTS (SELECT 1 FROM roles r WHERE r.sid = u.role_sid)"


def _engine(server: Server) -> Engine:
    return make_engine(Settings(database_url=server.env["TOKENSVC_DATABASE_URL"]))


def _role(client: httpx.Client, service: str, name: str) -> str:
    r = client.post(f"/v2/Services/{service}/Roles", data={"FriendlyName": name, "Type": "deployment",
                                                           "Permission": "joinChannel"})
    assert r.status_code == 201, r.text
    return r.json()["sid"]


@pytest.fixture
def srv(server: Server) -> Server:
    return server  # conftest's real `tokensvc serve`, stopped after the test


@needs_postgres
def test_creating_a_user_with_a_role_racing_its_delete_never_leaves_the_user_without_it(srv: Server) -> None:
    rounds, outcomes = 60, set()
    with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30) as client:
        service = client.post("/v2/Services", data={"FriendlyName": "race"}).json()["sid"]
    barrier = threading.Barrier(2, timeout=10)

    def create(role: str, identity: str) -> httpx.Response:
        with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30) as c:
            barrier.wait()
            return c.post(f"/v2/Services/{service}/Users", data={"Identity": identity, "RoleSid": role})

    def remove(role: str) -> httpx.Response:
        with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30) as c:
            barrier.wait()
            return c.delete(f"/v2/Services/{service}/Roles/{role}")

    deadline = time.monotonic() + 90
    with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30) as client, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(rounds):
            assert time.monotonic() < deadline, f"only {i} rounds in time"
            role = _role(client, service, f"r{i}")
            made = pool.submit(create, role, f"u{i}")
            gone = pool.submit(remove, role)
            made_r, gone_r = made.result(30), gone.result(30)
            if made_r.status_code == 201:
                # The user got the role: the delete must have been refused, the role kept.
                assert made_r.json()["role_sid"] == role
                assert gone_r.status_code == 409 and gone_r.json()["code"] == 50100, gone_r.text
                assert client.get(f"/v2/Services/{service}/Roles/{role}").status_code == 200
            else:
                assert made_r.status_code == 400 and made_r.json()["code"] == 50102, made_r.text
                assert gone_r.status_code == 204, gone_r.text
            outcomes.add((made_r.status_code, gone_r.status_code))
    engine = _engine(srv)
    try:
        with engine.connect() as conn:
            assert conn.execute(text(DANGLING)).scalar() == 0
    finally:
        engine.dispose()
    assert "Traceback" not in srv.logs()


def test_first_encounters_after_the_default_role_is_switched_and_deleted_get_the_new_one(tmp_path: Path) -> None:
    _switch_delete_then_first_encounters(start_server(tmp_path, args=("--workers", "2")))


def test_a_replica_caching_the_old_default_role_gives_first_encounters_the_new_one(tmp_path: Path) -> None:
    # Deterministic form of the test above: the switch goes to one process, the first
    # encounters to another that cached the service a moment before.
    a = start_server(tmp_path, name="a")
    try:
        b = start_server(tmp_path, database=a.env["TOKENSVC_DATABASE_URL"], keys_dir=Path(a.env["TOKENSVC_KEYS_DIR"]),
                         account=a.auth, name="b")
    except BaseException:
        a.stop()
        raise
    try:
        _switch_delete_then_first_encounters(a, b, rounds=1)
    finally:
        a.stop()


def _switch_delete_then_first_encounters(srv: Server, other: Server | None = None, rounds: int = 3) -> None:
    """Rounds of: default role `old`, every process caches the service, the default switched to
    `new` and `old` deleted (through srv), 50 first encounters (through other, else srv)."""
    wrong = 0
    target = other or srv
    try:
        with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30) as client, \
                concurrent.futures.ThreadPoolExecutor(10) as pool:
            service = client.post("/v2/Services", data={"FriendlyName": "switch"}).json()["sid"]
            for round in range(rounds):
                old, new = _role(client, service, f"old{round}"), _role(client, service, f"new{round}")
                assert client.post(f"/v2/Services/{service}", data={"DefaultServiceRoleSid": old}).status_code == 200
                time.sleep(1.2)  # every worker's cached copy of the service has expired
                # Each worker caches the service with `old` as its default: new connections,
                # spread over both workers, within a few milliseconds of the window's start.
                list(pool.map(lambda _: httpx.get(f"{target.base}/v2/Services/{service}/Users/nobody",
                                                  auth=srv.auth, timeout=10), range(20)))
                r = client.post(f"/v2/Services/{service}", data={"DefaultServiceRoleSid": new})
                assert r.status_code == 200 and r.json()["default_service_role_sid"] == new
                assert client.delete(f"/v2/Services/{service}/Roles/{old}").status_code == 204
                answers = list(pool.map(lambda i, round=round: httpx.post(
                    f"{target.base}/v2/Services/{service}/Tokens", data={"Identity": f"new-{round}-{i}"},
                    auth=srv.auth, timeout=30), range(50)))
                assert all(a.status_code == 201 and a.json()["user_created"] for a in answers), \
                    [a.text for a in answers]
                roles = [client.get(f"/v2/Services/{service}/Users/new-{round}-{i}").json()["role_sid"]
                         for i in range(50)]
                wrong += sum(role != new for role in roles)
        assert wrong == 0, f"{wrong} of {50 * rounds} first encounters got a deleted default role"
    finally:
        for s in (srv, other):
            if s is not None:
                s.stop()
    assert "Traceback" not in srv.logs() and (other is None or "Traceback" not in other.logs())


@pytest.fixture(params=KINDS)
def head_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        engine = make_engine(Settings(database_url=url))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield url


def _rows(conn: Any, *, user_role: str | None, default_role: str | None = None,
          ts: int = 1_700_000_000) -> dict[str, str]:
    d = {"account": new_sid("AC"), "service": new_sid("IS"), "role": new_sid("RL"), "user": new_sid("US")}
    conn.execute(text("INSERT INTO accounts (sid, friendly_name, auth_token_hash, date_created, date_updated) "
                      "VALUES (:a, 'a', 'x', :ts, :ts)"), {"a": d["account"], "ts": ts})
    conn.execute(text(
        "INSERT INTO services (sid, account_sid, friendly_name, read_status_enabled, reachability_enabled, "
        "typing_indicator_timeout, consumption_report_interval, webhook_method, pre_webhook_retry_count, "
        "post_webhook_retry_count, webhook_filters, limits, notifications, media, date_created, date_updated) "
        "VALUES (:s, :a, 's', true, false, 5, 10, 'POST', 0, 0, '[]', '{}', '{}', '{}', :ts, :ts)"),
        {"s": d["service"], "a": d["account"], "ts": ts})
    conn.execute(text("INSERT INTO roles (sid, account_sid, service_sid, friendly_name, type, permissions, "
                      "date_created, date_updated) VALUES (:r, :a, :s, 'service user', 'deployment', '[]', :ts, :ts)"),
                 {"r": d["role"], "a": d["account"], "s": d["service"], "ts": ts})
    conn.execute(text("UPDATE services SET default_service_role_sid = :r WHERE sid = :s"),
                 {"r": default_role or d["role"], "s": d["service"]})
    conn.execute(text(
        "INSERT INTO users (sid, account_sid, service_sid, role_sid, identity, joined_channels_count, was_online, "
        "date_created, date_updated) VALUES (:u, :a, :s, :r, :i, 0, false, :ts, :ts)"),
        {"u": d["user"], "a": d["account"], "s": d["service"], "r": user_role or d["role"], "i": uuid.uuid4().hex,
         "ts": ts})
    return d


def test_the_database_refuses_a_user_whose_role_does_not_exist(head_url: str) -> None:
    engine = make_engine(Settings(database_url=head_url))
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _rows(conn, user_role=new_sid("RL"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _rows(conn, user_role=new_sid("RL"), default_role=new_sid("RL"))
        with engine.begin() as conn:  # a real role passes ...
            d = _rows(conn, user_role=None)
        with pytest.raises(IntegrityError), engine.begin() as conn:  # ... and cannot go while held
            conn.execute(text("DELETE FROM roles WHERE sid = :r"), {"r": d["role"]})
        with pytest.raises(IntegrityError), engine.begin() as conn:  # nor point a user at nothing
            conn.execute(text("UPDATE users SET role_sid = :r WHERE sid = :u"), {"r": new_sid("RL"), "u": d["user"]})
        with engine.begin() as conn:  # deleting the service takes roles and users with it
            conn.execute(text("DELETE FROM services WHERE sid = :s"), {"s": d["service"]})
            assert conn.execute(text("SELECT count(*) FROM users WHERE sid = :u"), {"u": d["user"]}).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_upgrade_from_0002_repairs_users_holding_a_deleted_role(kind: str, tmp_path: Path) -> None:
    with fresh_database(kind, tmp_path) as url:
        engine = make_engine(Settings(database_url=url))
        try:
            upgrade(engine, "0002")
            with engine.begin() as conn:
                d = _rows(conn, user_role=new_sid("RL"))  # a role deleted before 0003: dangling
                gone = _rows(conn, user_role=new_sid("RL"), default_role=new_sid("RL"))  # the default too
            upgrade(engine)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
                assert conn.execute(text(DANGLING)).scalar() == 0
                assert conn.execute(text("SELECT role_sid FROM users WHERE sid = :u"),
                                    {"u": d["user"]}).scalar() == d["role"]
                default = conn.execute(text("SELECT default_service_role_sid FROM services WHERE sid = :s"),
                                       {"s": gone["service"]}).scalar()
                assert default == gone["role"]  # the service's own `service user`
                assert conn.execute(text("SELECT role_sid FROM users WHERE sid = :u"),
                                    {"u": gone["user"]}).scalar() == gone["role"]
                assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 2
        finally:
            engine.dispose()
