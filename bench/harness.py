"""What bench/users.py and bench/tokens.py share: servers on 127.0.0.1, bounded load, CPU books.

Every figure a benchmark prints is a ratio of two measurements taken in the same run, because
this machine (2 cores) is shared with other engineers' test suites. Next to throughput each
measurement records the server's own CPU time per request (from /proc), which noise from other
processes barely moves, and how busy the whole machine was while it ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from databases import (  # noqa: F401  # re-exported: the bench scripts import them from here
    USER_COLUMNS,
    bulk_users_pg,
    bulk_users_sqlite,
    free_port,
    pg_database,
    pg_urls,
    temp_postgres,
    tokensvc_database,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# The tokensvc source tree every process of a run imports (the benchmarks' --src).
SRC = REPO


def set_source(src: Path | None) -> Path:
    """Import tokensvc from `src` (default: this checkout) here and in every server started.

    Other engineers edit this checkout while benchmarks run: `git worktree add` or `git archive`
    a commit and pass it, so one run measures one version."""
    global SRC
    SRC = (src or REPO).resolve()
    if not (SRC / "tokensvc" / "__init__.py").exists():
        raise SystemExit(f"bench: no tokensvc package in {SRC}")
    sys.path.insert(0, str(SRC))
    return SRC

TICK = os.sysconf("SC_CLK_TCK")


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# --- CPU accounting -------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds used by a process and all its live descendants (uvicorn workers)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                parents[int(name)], cpu[int(name)] = st
    total, stack, seen = 0.0, [root], set()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


# --- servers --------------------------------------------------------------------------------

@dataclass
class Server:
    """One server process (and its workers) on 127.0.0.1, in its own process group."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)

    def own_cpu(self) -> float:
        """CPU seconds of the server process alone, without its children (workers, helpers)."""
        st = _stat(self.proc.pid)
        return st[1] if st is not None else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own group: the server and its workers
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_server(name: str, argv: list[str], *, env: dict[str, str], port: int, logdir: Path,
                 health: str = "/healthz", cwd: Path | None = None) -> Server:
    """Start a server and wait (30 s at most) until `health` answers 200."""
    log_path = logdir / f"{name}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, env=env, cwd=cwd or logdir, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = Server(name, proc, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.base + health, timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not become healthy:\n{log_path.read_text()[-3000:]}")


def python_env(src: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for a server process importing tokensvc from `src`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src or SRC), str(BENCH)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def start_tokensvc(name: str, *, database_url: str, keys_dir: Path, account: tuple[str, str], logdir: Path,
                   workers: int = 1, src: Path | None = None, extra_env: dict[str, str] | None = None) -> Server:
    """A real `python -m tokensvc.cli serve` (as tests/conftest.py starts it)."""
    port = free_port()
    env = python_env(src, TOKENSVC_DATABASE_URL=database_url, TOKENSVC_KEYS_DIR=str(keys_dir),
                     TOKENSVC_PORT=str(port), TOKENSVC_HOST="127.0.0.1",
                     TOKENSVC_ACCOUNT_SID=account[0], TOKENSVC_AUTH_TOKEN=account[1], **(extra_env or {}))
    return start_server(name, [sys.executable, "-m", "tokensvc.cli", "serve", "--workers", str(workers)],
                        env=env, port=port, logdir=logdir, cwd=logdir)


def start_baseline(name: str, mode: str, *, logdir: Path, **options: str) -> Server:
    """A bare Starlette endpoint of bench/baseline.py, same uvicorn settings as tokensvc serve."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "baseline.py"), mode, "--port", str(port)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return start_server(name, argv, env=python_env(), port=port, logdir=logdir, cwd=logdir)


# --- load -----------------------------------------------------------------------------------

@dataclass
class Load:
    """What to send. Placeholders: `{r}` random int in [0, rand_max), `{u}` never sent before."""

    method: str
    path: str
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    rand_max: int = 1


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def _lua_template(t: str) -> str:
    """A Lua expression building the string `t` from locals r and u."""
    out, rest = [], t
    while rest:
        cuts = [i for i in (rest.find("{r}"), rest.find("{u}")) if i >= 0]
        if not cuts:
            out.append(_lua_str(rest))
            break
        i = min(cuts)
        if i:
            out.append(_lua_str(rest[:i]))
        out.append("r" if rest[i + 1] == "r" else "u")
        rest = rest[i + 3:]
    return " .. ".join(out) or '""'


WRK_LUA = """
local counter = 0
local threads = 0
local tid = 0
local run_id = %(run_id)s
local headers = %(headers)s
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
init = function(args)
  math.randomseed(os.time() * 1000 + tid)
end
request = function()
  counter = counter + 1
  local r = tostring(math.random(0, %(rand_max)d - 1))
  local u = run_id .. "-" .. tid .. "-" .. counter
  local body = %(body)s
  if body == "" then body = nil end
  return wrk.format(%(method)s, %(path)s, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,' ..
    '"socket_errors":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def _run_wrk(load: Load, *, port: int, concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    headers = "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in load.headers.items()) + "}"
    script = WRK_LUA % {"run_id": _lua_str(uuid.uuid4().hex[:8]), "headers": headers,
                        "rand_max": max(1, load.rand_max), "body": _lua_template(load.body),
                        "method": _lua_str(load.method), "path": _lua_template(load.path)}
    path = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    path.write_text(script)
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
                              "-s", str(path), f"http://127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=duration + 60)
    finally:
        path.unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    w = json.loads(line[8:])
    seconds = w["duration_us"] / 1e6
    return {"requests": w["requests"], "seconds": seconds, "rps": w["requests"] / seconds,
            "p50_ms": w["p50_us"] / 1000, "p90_ms": w["p90_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
            "bad_status": w["status_errors"], "errors": w["socket_errors"]}


def _run_python(load: Load, *, port: int, concurrency: int, duration: float, max_requests: int) -> dict[str, Any]:
    spec = {"host": "127.0.0.1", "port": port, "method": load.method, "path": load.path, "body": load.body,
            "headers": load.headers, "rand_max": load.rand_max, "concurrency": concurrency,
            "duration": duration, "max_requests": max_requests, "run_id": uuid.uuid4().hex[:8]}
    out = subprocess.run([sys.executable, str(BENCH / "loadgen.py")], input=json.dumps(spec),
                         capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def run_load(load: Load, server: Server, *, client: str, concurrency: int, duration: float,
             workdir: Path, max_requests: int = 2_000_000) -> dict[str, Any]:
    """One bounded measurement against `server`, with CPU books of the server and the client."""
    cpu0 = server.cpu()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0 = machine_busy()
    if client == "wrk":
        res = _run_wrk(load, port=server.port, concurrency=concurrency, duration=duration, workdir=workdir)
    else:
        res = _run_python(load, port=server.port, concurrency=concurrency, duration=duration,
                          max_requests=max_requests)
    busy1, total1 = machine_busy()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu() - cpu0
    client_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    n = max(1, res["requests"])
    seconds = max(1e-9, res["seconds"])
    res.update({
        "server_cpu_us_per_req": server_cpu / n * 1e6,
        "server_cores": server_cpu / seconds,
        "client_cores": client_cpu / seconds,
        # Busy cores of the whole machine in the window; what neither we nor the server used is noise.
        "machine_cores": (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1),
    })
    return res


# --- reporting ------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(value: float, target: float, *, at_least: bool = True) -> str:
    ok = value >= target if at_least else value <= target
    return f"{'PASS' if ok else 'MISS'} (target {'>=' if at_least else '<='} {target})"


def print_round(r: int, label: str, res: dict[str, Any]) -> None:
    """One measurement of one round, as it finishes."""
    errors = f"  ERRORS {res['bad_status']}+{res['errors']}" if res["bad_status"] or res["errors"] else ""
    print(f"  round {r + 1} {label:<26}{res['rps']:>8.0f} req/s  p50 {res['p50_ms']:6.2f} ms  "
          f"p99 {res['p99_ms']:6.2f} ms  {res['server_cpu_us_per_req']:5.0f} µs/req  "
          f"machine {res['machine_cores']:.2f} cores{errors}", flush=True)


def exit_status(rows: dict[str, list[dict[str, Any]]]) -> int:
    """1 (and a warning) when any request of any measurement failed, else 0."""
    bad = sum(r["bad_status"] + r["errors"] for rs in rows.values() for r in rs)
    if bad:
        print(f"WARNING: {bad} requests failed; see the server logs")
        return 1
    return 0


def print_results(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Median of each measurement over the rounds."""
    print(f"{'measurement':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv µs/req':>12}"
          f"{'srv cores':>10}{'client':>8}{'machine':>9}{'errors':>8}")
    for name, results in rows.items():
        def m(key: str, results: list[dict[str, Any]] = results) -> float:
            return median([r[key] for r in results])
        errors = sum(r["bad_status"] + r["errors"] for r in results)
        print(f"{name:<26}{m('rps'):>9.0f}{m('p50_ms'):>9.2f}{m('p99_ms'):>9.2f}{m('server_cpu_us_per_req'):>12.0f}"
              f"{m('server_cores'):>10.2f}{m('client_cores'):>8.2f}{m('machine_cores'):>9.2f}{errors:>8}")
