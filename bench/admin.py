"""Admin work at scale (issue 15, Performance): ratios measured in one run, on SQLite and PostgreSQL.

    python bench/admin.py                          # 1,000,000 users, SQLite then PostgreSQL
    python bench/admin.py --users 50000            # a quick run
    python bench/admin.py --database sqlite        # one database only
    python bench/admin.py --pg-url postgresql://user@/postgres?host=/run/postgresql
    python bench/admin.py --sections filters       # some sections only

Each database is fresh: tokensvc's migrations make the schema, its domain functions the account
and the service, and the users are bulk-inserted straight into the users table (a SQLite file;
COPY into a new database of a throwaway PostgreSQL cluster, or of --pg-url's server): identities
`user-0` … `user-N-1`, ids ascending, one date. Then a real `tokensvc serve` on 127.0.0.1 and load
from a separate process (wrk when installed, else bench/loadgen.py), `--duration` seconds per
measurement, `--rounds` rounds in rotated order; a ratio is the median of its per-round ratios.

Sections (one function each, SECTIONS below; each prints its PASS/MISS lines):

  filters  GET /Users (REST, PageSize=50): the unfiltered first page against IdentityPrefix
           pages (a random `user-{r}` prefix, r < 1,000: each a range of the unique index, in
           identity order), a deep IdentityPrefix page (its PageToken in the middle of `user-1…`),
           and UpdatedAfter first and deep pages (every user on one date: the (date_updated, sid)
           range through a tie of N rows). Target: IdentityPrefix page <= 1.5 x the unfiltered first page.
  import   `tokensvc users import` of --import-lines new identities (JSON Lines, no webhooks), a real
           CLI process per round (bench/admin_cli.py): lines/s. Target >= 5,000 on SQLite.
  export   `tokensvc users export` of every user of the service, a real CLI process per round, less
           the same command on an empty service: users/s and peak RSS. Target >= 50,000, constant memory.
  console  the admin console's users page with an identity-prefix search (`user-5`, signed in with a
           session cookie, rendered HTML) against the REST first page: <= 2 x (bench/admin_console.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Load,
    Server,
    bulk_users_pg,
    bulk_users_sqlite,
    have_wrk,
    median,
    new_sid,
    pg_database,
    print_results,
    print_round,
    run_load,
    set_source,
    start_tokensvc,
    temp_postgres,
    tokensvc_database,
    verdict,
)


@dataclass
class Setup:
    """What every section gets: one database filled with `users` users, and a server on it."""

    database: str  # "sqlite" | "postgresql"
    url: str  # tokensvc's TOKENSVC_DATABASE_URL
    keys: Path
    tmp: Path
    service: dict[str, Any]
    account: tuple[str, str]
    server: Server
    users: int
    args: argparse.Namespace

    @property
    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.account[0]}:{self.account[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    @property
    def users_path(self) -> str:
        return f"/v2/Services/{self.service['sid']}/Users"


@dataclass
class Ratio:
    """One line of a section's verdict: a / b per round; `target` None for information only."""

    label: str
    values: list[float]
    cpu: list[float]
    target: float | None = None
    at_least: bool = False

    def line(self) -> str:
        text = (f"  {self.label:<58}{median(self.values):6.2f} [{' '.join(f'{x:.2f}' for x in self.values)}]"
                f"   cpu {median(self.cpu):.2f}")
        return text + (f"   {verdict(median(self.values), self.target, at_least=self.at_least)}"
                       if self.target is not None else "")


def get(setup: Setup, path: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(setup.server.base + path, headers=setup.headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def measure(setup: Setup, loads: dict[str, Load], concurrency: int) -> list[dict[str, dict[str, Any]]]:
    """Every load once per round, in rotated order (after a warm-up); the results of each round."""
    client = setup.args.client
    for load in loads.values():
        run_load(load, setup.server, client=client, concurrency=concurrency, duration=0.5, workdir=setup.tmp)
    labels = list(loads)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(setup.args.rounds):
        this: dict[str, dict[str, Any]] = {}
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            this[label] = res = run_load(loads[label], setup.server, client=client, concurrency=concurrency,
                                         duration=setup.args.duration, workdir=setup.tmp)
            print_round(r, label, res)
        rounds.append(this)
    print()
    print_results({label: [rd[label] for rd in rounds] for label in labels})
    print()
    return rounds


def latency_ratio(rounds: list[dict[str, dict[str, Any]]], a: str, b: str, target: float | None = None) -> Ratio:
    """p50 latency of a over b per round (and the same from server CPU per request)."""
    return Ratio(f"{a} / {b}, p50", [rd[a]["p50_ms"] / rd[b]["p50_ms"] for rd in rounds],
                 [rd[a]["server_cpu_us_per_req"] / rd[b]["server_cpu_us_per_req"] for rd in rounds], target)


# ---------------------------------------------------------------- the sections

def section_filters(setup: Setup) -> list[Ratio]:
    """The Users list filters (SPEC §11): each one index range, so a page costs what the plain one does."""
    from tokensvc.crypto import SecretBox
    from tokensvc.paging import IDENTITY, UPDATED, Cursors

    n, path = setup.users, setup.users_path
    box = SecretBox.load_or_create(setup.keys)
    prefixes = min(1000, n)
    status, middle = get(setup, f"{path}/user-{n // 2}")
    assert status == 200, (status, middle)
    updated = int(datetime.fromisoformat(middle["date_updated"].replace("Z", "+00:00")).timestamp())
    deep_identity = Cursors(box, path, IDENTITY).encode("n", "user-15")
    deep_updated = Cursors(box, path, UPDATED).encode("n", (updated, middle["sid"]))
    pages = {
        "first page": f"{path}?PageSize=50",
        "prefix page": f"{path}?PageSize=50&IdentityPrefix=user-{{r}}",
        "prefix deep page": f"{path}?PageSize=50&IdentityPrefix=user-1&Page=1&PageToken={deep_identity}",
        "updated page": f"{path}?PageSize=50&UpdatedAfter=2000-01-01T00:00:00Z",
        "updated deep page": f"{path}?PageSize=50&UpdatedAfter=2000-01-01T00:00:00Z&Page=1&PageToken={deep_updated}",
    }
    # Each answers what it means before it is timed.
    for label, page in pages.items():
        status, body = get(setup, page.replace("{r}", "7"))
        assert status == 200, (label, status, body)
        got = [u["identity"] for u in body["users"]]
        assert got and len(got) <= 50, (label, got)
        if "prefix" in label:
            prefix = "user-7" if label == "prefix page" else "user-1"
            assert all(i.startswith(prefix) for i in got) and got == sorted(got), (label, got[:3])
            assert label == "prefix page" or got[0] > "user-15", got[:2]
        if label == "updated deep page":
            assert [u["sid"] for u in body["users"]] > [middle["sid"]], body["users"][0]
        if label == "first page":
            assert got[:2] == ["user-0", "user-1"], got[:2]
    loads = {label: Load("GET", page, headers=setup.headers, rand_max=prefixes) for label, page in pages.items()}
    rounds = measure(setup, loads, setup.args.page_concurrency)
    return [
        latency_ratio(rounds, "prefix page", "first page", 1.5),
        latency_ratio(rounds, "prefix deep page", "first page"),
        latency_ratio(rounds, "updated page", "first page"),
        latency_ratio(rounds, "updated deep page", "first page"),
    ]


def section_import(setup: Setup) -> list[Ratio]:
    """`tokensvc users import` of --import-lines new identities (JSON Lines, no webhooks) into
    this database, once per round (bench/admin_cli.py): lines/s; target >= 5,000 on SQLite."""
    from admin_cli import IMPORT_TARGET, bench_import

    runs = []
    for r in range(setup.args.rounds):
        runs.append(res := bench_import(setup.url, setup.args.import_lines))
        print(f"  round {r + 1} import {res['lines']:,} lines  {res['lines_per_s']:,} lines/s  "
              f"({res['lines_per_cpu_s']:,} per CPU second past start-up)", flush=True)
    target = IMPORT_TARGET if setup.database == "sqlite" else None  # the target is SQLite's
    return [Ratio("import, lines/s (cpu: lines per CPU second)", [float(x["lines_per_s"]) for x in runs],
                  [float(x["lines_per_cpu_s"]) for x in runs], target, at_least=True)]


def section_export(setup: Setup) -> list[Ratio]:
    """`tokensvc users export` of the setup's service (every one of its users) against the same
    command on an empty service, once per round (bench/admin_cli.py): users/s past start-up and
    the peak RSS; target >= 50,000 users/s in constant memory."""
    from admin_cli import EXPORT_TARGET, measure_export, service_in

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
    env.update({"TOKENSVC_DATABASE_URL": setup.url, "TOKENSVC_KEYS_DIR": str(setup.keys),
                "TOKENSVC_ACCOUNT_SID": setup.account[0], "TOKENSVC_AUTH_TOKEN": setup.account[1]})
    workdir = setup.tmp / "export"
    workdir.mkdir(exist_ok=True)
    empty = service_in(setup.url, setup.keys, setup.account[0], "bench export (empty)")
    runs = []
    for r in range(setup.args.rounds):
        runs.append(res := measure_export(env, empty["sid"], setup.service["sid"], setup.users, workdir))
        print(f"  round {r + 1} export {res['users']:,} users  {res['users_per_s']:,} users/s  "
              f"({res['users_per_cpu_s']:,} per CPU second; peak RSS {res['rss_kib']:,} KiB, "
              f"empty service {res['rss_empty_kib']:,} KiB)", flush=True)
    return [Ratio("export, users/s (cpu: users per CPU second)", [float(x["users_per_s"]) for x in runs],
                  [float(x["users_per_cpu_s"]) for x in runs], EXPORT_TARGET, at_least=True),
            Ratio("export, peak RSS full / empty service", [x["rss_kib"] / x["rss_empty_kib"] for x in runs],
                  [x["rss_kib"] / x["rss_empty_kib"] for x in runs])]


def section_console(setup: Setup) -> list[Ratio]:
    """The console's users page with an identity-prefix search (signed in as a browser is) against
    the REST first page, same server and connections (bench/admin_console.py); target <= 2."""
    from admin_console import TARGET, bench_console

    out = bench_console(setup.server.base, setup.account, setup.service["sid"], server=setup.server,
                        duration=setup.args.duration, rounds=setup.args.rounds,
                        concurrency=setup.args.page_concurrency, client=setup.args.client, workdir=setup.tmp)
    return [Ratio("console search page / REST first page, time per request", out["ratio_rounds"], out["cpu_rounds"],
                  TARGET),
            Ratio("console search page / REST first page, p50", out["p50_rounds"], out["cpu_rounds"])]


SECTIONS: dict[str, Callable[[Setup], list[Ratio]]] = {
    "filters": section_filters,
    "import": section_import,
    "export": section_export,
    "console": section_console,
}


# ---------------------------------------------------------------- databases and the run

@contextlib.contextmanager
def filled(database: str, n: int, tmp: Path, args: argparse.Namespace) -> Any:
    """(url, keys, service, account) of a fresh database holding n bulk-inserted users."""
    account = (new_sid("AC"), secrets.token_urlsafe(24))
    keys = tmp / f"keys-{database}"
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            path = tmp / "tokensvc.db"
            url = f"sqlite:///{path}"
            svc = tokensvc_database(url, keys, account)
            bulk_users_sqlite(path, svc, n)
        else:
            base_url = args.pg_url or stack.enter_context(temp_postgres(tmp))
            url, libpq = stack.enter_context(pg_database(base_url, f"tokensvc_bench_admin_{os.getpid()}"))
            svc = tokensvc_database(url, keys, account)
            bulk_users_pg(libpq, svc, n)
        print(f"# {database}: {n} users filled in {time.perf_counter() - started:.1f} s", flush=True)
        yield url, keys, svc, account


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", help="a PostgreSQL server URL (a database is created and dropped on it)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--import-lines", type=int, default=50_000, help="lines per import round")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-concurrency", type=int, default=8, help="connections for page measurements")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--src", type=Path, help="the tokensvc source tree to measure (default: this checkout)")
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.client == "auto":
        args.client = "wrk" if have_wrk() else "python"
    elif args.client == "wrk" and not have_wrk():
        raise SystemExit("bench: wrk is not installed (apt-get install -y wrk)")
    src = set_source(args.src)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    print(f"# bench/admin.py: {args.users} users, {', '.join(databases)}, sections {', '.join(sections)}, "
          f"client {args.client}, {args.duration:g} s x {args.rounds} rounds, {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.2f}\n# tokensvc from {src}", flush=True)
    verdicts: list[tuple[str, Ratio]] = []
    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-admin-"))
    try:
        for database in databases:
            with filled(database, args.users, tmp, args) as (url, keys, svc, account):
                server = start_tokensvc(f"tokensvc-{database}", database_url=url, keys_dir=keys, account=account,
                                        logdir=tmp)
                try:
                    setup = Setup(database, url, keys, tmp, svc, account, server, args.users, args)
                    for name in sections:
                        print(f"## {database}: {name}", flush=True)
                        for ratio in SECTIONS[name](setup):
                            print(ratio.line())
                            verdicts.append((database, ratio))
                finally:
                    server.stop()
        print("\n# summary (ratios: median of rounds [each round]; cpu: the same from server CPU per request)")
        for database, ratio in verdicts:
            print(f"{database:<11}{ratio.line()}")
        return 1 if any(r.target is not None and not verdict(median(r.values), r.target,
                                                              at_least=r.at_least).startswith("PASS")
                        for _, r in verdicts) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
