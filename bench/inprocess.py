"""Where a tokensvc request's CPU goes, measured in-process (no HTTP server, no load generator).

    python bench/inprocess.py            # component costs + whole-app costs, token and fetch paths
    python bench/inprocess.py --cprofile tokens-existing   # and a cProfile of one path

The HTTP benchmarks (bench/tokens.py, bench/users.py) say how far tokensvc is from a bare
endpoint; this says why. It builds the real app (tokensvc.app.create_app) on a temp SQLite file
with tokensvc's schema, drives it through ASGI directly on uvloop, one request at a time, and
times CPU per request for: the whole app; the app without its RequestMiddleware; the app with
the access log off (TOKENSVC_LOG_LEVEL=warning); the same bare endpoints bench/baseline.py
serves. Then the pieces of the token path one by one (Basic auth, form parsing, the
get-or-create through Database.run vs raw sqlite3, mint, the access log line, the metrics).
Sequential CPU per call: less noisy than throughput on a shared machine, not a throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import logging
import pstats
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import bulk_users_sqlite, new_sid, set_source, tokensvc_database


def scope_for(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Callable[[], dict]:
    base = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
            "headers": headers + [(b"host", b"127.0.0.1:8080")]
            + ([(b"content-length", str(len(body)).encode())] if body else [])}
    return lambda: dict(base)


async def call(app: Any, scope: dict, body: bytes) -> int:
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


def cpu_per_call(label: str, fn: Callable[[int], Awaitable[Any]] | Callable[[int], Any], n: int,
                 loop: asyncio.AbstractEventLoop) -> float:
    """Median over 5 batches of CPU µs per call of fn(i)."""
    is_async = asyncio.iscoroutinefunction(fn)
    samples = []
    counter = [0]

    async def batch() -> None:
        for _ in range(n // 5):
            counter[0] += 1
            r = fn(counter[0])
            if is_async:
                await r  # type: ignore[misc]  # fn is a coroutine function when is_async

    for _ in range(5):
        t0 = time.process_time()
        loop.run_until_complete(batch())
        samples.append((time.process_time() - t0) / (n // 5) * 1e6)
    samples.sort()
    value = samples[2]
    print(f"  {label:<58}{value:8.1f} µs")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="calls per measurement")
    parser.add_argument("--cprofile", choices=["tokens-existing", "tokens-new", "fetch"])
    parser.add_argument("--src", type=Path, help="the tokensvc source tree to measure (default: this checkout)")
    args = parser.parse_args()
    set_source(args.src)

    import uvloop

    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-inproc-"))
    try:
        keys, db_path = tmp / "keys", tmp / "tokensvc.db"
        account = (new_sid("AC"), secrets.token_urlsafe(24))
        svc = tokensvc_database(f"sqlite:///{db_path}", keys, account)
        bulk_users_sqlite(db_path, svc, 10_000)

        import tokensvc
        from tokensvc.app import create_app
        from tokensvc.config import Settings

        print(f"# tokensvc from {Path(tokensvc.__file__).parent}")
        # As `tokensvc serve` configures it: INFO to stderr (a file here, as a server's log would be).
        log_file = open(tmp / "server.log", "w")
        logging.basicConfig(level=logging.INFO, stream=log_file, format="%(message)s", force=True)
        settings = Settings(database_url=f"sqlite:///{db_path}", keys_dir=keys, account_sid=account[0],
                            auth_token=account[1])
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        app = create_app(settings, migrate=False)
        bare_path = tmp / "bare.db"
        shutil.copy(db_path, bare_path)

        import baseline

        bare_c1 = baseline.tokens_app(str(keys), account[0], baseline.SqliteUsers(str(bare_path)))
        bare_c0 = baseline.tokens_app(str(keys), account[0], None)
        bare_users = baseline.users_app(str(bare_path))
        bare_svc = svc["sid"]

        auth = b"Basic " + base64.b64encode(f"{account[0]}:{account[1]}".encode())
        tok_headers = [(b"authorization", auth), (b"content-type", b"application/x-www-form-urlencoded")]
        tok_path = f"/v2/Services/{svc['sid']}/Tokens"
        bare_tok_path = f"/v2/Services/{bare_svc}/Tokens"
        run_id = secrets.token_hex(3)

        def token_call(a: Any, path: str, new: bool) -> Callable[[int], Awaitable[Any]]:
            async def f(i: int) -> None:
                body = (f"Identity=new-{run_id}-{id(a)}-{i}" if new else f"Identity=user-{i % 10_000}").encode()
                status = await call(a, scope_for("POST", path, tok_headers, body)(), body)
                assert status == 201, status
            return f

        def fetch_call(a: Any) -> Callable[[int], Awaitable[Any]]:
            async def f(i: int) -> None:
                path = f"/v2/Services/{svc['sid']}/Users/user-{i % 10_000}"
                status = await call(a, scope_for("GET", path, tok_headers[:1], b"")(), b"")
                assert status == 200, status
            return f

        n = args.n
        if args.cprofile:
            fn = {"tokens-existing": token_call(app, tok_path, False), "tokens-new": token_call(app, tok_path, True),
                  "fetch": fetch_call(app)}[args.cprofile]
            cpu_per_call(f"{args.cprofile} (warm-up)", fn, n // 5, loop)
            prof = cProfile.Profile()
            prof.enable()
            cpu_per_call(f"{args.cprofile} (under cProfile)", fn, n, loop)
            prof.disable()
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(45)
            print(out.getvalue())
            return 0

        from tokensvc.app import RequestMiddleware

        plain = create_app(settings, migrate=False)
        inner = getattr(plain, "starlette", plain)  # the Starlette app the ASGI entry holds
        inner.user_middleware = [m for m in inner.user_middleware if m.cls is not RequestMiddleware]

        print("whole requests through ASGI, CPU per request (sequential):")
        for label, fn in [
            ("C0 bare: form + mint", token_call(bare_c0, bare_tok_path, False)),
            ("C1 bare: + raw sqlite3 get-or-create, existing", token_call(bare_c1, bare_tok_path, False)),
            ("C1 bare: new identity", token_call(bare_c1, bare_tok_path, True)),
            ("tokensvc POST /Tokens existing", token_call(app, tok_path, False)),
            ("tokensvc POST /Tokens new", token_call(app, tok_path, True)),
            ("tokensvc without RequestMiddleware, existing", token_call(plain, tok_path, False)),
        ]:
            cpu_per_call(label, fn, n, loop)
        logging.getLogger("tokensvc.access").setLevel(logging.WARNING)
        cpu_per_call("tokensvc, access log off (LOG_LEVEL=warning), existing", token_call(app, tok_path, False),
                     n, loop)
        logging.getLogger("tokensvc.access").setLevel(logging.NOTSET)
        cpu_per_call("bare GET /Users/{identity} (raw sqlite3)", fetch_call(bare_users), n, loop)
        cpu_per_call("tokensvc GET /Users/{identity}", fetch_call(app), n, loop)
        cpu_per_call("tokensvc GET /Users/{identity} without RequestMiddleware", fetch_call(plain), n, loop)

        print("pieces of the token path, CPU per call:")
        c = app.state.ctx
        from starlette.requests import Request

        from tokensvc.api.common import authenticate, read_form
        from tokensvc.store.users import find_by_identity, get_or_create
        from tokensvc.tokens import mint

        svc_row = loop.run_until_complete(c.auth.service(svc["sid"]))
        raw = sqlite3.connect(db_path, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=10000",
                       "secure_delete=ON"):
            raw.execute(f"PRAGMA {pragma}")
        raw.row_factory = sqlite3.Row
        raw_store = baseline.SqliteUsers(str(db_path))
        tok_scope = scope_for("POST", tok_path, tok_headers, b"Identity=user-1")
        auth_header = auth.decode()

        def req(body: bytes) -> Request:
            msgs = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict:
                return msgs.pop()
            s = tok_scope()
            s["app"] = app
            return Request(s, receive)

        async def p_basic(i: int) -> None:
            await c.auth.basic(auth_header, "127.0.0.1")

        async def p_authenticate(i: int) -> None:
            await authenticate(req(b""), service_sid=svc["sid"])

        async def p_form(i: int) -> None:
            await read_form(req(b"Identity=user-1"))

        async def p_service(i: int) -> None:
            await c.auth.service(svc["sid"])

        async def p_goc(i: int) -> None:
            await c.db.run(lambda conn: get_or_create(conn, service=svc_row, identity=f"user-{i % 10_000}"))

        def p_call_goc(i: int) -> None:
            c.db.call(lambda conn: get_or_create(conn, service=svc_row, identity=f"user-{i % 10_000}"))

        def p_begin(i: int) -> None:
            with c.db.engine.begin():
                pass

        conn_sa = c.db.engine.connect()

        def p_core_select(i: int) -> None:
            find_by_identity(conn_sa, service_sid=svc["sid"], identity=f"user-{i % 10_000}")

        def p_raw_select(i: int) -> None:
            raw.execute(baseline.SELECT_USER, (svc["sid"], f"user-{i % 10_000}")).fetchone()

        async def p_raw_goc(i: int) -> None:
            await raw_store.get_or_create(svc_row, f"user-{i % 10_000}")

        async def p_raw_goc_new(i: int) -> None:
            await raw_store.get_or_create(svc_row, f"rawnew-{run_id}-{i}")

        async def p_goc_new(i: int) -> None:
            await c.db.run(lambda conn: get_or_create(conn, service=svc_row, identity=f"sanew-{run_id}-{i}"))

        def p_mint(i: int) -> None:
            mint(c.keyring.current(), issuer="tokensvc", account_sid=account[0], service_sid=svc["sid"],
                 identity="user-1", ttl=3600)

        import json as _json
        access_log = logging.getLogger("tokensvc.access")

        def p_access_log(i: int) -> None:
            access_log.info(_json.dumps({"request_id": "f" * 32, "method": "POST",
                                         "route": "/v2/Services/{service_sid}/Tokens",
                                         "status": 201, "ms": 1.23, "client": "127.0.0.1"}))

        def p_metrics(i: int) -> None:
            c.metrics.requests.labels("POST", "/v2/Services/{service_sid}/Tokens", "201").inc()
            c.metrics.latency.labels("/v2/Services/{service_sid}/Tokens").observe(0.001)
            c.metrics.tokens_issued.inc()

        import uuid

        def p_request_id(i: int) -> None:
            _ = uuid.uuid4().hex  # the measured work: a request id as the access log formats it

        for label, fn in [
            ("Authenticator.basic (cached credential)", p_basic),
            ("api.common.authenticate (Request headers + basic)", p_authenticate),
            ("api.common.read_form", p_form),
            ("Authenticator.service (cached)", p_service),
            ("Database.run(get_or_create) existing", p_goc),
            ("  of which engine.begin() + commit, empty", p_begin),
            ("  of which find_by_identity on an open Connection", p_core_select),
            ("raw sqlite3 SELECT of the user", p_raw_select),
            ("raw sqlite3 get-or-create existing (C1's)", p_raw_goc),
            ("Database.run(get_or_create) new (fsync)", p_goc_new),
            ("raw sqlite3 get-or-create new (C1's, fsync)", p_raw_goc_new),
            ("tokens.mint (ES256)", p_mint),
            ("access log line (json.dumps + logging to a file)", p_access_log),
            ("metrics: requests.labels().inc + latency.labels().observe", p_metrics),
            ("uuid4().hex (request id)", p_request_id),
        ]:
            cpu_per_call(label, fn, n if "new" not in label else min(n, 2000), loop)
        conn_sa.close()
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
