"""`tokensvc services create | list | get | delete`: the API's use cases and serializer."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from .. import validation
from ..api.render import service_to_json
from ..context import Context
from ..paging import Page, PageRequest
from ..usecases import services as services_uc
from ..usecases.effects import apply
from .common import account_for, add_account_option, base_url, guarded, run_async, service_for, settings
from .output import Output

PAGE = 500
SUMMARY = ("sid", "friendly_name", "account_sid", "default_service_role_sid", "reachability_enabled",
           "pre_webhook_url", "post_webhook_url", "webhook_filters", "date_created", "date_updated")
LIST_COLUMNS = ("sid", "friendly_name", "date_created", "post_webhook_url")


async def pages(c: Context, lister: Callable[..., Awaitable[Page]], **where: Any) -> AsyncIterator[Any]:
    """Every row of a use case's list (`await lister(c, req=…, **where)`), a keyset page (by id) per call."""
    after = 0
    while True:
        req = PageRequest(PAGE, 0, None, after=after)
        page = await lister(c, req=req, **where)
        for row in page.rows:
            yield row._mapping
        if not page.has_next or not page.rows:
            return
        after = page.rows[-1].id


def cmd_create(args: argparse.Namespace) -> int:
    s = settings()
    name = validation.friendly_name(args.friendly_name)

    async def create(c: Context) -> Any:
        account = await account_for(c, args.account)
        svc, events = await services_uc.create_service(c, account_sid=account, friendly_name=name)
        await apply(c, events)
        return svc

    Output(args.json).document(service_to_json(run_async(s, create), base_url(s)),
                               None if args.json else SUMMARY)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    s = settings()

    async def collect(c: Context) -> list[Any]:
        account = await account_for(c, args.account)
        return [dict(row) async for row in pages(c, services_uc.list_services, account_sid=account)]

    base = base_url(s)
    rows: Iterator[Any] = (service_to_json(row, base) for row in run_async(s, collect))
    Output(args.json).rows(LIST_COLUMNS, rows)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    s = settings()

    async def fetch(c: Context) -> Any:
        account, _ = await service_for(c, args.service, args.account)
        return await services_uc.get_service(c, account_sid=account, sid=args.service)

    Output(args.json).document(service_to_json(run_async(s, fetch), base_url(s)), None if args.json else SUMMARY)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    s = settings()

    async def delete(c: Context) -> None:
        account, _ = await service_for(c, args.service, args.account)
        _, events = await services_uc.delete_service(c, account_sid=account, sid=args.service)
        await apply(c, events)

    run_async(s, delete)
    Output(args.json).document({"sid": args.service, "deleted": True})
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("services", help="Chat services").add_subparsers(dest="action", required=True)
    create = group.add_parser("create", help="a new service with its default roles")
    create.add_argument("friendly_name")
    listing = group.add_parser("list", help="the account's services (--json: JSON Lines)")
    get = group.add_parser("get", help="one service, every field")
    get.add_argument("service", metavar="SERVICE")
    delete = group.add_parser("delete", help="delete a service with its roles, users and channels")
    delete.add_argument("service", metavar="SERVICE")
    for parser, command in ((create, cmd_create), (listing, cmd_list), (get, cmd_get), (delete, cmd_delete)):
        add_account_option(parser)
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=guarded(command))
