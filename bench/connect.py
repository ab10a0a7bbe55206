"""Idle client connections on one `tokensvc serve` process (issue 4).

    python bench/connect.py [--connections 5000] [--concurrency 200] [--hold 35] [--compression none]
                            [--client raw|websockets]

Starts a real `tokensvc serve` on 127.0.0.1 (SQLite, the product defaults) and opens
`--connections` concurrent WebSocket connections to /v2/Connect with bench/wsclient.py (a minimal
client, so that the client does not take the cores the server is measured on; `--client
websockets` for the websockets package), each with a token for a new identity (so every connect
verifies an ES256 token, provisions a user and writes its presence row), then prints:

- RSS per connection: the server's VmRSS (/proc) with all connections open, minus before, / N;
- connect rate: connections/s until every one has its `connected` frame, and the server's own CPU
  time per connect (what one server core sustains; the machine is shared, so wall-clock rates
  move with other people's work while CPU per connect barely does);
- the same for a second round of returning identities (no provisioning);
- presence heartbeat cost: database transactions and rows written per second per 1,000 idle
  connections, counted by the server's own `tokensvc_presence_writes_total` over `--hold` s;
- the same connect and RSS figures for a bare Starlette WebSocket endpoint on the same uvicorn
  settings (accept, send one frame, wait), i.e. what the framework alone costs.

Bounded: every phase has a deadline (`--max-seconds` in all), servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import wsclient  # noqa: E402
from databases import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
CONNECTED = '{"type":"connected","user":{}}'


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by the servers) as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(max(soft, needed), hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Server:
    """A server process on 127.0.0.1 in its own process group, healthy or SystemExit."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log_path: Path, health: str):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: server exited:\n{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.base + health, timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit("bench: server did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Tokensvc(Server):
    def __init__(self, workdir: Path):
        port = free_port()
        self.account = ("AC" + uuid.uuid4().hex, secrets.token_urlsafe(24))
        self.keys_dir = workdir / "keys"
        env = dict(os.environ, TOKENSVC_DATABASE_URL=f"sqlite:///{workdir / 'tokensvc.db'}",
                   TOKENSVC_KEYS_DIR=str(self.keys_dir), TOKENSVC_HOST="127.0.0.1", TOKENSVC_PORT=str(port),
                   TOKENSVC_ACCOUNT_SID=self.account[0], TOKENSVC_AUTH_TOKEN=self.account[1], PYTHONPATH=str(REPO))
        super().__init__([sys.executable, "-m", "tokensvc.cli", "serve"], env, port, workdir / "tokensvc.log",
                         "/healthz")

    def call(self, method: str, path: str, form: dict[str, str] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=urllib.parse.urlencode(form).encode() if form else None)
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.account).encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one metric family from /metrics, by label text."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return {m.group(1) or "": float(m.group(2))
                for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)}


# --- the bare framework, for comparison -------------------------------------------------------

def serve_baseline(port: int) -> None:
    """A Starlette WebSocket endpoint on tokensvc serve's uvicorn settings: accept, one frame, wait."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def connect(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(CONNECTED)
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    async def healthz(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/v2/Connect", connect)])
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning", lifespan="on",
                ws="websockets-sansio", ws_per_message_deflate=False)


class Baseline(Server):
    def __init__(self, workdir: Path):
        port = free_port()
        super().__init__([sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port)],
                         dict(os.environ, PYTHONPATH=str(REPO)), port, workdir / "baseline.log", "/healthz")


# --- the client -------------------------------------------------------------------------------

async def open_all(url: str, tokens: list[str], args: argparse.Namespace,
                   deadline: float) -> tuple[list[Any], float, int]:
    """One connection per token, `--concurrency` handshakes in flight; each counts once its
    `connected` frame arrived. Returns (connections, seconds, failures)."""
    gate = asyncio.Semaphore(args.concurrency)
    opened: list[Any] = []
    failures = 0
    parts = urllib.parse.urlsplit(url)

    async def open_one(token: str) -> tuple[Any, str]:
        if args.client == "raw":
            return await wsclient.connect(parts.hostname, parts.port, parts.path, {"X-Twilio-Token": token},
                                          offer_deflate=args.client_compression is not None)
        from websockets.asyncio.client import connect

        ws = await connect(url, additional_headers={"X-Twilio-Token": token}, compression=args.client_compression,
                           proxy=None, open_timeout=30, max_queue=4)
        return ws, await asyncio.wait_for(ws.recv(), 30)

    async def one(token: str) -> None:
        nonlocal failures
        async with gate:
            try:
                ws, text = await asyncio.wait_for(open_one(token), 30)
                frame = json.loads(text)
                if frame.get("type") != "connected":
                    raise RuntimeError(frame)
                opened.append(ws)
            except Exception as exc:  # counted and shown; the run goes on
                failures += 1
                if failures <= 3:
                    print(f"  connect failed: {exc!r}", file=sys.stderr)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(t) for t in tokens)), max(1.0, deadline - time.monotonic()))
    return opened, time.perf_counter() - started, failures


async def close_all(conns: list[Any]) -> None:
    async def one(ws: Any) -> None:
        try:
            await asyncio.wait_for(ws.close(), 10)
        except (OSError, TimeoutError):
            pass

    for i in range(0, len(conns), 500):
        await asyncio.gather(*(one(ws) for ws in conns[i:i + 500]))


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Round:
    """One round of connects: wall time, server CPU, client CPU, RSS before/after."""

    def __init__(self, server: Server, name: str):
        self.server = server
        self.name = name

    async def run(self, url: str, tokens: list[str], args: argparse.Namespace, deadline: float) -> list[Any]:
        pid = self.server.pid
        spy = await start_profile(args.profile, self.name, pid) if args.profile else None
        self.rss0, cpu0, client0 = rss_kib(pid), cpu_seconds(pid), client_cpu()
        conns, self.seconds, self.failed = await open_all(url, tokens, args, deadline)
        self.server_cpu, self.client_cpu = cpu_seconds(pid) - cpu0, client_cpu() - client0
        stop_profile(spy)
        await asyncio.sleep(1)
        self.rss1 = rss_kib(pid)
        self.n = len(conns)
        return conns

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def server_us(self) -> float:
        return self.server_cpu / max(1, self.n) * 1e6

    @property
    def rss_per_conn(self) -> float:
        return (self.rss1 - self.rss0) * 1024 / max(1, self.n)

    def line(self, label: str) -> str:
        return (f"{label:<34}{self.rate:>8,.0f}/s{self.server_us:>9,.0f} µs{1e6 / max(1e-9, self.server_us):>10,.0f}/s"
                f"{self.client_cpu / max(1, self.n) * 1e6:>9,.0f} µs{self.failed:>7}")


async def start_profile(path: str, name: str, pid: int) -> subprocess.Popen:
    """py-spy's collapsed stacks of the server (PATH-NAME.txt) while a round runs."""
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                            "--output", f"{path}-{name}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.sleep(1)
    return spy


def stop_profile(spy: subprocess.Popen | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def wait_gauge(server: Tokensvc, value: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        current = server.metric("tokensvc_open_connections").get("", -1)
        if current == value or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.2)


def verdict(ok: bool, target: str) -> str:
    return f"{'PASS' if ok else 'MISS'} (target {target})"


async def bench(args: argparse.Namespace) -> None:
    from tokensvc.signing import load_snapshot
    from tokensvc.tokens import mint

    n = args.connections
    limit = raise_fd_limit(n + 1000)
    if limit < n + 100:
        raise SystemExit(f"bench: RLIMIT_NOFILE is {limit}; need about {n + 100}")
    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory(prefix="tokensvc-bench-connect-") as tmp:
        workdir = Path(tmp)
        server = Tokensvc(workdir)
        try:
            svc = server.call("POST", "/v2/Services", {"FriendlyName": "bench"})
            server.call("POST", f"/v2/Services/{svc['sid']}", {"ReachabilityEnabled": "true"})
            snapshot = load_snapshot(server.keys_dir)
            tokens = [mint(snapshot, issuer="tokensvc", account_sid=server.account[0], service_sid=svc["sid"],
                           identity=f"bench-{i}", ttl=3600).token for i in range(n + args.warmup)]
            url = server.base.replace("http://", "ws://") + "/v2/Connect"

            warm, _, _ = await open_all(url, tokens[n:], args, deadline)
            await close_all(warm)
            await wait_gauge(server, 0, 10)
            await asyncio.sleep(1)

            first = Round(server, "first")
            conns = await first.run(url, tokens[:n], args, deadline)
            gauge = server.metric("tokensvc_open_connections").get("")
            joins = server.metric("tokensvc_presence_writes_total").get('{kind="join"}', 0)

            writes0 = server.metric("tokensvc_presence_writes_total")
            held = time.perf_counter()
            await asyncio.sleep(max(0.0, min(args.hold, deadline - time.monotonic() - 60)))
            held = time.perf_counter() - held
            writes1 = server.metric("tokensvc_presence_writes_total")
            rss_held = rss_kib(server.pid)
            await close_all(conns)
            left = await wait_gauge(server, 0, 15)

            again = Round(server, "returning")
            await close_all(await again.run(url, tokens[:n], args, deadline))
            await wait_gauge(server, 0, 15)
        finally:
            server.stop()

        base = Round(Baseline(workdir), "baseline")
        try:
            burl = base.server.base.replace("http://", "ws://") + "/v2/Connect"
            await close_all((await open_all(burl, tokens[n:], args, deadline))[0])
            await asyncio.sleep(1)
            await close_all(await base.run(burl, tokens[:n], args, deadline))
        finally:
            base.server.stop()

    per_k = max(1, first.n) / 1000
    beats = writes1.get('{kind="heartbeat"}', 0) - writes0.get('{kind="heartbeat"}', 0)
    other = sum(writes1.values()) - sum(writes0.values()) - beats
    print(f"\n{first.n} concurrent connections to one tokensvc serve process ({first.failed} failed; server gauge "
          f"{gauge:.0f}, {left:.0f} after closing), RLIMIT_NOFILE {limit}, client offers "
          f"{args.client_compression or 'no'} compression, {args.client} client on the same {os.cpu_count()} cores")
    print(f"\n{'':<34}{'wall':>10}{'server CPU':>12}{'=per core':>10}{'client':>12}{'failed':>7}")
    print(first.line("connect, first-time identities"))
    print(again.line("connect, returning identities"))
    print(base.line("bare Starlette endpoint (baseline)"))
    print(f"\nconnect rate   {first.rate:,.0f}/s first-time, {again.rate:,.0f}/s returning (wall clock)  "
          f"{verdict(min(first.rate, again.rate) >= 1000, '>= 1000/s')}")
    print(f"               per server core: {1e6 / first.server_us:,.0f}/s first-time, {1e6 / again.server_us:,.0f}/s "
          f"returning; tokensvc's CPU per connect is {again.server_us / base.server_us:.1f}x the bare framework's")
    print(f"               {joins:.0f} join transactions for {first.n + args.warmup} connects (group commit)")
    print(f"RSS            {first.rss0 / 1024:.1f} -> {first.rss1 / 1024:.1f} MiB: {first.rss_per_conn / 1024:.1f} KiB "
          f"per connection  {verdict(first.rss_per_conn <= 30_000, '<= 30 KB')}; "
          f"{(rss_held - first.rss0) * 1024 / max(1, first.n) / 1024:.1f} KiB after {held:.0f} s idle; "
          f"bare framework {base.rss_per_conn / 1024:.1f} KiB")
    print(f"heartbeats     {beats:.0f} UPDATEs in {held:.0f} s idle ({other:.0f} other presence transactions): "
          f"{beats / held / per_k:.4f} writes/s and {beats * first.n / held / per_k:.1f} rows renewed/s "
          f"per 1,000 connections")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--hold", type=float, default=35.0, help="idle seconds for counting heartbeats")
    parser.add_argument("--compression", choices=["deflate", "none"], default="deflate",
                        help="what the client offers (browsers offer permessage-deflate)")
    parser.add_argument("--client", choices=["raw", "websockets"], default="raw",
                        help="raw: bench/wsclient.py, ~10x less client CPU per connect than the websockets "
                             "package, which would otherwise take half the cores the server is measured on")
    parser.add_argument("--profile", metavar="PATH", help="py-spy the server during each round (PATH-NAME.txt)")
    parser.add_argument("--max-seconds", type=float, default=400.0, help="bound on the whole run")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    args.client_compression = None if args.compression == "none" else "deflate"
    try:  # the server runs on uvloop (uvicorn's default when installed); so does the client
        import uvloop
    except ImportError:
        asyncio.run(bench(args))
    else:
        uvloop.run(bench(args))


if __name__ == "__main__":
    main()
