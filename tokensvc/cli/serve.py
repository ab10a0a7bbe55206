"""`tokensvc serve`: the server, and what it prepares before any worker starts (schema, signing
keys, the bootstrap account), which every command acting on the database prepares too."""

from __future__ import annotations

import argparse
import gc
import json
import os
from typing import Any

from .common import settings as _settings
from .setup import prepare


def app_factory() -> Any:
    """The ASGI app for uvicorn (one per worker process); settings come from the environment."""
    from .. import server
    from ..app import create_app
    from ..logs import configure

    settings = _settings()
    configure(settings.log_level)  # worker processes (--workers N) start with no logging set up
    app = create_app(settings, migrate=False)
    server.configure(settings, app.routes)  # the transport's limits, in this (worker) process
    tune_gc()
    return app


def tune_gc() -> None:
    """Garbage collection for a long-running server, once its app is built.

    What exists by then (modules, SQLAlchemy's and Starlette's machinery: ~100k objects) lives as
    long as the process: frozen, the cyclic GC stops traversing it. And a collection every 7,000
    net allocations instead of 700 makes the older generations' passes, which walk every object
    of the thousands of open connections, ten times rarer. Together they took ~0.35 ms off each
    WebSocket connect with thousands open (bench/connect.py: 1,003 -> 1,347/s); every request
    allocates the same way, so HTTP gains too. Garbage cycles live a little longer; RSS did not
    move measurably."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.host:
        os.environ["TOKENSVC_HOST"] = args.host
    if args.port is not None:
        os.environ["TOKENSVC_PORT"] = str(args.port)
    settings = _settings()
    from ..logs import configure

    configure(settings.log_level)
    prepare(settings, migrate=args.migrate or settings.is_sqlite)
    url, database = f"http://{settings.host}:{settings.port}", "SQLite" if settings.is_sqlite else "PostgreSQL"
    if args.json:
        print(json.dumps({"url": url, "database": database.lower(), "keys_dir": str(settings.keys_dir),
                          "workers": args.workers}), flush=True)
    else:
        print(f"tokensvc: serving on {url} ({database}, keys in {settings.keys_dir})", flush=True)
    from ..server import PROTOCOL

    uvicorn.run("tokensvc.cli:app_factory", factory=True, host=settings.host, port=settings.port,
                workers=args.workers, access_log=False, log_level="warning", lifespan="on",
                timeout_graceful_shutdown=5,
                # httptools with a bounded request head and head/body deadlines (server.py); by
                # name, so that each worker process imports it
                http=PROTOCOL,
                # X-Forwarded-For / -Proto only from configured proxies: uvicorn's default trusts
                # 127.0.0.1, where tokensvc listens, so any local client could pick its address.
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=list(settings.trusted_proxies) or None,
                # /v2/Connect frames are small JSON: permessage-deflate would cost ~34 KiB of zlib
                # state per idle connection for nothing (bench/connect.py), so it is declined.
                ws="websockets-sansio", ws_per_message_deflate=False,
                # frames are small JSON; a client cannot make the server buffer more than this
                ws_max_size=64 * 1024)
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--migrate", action="store_true", help="upgrade a PostgreSQL schema before serving")
    serve.add_argument("--json", action="store_true", help="the startup line as one JSON document")
    serve.set_defaults(func=cmd_serve)
