"""Sample a real `tokensvc serve` with py-spy while wrk drives POST /Tokens, and say where it goes.

    pip install py-spy && python bench/profile_http.py [--new] [--seconds 8] [--src DIR]

Prints the share of the server's busy samples spent in each layer (innermost layer wins): uvicorn
and httptools, Starlette, the RequestMiddleware, its access log and metrics, authentication, form
parsing, SQLAlchemy vs the sqlite3 call itself, ES256 signing, the JSON response. The collapsed
stacks are kept (--out) for a flame graph.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Load,
    bulk_users_pg,
    bulk_users_sqlite,
    have_wrk,
    new_sid,
    pg_database,
    run_load,
    set_source,
    start_tokensvc,
    tokensvc_database,
)

# Each sample goes to the first rule matched walking its stack from the leaf up: the innermost
# layer that was running. (label, substring of a py-spy frame "function (file:line)")
RULES = [
    ("psycopg (async driver: query, wait, rows)", "psycopg/"),
    ("sqlite3 driver call (C, via SQLAlchemy do_execute)", "do_execute (sqlalchemy"),
    ("SQLAlchemy Core: statement build, cache key, result rows", "sqlalchemy/"),
    ("access log: logging module", "logging/__init__.py"),
    ("prometheus metrics", "prometheus_client"),
    ("ES256 signature + JWS encoding (SigningKey.sign)", "tokensvc/signing.py"),
    ("claims (tokens.mint: uuid4, time)", "tokensvc/tokens.py"),
    ("Basic authentication (auth.py, authenticate)", "tokensvc/auth.py"),
    ("Basic authentication (auth.py, authenticate)", "authenticate (tokensvc/api/common.py"),
    ("form parsing (read_form, read_body)", "read_form (tokensvc"),
    ("form parsing (read_form, read_body)", "read_body (tokensvc"),
    ("JSON response (json_response)", "json_response (tokensvc"),
    ("get_or_create / Database.run own code", "tokensvc/store/users.py"),
    ("get_or_create / Database.run own code", "tokensvc/db/"),
    ("RequestMiddleware own code (request id, json.dumps of the log line)", "tokensvc/app.py"),
    ("other tokensvc code (create_token, ctx, validation)", "tokensvc/"),
    ("Starlette: routing, Request, Response, exception middleware", "starlette/"),
    ("uvicorn + httptools: parsing, transport, response write", "uvicorn/"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--new", action="store_true", help="first-encounter identities instead of existing ones")
    parser.add_argument("--src", type=Path)
    parser.add_argument("--pg-url", help="profile on PostgreSQL: a server URL (a database is created and dropped)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tokensvc-pyspy.txt")
    args = parser.parse_args()
    set_source(args.src)
    if not shutil.which("py-spy") or not have_wrk():
        raise SystemExit("bench: needs py-spy (pip install py-spy) and wrk (apt-get install -y wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-pyspy-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.pg_url:
                url, conninfo = stack.enter_context(pg_database(args.pg_url, f"tokensvc_pyspy_{secrets.token_hex(4)}"))
            else:
                url, conninfo = f"sqlite:///{tmp / 'tokensvc.db'}", None
            result = profile(args, tmp, url, conninfo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = stack.split(";")[::-1]
        label = next((lbl for frame in frames for lbl, needle in RULES if needle in frame), "other (asyncio, uvloop)")
        counts[label] += int(n)
    print(f"# {total} samples of `tokensvc serve` on {'PostgreSQL' if args.pg_url else 'SQLite'} (idle excluded) "
          f"at {result.get('rps', 0):.0f} req/s "
          f"({'new' if args.new else 'existing'} identities); collapsed stacks in {args.out}")
    for label, n in counts.most_common():
        print(f"  {label:<68}{n / max(1, total) * 100:6.1f} %")
    return 0


def profile(args: argparse.Namespace, tmp: Path, url: str, conninfo: str | None) -> dict:
    """Run wrk against a fresh server on `url` while py-spy samples it; wrk's result."""
    server = None
    try:
        account = (new_sid("AC"), secrets.token_urlsafe(24))
        svc = tokensvc_database(url, tmp / "keys", account)
        if conninfo is None:
            bulk_users_sqlite(Path(url[len("sqlite:///"):]), svc, 10_000)
        else:
            bulk_users_pg(conninfo, svc, 10_000)
        server = start_tokensvc("tokensvc", database_url=url, keys_dir=tmp / "keys", account=account, logdir=tmp)
        auth = "Basic " + base64.b64encode(f"{account[0]}:{account[1]}".encode()).decode()
        load = Load("POST", f"/v2/Services/{svc['sid']}/Tokens",
                    "Identity=new-{u}" if args.new else "Identity=user-{r}",
                    {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}, rand_max=10_000)
        run_load(load, server, client="wrk", concurrency=64, duration=1, workdir=tmp)  # warm up
        result: dict = {}
        loader = threading.Thread(target=lambda: result.update(run_load(
            load, server, client="wrk", concurrency=64, duration=args.seconds + 2, workdir=tmp)))
        loader.start()
        subprocess.run(["py-spy", "record", "--pid", str(server.proc.pid), "--duration", str(args.seconds),
                        "--rate", "250", "--format", "raw", "--nonblocking", "-o", str(args.out)],
                       check=True, capture_output=True)
        loader.join()
        return result
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
