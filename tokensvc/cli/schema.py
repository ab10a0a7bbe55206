"""`tokensvc db upgrade | current`: schema migrations (Alembic)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import fail, settings
from .output import Output


def cmd_db(args: argparse.Namespace) -> int:
    from ..store.schema import SchemaOutOfDate, current_revision, ensure_schema, head_revision

    s = settings()
    if args.action == "upgrade":
        try:
            ensure_schema(s, migrate=True)
        except SchemaOutOfDate as exc:
            fail(str(exc))
    current, head = current_revision(s), head_revision()
    if args.json:
        Output(True).document({"current": current, "head": head})
    else:
        print(f"current: {current or '(empty)'}\nhead:    {head}")
    return 0


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="schema migrations")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("--json", action="store_true")
    db.set_defaults(func=cmd_db)
