"""What every command shares: settings, exit statuses, the runtime of a command that acts on the
database (the same Context and use cases as the API), and which account a command acts for."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

from .. import errors
from ..config import ConfigError, Settings, load_settings
from ..context import Context

T = TypeVar("T")

OK, PARTIAL, USAGE = 0, 1, 2  # exit statuses: done / failed or partly failed / a usage error


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit 2, like argparse's own)."""


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise SystemExit(f"tokensvc: {exc}") from None


def fail(message: str, status: int = PARTIAL) -> NoReturn:
    """Stop with one line on stderr, no traceback."""
    print(f"tokensvc: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def report_error(exc: errors.TwilioError, *, as_json: bool) -> None:
    """A refused command on stderr: the Twilio error body (SPEC §2) with --json, else one line
    with the message and its code."""
    if as_json:
        print(json.dumps(exc.body(), ensure_ascii=False), file=sys.stderr, flush=True)
    else:
        print(f"tokensvc: {exc.message} (Twilio error {exc.code})", file=sys.stderr, flush=True)


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose domain errors (unknown service, bad attributes, ...) exit 1 with the message
    and the Twilio code on stderr, and whose usage errors exit 2: never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except errors.TwilioError as exc:
            report_error(exc, as_json=getattr(args, "json", False))
            return PARTIAL
        except UsageError as exc:
            print(f"tokensvc: {exc}", file=sys.stderr, flush=True)
            return USAGE
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # the database unreachable, a bug: one line, not a traceback
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            print(f"tokensvc: unexpected {type(exc).__name__}: {first}", file=sys.stderr, flush=True)
            return PARTIAL

    return run


def open_database(s: Settings) -> None:
    """Schema, keys and the bootstrap account as `serve` prepares them; the one-time notice of a
    new database goes to stderr, so stdout carries only the command's answer."""
    from .setup import prepare

    with contextlib.redirect_stdout(sys.stderr):
        prepare(s, migrate=s.is_sqlite)


@contextlib.asynccontextmanager
async def runtime(s: Settings) -> AsyncIterator[Context]:
    """The app's Context for one command, with the pre-event hooks (onUserAdd: a first encounter
    from the CLI asks the provisioning policy as the API does). Post-events are outbox rows
    committed with each change; the dispatcher of any `tokensvc serve` sharing the database
    delivers them (a CLI process does not stay to deliver)."""
    from ..app import build_context
    from ..webhooks.http import Client
    from ..webhooks.pre import PreEvents
    from ..webhooks.signers import SigningTokens

    c = build_context(s)
    if c.db.is_sqlite:
        _bulk_page_cache(c.db.engine)
    client = Client()  # the server's own hook client (webhooks/http.py), so the CLI asks as the API does
    c.pre_events = PreEvents(lambda: client, SigningTokens(c.db, c.box).get)
    try:
        yield c
    finally:
        c.pre_events = None
        await client.aclose()
        await c.db.aclose()
        c.db.dispose()


def _bulk_page_cache(engine: Any) -> None:
    """A 64 MiB page cache per SQLite connection of this (short-lived) process, instead of 2 MiB:
    an import's inserts land at random places of the sid and identity indexes, an export reads
    the whole table, and past a few 10,000 users most of the default cache's pages would be
    misses (an insert took ~4x longer). The server keeps SQLite's default."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _cache(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()


def run_async(s: Settings, work: Callable[[Context], Awaitable[T]]) -> T:
    """work(context) on a fresh event loop, the database prepared first."""
    open_database(s)

    async def main() -> T:
        async with runtime(s) as c:
            return await work(c)

    return asyncio.run(main())


# ---- which account a command acts for


def add_account_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", metavar="AC…",
                        help="the account to act for (default: a named service's own account; else "
                             "TOKENSVC_ACCOUNT_SID, else the database's only account)")


async def account_for(c: Context, given: str | None) -> str:
    """--account when given (it must exist: 404 20404), else TOKENSVC_ACCOUNT_SID (the bootstrap
    account `serve` uses), else the only account of the database; with several and none named,
    a usage error (exit 2)."""
    from sqlalchemy import select

    from ..store.tables import accounts

    if given is not None:
        found = await c.db.read(lambda conn: conn.execute(
            select(accounts.c.sid).where(accounts.c.sid == given)).scalar())
        if found is None:
            raise errors.not_found(f"There is no account {given}")
        return given
    if c.settings.account_sid:
        return c.settings.account_sid
    sids = await c.db.read(lambda conn: conn.execute(
        select(accounts.c.sid).order_by(accounts.c.id).limit(2)).scalars().all())
    if len(sids) != 1:
        raise UsageError("this database has several accounts: name one with --account AC…")
    return str(sids[0])


async def service_for(c: Context, sid: str, account: str | None) -> tuple[str, Mapping[str, Any]]:
    """(account SID, service row) of a SERVICE argument: the service of --account (another
    account's is 404, as on the API), or, without --account, the service whatever its account —
    a service SID names its account, and the host operator acts for every account."""
    from ..store.services import find_service

    svc = await c.db.read(lambda conn: find_service(conn, sid))
    if svc is None or (account is not None and svc["account_sid"] != account):
        raise errors.not_found(f"There is no service {sid}")
    return str(svc["account_sid"]), svc


def base_url(s: Settings) -> str:
    """The base of the `url` and `links` the CLI prints: TOKENSVC_PUBLIC_URL, else where `serve`
    listens."""
    return s.public_url or f"http://{s.host}:{s.port}"


def origin(args: argparse.Namespace) -> Any:
    """The CLI's changes are Source API, as Basic REST: their post-events (onUserUpdated,
    onUserRemoved) only with --webhook-enabled, as with X-Twilio-Webhook-Enabled: true; a user's
    creation posts onUserAdded always."""
    from ..store.outbox import Origin

    return Origin("API", None, bool(getattr(args, "webhook_enabled", False)))


class RoleNames:
    """--role and an import's role column: a deployment role's RL SID or friendly name, each
    name looked up once (store.roles.role_named: none or several of that name is 50102)."""

    MAX = 1024

    def __init__(self, c: Context, service_sid: str):
        self.c = c
        self.service_sid = service_sid
        self._known: dict[str, str | errors.TwilioError] = {}

    async def sid(self, value: str) -> str:
        from ..store.roles import role_named

        known = self._known.get(value)
        if known is None:
            try:
                known = await self.c.db.read(lambda conn: role_named(conn, service_sid=self.service_sid, value=value))
            except errors.TwilioError as exc:
                known = exc
            if len(self._known) < self.MAX:
                self._known[value] = known
        if isinstance(known, errors.TwilioError):
            raise known
        return known
