"""`tokensvc users list | get | update | delete SERVICE …`, and the parsers of `import` and
`export` (cli/importer.py, cli/exporter.py): the API's use cases and serializer."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from .. import validation
from ..api.render import user_to_json
from ..auth import Principal
from ..context import Context
from ..paging import Cursors, PageRequest
from ..store.users import list_users
from ..usecases import users as users_uc
from ..usecases.effects import apply
from . import exporter, importer
from .common import (
    RoleNames,
    UsageError,
    add_account_option,
    base_url,
    guarded,
    origin,
    run_async,
    service_for,
    settings,
)
from .output import Output

LIST_COLUMNS = ("sid", "identity", "friendly_name", "role_sid", "date_updated")
PAGE = 1000


async def listing(c: Context, service_sid: str, *, after: int, limit: int | None,
                  last: list[int]) -> AsyncIterator[Any]:
    """The service's users in creation order, a keyset page per read; `last` receives the id of
    the last row given (for the next cursor)."""
    left = limit
    while left is None or left > 0:
        size = PAGE if left is None else min(PAGE, left)
        req = PageRequest(size, 0, None, after=after)
        page = await c.db.read(lambda conn, req=req: list_users(conn, service_sid=service_sid, req=req))
        for row in page.rows:
            last[:] = [row.id]
            yield row._mapping
        if left is not None:
            left -= len(page.rows)
        if not page.has_next or not page.rows:
            last[:] = []  # the end: no next cursor
            return
        after = page.rows[-1].id


def cmd_list(args: argparse.Namespace) -> int:
    s = settings()
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    out = Output(args.json)
    base = base_url(s)
    rows: list[Any] = []
    last: list[int] = []

    async def collect(c: Context) -> Cursors:
        _, svc = await service_for(c, args.service, args.account)
        cursors = Cursors(c.box, f"/v2/Services/{svc['sid']}/Users")  # the API's PageTokens of this list
        after = 0
        if args.after:
            direction, after = cursors.decode(args.after)
            if direction != "n":
                raise UsageError("--after takes a next-page cursor")
        async for row in listing(c, svc["sid"], after=after, limit=args.limit, last=last):
            rows.append(dict(row))
        return cursors

    cursors = run_async(s, collect)
    out.rows(LIST_COLUMNS, (user_to_json(row, base) for row in rows))
    if last and args.limit is not None:
        out.note(f"more: --after {cursors.encode('n', last[0])}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    s = settings()

    async def fetch(c: Context) -> Any:
        account, svc = await service_for(c, args.service, args.account)
        return await users_uc.fetch_user(c, account_sid=account, service_sid=svc["sid"], key=args.user)

    user, online, notifiable = run_async(s, fetch)
    Output(args.json).document(user_to_json(user, base_url(s), is_online=online, is_notifiable=notifiable))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    s = settings()
    changes: dict[str, Any] = {}
    if args.attributes is not None:
        changes["attributes"] = validation.attributes(args.attributes)
    if args.friendly_name is not None:
        changes["friendly_name"] = validation.friendly_name(args.friendly_name)
    if not changes and args.role is None:
        raise UsageError("users update needs --friendly-name, --attributes or --role")

    async def update(c: Context) -> Any:
        account, svc = await service_for(c, args.service, args.account)
        if args.role is not None:
            changes["role_sid"] = await RoleNames(c, svc["sid"]).sid(args.role)
        user, events = await users_uc.update_user(c, principal=Principal("account", account), origin=origin(args),
                                                  caller=None, service_sid=svc["sid"], key=args.user,
                                                  changes=changes)
        await apply(c, events)
        return user

    Output(args.json).document(user_to_json(run_async(s, update), base_url(s)))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    s = settings()

    async def delete(c: Context) -> str:
        account, svc = await service_for(c, args.service, args.account)
        user_sid, events = await users_uc.delete_user(c, origin=origin(args), account_sid=account,
                                                      service_sid=svc["sid"], key=args.user)
        await apply(c, events)
        return str(user_sid)

    Output(args.json).document({"sid": run_async(s, delete), "deleted": True})
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("users", help="a service's users").add_subparsers(dest="action", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, help=help)
        parser.add_argument("service", metavar="SERVICE", help="the IS… SID")
        return parser

    listing_ = command("list", "the service's users, in creation order (--json: JSON Lines)")
    listing_.add_argument("--limit", type=int, help="at most N users (then the cursor of the rest on stderr)")
    listing_.add_argument("--after", metavar="CURSOR", help="continue after a cursor (also a REST PageToken)")
    get = command("get", "one user, every field")
    update = command("update", "change a user's friendly name, attributes or role")
    delete = command("delete", "delete a user (its identity leaves no trace)")
    for parser in (get, update, delete):
        parser.add_argument("user", metavar="USER", help="the US… SID or the identity")
    update.add_argument("--friendly-name")
    update.add_argument("--attributes", metavar="JSON")
    update.add_argument("--role", metavar="RL…|NAME", help="a deployment role, by SID or friendly name")
    for parser in (update, delete):
        parser.add_argument("--webhook-enabled", action="store_true",
                            help="post onUserUpdated / onUserRemoved (as X-Twilio-Webhook-Enabled: true)")
    commands = [(listing_, cmd_list), (get, cmd_get), (update, cmd_update), (delete, cmd_delete),
                importer.register(command), exporter.register(command)]
    for parser, run in commands:
        add_account_option(parser)
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=guarded(run))
