"""Bare Starlette endpoints the benchmarks hold tokensvc against, on the same uvicorn settings.

    python bench/baseline.py users --port P --db FILE            GET /v2/Services/{IS}/Users/{identity}
    python bench/baseline.py c0 --port P --keys-dir D --account AC…    POST /v2/Services/{IS}/Tokens, no database
    python bench/baseline.py c1 --port P --keys-dir D --db FILE        … plus get-or-create with raw sqlite3
    python bench/baseline.py c1 --port P --keys-dir D --pg CONNINFO    … plus get-or-create with raw psycopg

Each does what tokensvc does on that route minus the framework around it: the same form parsing
(parse_qsl), the same claims and signature (tokensvc.tokens.mint → SigningKey.sign with the key
parsed once at start), the same user serialization (tokensvc.store.users.user_to_json), the same SQLite
PRAGMAs as tokensvc/db.py. No authentication: the Basic header is sent but ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokensvc import validation
from tokensvc.api.render import user_to_json
from tokensvc.formats import iso8601
from tokensvc.signing import load_snapshot
from tokensvc.tokens import mint

SELECT_USER = "SELECT * FROM users WHERE service_sid = ? AND identity = ?"
INSERT_USER = ("INSERT INTO users (sid, account_sid, service_sid, role_sid, identity, attributes, friendly_name, "
               "joined_channels_count, was_online, date_created, date_updated) "
               "VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, 0, ?, ?) ON CONFLICT DO NOTHING")


def sqlite_connect(path: str) -> sqlite3.Connection:
    """One connection with tokensvc/db.py's PRAGMAs (WAL, synchronous=FULL, secure_delete …)."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=10)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=10000",
                   "secure_delete=ON"):
        conn.execute(f"PRAGMA {pragma}")
    conn.row_factory = sqlite3.Row
    return conn


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def users_app(db: str) -> Starlette:
    conn = sqlite_connect(db)

    async def fetch(request: Request) -> Response:
        params = request.path_params
        row = conn.execute(SELECT_USER, (params["service_sid"], params["identity"])).fetchone()
        if row is None:
            return json_response({"code": 20404, "status": 404}, 404)
        return json_response(user_to_json(row, "http://" + request.headers["host"]))

    return Starlette(routes=[Route("/healthz", lambda r: Response("ok"), methods=["GET"]),
                             Route("/v2/Services/{service_sid}/Users/{identity}", fetch, methods=["GET"])])


class SqliteUsers:
    """Get-or-create on the raw sqlite3 driver: SELECT; on a miss INSERT … ON CONFLICT DO NOTHING,
    commit, and SELECT the winner if the insert lost a race."""

    def __init__(self, path: str):
        self.conn = sqlite_connect(path)

    async def get_or_create(self, svc: dict[str, Any], identity: str) -> tuple[str, bool]:
        conn = self.conn
        row = conn.execute(SELECT_USER, (svc["sid"], identity)).fetchone()
        if row is not None:
            return row["sid"], False
        sid, ts = "US" + uuid.uuid4().hex, int(time.time())
        cur = conn.execute(INSERT_USER, (sid, svc["account_sid"], svc["sid"], svc["default_service_role_sid"],
                                         identity, ts, ts))
        conn.commit()
        if cur.rowcount == 1:
            return sid, True
        return conn.execute(SELECT_USER, (svc["sid"], identity)).fetchone()["sid"], False

    async def service(self, sid: str) -> dict[str, Any]:
        return dict(self.conn.execute("SELECT * FROM services WHERE sid = ?", (sid,)).fetchone())


class PgUsers:
    """The same get-or-create on raw psycopg (async, autocommit, a small connection pool)."""

    def __init__(self, conninfo: str, size: int = 8):
        self.conninfo, self.size = conninfo, size
        self.pool: asyncio.Queue = asyncio.Queue()

    async def open(self) -> None:
        import psycopg

        for _ in range(self.size):
            self.pool.put_nowait(await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True))

    async def get_or_create(self, svc: dict[str, Any], identity: str) -> tuple[str, bool]:
        conn = await self.pool.get()
        try:
            sel = SELECT_USER.replace("?", "%s")
            row = await (await conn.execute(sel, (svc["sid"], identity))).fetchone()
            if row is not None:
                return row[1], False
            sid, ts = "US" + uuid.uuid4().hex, int(time.time())
            cur = await conn.execute(INSERT_USER.replace("?", "%s").replace("0, 0,", "0, false,"),
                                     (sid, svc["account_sid"], svc["sid"], svc["default_service_role_sid"],
                                      identity, ts, ts))
            if cur.rowcount == 1:
                return sid, True
            return (await (await conn.execute(sel, (svc["sid"], identity))).fetchone())[1], False
        finally:
            self.pool.put_nowait(conn)

    async def service(self, sid: str) -> dict[str, Any]:
        import psycopg.rows

        conn = await self.pool.get()
        try:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            await cur.execute("SELECT * FROM services WHERE sid = %s", (sid,))
            return dict(await cur.fetchone())
        finally:
            self.pool.put_nowait(conn)


def tokens_app(keys_dir: str, account_sid: str, store: SqliteUsers | PgUsers | None) -> Starlette:
    """POST /v2/Services/{IS}/Tokens: C0 when store is None, else C1."""
    snapshot = load_snapshot(Path(keys_dir))  # parsed once, like tokensvc's keyring
    services: dict[str, dict[str, Any]] = {}

    async def create_token(request: Request) -> Response:
        service_sid = request.path_params["service_sid"]
        body = await request.body()
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        identity = validation.identity(form.get("Identity"))
        ttl = int(form.get("Ttl") or 3600)
        user_sid, created = None, False
        if store is not None:
            svc = services.get(service_sid)
            if svc is None:
                svc = services[service_sid] = await store.service(service_sid)
            user_sid, created = await store.get_or_create(svc, identity)
        minted = mint(snapshot, issuer="tokensvc", account_sid=account_sid, service_sid=service_sid,
                      identity=identity, ttl=ttl)
        return json_response({
            "token": minted.token, "identity": identity, "user_sid": user_sid, "service_sid": service_sid,
            "account_sid": account_sid, "ttl": ttl, "expires_at": iso8601(minted.expires_at),
            "user_created": created,
        }, 201)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if isinstance(store, PgUsers):
            await store.open()
        yield

    return Starlette(routes=[Route("/healthz", lambda r: Response("ok"), methods=["GET"]),
                             Route("/v2/Services/{service_sid}/Tokens", create_token, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["users", "c0", "c1"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db")
    parser.add_argument("--pg")
    parser.add_argument("--keys-dir")
    parser.add_argument("--account", default="AC" + "0" * 32)
    args = parser.parse_args()
    if args.mode == "users":
        app = users_app(args.db)
    else:
        store = None
        if args.mode == "c1":
            store = PgUsers(args.pg) if args.pg else SqliteUsers(args.db)
        app = tokens_app(args.keys_dir, args.account, store)
    # The settings of `tokensvc serve` (tokensvc/cli.py): uvloop + httptools by default, no access log.
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, access_log=False, log_level="warning",
                lifespan="on", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
