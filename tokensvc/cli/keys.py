"""`tokensvc keys generate | list | activate KID | retire KID [--force]`: the signing keys in the
keys directory (no database needed)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .. import signing
from .common import USAGE, fail, settings
from .output import Output


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action in ("activate", "retire") and not args.kid:
        fail("keys activate/retire need a KID", USAGE)
    s = settings()
    keys_dir = s.keys_dir
    out = Output(args.json)
    try:
        if args.action == "generate":
            signing.ensure_keys(keys_dir)
            kid = signing.generate_key(keys_dir)
            out.document({"kid": kid, "status": "generated"}) if args.json else print(kid)
        elif args.action == "list":
            signing.ensure_keys(keys_dir)
            rows = ({"kid": k["kid"], "status": k["status"],
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k["created"]))}
                    for k in signing.key_listing(keys_dir))
            out.rows(["kid", "status", "created"], rows)
        elif args.action == "activate":
            signing.activate(keys_dir, args.kid)
            out.document({"kid": args.kid, "status": "active"}) if args.json else print(f"activated {args.kid}")
        elif args.action == "retire":
            signing.retire(keys_dir, args.kid, max_ttl=s.max_ttl, force=args.force)
            out.document({"kid": args.kid, "status": "retired"}) if args.json else print(f"retired {args.kid}")
    except signing.KeyringError as exc:
        fail(str(exc))
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage signing keys")
    keys.add_argument("action", choices=["generate", "list", "activate", "retire"])
    keys.add_argument("kid", nargs="?")
    keys.add_argument("--force", action="store_true", help="retire even if tokens may still be valid")
    keys.add_argument("--json", action="store_true", help="JSON (list: JSON Lines)")
    keys.set_defaults(func=cmd_keys)


KEYS_FLAGS = ("--force", "--json", "-h", "--help")


def keys_argv(argv: list[str]) -> list[str]:
    """A kid is base64url and may start with '-': pass it after '--', flags first, so
    `keys retire KID --force`, `keys retire --force KID` and `keys activate -abc…` all work."""
    if len(argv) < 2 or argv[0] != "keys":
        return argv
    flags = [a for a in argv[1:] if a in KEYS_FLAGS]
    rest = [a for a in argv[1:] if a not in flags and a != "--"]
    return ["keys", *flags, *rest[:1], "--", *rest[1:]] if rest else argv
