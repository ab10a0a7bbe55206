"""`tokensvc users export SERVICE`: every user of the service as JSON Lines, each line the user as
the API lists it (user_to_json: every field; `is_online` and `is_notifiable` null, as in lists),
streamed a keyset page at a time (by row id, one read transaction per page), so memory stays
flat at any size. Users that exist when the export starts are written exactly once; one created
meanwhile may or may not be, one deleted meanwhile may be missing; none appears twice."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ..api.render import user_to_json
from ..auth import Principal
from ..context import Context
from ..paging import PageRequest
from ..usecases.users import list_users
from .common import USAGE, base_url, fail, run_async, service_for, settings
from .output import dump_lines

PAGE = 5000


async def export(c: Context, *, service: str, account: str | None, out: IO[str], base: str,
                 page_size: int = PAGE) -> int:
    owner, svc = await service_for(c, service, account)
    principal = Principal("account", owner)
    sid, after, count = svc["sid"], 0, 0
    while True:  # the API's list use case, in creation order (keyset by row id)
        req = PageRequest(page_size, 0, None, after=after)
        page = await list_users(c, principal=principal, service_sid=sid, req=req)
        if page.rows:
            out.write(dump_lines(user_to_json(row._mapping, base) for row in page.rows))
            count += len(page.rows)
            after = page.rows[-1].id
        if not page.has_next or not page.rows:
            out.flush()
            return count


def cmd_export(args: argparse.Namespace) -> int:
    s = settings()
    if not 1 <= args.page_size <= 100_000:
        fail("--page-size must be between 1 and 100000", USAGE)
    try:
        out: IO[str] = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {args.output}: {exc.strerror}", USAGE)
    started = time.monotonic()
    try:
        count = run_async(s, lambda c: export(c, service=args.service, account=args.account, out=out,
                                              base=base_url(s), page_size=args.page_size))
    finally:
        if out is not sys.stdout:
            out.close()
    if sys.stderr.isatty():
        print(f"tokensvc: exported {count} users in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def register(command: Callable[[str, str], argparse.ArgumentParser]) -> tuple[argparse.ArgumentParser, Any]:
    parser = command("export", "every user of the service as JSON Lines, streamed")
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--page-size", type=int, default=PAGE, help=f"users per read transaction (default {PAGE})")
    return parser, cmd_export
