"""`tokensvc token IDENTITY --service IS…`: a token minted locally, its user provisioned by the
token endpoint's use case (the same rules, the onUserAdd hook, the onUserAdded post-event)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import errors, validation
from ..context import Context
from ..tokens import issued_json, mint
from ..usecases.effects import apply
from ..usecases.users import provision_user
from .common import guarded, run_async, settings


def cmd_token(args: argparse.Namespace) -> int:
    s = settings()
    # the rules of the token endpoint's Identity and Ttl, checked before the database is opened
    identity = validation.identity(args.identity)
    ttl = validation.ttl(None if args.ttl is None else str(args.ttl), default=s.default_ttl, maximum=s.max_ttl)

    async def provision(c: Context) -> tuple[Any, Any, bool, Any]:
        svc = await c.auth.service(args.service)
        if svc is None:
            raise errors.not_found(f"There is no service {args.service}")
        (user, created), events = await provision_user(c, service=svc, identity=identity)
        await apply(c, events)
        return svc, user, created, c.keyring.current()

    svc, user, created, key = run_async(s, provision)
    minted = mint(key, issuer=s.issuer, account_sid=svc["account_sid"], service_sid=svc["sid"], identity=identity,
                  ttl=ttl)
    if args.json:
        # The fields and formats of POST /v2/Services/{IS}/Tokens, so a script reads both alike.
        print(json.dumps(issued_json(minted, identity=identity, user_sid=user["sid"], service_sid=svc["sid"],
                                     account_sid=svc["account_sid"], ttl=ttl, user_created=created)))
    else:
        print(minted.token)
    return 0


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="mint a token locally (provisions the user)")
    token.add_argument("identity")
    token.add_argument("--service", required=True)
    token.add_argument("--ttl", type=int)
    token.add_argument("--json", action="store_true")
    token.set_defaults(func=guarded(cmd_token))
