"""`tokensvc webhooks list | retry | drop`: the outbox of SPEC §10 for the operator, across the
accounts of the database (or those of --account / --service).

- `list`: what waits (`pending`) and what was given up on (`failed`, kept 7 days), in commit
  order. The table shows SIDs and times only; `--json` adds what would be sent (the URL, the
  parameters with their identity and attributes, the idempotency token): for the operator's
  eyes, never for a log.
- `retry`: rows given up on go out again (the same idempotency token), through the dispatcher
  of any `tokensvc serve` on this database.
- `drop`: rows that should not go out, e.g. those of an account whose deployment lost its
  `secrets.key` (no process can sign them, so they wait forever).

`retry` and `drop` act only on rows named by id, --service, --account or --status: never on
every row by omission."""

from __future__ import annotations

import argparse
from typing import Any

from ..context import Context
from ..formats import iso8601
from ..sids import is_sid
from ..store.outbox import FAILED, PENDING, Chosen
from ..usecases import webhooks as webhooks_uc
from ..webhooks.params import render
from .common import UsageError, guarded, run_async, settings
from .output import Output

COLUMNS = ("id", "status", "event_type", "service_sid", "resource_sid", "date_created", "due")


def chosen(args: argparse.Namespace) -> Chosen:
    for value, prefix, option in ((args.account, "AC", "--account"), (args.service, "IS", "--service")):
        if value is not None and not is_sid(prefix, value):
            raise UsageError(f"{option} takes a {prefix} SID")
    return Chosen(account_sid=args.account, service_sid=args.service, status=args.status,
                  ids=tuple(getattr(args, "ids", None) or ()))


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
    which = chosen(args)
    out = Output(args.json)

    async def show(c: Context) -> int:
        stream = out.stream(COLUMNS)
        async for row in webhooks_uc.outbox_rows(c, which):
            stream.add(shown(row, full=args.json))
        return stream.close()

    run_async(s, show)
    return 0


def _changing(args: argparse.Namespace, act: Any, verb: str) -> int:
    s = settings()
    which = chosen(args)
    if not which.anything:
        raise UsageError(f"name the rows to {verb}: ID…, --service, --account or --status")
    count = run_async(s, lambda c: act(c, which))
    Output(args.json).document({verb: count})
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return _changing(args, webhooks_uc.retry_failed, "retried")


def cmd_drop(args: argparse.Namespace) -> int:
    return _changing(args, webhooks_uc.drop, "dropped")


def _selectors(parser: argparse.ArgumentParser, *, ids: bool, status: bool = True) -> None:
    if ids:
        parser.add_argument("ids", metavar="ID", type=int, nargs="*", help="outbox row ids (as `list` shows)")
    parser.add_argument("--account", metavar="AC…", help="only this account's rows")
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
