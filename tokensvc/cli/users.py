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
from ..paging import Cursors, Key, PageRequest
from ..store.users import UserFilters, page_key
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


async def listing(c: Context, principal: Principal, service_sid: str, *, filters: UserFilters,
                  after: Key | None, limit: int | None, last: list[Key]) -> AsyncIterator[Any]:
    """The service's users through the API's list use case, a keyset page per read, in the order
    the filters set (creation, identity, or (date_updated, sid)); `last` receives the key of the
    last row given while more may follow (for the next cursor)."""
    left = limit
    while left is None or left > 0:
        size = PAGE if left is None else min(PAGE, left)
        req = PageRequest(size, 0, None, after=after)
        page = await users_uc.list_users(c, principal=principal, service_sid=service_sid, req=req, filters=filters)
        for row in page.rows:
            yield row._mapping
        if not page.has_next or not page.rows:
            last[:] = []  # the end: no next cursor
            return
        after = page_key(page.rows[-1], filters.order)
        last[:] = [after]
        if left is not None:
            left -= len(page.rows)


def cmd_list(args: argparse.Namespace) -> int:
    s = settings()
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    out = Output(args.json)
    base = base_url(s)
    last: list[Key] = []

    async def stream(c: Context) -> Cursors:
        account, svc = await service_for(c, args.service, args.account)
        role = await RoleNames(c, svc["sid"]).sid(args.role) if args.role is not None else None
        filters = users_uc.user_filters(identities=args.identity or (), identity_prefix=args.prefix,
                                        role_sid=role, updated_after=args.updated_after)
        # the API's PageTokens of this list in this order: a next_page_url's token works here too
        cursors = Cursors(c.box, f"/v2/Services/{svc['sid']}/Users", filters.order)
        after: Key | None = None
        if args.after:
            direction, after = cursors.decode(args.after)
            if direction != "n":
                raise UsageError("--after takes a next-page cursor")
        printed = out.stream(LIST_COLUMNS)
        async for row in listing(c, Principal("account", account), svc["sid"], filters=filters, after=after,
                                 limit=args.limit, last=last):
            printed.add(user_to_json(row, base))  # printed as each page comes: any number in flat memory
        printed.close()
        return cursors

    cursors = run_async(s, stream)
    if last:
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
    listing_.add_argument("--identity", action="append", metavar="IDENTITY", help="exactly this identity (repeatable)")
    listing_.add_argument("--prefix", metavar="TEXT", help="identities starting with TEXT (literal, case-sensitive; "
                                                           "then in identity order)")
    listing_.add_argument("--role", metavar="RL…|NAME", help="users of this deployment role (SID or friendly name)")
    listing_.add_argument("--updated-after", metavar="ISO8601",
                          help="users updated after this time (then in date_updated order)")
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
