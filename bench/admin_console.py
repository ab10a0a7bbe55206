"""The console's users page with a search against the REST list page (issue 15: ≤ 2 × at 1M users).

    python bench/admin_console.py                       # 1,000,000 users (about a minute to fill)
    python bench/admin_console.py --users 50000         # a quick run
    python bench/admin_console.py --db /tmp/u.db        # keep the filled database and reuse it

`bench_console(base_url, auth, service_sid)` is the measurement itself, for bench/admin.py to call
against the server it runs: it signs in to the console like a browser (the sign-in form, its
CSRF token and pre-session cookie, then the session cookie), checks that both pages answer 200
with 50 users, then, in rounds of rotated order, drives each with the same bounded load:

  rest     GET /v2/Services/{IS}/Users?PageSize=50 (Basic auth): the first page, creation order;
  console  GET /console/services/{IS}/users?prefix=user-5 (the session cookie): the first page of
           the identity-prefix search (111,111 of a million users match), rendered as HTML.

It returns both measurements' medians and `ratio`, the console's time per request over the
REST page's (target ≤ 2); with `server` (a harness.Server) the server's CPU per request too.
Standalone it fills a real SQLite file (tokensvc's migrations, users bulk-inserted as
bench/users.py does), starts `tokensvc serve` on 127.0.0.1 and prints the ratio.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import secrets
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Load,
    Server,
    bulk_users_sqlite,
    median,
    new_sid,
    print_round,
    run_load,
    set_source,
    start_tokensvc,
    tokensvc_database,
    verdict,
)

TARGET = 2.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ROW = re.compile(r'/users/US[0-9a-f]{32}">')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 303 is the answer we read, not one to follow


def _cookies(headers: Any) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for value in headers.get_all("Set-Cookie") or ():
        jar.load(value)
    return {name: morsel.value for name, morsel in jar.items()}


def sign_in(base_url: str, auth: tuple[str, str]) -> str:
    """The console session cookie of the account, as a browser gets it: a `Cookie` header value."""
    with urllib.request.urlopen(f"{base_url}/console/sign-in", timeout=30) as r:
        page = r.read().decode()
        pre = _cookies(r.headers)["tokensvc_console_signin"]
    found = _CSRF.search(page)
    assert found, "the sign-in form has no CSRF token"
    form = urllib.parse.urlencode({"csrf_token": html.unescape(found.group(1)), "account_sid": auth[0],
                                   "auth_token": auth[1]}).encode()
    req = urllib.request.Request(f"{base_url}/console/sign-in", data=form, method="POST",
                                 headers={"Cookie": f"tokensvc_console_signin={pre}"})
    try:
        urllib.request.build_opener(_NoRedirect).open(req, timeout=30)
        raise AssertionError("sign-in did not redirect")
    except urllib.error.HTTPError as answer:
        assert answer.code == 303, f"sign-in answered {answer.code}"
        return f"tokensvc_console={_cookies(answer.headers)['tokensvc_console']}"


def _fetch(url: str, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def bench_console(base_url: str, auth: tuple[str, str], service_sid: str, *, prefix: str = "user-5",
                  server: Server | None = None, duration: float = 2.0, rounds: int = 3, concurrency: int = 8,
                  client: str = "python", workdir: Path | None = None) -> dict[str, Any]:
    """{"rest": …, "console": …, "ratio": console time per request / REST's, "target": 2.0}: medians over
    `rounds` rounds of `duration` s each at `concurrency` connections (see the module docstring);
    per round: `ratio_rounds`, `p50_rounds` (p50 latency) and `cpu_rounds` (server CPU per request,
    NaN without `server`)."""
    basic = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    rest_path = f"/v2/Services/{service_sid}/Users?PageSize=50"
    console_path = f"/console/services/{service_sid}/users?{urllib.parse.urlencode({'prefix': prefix})}"
    cookie = sign_in(base_url, auth)
    status, body = _fetch(base_url + rest_path, {"Authorization": basic})
    assert status == 200 and body.count('"identity"') == 50, (status, body[:300])
    status, body = _fetch(base_url + console_path, {"Cookie": cookie})
    assert status == 200 and len(_ROW.findall(body)) == 50, (status, body[:300])
    loads = {"rest": Load("GET", rest_path, headers={"Authorization": basic}),
             "console": Load("GET", console_path, headers={"Cookie": cookie})}
    port = int(urllib.parse.urlsplit(base_url).port or 80)
    tmp = workdir or Path(tempfile.gettempdir())
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in loads}
    for load in loads.values():  # warm-up: caches, the page's template, the database's pages
        _measure(load, port, server, client=client, concurrency=concurrency, duration=0.5, workdir=tmp)
    for r in range(rounds):
        order = list(loads) if r % 2 == 0 else list(reversed(loads))
        for name in order:
            res = _measure(loads[name], port, server, client=client, concurrency=concurrency, duration=duration,
                           workdir=tmp)
            results[name].append(res)
            print_round(r, f"users page {name}", res)
    out: dict[str, Any] = {}
    for name, rs in results.items():
        out[name] = {key: median([x[key] for x in rs]) for key in ("rps", "p50_ms", "p99_ms",
                                                                     "server_cpu_us_per_req")}
        out[name]["errors"] = sum(x["bad_status"] + x["errors"] for x in rs)
    pairs = list(zip(results["rest"], results["console"], strict=True))
    out["ratio_rounds"] = [rest["rps"] / console["rps"] if console["rps"] else float("inf") for rest, console in pairs]
    out["ratio"] = median(out["ratio_rounds"])
    out["p50_rounds"] = [console["p50_ms"] / rest["p50_ms"] for rest, console in pairs]
    out["cpu_rounds"] = [console["server_cpu_us_per_req"] / rest["server_cpu_us_per_req"] for rest, console in pairs]
    out["target"] = TARGET
    return out


def _measure(load: Load, port: int, server: Server | None, *, client: str, concurrency: int, duration: float,
             workdir: Path) -> dict[str, Any]:
    """One bounded measurement; the server's CPU books only when we know its process."""
    if server is not None:
        return run_load(load, server, client=client, concurrency=concurrency, duration=duration, workdir=workdir)
    from harness import _run_python, _run_wrk

    if client == "wrk":
        res = _run_wrk(load, port=port, concurrency=concurrency, duration=duration, workdir=workdir)
    else:
        res = _run_python(load, port=port, concurrency=concurrency, duration=duration, max_requests=2_000_000)
    res.update({"server_cpu_us_per_req": float("nan"), "machine_cores": float("nan")})
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="keep the filled database here (reused when it exists)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefix", default="user-5", help="the console's search (IdentityPrefix)")
    parser.add_argument("--client", choices=["python", "wrk"], default="python")
    parser.add_argument("--src", type=Path, help="the tokensvc source tree to measure (default: this checkout)")
    args = parser.parse_args()
    src = set_source(args.src)
    print(f"# bench/admin_console.py: {args.users} users, search {args.prefix!r}, {args.duration:g} s x "
          f"{args.rounds} rounds, {args.concurrency} connections, {os.cpu_count()} cores, load avg "
          f"{os.getloadavg()[0]:.2f}\n# tokensvc from {src}")
    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-console-"))
    db_path = args.db.resolve() if args.db else tmp / "tokensvc.db"
    keys = (db_path.parent / (db_path.stem + "-keys")) if args.db else tmp / "keys"
    server: Server | None = None
    try:
        svc, account = _database(db_path, keys, args.users)
        server = start_tokensvc("tokensvc", database_url=f"sqlite:///{db_path}", keys_dir=keys, account=account,
                                logdir=tmp)
        out = bench_console(server.base, account, svc["sid"], prefix=args.prefix, server=server,
                            duration=args.duration, rounds=args.rounds, concurrency=args.concurrency,
                            client=args.client, workdir=tmp)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for name in ("rest", "console"):
        m = out[name]
        print(f"{name:<8}{m['rps']:>8.0f} req/s  p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms  "
              f"{m['server_cpu_us_per_req']:6.0f} µs/req  errors {m['errors']}")
    rounds = ", ".join(f"{r:.2f}" for r in out["ratio_rounds"])
    print(f"console search page / REST list page (time per request): {out['ratio']:.2f} [{rounds}]  "
          f"p50 {median(out['p50_rounds']):.2f}  cpu {median(out['cpu_rounds']):.2f}  "
          f"{verdict(out['ratio'], TARGET, at_least=False)}")
    return 1 if out["rest"]["errors"] or out["console"]["errors"] else 0


def _database(path: Path, keys: Path, count: int) -> tuple[dict[str, Any], tuple[str, str]]:
    """A bench service with `count` users (user-0 … user-N-1), made once and reused with --db."""
    import sqlite3

    token = secrets.token_urlsafe(24)
    if path.exists():
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        try:
            svc = conn.execute("SELECT * FROM services WHERE friendly_name = 'bench' ORDER BY id LIMIT 1").fetchone()
            have = conn.execute("SELECT count(*) FROM users WHERE service_sid = ?", (svc["sid"],)).fetchone()[0]
        finally:
            conn.close()
        if have != count:
            raise SystemExit(f"bench: {path} holds {have} users, not {count}")
        print(f"# reusing {path}: service {svc['sid']} with {have} users")
        return dict(svc), (svc["account_sid"], token)  # tokensvc serve sets the token's hash from the env
    account = (new_sid("AC"), token)
    svc = tokensvc_database(f"sqlite:///{path}", keys, account)
    bulk_users_sqlite(path, svc, count)
    return svc, account


if __name__ == "__main__":
    sys.exit(main())
