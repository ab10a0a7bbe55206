"""`tokensvc accounts create | list | rotate-token`."""

from __future__ import annotations

import argparse
from typing import Any

from ..formats import iso8601
from .common import USAGE, fail, open_database, settings
from .output import Output


def cmd_accounts(args: argparse.Namespace) -> int:
    from ..crypto import SecretBox
    from ..db import Database, make_engine
    from ..store.accounts import create_account, list_accounts, rotate_token

    s = settings()
    if args.action == "rotate-token" and not args.sid:
        fail("accounts rotate-token needs --sid AC…", USAGE)
    open_database(s)
    box = SecretBox.load_or_create(s.keys_dir)
    db = Database(make_engine(s))
    out = Output(args.json)
    once = "(the auth token is shown only this once)"
    try:
        if args.action == "create":
            made = db.call(lambda conn: create_account(conn, friendly_name=args.friendly_name, box=box))
            if args.json:
                out.document({"account_sid": made.sid, "auth_token": made.auth_token})
            else:
                print(f"account_sid={made.sid}\nauth_token={made.auth_token}\n{once}")
        elif args.action == "rotate-token":
            try:
                token = db.call(lambda conn: rotate_token(conn, sid=args.sid, box=box))
            except LookupError:
                fail(f"no account {args.sid}")
            if args.json:
                out.document({"account_sid": args.sid, "auth_token": token})
            else:
                print(f"account_sid={args.sid}\nauth_token={token}\n{once}")
        else:
            rows = ({"sid": a["sid"], "friendly_name": a["friendly_name"], "date_created": iso8601(a["date_created"])}
                    for a in db.call(list_accounts))
            out.rows(["sid", "date_created", "friendly_name"], rows)
    finally:
        db.dispose()
    return 0


def register(sub: Any) -> None:
    accounts = sub.add_parser("accounts", help="manage accounts")
    accounts.add_argument("action", choices=["create", "list", "rotate-token"])
    accounts.add_argument("--sid", help="the account of rotate-token")
    accounts.add_argument("--friendly-name", default="tokensvc account")
    accounts.add_argument("--json", action="store_true", help="JSON (list: JSON Lines)")
    accounts.set_defaults(func=cmd_accounts)
