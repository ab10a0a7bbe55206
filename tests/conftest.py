"""Fixtures: a real app on a real temp database, and real `tokensvc serve` processes.

The database is SQLite in a temp file by default. With TOKENSVC_TEST_DATABASE_URL set (as
`.ci/run` does on its second pass) every test runs against that PostgreSQL database instead;
tests isolate themselves by creating their own account, so they never need an empty database.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tokensvc.app import create_app
from tokensvc.config import Settings
from tokensvc.db import Database, make_engine
from tokensvc.sids import new_sid
from tokensvc.store.accounts import create_account
from tokensvc.store.schema import ensure_schema

PG_URL = os.environ.get("TOKENSVC_TEST_DATABASE_URL") or None
_pg_ready = False


def database_url(tmp_path: Path) -> str:
    """The database tests use: the shared PostgreSQL one, or a fresh SQLite file."""
    global _pg_ready
    if PG_URL:
        if not _pg_ready:
            ensure_schema(Settings(database_url=PG_URL))
            _pg_ready = True
        return PG_URL
    return f"sqlite:///{tmp_path / 'tokensvc.db'}"


def basic(sid: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{secret}".encode()).decode()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys")


@dataclass
class Api:
    """A TestClient bound to one account, with helpers for the usual first steps."""

    client: TestClient
    account_sid: str
    auth_token: str
    app: Any
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.account_sid, self.auth_token)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        kw.setdefault("auth", self.auth)
        return self.client.get(url, **kw)

    def post(self, url: str, data: Any = None, **kw: Any) -> httpx.Response:
        kw.setdefault("auth", self.auth)
        return self.client.post(url, data=data, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        kw.setdefault("auth", self.auth)
        return self.client.delete(url, **kw)

    def new_service(self, name: str = "svc") -> dict[str, Any]:
        r = self.post("/v2/Services", {"FriendlyName": name})
        assert r.status_code == 201, r.text
        return r.json()

    def new_account(self) -> tuple[str, str]:
        made = self.app.state.ctx.db.call(lambda conn: create_account(conn))
        return made.sid, made.auth_token


@pytest.fixture
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
def api(app: Any) -> Iterator[Api]:
    made = app.state.ctx.db.call(lambda conn: create_account(conn, box=app.state.ctx.box))  # signs webhooks
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, made.sid, made.auth_token, app)


@pytest.fixture
def service(api: Api) -> dict[str, Any]:
    return api.new_service()


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """A Twilio-shaped error body of SPEC §2 with that status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert isinstance(body["message"], str) and body["message"]
    assert not ("type" in body and "title" in body)
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A real `tokensvc serve` process on 127.0.0.1."""

    proc: subprocess.Popen
    base: str
    env: dict[str, str]
    account_sid: str
    auth_token: str
    log_path: Path

    @property
    def auth(self) -> tuple[str, str]:
        return (self.account_sid, self.auth_token)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp_path: Path, *, database: str | None = None, keys_dir: Path | None = None,
                 account: tuple[str, str] | None = None, extra_env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), name: str = "server", port: int | None = None) -> Server:
    """Start `tokensvc serve` on a free port (or `port`, for settings that name the URL) and wait
    until /healthz answers."""
    port = port or free_port()
    sid, token = account or (new_sid("AC"), secrets.token_urlsafe(24))
    env = dict(os.environ)
    env.update({
        "TOKENSVC_DATABASE_URL": database or database_url(tmp_path),
        "TOKENSVC_KEYS_DIR": str(keys_dir or tmp_path / "keys"),
        "TOKENSVC_PORT": str(port),
        "TOKENSVC_HOST": "127.0.0.1",
        "TOKENSVC_ACCOUNT_SID": sid,
        "TOKENSVC_AUTH_TOKEN": token,
    })
    env.update(extra_env or {})
    log_path = tmp_path / f"{name}-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tokensvc.cli", "serve", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tokensvc serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return Server(proc, base, env, sid, token, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"tokensvc serve did not become healthy:\n{log_path.read_text()}")


@contextlib.contextmanager
def replica_pair(tmp_path: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[tuple[Server, Server]]:
    """Replicas A and B: one database (the suite's), one keys directory, one bootstrap account.
    Started one after the other: the first start generates the signing key the second finds."""
    url, keys = database_url(tmp_path), tmp_path / "keys"
    account = (new_sid("AC"), secrets.token_urlsafe(24))
    a = start_server(tmp_path, database=url, keys_dir=keys, account=account, extra_env=extra_env, name="A")
    try:
        b = start_server(tmp_path, database=url, keys_dir=keys, account=account, extra_env=extra_env, name="B")
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def db(settings: Settings, app: Any) -> Iterator[Database]:
    """Direct access to the test database (after the app created its schema)."""
    database = Database(make_engine(settings))
    yield database
    database.dispose()


def race(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Run fn in n threads released together; each result or exception, in thread order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = fn()
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results
