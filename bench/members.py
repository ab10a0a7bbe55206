"""Member adds against the token endpoint, and deep member / user-channel lists (issue 12).

    python bench/members.py                       # SQLite
    python bench/members.py --database postgresql # a throwaway PostgreSQL cluster

One tokensvc worker, `--concurrency` keep-alive clients (wrk, or bench/loadgen.py), `--rounds`
rounds of `--duration` seconds with the order rotated each round. Prints the issue's ratios:
member add for new identities ≥ 0.5 × the token endpoint's first-encounter rate, for existing
identities ≥ 0.6 × its existing-identity rate; a channel's member list and a user's channel list
10,000 rows deep: deepest page / first page ≤ 1.5 (median latency of sequential requests).

"Existing identities" add user-k to channel bench-k (k random): the first add of a pair is a
201, a repeat a 409 50404 after the same reads and locks; both are counted.
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

DEPTH = 10_000


def seed(url: str, svc: dict[str, Any], existing: int) -> None:
    """Channels bench-0…, the deep channel `deep` (members user-0…user-9999) and the user `wide`
    in DEPTH channels, straight into the tables with their counts."""
    from sqlalchemy import create_engine, select, update

    from tokensvc.store.channel_tables import channels, memberships
    from tokensvc.store.tables import services, users

    engine = create_engine(url)
    ts = int(time.time())
    acc, sid = svc["account_sid"], svc["sid"]

    def channel(name: str, count: int) -> dict[str, Any]:
        return {"sid": new_sid("CH"), "account_sid": acc, "service_sid": sid, "friendly_name": None,
                "unique_name": name, "attributes": None, "type": "public", "created_by": "system",
                "members_count": count, "messages_count": 0, "date_created": ts, "date_updated": ts}

    def member(ch: str, user_sid: str, identity: str) -> dict[str, Any]:
        return {"sid": new_sid("MB"), "status": "joined", "account_sid": acc, "service_sid": sid, "channel_sid": ch,
                "user_sid": user_sid, "identity": identity, "role_sid": svc["default_channel_role_sid"],
                "notification_level": "default", "date_created": ts, "date_updated": ts}

    with engine.begin() as conn:
        conn.execute(update(services).where(services.c.sid == sid).values(
            limits=json.dumps({"channel_members": 1000, "user_channels": 1000})))
        conn.execute(channels.insert(), [channel(f"bench-{i}", 0) for i in range(existing)])
        deep = channel("deep", DEPTH)
        conn.execute(channels.insert(), [deep])
        rows = conn.execute(select(users.c.sid, users.c.identity).where(users.c.service_sid == sid)
                            .order_by(users.c.id).limit(DEPTH)).all()
        conn.execute(memberships.insert(), [member(deep["sid"], r.sid, r.identity) for r in rows])
        conn.execute(update(users).where(users.c.sid.in_([r.sid for r in rows])).values(joined_channels_count=1))
        wide_sid = new_sid("US")
        conn.execute(users.insert().values(sid=wide_sid, account_sid=acc, service_sid=sid,
                                           role_sid=svc["default_service_role_sid"], identity="wide",
                                           joined_channels_count=DEPTH, was_online=False, date_created=ts,
                                           date_updated=ts))
        wide = [channel(f"wide-{i}", 1) for i in range(DEPTH)]
        conn.execute(channels.insert(), wide)
        conn.execute(memberships.insert(), [member(c["sid"], wide_sid, "wide") for c in wide])
    engine.dispose()


def get(base: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    req = urllib.request.Request(base + path, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def depth_ratio(base: str, path: str, headers: dict[str, str], key: str, samples: int) -> tuple[float, float, int]:
    """(first page ms, deepest page ms, rows seen): median of `samples` sequential requests each."""
    body = get(base, path + "?PageSize=50", headers)
    first, last, seen = body["meta"]["url"], body["meta"]["url"], len(body[key])
    while body["meta"]["next_page_url"]:
        last = body["meta"]["next_page_url"]
        body = get(base, last[len(base):], headers)
        seen += len(body[key])

    def timed(url: str) -> float:
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            get(base, url[len(base):], headers)
            times.append((time.perf_counter() - t0) * 1000)
        return median(times)

    return timed(first), timed(last), seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", help="a PostgreSQL server URL (a database is created and dropped on it)")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--existing", type=int, default=DEPTH, help="users (and bench channels) before the run")
    parser.add_argument("--samples", type=int, default=30, help="requests per page in the depth check")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--src", type=Path, help="the tokensvc source tree to measure (default: this checkout)")
    args = parser.parse_args()
    src = set_source(args.src)
    client = ("wrk" if have_wrk() else "python") if args.client == "auto" else args.client
    print(f"# bench/members.py: {args.database}, client {client}, {args.concurrency} connections, "
          f"{args.duration:g} s x {args.rounds} rounds, {os.cpu_count()} cores\n# tokensvc from {src}")
    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-members-"))
    account = (new_sid("AC"), secrets.token_urlsafe(24))
    auth = "Basic " + base64.b64encode(f"{account[0]}:{account[1]}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    keys = tmp / "keys"
    try:
        with contextlib.ExitStack() as stack:
            if args.database == "sqlite":
                db_path = tmp / "tokensvc.db"
                url = sa_url = f"sqlite:///{db_path}"
                svc = tokensvc_database(url, keys, account)
                bulk_users_sqlite(db_path, svc, max(args.existing, DEPTH))
            else:
                base_url = args.pg_url or stack.enter_context(temp_postgres(tmp))
                url, libpq = stack.enter_context(pg_database(base_url, f"tokensvc_bench_m_{os.getpid()}"))
                sa_url = url
                svc = tokensvc_database(url, keys, account)
                bulk_users_pg(libpq, svc, max(args.existing, DEPTH))
            seed(sa_url, svc, args.existing)
            server = start_tokensvc("tokensvc", database_url=url, keys_dir=keys, account=account, logdir=tmp)
            stack.callback(server.stop)
            s = svc["sid"]
            loads = {
                "tokens existing": Load("POST", f"/v2/Services/{s}/Tokens", "Identity=user-{r}", headers,
                                        rand_max=args.existing),
                "tokens new": Load("POST", f"/v2/Services/{s}/Tokens", "Identity=tnew-{u}", headers),
                "members existing": Load("POST", f"/v2/Services/{s}/Channels/bench-{{r}}/Members", "Identity=user-{r}",
                                         headers, rand_max=args.existing),
                "members new": Load("POST", f"/v2/Services/{s}/Channels/bench-{{r}}/Members", "Identity=mnew-{u}",
                                    headers, rand_max=args.existing),
            }
            for load in loads.values():  # warm up
                run_load(load, server, client=client, concurrency=args.concurrency, duration=1, workdir=tmp)
            results: dict[str, list[dict[str, Any]]] = {}
            rounds: list[dict[str, dict[str, Any]]] = []
            labels = list(loads)
            for r in range(args.rounds):
                this: dict[str, dict[str, Any]] = {}
                for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                    this[label] = res = run_load(loads[label], server, client=client, concurrency=args.concurrency,
                                                 duration=args.duration, workdir=tmp)
                    results.setdefault(label, []).append(res)
                    print_round(r, label, res)
                rounds.append(this)
            get_headers = {"Authorization": auth}
            wide = get(server.base, f"/v2/Services/{s}/Users/wide", get_headers)["sid"]
            deep = depth_ratio(server.base, f"/v2/Services/{s}/Channels/deep/Members", get_headers, "members",
                               args.samples)
            mine = depth_ratio(server.base, f"/v2/Services/{s}/Users/{wide}/Channels", get_headers, "channels",
                               args.samples)
        print()
        print_results({label: results[label] for label in labels})
        print()

        def ratio(a: str, b: str, target: float) -> None:
            tp = [rd[a]["rps"] / rd[b]["rps"] for rd in rounds]
            print(f"  {a + ' / ' + b:<40} {median(tp):5.2f} [{' '.join(f'{x:.2f}' for x in tp)}]   "
                  + verdict(median(tp), target))

        ratio("members new", "tokens new", 0.5)
        ratio("members existing", "tokens existing", 0.6)
        for name, (first, last, seen) in (("channel members", deep), ("user channels", mine)):
            print(f"  {name + ' deepest / first page':<40} {last / first:5.2f} ({first:.2f} ms, {last:.2f} ms, "
                  f"{seen} rows)   " + verdict(last / first, 1.5, at_least=False))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
