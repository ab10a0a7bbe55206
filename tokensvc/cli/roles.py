"""`tokensvc roles list SERVICE`: a service's roles, as the API renders them."""

from __future__ import annotations

import argparse
from typing import Any

from ..api.render import role_to_json
from ..context import Context
from ..usecases import roles as roles_uc
from .common import add_account_option, base_url, guarded, run_async, service_for, settings
from .output import Output
from .services import pages


def cmd_list(args: argparse.Namespace) -> int:
    s = settings()

    async def collect(c: Context) -> list[Any]:
        account, svc = await service_for(c, args.service, args.account)
        return [dict(row) async for row in pages(c, roles_uc.list_roles, account_sid=account, service_sid=svc["sid"])]

    base = base_url(s)
    Output(args.json).rows(("sid", "friendly_name", "type", "permissions"),
                           (role_to_json(row, base) for row in run_async(s, collect)))
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("roles", help="a service's roles").add_subparsers(dest="action", required=True)
    listing = group.add_parser("list", help="the service's roles (--json: JSON Lines)")
    listing.add_argument("service", metavar="SERVICE")
    add_account_option(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=guarded(cmd_list))
