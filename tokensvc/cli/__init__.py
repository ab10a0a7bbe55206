"""`tokensvc serve | token | services | users | roles | keys | accounts | webhooks | db`: one module per
command group; the ones that act on the database call the API's use cases (tokensvc/usecases)
with the same Settings as `serve`.

Exit statuses: 0 done; 1 failed or partly failed (a domain error such as an unknown service,
printed on stderr with its Twilio code; an import with bad lines); 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import accounts, keys, roles, schema, serve, services, tokens, users, webhooks
from .keys import keys_argv as _keys_argv
from .serve import app_factory, tune_gc
from .setup import prepare

__all__ = ["app_factory", "build_parser", "main", "prepare", "tune_gc"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokensvc", description="Self-hosted access-token issuer")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, tokens, services, users, roles, keys, accounts, webhooks, schema):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_keys_argv(list(sys.argv[1:] if argv is None else argv)))
    return int(args.func(args))
