"""CPU per webhook request of HTTP clients, each alone in its own process, against one fast
receiver in another (bench/webhooks.py's: uvloop + httptools):

    python bench/webhook_clients.py [--requests 3000] [--concurrency 8]

The clients: tokensvc's (tokensvc/webhooks/http.py), httpx as the dispatcher first used it (one
pooled AsyncClient, 16 connections, streamed reads), httpx with one single-connection client per
delivery slot (no pool contention), and aiohttp when it is installed. Each sends the same
signed-size onUserAdded form with keep-alive, `--concurrency` at a time. Prints requests/s and the
client process's CPU µs per request (what decides here: the server shares its cores with the
load generator and the receiver); the CPU figure moves far less than the rate on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import free_port, python_env, start_server

PARAMS = {"EventType": "onUserAdded", "AccountSid": "AC" + "0" * 32, "InstanceSid": "IS" + "0" * 32,
          "Source": "API", "RetryCount": "0", "UserSid": "US" + "1" * 32, "Identity": "bench-identity-1",
          "RoleSid": "RL" + "2" * 32, "Attributes": "{}", "DateCreated": "2026-12-01T16:00:00Z",
          "DateUpdated": "2026-12-01T16:00:00Z"}
HEADERS = {"I-Twilio-Idempotency-Token": "a" * 32, "User-Agent": "tokensvc-webhooks", "X-Twilio-Signature": "x" * 28}


async def tokensvc_client(url: str, n: int, conc: int) -> None:
    from tokensvc.webhooks.http import Client

    client = Client()
    slots = asyncio.Semaphore(conc)

    async def one() -> None:
        async with slots, asyncio.timeout(5):
            await client.request("POST", url, HEADERS, urlencode(PARAMS).encode(), limit=65536)

    await asyncio.gather(*(one() for _ in range(n)))
    await client.aclose()


async def _httpx_send(client: Any, url: str) -> None:
    async with asyncio.timeout(5):
        response = await client.send(client.build_request("POST", url, data=PARAMS, headers=HEADERS), stream=True)
        try:
            async for _ in response.aiter_raw():
                pass
        finally:
            await response.aclose()


async def httpx_pooled(url: str, n: int, conc: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=2 * conc, max_keepalive_connections=2 * conc)
    slots = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(follow_redirects=False, timeout=5.0, limits=limits) as client:
        async def one() -> None:
            async with slots:
                await _httpx_send(client, url)

        await asyncio.gather(*(one() for _ in range(n)))


async def httpx_per_slot(url: str, n: int, conc: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(follow_redirects=False, timeout=5.0, limits=limits) for _ in range(conc)]

    async def worker(client: Any, k: int) -> None:
        for _ in range(k):
            await _httpx_send(client, url)

    await asyncio.gather(*(worker(c, n // conc) for c in clients))
    for c in clients:
        await c.aclose()


async def aiohttp_client(url: str, n: int, conc: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:
        slots = asyncio.Semaphore(conc)

        async def one() -> None:
            async with slots, session.post(url, data=PARAMS, headers=HEADERS, allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=5)) as response:
                await response.content.read(65536)

        await asyncio.gather(*(one() for _ in range(n)))


CLIENTS = {"tokensvc http.Client": tokensvc_client, "httpx pooled (as before)": httpx_pooled,
           "httpx, a client per slot": httpx_per_slot, "aiohttp": aiohttp_client}


def measure(name: str, url: str, n: int, conc: int) -> None:
    """In this (child) process: warm up, then one timed run; prints a JSON line."""
    import uvloop

    fn = CLIENTS[name]

    async def run() -> dict[str, float]:
        await fn(url, 200, conc)
        cpu, wall = time.process_time(), time.perf_counter()
        await fn(url, n, conc)
        return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}

    print(json.dumps(uvloop.run(run())))


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-bench-clients-"))
    port = free_port()
    receiver = start_server("receiver", [sys.executable, str(Path(__file__).with_name("webhooks.py")), "--receiver",
                                         str(port)], env=python_env(), port=port, logdir=tmp, health="/healthz")
    try:
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name in CLIENTS:
                out = subprocess.run([sys.executable, __file__, "--measure", name, f"http://127.0.0.1:{port}/post",
                                      str(args.requests), str(args.concurrency)], env=python_env(),
                                     capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    print(f"  {name}: not measured ({out.stderr.strip().splitlines()[-1:]})")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault(name, []).append(r)
                print(f"  {name:<28}{args.requests / r['wall']:>8.0f} req/s  "
                      f"{r['cpu'] / args.requests * 1e6:>6.0f} µs CPU/req", flush=True)
    finally:
        receiver.stop()
    print(f"{'client':<30}{'best µs CPU/req':>16}")
    for name, rs in results.items():
        print(f"{name:<30}{min(r['cpu'] for r in rs) / args.requests * 1e6:>16.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
