"""Users at scale (issue 2): deep keyset pages and fetch-by-identity against a bare endpoint.

    python bench/users.py                      # 1,000,000 users (about a minute to fill)
    python bench/users.py --users 50000        # a quick run
    python bench/users.py --db /tmp/u.db       # keep the filled database and reuse it next time

The database is a real SQLite file made by tokensvc's migrations; the account and service come
from tokensvc's own domain functions, the users are bulk-inserted straight into the users table
(ids ascending = creation order, identities `user-0` … `user-N-1`). Then, on 127.0.0.1:

  pages    `tokensvc serve`: GET /v2/Services/{IS}/Users?PageSize=50 at depth 0, N/2 and N - N/1000
           (999,000 for a million), a deep page reached by its PageToken (keyset on users.id,
           tokensvc.paging.Cursors(...).encode('n', id of the row before it)) as next_page_url would give;
  fetch    GET /v2/Services/{IS}/Users/user-{random} on `tokensvc serve` and on a bare Starlette
           endpoint (bench/baseline.py: the same indexed SELECT on raw sqlite3, the same JSON),
           same uvicorn settings, same file.
  push     GET /v2/Services/{IS}/Users/user-0 (two push bindings, is_notifiable true) against
           /Users/user-1 (none, null) on the same server, reachability on (issue 13, SPEC §9).

Load comes from a separate process (bench/loadgen.py, or wrk with --client wrk), bounded by
`--duration` per measurement, `--rounds` rounds in rotated order. Prints depth-999k / depth-0
(target <= 1.5), tokensvc / bare fetch throughput (target >= 0.5) and fetch with bindings /
without (target >= 0.9: within 10 %).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Load,
    Server,
    bulk_users_sqlite,
    exit_status,
    have_wrk,
    median,
    new_sid,
    print_results,
    print_round,
    run_load,
    set_source,
    start_baseline,
    start_tokensvc,
    tokensvc_database,
    verdict,
)


def get(server: Server, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(server.base + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def prepare_database(path: Path, keys: Path, count: int) -> tuple[dict[str, Any], tuple[str, str]]:
    """The bench service of `path` with `count` users, filling it if it is new; (service, account)."""
    token = secrets.token_urlsafe(24)
    if path.exists():
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        try:
            svc = conn.execute("SELECT * FROM services WHERE friendly_name = 'bench' ORDER BY id LIMIT 1").fetchone()
            have = (conn.execute("SELECT count(*) FROM users WHERE service_sid = ?", (svc["sid"],)).fetchone()[0]
                    if svc else 0)
        finally:
            conn.close()
        if svc is not None and have == count:
            print(f"# reusing {path}: service {svc['sid']} with {have} users")
            # `tokensvc serve` sets the bootstrap account's token hash from the environment.
            return dict(svc), (svc["account_sid"], token)
        raise SystemExit(f"bench: {path} exists but does not hold a bench service with {count} users")
    account = (new_sid("AC"), token)
    svc = tokensvc_database(f"sqlite:///{path}", keys, account)
    started = time.perf_counter()
    bulk_users_sqlite(path, svc, count)
    print(f"# filled {count} users in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
    return svc, account


def push_bindings(server: Server, service_sid: str, auth: str) -> None:
    """Reachability on, and two push bindings for user-0 (SPEC §9), through the API."""

    def post(path: str, form: dict[str, str]) -> dict[str, Any]:
        req = urllib.request.Request(server.base + path, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Authorization": auth}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    post(f"/v2/Services/{service_sid}", {"ReachabilityEnabled": "true"})
    credential = post("/v2/Credentials", {"Type": "fcm", "Secret": secrets.token_urlsafe(24)})["sid"]
    for endpoint in ("bench-phone", "bench-tablet"):
        post(f"/v2/Services/{service_sid}/Bindings", {"Identity": "user-0", "BindingType": "fcm", "Endpoint": endpoint,
                                                      "Address": secrets.token_hex(32), "CredentialSid": credential})


def keyset_sql_check(path: Path, svc_sid: str, depths: list[int]) -> dict[int, int]:
    """The id before each depth, the query plan, and raw-sqlite3 time of each page query."""
    conn = sqlite3.connect(path)
    try:
        before: dict[int, int] = {}
        for d in depths:
            if d:
                before[d] = conn.execute("SELECT id FROM users WHERE service_sid = ? ORDER BY id LIMIT 1 OFFSET ?",
                                         (svc_sid, d - 1)).fetchone()[0]
        sql = "SELECT * FROM users WHERE service_sid = ? AND id > ? ORDER BY id LIMIT 51"
        plan = " / ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (svc_sid, 0)))
        print(f"# keyset page plan: {plan}")
        for d in depths:
            started = time.perf_counter()
            for _ in range(200):
                conn.execute(sql, (svc_sid, before.get(d, 0))).fetchall()
            print(f"#   raw sqlite3 page query at depth {d:>9}: {(time.perf_counter() - started) / 200 * 1e6:7.0f} µs")
        return before
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="keep the filled database here (reused when it exists)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64, help="connections for the fetch measurement")
    parser.add_argument("--page-concurrency", type=int, default=8, help="connections for the page measurement")
    parser.add_argument("--client", choices=["python", "wrk"], default="python")
    parser.add_argument("--src", type=Path, help="the tokensvc source tree to measure (default: this checkout)")
    args = parser.parse_args()
    src = set_source(args.src)
    if args.client == "wrk" and not have_wrk():
        raise SystemExit("bench: wrk is not installed (apt-get install -y wrk)")
    n = args.users
    depths = [0, n // 2, n - max(50, n // 1000)]
    print(f"# bench/users.py: {n} users, client {args.client}, {args.duration:g} s x {args.rounds} rounds, "
          f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f}\n# tokensvc from {src}")

    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-users-"))
    db_path = args.db.resolve() if args.db else tmp / "tokensvc.db"
    keys = (db_path.parent / (db_path.stem + "-keys")) if args.db else tmp / "keys"
    servers: list[Server] = []
    try:
        svc, account = prepare_database(db_path, keys, n)
        before = keyset_sql_check(db_path, svc["sid"], depths)
        auth = "Basic " + base64.b64encode(f"{account[0]}:{account[1]}".encode()).decode()
        headers = {"Authorization": auth}
        tokensvc = start_tokensvc("tokensvc", database_url=f"sqlite:///{db_path}", keys_dir=keys, account=account,
                                  logdir=tmp)
        servers.append(tokensvc)
        bare = start_baseline("bare", "users", logdir=tmp, db=str(db_path))
        servers.append(bare)

        from tokensvc.crypto import SecretBox
        from tokensvc.paging import Cursors

        users_path = f"/v2/Services/{svc['sid']}/Users"
        cursors = Cursors(SecretBox.load_or_create(keys), users_path)
        cases: list[tuple[str, Server, Load, int]] = []
        for d in depths:
            page = f"{users_path}?PageSize=50"
            if d:
                page += f"&Page={d // 50}&PageToken={cursors.encode('n', before[d])}"
            status, body = get(tokensvc, page, headers)
            assert status == 200, (status, body)
            got = [u["identity"] for u in body["users"]]
            assert len(got) == 50 and got[0] == f"user-{d}" and got[-1] == f"user-{d + 49}", (d, got[:2], got[-1:])
            cases.append((f"page at depth {d}", tokensvc, Load("GET", page, headers=headers), args.page_concurrency))
        fetch = Load("GET", users_path + "/user-{r}", headers=headers, rand_max=n)
        for server in (tokensvc, bare):
            status, body = get(server, f"{users_path}/user-{n - 1}", headers)
            assert status == 200 and body["identity"] == f"user-{n - 1}", (server.name, status, body)
        status, _ = get(tokensvc, f"{users_path}/user-{n - 1}", {})
        assert status == 401, status
        cases.append(("fetch tokensvc", tokensvc, fetch, args.concurrency))
        cases.append(("fetch bare", bare, fetch, args.concurrency))
        push_bindings(tokensvc, svc["sid"], auth)
        for identity, notifiable in (("user-0", True), ("user-1", None)):
            status, body = get(tokensvc, f"{users_path}/{identity}", headers)
            assert status == 200 and body["is_notifiable"] is notifiable, (identity, status, body)
        cases.append(("fetch with bindings", tokensvc, Load("GET", f"{users_path}/user-0", headers=headers),
                      args.concurrency))
        cases.append(("fetch without bindings", tokensvc, Load("GET", f"{users_path}/user-1", headers=headers),
                      args.concurrency))

        for _, server, load, conc in cases:  # warm up
            run_load(load, server, client=args.client, concurrency=conc, duration=0.5, workdir=tmp)
        results: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in cases}
        rounds: list[dict[str, dict[str, Any]]] = []
        groups = [cases[:len(depths)], cases[len(depths):-2], cases[-2:]]  # compared neighbours run back to back
        for r in range(args.rounds):
            this: dict[str, dict[str, Any]] = {}
            for label, server, load, conc in [c for g in groups for c in g[r % len(g):] + g[:r % len(g)]]:
                this[label] = res = run_load(load, server, client=args.client, concurrency=conc,
                                             duration=args.duration, workdir=tmp)
                results[label].append(res)
                print_round(r, label, res)
            rounds.append(this)

        print()
        print_results(results)
        print()
        deep, shallow = f"page at depth {depths[-1]}", "page at depth 0"
        p50 = [rd[deep]["p50_ms"] / rd[shallow]["p50_ms"] for rd in rounds]
        cost = [rd[shallow]["rps"] / rd[deep]["rps"] for rd in rounds]
        cpu = [rd[deep]["server_cpu_us_per_req"] / rd[shallow]["server_cpu_us_per_req"] for rd in rounds]
        print(f"  depth {depths[-1]} / depth 0, p50 latency     {median(p50):5.2f} "
              f"[{' '.join(f'{x:.2f}' for x in p50)}]"
              f"   {verdict(median(p50), 1.5, at_least=False)}")
        print(f"  depth {depths[-1]} / depth 0, time per request {median(cost):5.2f} "
              f"[{' '.join(f'{x:.2f}' for x in cost)}]"
              f"   cpu {median(cpu):.2f}")
        tp = [rd["fetch tokensvc"]["rps"] / rd["fetch bare"]["rps"] for rd in rounds]
        cpu = [rd["fetch bare"]["server_cpu_us_per_req"] / rd["fetch tokensvc"]["server_cpu_us_per_req"]
               for rd in rounds]
        print(f"  fetch by identity, tokensvc / bare       {median(tp):5.2f} [{' '.join(f'{x:.2f}' for x in tp)}]"
              f"   cpu {median(cpu):.2f}   {verdict(median(tp), 0.5)}")
        push = [rd["fetch with bindings"]["rps"] / rd["fetch without bindings"]["rps"] for rd in rounds]
        cpu = [rd["fetch without bindings"]["server_cpu_us_per_req"]
               / rd["fetch with bindings"]["server_cpu_us_per_req"] for rd in rounds]
        print(f"  fetch, with bindings / without           {median(push):5.2f} "
              f"[{' '.join(f'{x:.2f}' for x in push)}]   cpu {median(cpu):.2f}   {verdict(median(push), 0.9)}")
        print("  (cpu = the same ratio from server CPU µs per request, which noise from other processes barely moves)")
        return exit_status(results)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
