"""A small HTTP/1.1 keep-alive load generator, run as its own process (one core at most).

Reads one JSON spec on stdin, prints one JSON result on stdout. `concurrency` connections each
send requests back to back until `duration` seconds pass or `max_requests` were sent in all.
Placeholders in the path and body: `{r}` becomes a random integer in [0, rand_max), `{u}` a value
never sent before in this run (for first-encounter identities).

Used by bench/harness.py when wrk is not installed, and by bench/users.py by default.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


async def _worker(spec: dict, wid: int, state: dict, latencies: list[float]) -> None:
    host, port = spec["host"], spec["port"]
    method, path_t, body_t = spec["method"], spec["path"], spec.get("body", "")
    rand_max = int(spec.get("rand_max") or 1)
    uprefix = f"{spec.get('run_id', 'x')}-{wid}-"
    head_common = f"Host: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items())
    deadline = state["deadline"]
    rnd = random.Random(wid * 7919 + int(time.time()))
    counter = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline or state["sent"] >= state["max"]:
                return
            state["sent"] += 1
            counter += 1
            path, body = path_t, body_t
            if "{r}" in path or "{r}" in body:
                r = str(rnd.randrange(rand_max))
                path, body = path.replace("{r}", r), body.replace("{r}", r)
            if "{u}" in path or "{u}" in body:
                u = uprefix + str(counter)
                path, body = path.replace("{u}", u), body.replace("{u}", u)
            data = body.encode()
            req = f"{method} {path} HTTP/1.1\r\n{head_common}"
            if data or method in ("POST", "PUT", "PATCH"):
                req += f"Content-Length: {len(data)}\r\n"
            t0 = time.perf_counter()
            writer.write(req.encode() + b"\r\n" + data)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(lower[at + 15:lower.index(b"\r\n", at)])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if status not in spec.get("expect", [200, 201]):
                state["bad_status"] += 1
                state.setdefault("statuses", {}).setdefault(str(status), 0)
                state["statuses"][str(status)] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        state["errors"] += 1
        state["last_error"] = repr(exc)[:200]
    finally:
        writer.close()


async def _main(spec: dict) -> dict:
    state = {"sent": 0, "max": int(spec.get("max_requests") or 10**9), "bad_status": 0, "errors": 0,
             "deadline": time.perf_counter() + float(spec["duration"])}
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_worker(spec, i, state, latencies) for i in range(int(spec["concurrency"]))))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(latencies, 0.50) * 1000, "p90_ms": _percentile(latencies, 0.90) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "bad_status": state["bad_status"], "errors": state["errors"], "statuses": state.get("statuses", {}),
        "last_error": state.get("last_error"),
    }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop
        result = uvloop.run(_main(spec))
    except ImportError:
        result = asyncio.run(_main(spec))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
