"""POST /v2/Services/{IS}/Tokens against bare baselines, in one run (issues 3 and 5).

    python bench/tokens.py                                  # SQLite, wrk if installed
    python bench/tokens.py --database postgresql            # a throwaway PostgreSQL cluster
    python bench/tokens.py --database postgresql --pg-url postgresql://user@/postgres?host=/run/postgresql

One uvicorn worker each, `--concurrency` (64) keep-alive clients from a separate load-generator
process (wrk, or bench/loadgen.py), `--duration` seconds per measurement, `--rounds` rounds with
the order rotated each round so drift on this shared machine hits every measurement alike:

  C0                bench/baseline.py: parse the form, mint() with the cached key; no database
  C1 existing/new   C0 + get-or-create on the raw driver (sqlite3 with tokensvc's PRAGMAs, or psycopg)
  tokensvc …        `python -m tokensvc.cli serve`, 1 worker, existing and first-encounter identities
  tokensvc 2w …     the same with `--workers 2`

Prints medians (req/s, p50, p99, server CPU µs per request) and the ratios of the issues' targets:
tokensvc existing ≥ 0.7 × C1, new ≥ 0.6 × C1, 2 workers ≥ 1.6 × 1 worker; and the tail: tokensvc's
p99 ≤ 2 × C1's p99 in the same round (issue 11), existing and new identities. `--variant NAME=DIR`
adds a tokensvc server run from another source tree (a scratch copy with a prototype change), and
`--variant-env NAME=KEY=VALUE` one with extra environment, measured in the same rounds.
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
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Load,
    Server,
    bulk_users_pg,
    bulk_users_sqlite,
    exit_status,
    have_wrk,
    median,
    new_sid,
    pg_database,
    print_results,
    print_round,
    run_load,
    set_source,
    start_baseline,
    start_tokensvc,
    temp_postgres,
    tokensvc_database,
    verdict,
)


def post(server: Server, path: str, body: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(server.base + path, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def sanity(server: Server, path: str, headers: dict[str, str], keys_dir: Path, *, has_users: bool) -> None:
    """One existing and one new identity answer 201 with a token that verifies with our key."""
    import jwt

    from tokensvc.signing import load_snapshot

    snap = load_snapshot(keys_dir)
    for identity, created in (("user-0", False), (f"sanity-{secrets.token_hex(4)}", True)):
        status, body = post(server, path, f"Identity={identity}", headers)
        assert status == 201, (server.name, status, body)
        kid = jwt.get_unverified_header(body["token"])["kid"]
        claims = jwt.decode(body["token"], snap.verification_key(kid), algorithms=["ES256"])
        assert claims["grants"]["identity"] == identity, (server.name, claims)
        if has_users:
            assert body["user_created"] is created and body["user_sid"].startswith("US"), (server.name, body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", help="a PostgreSQL server URL (a database is created and dropped on it)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--existing", type=int, default=10_000, help="users created before the run")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-workers", action="store_true", help="skip the 2-worker measurement")
    parser.add_argument("--no-baseline", action="store_true", help="skip C0 (keep C1)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="also measure tokensvc run from the source tree DIR")
    parser.add_argument("--variant-env", action="append", default=[], metavar="NAME=KEY=VALUE",
                        help="also measure tokensvc with extra environment (repeat for more keys)")
    parser.add_argument("--only-existing", action="store_true", help="measure existing identities only")
    parser.add_argument("--src", type=Path, help="the tokensvc source tree to measure (default: this checkout)")
    args = parser.parse_args()
    src = set_source(args.src)

    client = args.client
    if client == "auto":
        client = "wrk" if have_wrk() else "python"
    if client == "wrk" and not have_wrk():
        raise SystemExit("bench: wrk is not installed (apt-get install -y wrk), or use --client python")
    print(f"# bench/tokens.py: {args.database}, client {client}, {args.concurrency} connections, "
          f"{args.duration:g} s x {args.rounds} rounds, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f}\n"
          f"# tokensvc from {src}")

    variants: dict[str, dict[str, Any]] = {}
    for spec in args.variant:
        name, _, tree = spec.partition("=")
        variants.setdefault(name, {"src": src, "env": {}})["src"] = Path(tree).resolve()
    for spec in args.variant_env:
        name, _, kv = spec.partition("=")
        key, _, value = kv.partition("=")
        variants.setdefault(name, {"src": src, "env": {}})["env"][key] = value

    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-tokens-"))
    account = (new_sid("AC"), secrets.token_urlsafe(24))
    auth = "Basic " + base64.b64encode(f"{account[0]}:{account[1]}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    keys = tmp / "keys"
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with contextlib.ExitStack() as stack:
            started = time.perf_counter()
            if args.database == "sqlite":
                c1_db, t_db = tmp / "c1.db", tmp / "tokensvc.db"
                c1_svc = tokensvc_database(f"sqlite:///{c1_db}", keys, account)
                bulk_users_sqlite(c1_db, c1_svc, args.existing)
                t_svc = tokensvc_database(f"sqlite:///{t_db}", keys, account)
                bulk_users_sqlite(t_db, t_svc, args.existing)
                t_url, c1_opts = f"sqlite:///{t_db}", {"db": str(c1_db)}
            else:
                base_url = args.pg_url or stack.enter_context(temp_postgres(tmp))
                pid = os.getpid()
                c1_sa, c1_libpq = stack.enter_context(pg_database(base_url, f"tokensvc_bench_c1_{pid}"))
                t_url, t_libpq = stack.enter_context(pg_database(base_url, f"tokensvc_bench_t_{pid}"))
                c1_svc = tokensvc_database(c1_sa, keys, account)
                bulk_users_pg(c1_libpq, c1_svc, args.existing)
                t_svc = tokensvc_database(t_url, keys, account)
                bulk_users_pg(t_libpq, t_svc, args.existing)
                c1_opts = {"pg": c1_libpq}
            print(f"# databases ready ({args.existing} existing users each) in {time.perf_counter() - started:.1f} s")

            def launch(make: Any) -> Server:
                server = make()
                stack.callback(server.stop)
                return server

            servers: dict[str, Server] = {}
            if not args.no_baseline:
                servers["C0"] = launch(lambda: start_baseline("C0", "c0", logdir=tmp, keys_dir=str(keys),
                                                              account=account[0]))
            servers["C1"] = launch(lambda: start_baseline("C1", "c1", logdir=tmp, keys_dir=str(keys),
                                                          account=account[0], **c1_opts))
            servers["tokensvc"] = launch(lambda: start_tokensvc("tokensvc", database_url=t_url, keys_dir=keys,
                                                                account=account, logdir=tmp))
            if not args.no_workers:
                servers["tokensvc 2w"] = launch(lambda: start_tokensvc("tokensvc-2w", database_url=t_url, keys_dir=keys,
                                                                       account=account, logdir=tmp, workers=2))
            for name, v in variants.items():
                servers[name] = launch(lambda v=v, name=name: start_tokensvc(
                    name, database_url=t_url, keys_dir=keys, account=account, logdir=tmp, src=v["src"],
                    extra_env=v["env"]))

            def path(name: str) -> str:
                return f"/v2/Services/{(c1_svc if name in ('C0', 'C1') else t_svc)['sid']}/Tokens"

            for name, server in servers.items():
                sanity(server, path(name), headers, keys, has_users=name != "C0")

            # Two groups measured back to back, so the ratios compare neighbours in time.
            groups: list[list[tuple[str, str, Load]]] = [[], []]
            for name in servers:
                existing = Load("POST", path(name), "Identity=user-{r}", headers, rand_max=args.existing)
                new = Load("POST", path(name), "Identity=new-{u}", headers)
                if name == "C0":
                    groups[0].append(("C0", name, existing))
                    continue
                groups[0].append((f"{name} existing", name, existing))
                if not args.only_existing:
                    groups[1].append((f"{name} new", name, new))

            for name, server in servers.items():  # warm up: imports, caches, prepared statements
                run_load(Load("POST", path(name), "Identity=user-{r}", headers, rand_max=args.existing),
                         server, client=client, concurrency=args.concurrency, duration=1, workdir=tmp)

            rounds: list[dict[str, dict[str, Any]]] = []
            for r in range(args.rounds):
                this: dict[str, dict[str, Any]] = {}
                order = [c for g in groups if g for c in g[r % len(g):] + g[:r % len(g)]]
                for label, name, load in order:
                    this[label] = res = run_load(load, servers[name], client=client, concurrency=args.concurrency,
                                                 duration=args.duration, workdir=tmp)
                    results.setdefault(label, []).append(res)
                    print_round(r, label, res)
                rounds.append(this)
            labels = [c[0] for g in groups for c in g]
            results = {label: results[label] for label in labels}

        print()
        print_results(results)
        print()
        print("ratios: median over rounds of the per-round ratio [each round]; throughput, and server CPU per request")

        def ratio(a: str, b: str, target: float | None, note: str = "") -> None:
            if a not in results or b not in results:
                return
            tp = [rd[a]["rps"] / rd[b]["rps"] for rd in rounds]
            cpu = [rd[b]["server_cpu_us_per_req"] / rd[a]["server_cpu_us_per_req"] for rd in rounds]
            line = (f"  {a + ' / ' + b:<44} {median(tp):5.2f} [{' '.join(f'{x:.2f}' for x in tp)}]"
                    f"   cpu {median(cpu):5.2f}")
            if target is not None:
                line += "   " + verdict(median(tp), target)
            print(line + (f"   {note}" if note else ""))

        ratio("C1 existing", "C0", None)
        ratio("C1 new", "C0", None)
        ratio("tokensvc existing", "C1 existing", 0.7)
        ratio("tokensvc new", "C1 new", 0.6)
        ratio("tokensvc new", "C1 existing", 0.6, "(stricter reading: against C1's existing-identity rate)")
        ratio("tokensvc 2w existing", "tokensvc existing", 1.6)
        ratio("tokensvc 2w new", "tokensvc new", 1.6)
        for name in variants:
            ratio(f"{name} existing", "C1 existing", 0.7)
            ratio(f"{name} existing", "tokensvc existing", None, "(gain of the variant)")
            ratio(f"{name} new", "C1 new", 0.6)
            ratio(f"{name} new", "tokensvc new", None, "(gain of the variant)")
        print("  (cpu = the inverse ratio of server CPU µs per request: what the ratio would be with a whole "
              "core each, untouched by noise)")
        print()
        print("p99 latency: median over rounds of the per-round p99 ratio [each round: tokensvc p99 / C1 p99 ms]")

        def tail(a: str, b: str, target: float | None) -> None:
            if a not in results or b not in results:
                return
            p99 = [rd[a]["p99_ms"] / rd[b]["p99_ms"] for rd in rounds]
            each = " ".join(f"{rd[a]['p99_ms']:.1f}/{rd[b]['p99_ms']:.1f}" for rd in rounds)
            line = (f"  {a + ' / ' + b:<44} {median(p99):5.2f} [{' '.join(f'{x:.2f}' for x in p99)}]"
                    f"   p99 {median([rd[a]['p99_ms'] for rd in rounds]):.1f} vs "
                    f"{median([rd[b]['p99_ms'] for rd in rounds]):.1f} ms   [{each}]")
            if target is not None:
                line += "   " + verdict(median(p99), target, at_least=False)
            print(line)

        tail("tokensvc existing", "C1 existing", 2.0)
        tail("tokensvc new", "C1 new", 2.0)
        for name in variants:
            tail(f"{name} existing", "C1 existing", 2.0)
            tail(f"{name} new", "C1 new", 2.0)
        return exit_status(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
