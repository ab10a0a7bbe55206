"""`tokensvc serve | token | accounts | keys | db`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise SystemExit(f"tokensvc: {exc}") from None


def app_factory() -> Any:
    """The ASGI app for uvicorn (one per worker process); settings come from the environment."""
    from . import server
    from .app import create_app
    from .logs import configure

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


def prepare(settings: Settings, *, migrate: bool) -> None:
    """Schema, signing keys and the bootstrap account, before any worker starts."""
    from sqlalchemy import select

    from .crypto import SECRET_KEY_FILE, SecretBox
    from .db import Database, make_engine
    from .signing import KeyringError, ensure_keys, load_snapshot
    from .store.accounts import ensure_bootstrap_account, record_key_check, served_account
    from .store.schema import SchemaOutOfDate, ensure_schema
    from .store.tables import api_keys

    try:
        ensure_schema(settings, migrate=migrate)
    except SchemaOutOfDate as exc:
        raise SystemExit(f"tokensvc: {exc}") from None
    ensure_keys(settings.keys_dir)
    try:  # the workers would fail on it one by one, each with a traceback
        load_snapshot(settings.keys_dir)
    except KeyringError as exc:
        raise SystemExit(f"tokensvc: {exc}") from None
    box_path = settings.keys_dir / SECRET_KEY_FILE
    try:
        box = SecretBox.load_or_create(settings.keys_dir)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"tokensvc: cannot use {box_path}: {exc}") from None
    db = Database(make_engine(settings))
    try:
        made = db.call(lambda conn: ensure_bootstrap_account(conn, sid=settings.account_sid,
                                                             auth_token=settings.auth_token, box=box))
        served = db.call(lambda conn: served_account(conn, settings.account_sid))
        same_key = db.call(lambda conn: record_key_check(conn, sid=served, check=box.check_value()))
        # A replica given another secrets.key would start, then refuse every HS256 token of the
        # existing API keys: the newest stored secret of the account it serves must open too.
        newest = None
        if served is not None:
            query = (select(api_keys.c.sid, api_keys.c.secret_enc).where(api_keys.c.account_sid == served)
                     .order_by(api_keys.c.id.desc()).limit(1))
            newest = db.call(lambda conn: conn.execute(query).first())
    finally:
        db.dispose()
    if not same_key or (newest is not None and not box.opens(newest.secret_enc, newest.sid)):
        raise SystemExit(f"tokensvc: {box_path} is not the key the other processes serving this account use (its "
                         "stored secrets, tombstones and page tokens): give every process sharing this database "
                         "the same secrets.key")
    if made is not None and not settings.auth_token:
        print("tokensvc: created the bootstrap account; its auth token is shown only this once:\n"
              f"  TOKENSVC_ACCOUNT_SID={made.sid}\n  TOKENSVC_AUTH_TOKEN={made.auth_token}", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.host:
        os.environ["TOKENSVC_HOST"] = args.host
    if args.port is not None:
        os.environ["TOKENSVC_PORT"] = str(args.port)
    settings = _settings()
    from .logs import configure

    configure(settings.log_level)
    prepare(settings, migrate=args.migrate or settings.is_sqlite)
    print(f"tokensvc: serving on http://{settings.host}:{settings.port} "
          f"({'SQLite' if settings.is_sqlite else 'PostgreSQL'}, keys in {settings.keys_dir})", flush=True)
    from .server import PROTOCOL

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


def cmd_token(args: argparse.Namespace) -> int:
    from . import errors, validation
    from .app import build_context
    from .store.services import find_service
    from .tokens import issued_json, mint

    settings = _settings()
    # stdout carries the token (or its JSON) alone, for scripts; the one-time bootstrap notice of
    # a new database goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        prepare(settings, migrate=settings.is_sqlite)
    try:  # the rules of the token endpoint's Identity and Ttl
        identity = validation.identity(args.identity)
        ttl = validation.ttl(None if args.ttl is None else str(args.ttl), default=settings.default_ttl,
                             maximum=settings.max_ttl)
    except errors.TwilioError as exc:
        raise SystemExit(f"tokensvc: {exc.message}") from None
    c = build_context(settings)
    try:
        svc = c.db.call(lambda conn: find_service(conn, args.service))
        if svc is None:
            raise SystemExit(f"tokensvc: no service {args.service}")
        (user, created), _ = asyncio.run(_provision(c, svc, identity))
    finally:
        c.db.dispose()
    minted = mint(c.keyring.current(), issuer=settings.issuer, account_sid=svc["account_sid"],
                  service_sid=svc["sid"], identity=identity, ttl=ttl)
    if args.json:
        # The fields and formats of POST /v2/Services/{IS}/Tokens, so a script reads both alike.
        print(json.dumps(issued_json(minted, identity=identity, user_sid=user["sid"], service_sid=svc["sid"],
                                     account_sid=svc["account_sid"], ttl=ttl, user_created=created)))
    else:
        print(minted.token)
    return 0


async def _provision(c: Any, service: Any, identity: str) -> Any:
    """The token endpoint's use case, from the command line (the same rules, the same store)."""
    from .usecases.users import provision_user

    try:
        return await provision_user(c, service=service, identity=identity)
    finally:
        await c.db.aclose()


def cmd_accounts(args: argparse.Namespace) -> int:
    from .crypto import SecretBox
    from .db import Database, make_engine
    from .store.accounts import create_account, list_accounts, rotate_token

    settings = _settings()
    prepare(settings, migrate=settings.is_sqlite)
    box = SecretBox.load_or_create(settings.keys_dir)
    db = Database(make_engine(settings))
    try:
        if args.action == "create":
            made = db.call(lambda conn: create_account(conn, friendly_name=args.friendly_name, box=box))
            print(f"account_sid={made.sid}\nauth_token={made.auth_token}\n(the auth token is shown only this once)")
        elif args.action == "rotate-token":
            if not args.sid:
                raise SystemExit("tokensvc: accounts rotate-token needs --sid AC…")
            try:
                token = db.call(lambda conn: rotate_token(conn, sid=args.sid, box=box))
            except LookupError:
                raise SystemExit(f"tokensvc: no account {args.sid}") from None
            print(f"account_sid={args.sid}\nauth_token={token}\n(the auth token is shown only this once)")
        else:
            for acc in db.call(list_accounts):
                created = time.strftime('%Y-%m-%d', time.gmtime(acc['date_created']))
                print(f"{acc['sid']}  {created}  {acc['friendly_name']}")
    finally:
        db.dispose()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from . import signing

    settings = _settings()
    keys_dir = settings.keys_dir
    try:
        if args.action == "generate":
            signing.ensure_keys(keys_dir)
            kid = signing.generate_key(keys_dir)
            print(kid)
        elif args.action == "list":
            signing.ensure_keys(keys_dir)
            for k in signing.key_listing(keys_dir):
                created = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(k['created']))
                print(f"{k['kid']}  {k['status']:<9}  created {created}")
        elif args.action == "activate":
            signing.activate(keys_dir, args.kid)
            print(f"activated {args.kid}")
        elif args.action == "retire":
            signing.retire(keys_dir, args.kid, max_ttl=settings.max_ttl, force=args.force)
            print(f"retired {args.kid}")
    except signing.KeyringError as exc:
        raise SystemExit(f"tokensvc: {exc}") from None
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from .store.schema import SchemaOutOfDate, current_revision, ensure_schema, head_revision

    settings = _settings()
    if args.action == "upgrade":
        try:
            ensure_schema(settings, migrate=True)
        except SchemaOutOfDate as exc:
            raise SystemExit(f"tokensvc: {exc}") from None
    print(f"current: {current_revision(settings) or '(empty)'}\nhead:    {head_revision()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokensvc", description="Self-hosted access-token issuer")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--migrate", action="store_true", help="upgrade a PostgreSQL schema before serving")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="mint a token locally (provisions the user)")
    token.add_argument("identity")
    token.add_argument("--service", required=True)
    token.add_argument("--ttl", type=int)
    token.add_argument("--json", action="store_true")
    token.set_defaults(func=cmd_token)

    accounts = sub.add_parser("accounts", help="manage accounts")
    accounts.add_argument("action", choices=["create", "list", "rotate-token"])
    accounts.add_argument("--sid", help="the account of rotate-token")
    accounts.add_argument("--friendly-name", default="tokensvc account")
    accounts.set_defaults(func=cmd_accounts)

    keys = sub.add_parser("keys", help="manage signing keys")
    keys.add_argument("action", choices=["generate", "list", "activate", "retire"])
    keys.add_argument("kid", nargs="?")
    keys.add_argument("--force", action="store_true", help="retire even if tokens may still be valid")
    keys.set_defaults(func=cmd_keys)

    db = sub.add_parser("db", help="schema migrations")
    db.add_argument("action", choices=["upgrade", "current"])
    db.set_defaults(func=cmd_db)
    return parser


def _keys_argv(argv: list[str]) -> list[str]:
    """A kid is base64url and may start with '-': pass it after '--', flags first, so
    `keys retire KID --force`, `keys retire --force KID` and `keys activate -abc…` all work."""
    if len(argv) < 2 or argv[0] != "keys":
        return argv
    flags = [a for a in argv[1:] if a in ("--force", "-h", "--help")]
    rest = [a for a in argv[1:] if a not in flags and a != "--"]
    return ["keys", *flags, *rest[:1], "--", *rest[1:]] if rest else argv


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_keys_argv(list(sys.argv[1:] if argv is None else argv)))
    if getattr(args, "action", None) in ("activate", "retire") and not args.kid:
        raise SystemExit("tokensvc: keys activate/retire need a KID")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
