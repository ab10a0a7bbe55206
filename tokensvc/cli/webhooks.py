"""`tokensvc webhooks list | retry | drop`: the outbox of SPEC §10 for the operator.

Which rows: those of `--service` (a service SID names its account), else of `--account`, else
of TOKENSVC_ACCOUNT_SID or the database's only account, as every other command; with several
accounts and none named, exit 2. `--all-accounts` is the host operator's view of them all.

- `list`: what waits (`pending`) and what was given up on (`failed`, kept 7 days), in commit
  order. The table shows SIDs and times only; `--json` adds what would be sent (the URL, the
  parameters with their identity and attributes, the idempotency token): for the operator's
  eyes, never for a log.
- `retry`: rows given up on go out again (the same idempotency token), through the dispatcher
  of any `tokensvc serve` on this database.
- `drop`: rows that should not go out, e.g. those of an account whose deployment lost its
  `secrets.key` (no process can sign them, so they wait forever).

`retry` and `drop` act only on rows named by id, --service, --account or --status (with
--all-accounts too, that is every account's rows of that status): never on every row by omission."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..context import Context
from ..formats import iso8601
from ..sids import is_sid
from ..store.outbox import FAILED, PENDING, Chosen
from ..usecases import webhooks as webhooks_uc
from ..webhooks.params import render
from .common import UsageError, account_for, guarded, run_async, settings
from .output import Output

COLUMNS = ("id", "status", "event_type", "service_sid", "resource_sid", "date_created", "due")


def named(args: argparse.Namespace) -> Chosen:
    """The rows the command line itself names (what retry and drop need: `.anything`); the default
    account is not a choice of the operator's, and --all-accounts only widens."""
    return Chosen(account_sid=args.account, service_sid=args.service, status=args.status,
                  ids=tuple(getattr(args, "ids", None) or ()))


def check(args: argparse.Namespace) -> None:
    for value, prefix, option in ((args.account, "AC", "--account"), (args.service, "IS", "--service")):
        if value is not None and not is_sid(prefix, value):
            raise UsageError(f"{option} takes a {prefix} SID")
    if args.all_accounts and args.account:
        raise UsageError("--all-accounts or --account, not both")


async def chosen(c: Context, args: argparse.Namespace) -> Chosen:
    rows = named(args)
    if rows.account_sid is None and rows.service_sid is None and not args.all_accounts:
        # TOKENSVC_ACCOUNT_SID, else the only account, else exit 2
        rows = dataclasses.replace(rows, account_sid=await account_for(c, None))
    return rows


def shown(row: dict[str, Any], *, full: bool) -> dict[str, Any]:
    due = iso8601(row["due_at"] // 1000) if row["status"] == PENDING else None
    out: dict[str, Any] = {"id": row["id"], "status": row["status"], "event_type": row["event_type"],
                           "account_sid": row["account_sid"], "service_sid": row["service_sid"],
                           "resource_sid": row["resource_sid"], "date_created": iso8601(row["date_created"]),
                           "due": due}
    if full:
        out.update(method=row["method"], url=row["url"], retries=row["retries"], idempotency_token=row["token"],
                   params=render(row, 0))
    return out


def cmd_list(args: argparse.Namespace) -> int:
    s = settings()
    check(args)
    out = Output(args.json)

    async def show(c: Context) -> int:
        which = await chosen(c, args)
        stream = out.stream(COLUMNS)
        async for row in webhooks_uc.outbox_rows(c, which):
            stream.add(shown(row, full=args.json))
        return stream.close()

    run_async(s, show)
    return 0


def _changing(args: argparse.Namespace, act: Any, verb: str) -> int:
    s = settings()
    check(args)
    if not named(args).anything:
        raise UsageError(f"name the rows to {verb}: ID…, --service, --account or --status")

    async def change(c: Context) -> int:
        return int(await act(c, await chosen(c, args)))

    count = run_async(s, change)
    Output(args.json).document({verb: count})
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return _changing(args, webhooks_uc.retry_failed, "retried")


def cmd_drop(args: argparse.Namespace) -> int:
    return _changing(args, webhooks_uc.drop, "dropped")


def _selectors(parser: argparse.ArgumentParser, *, ids: bool, status: bool = True) -> None:
    if ids:
        parser.add_argument("ids", metavar="ID", type=int, nargs="*", help="outbox row ids (as `list` shows)")
    parser.add_argument("--account", metavar="AC…", help="only this account's rows (default: TOKENSVC_ACCOUNT_SID, "
                                                         "else the database's only account)")
    parser.add_argument("--all-accounts", action="store_true", help="the rows of every account")
    parser.add_argument("--service", metavar="IS…", help="only this service's rows")
    if status:
        parser.add_argument("--status", choices=(PENDING, FAILED), help="only rows waiting, or given up on")
    parser.add_argument("--json", action="store_true")


def register(sub: Any) -> None:
    group = sub.add_parser("webhooks", help="post-events waiting or given up on (the outbox)").add_subparsers(
        dest="action", required=True)
    listing = group.add_parser("list", help="rows waiting or given up on, in commit order (--json: JSON Lines "
                                            "with URL, parameters and idempotency token)")
    _selectors(listing, ids=False)
    listing.set_defaults(func=guarded(cmd_list))
    retry = group.add_parser("retry", help="send rows given up on again (same idempotency token)")
    _selectors(retry, ids=True, status=False)
    retry.set_defaults(func=guarded(cmd_retry), status=None)
    drop = group.add_parser("drop", help="delete rows, waiting or given up on")
    _selectors(drop, ids=True)
    drop.set_defaults(func=guarded(cmd_drop))
