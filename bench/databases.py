"""Databases for the benchmarks: tokensvc's schema and one service, users in bulk, and a throwaway
PostgreSQL cluster (bench/harness.py re-exports these for the bench scripts)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- tokensvc databases ---------------------------------------------------------------------

def tokensvc_database(url: str, keys_dir: Path, account: tuple[str, str]) -> dict[str, Any]:
    """Schema (tokensvc's migrations), the bootstrap account and one service, through tokensvc's
    own domain functions; returns the service row."""
    from tokensvc.config import Settings
    from tokensvc.db import Database, make_engine
    from tokensvc.signing import ensure_keys
    from tokensvc.store.accounts import ensure_bootstrap_account
    from tokensvc.store.schema import ensure_schema
    from tokensvc.store.services import create_service

    settings = Settings(database_url=url, keys_dir=keys_dir, account_sid=account[0], auth_token=account[1])
    ensure_schema(settings)
    ensure_keys(keys_dir)
    db = Database(make_engine(settings))
    try:
        db.call(lambda conn: ensure_bootstrap_account(conn, sid=account[0], auth_token=account[1]))
        svc = db.call(lambda conn: dict(create_service(conn, account_sid=account[0], friendly_name="bench")))
    finally:
        db.dispose()
    return svc


USER_COLUMNS = ("sid", "account_sid", "service_sid", "role_sid", "identity", "attributes", "friendly_name",
                "joined_channels_count", "was_online", "date_created", "date_updated")


def _user_rows(svc: dict[str, Any], start: int, stop: int, prefix: str) -> Iterator[tuple[Any, ...]]:
    ts = int(time.time())
    acc, sid, role = svc["account_sid"], svc["sid"], svc["default_service_role_sid"]
    for i in range(start, stop):
        yield ("US" + uuid.uuid4().hex, acc, sid, role, f"{prefix}{i}", None, None, 0, False, ts, ts)


def bulk_users_sqlite(path: Path, svc: dict[str, Any], count: int, *, prefix: str = "user-",
                      batch: int = 100_000) -> None:
    """`count` users straight into the users table, in creation order (ids ascending)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        sql = f"INSERT INTO users ({', '.join(USER_COLUMNS)}) VALUES ({', '.join('?' * len(USER_COLUMNS))})"
        for start in range(0, count, batch):
            with conn:
                conn.executemany(sql, _user_rows(svc, start, min(count, start + batch), prefix))
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def bulk_users_pg(conninfo: str, svc: dict[str, Any], count: int, *, prefix: str = "user-") -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY users ({', '.join(USER_COLUMNS)}) FROM STDIN") as copy:
                for row in _user_rows(svc, 0, count, prefix):
                    copy.write_row(row)
        conn.commit()
        conn.execute("ANALYZE users")
        conn.commit()


# --- PostgreSQL -----------------------------------------------------------------------------

def pg_urls(base_url: str, database: str) -> tuple[str, str]:
    """(SQLAlchemy URL for tokensvc, libpq conninfo for psycopg) of `database` on base_url's server."""
    from sqlalchemy.engine import make_url

    url = make_url(base_url).set(database=database)
    sa_url = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return sa_url, libpq


@contextlib.contextmanager
def pg_database(base_url: str, name: str) -> Iterator[tuple[str, str]]:
    """A fresh database on the server of base_url, dropped afterwards."""
    import psycopg

    _, admin = pg_urls(base_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_urls(base_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def temp_postgres(workdir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a unix socket (initdb + pg_ctl as an unprivileged user)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        raise SystemExit("bench: initdb/pg_ctl not found: install PostgreSQL or pass --pg-url")
    root = Path(tempfile.mkdtemp(prefix="tokensvc-bench-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(as_user + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-l", str(root / "pg.log"), "-w", "start", "-o",
                              f"-k {sock} -p {port} -c listen_addresses='' -c max_connections=200"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
