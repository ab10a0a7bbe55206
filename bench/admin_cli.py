"""The admin CLI at scale (issue 15): `tokensvc users import` lines/s and `users export` users/s,
each a real `python -m tokensvc` process on a real database.

    python bench/admin_cli.py                                   # SQLite: import 50,000, export 1,000,000
    python bench/admin_cli.py --import-lines 20000 --export-users 200000
    python bench/admin_cli.py --database postgresql [--pg-url URL]   # a throwaway cluster without --pg-url

bench/admin.py calls `bench_import(db_url, n)` and `bench_export(db_url, n)`; each makes its own
account and service in that database (a tokensvc one, or empty: tokensvc's migrations run first).

  import   n new identities as JSON Lines (identity and friendly_name), no webhooks: the command's
           own `seconds` (from its start to its summary, the interpreter's start-up left out) and
           the whole process's wall time. Target >= 5,000 lines/s.
  export   n users bulk-inserted straight into the users table, then `users export --output FILE`:
           the wall time of that process less the wall time of the same command on an empty
           service (start-up, imports, schema check), and the process's peak RSS against the empty
           run's (constant memory: the difference stays flat as n grows). Target >= 50,000 users/s.

Both targets are absolute rates, so they depend on the machine: on a shared 2-core machine read
the rate per CPU second (the child's user+system CPU past an empty run's, i.e. what one free
core would give) beside the wall-clock rate; when CPU is far below wall time, other processes
were competing for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from databases import bulk_users_pg, bulk_users_sqlite, pg_database, temp_postgres, tokensvc_database

IMPORT_TARGET = 5_000
EXPORT_TARGET = 50_000


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _setup(db_url: str, workdir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A fresh account and service in the database, and the environment of a CLI acting for it."""
    account = (_new_sid("AC"), secrets.token_urlsafe(24))
    keys = workdir / "keys"
    svc = tokensvc_database(db_url, keys, account)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
    env.update({"TOKENSVC_DATABASE_URL": db_url, "TOKENSVC_KEYS_DIR": str(keys), "TOKENSVC_ACCOUNT_SID": account[0],
                "TOKENSVC_AUTH_TOKEN": account[1]})
    return svc, env


def _hwm(pid: int) -> int:
    """The peak RSS (KiB) of a running process so far, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _run(argv: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[str, float, float, int]:
    """(stdout, wall s, CPU s, peak RSS KiB) of one `python -m tokensvc` process (CPU from its
    own rusage, wait4; the peak RSS from /proc while it runs, sampled every 10 ms)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "tokensvc", *argv], env=env, stdout=out, stderr=err,
                                cwd=Path(__file__).resolve().parent.parent)
        deadline = started + timeout
        peak = 0  # VmHWM of the process itself: wait4's ru_maxrss starts from the parent's at fork
        while True:
            peak = max(peak, _hwm(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"bench: tokensvc {' '.join(argv[:2])} took over {timeout} s")
            time.sleep(0.01)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"bench: tokensvc {' '.join(argv[:2])} failed ({proc.returncode}):\n{err.read()}")
        return out.read(), wall, usage.ru_utime + usage.ru_stime, peak


def bench_import(db_url: str, n: int) -> dict[str, Any]:
    """`users import` of n new identities: lines/s and PASS/MISS against 5,000."""
    with tempfile.TemporaryDirectory(prefix="tokensvc-bench-import-") as tmp:
        workdir = Path(tmp)
        svc, env = _setup(db_url, workdir)
        source = workdir / "users.jsonl"
        with source.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"identity": f"imported-{i}", "friendly_name": f"User {i}"}) + "\n")
        empty = workdir / "empty.jsonl"
        empty.touch()
        _, _, base_cpu, _ = _run(["users", "import", svc["sid"], str(empty), "--json"], env)  # start-up alone
        stdout, wall, cpu, _ = _run(["users", "import", svc["sid"], str(source), "--json"], env)
        summary = json.loads(stdout)
        assert summary["created"] == n, summary
        rate = n / summary["seconds"]
        return {"lines": n, "seconds": summary["seconds"], "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                "lines_per_s": round(rate), "lines_per_cpu_s": round(n / max(cpu - base_cpu, 1e-6)),
                "target": IMPORT_TARGET,
                "verdict": "PASS" if rate >= IMPORT_TARGET else "MISS"}


def service_in(db_url: str, keys_dir: Path, account_sid: str, name: str) -> dict[str, Any]:
    """A new service of the account in that database."""
    from tokensvc.config import Settings
    from tokensvc.db import Database, make_engine
    from tokensvc.store.services import create_service

    db = Database(make_engine(Settings(database_url=db_url, keys_dir=keys_dir)))
    try:
        return db.call(lambda conn: dict(create_service(conn, account_sid=account_sid, friendly_name=name)))
    finally:
        db.dispose()


def measure_export(env: dict[str, str], empty_sid: str, sid: str, n: int, workdir: Path) -> dict[str, Any]:
    """`users export` of service `sid` (n users) against the same command on the empty service
    `empty_sid` (start-up, imports, schema check): users/s past start-up, CPU, peak RSS."""
    out = workdir / "users.jsonl"
    _, base_wall, base_cpu, base_rss = _run(["users", "export", empty_sid, "--output", str(out)], env)
    _, wall, cpu, rss = _run(["users", "export", sid, "--output", str(out)], env)
    with out.open() as f:
        count = sum(1 for _ in f)
    out.unlink()
    assert count == n, (count, n)
    seconds = max(wall - base_wall, 1e-6)
    rate = n / seconds
    return {"users": n, "seconds": round(seconds, 3), "wall_s": round(wall, 3),
            "cpu_s": round(cpu - base_cpu, 3), "users_per_s": round(rate),
            "users_per_cpu_s": round(n / max(cpu - base_cpu, 1e-6)),
            "rss_kib": rss, "rss_empty_kib": base_rss, "target": EXPORT_TARGET,
            "verdict": "PASS" if rate >= EXPORT_TARGET else "MISS"}


def bench_export(db_url: str, n: int) -> dict[str, Any]:
    """`users export` of n users: users/s and PASS/MISS against 50,000, with the peak RSS."""
    from sqlalchemy.engine import make_url

    with tempfile.TemporaryDirectory(prefix="tokensvc-bench-export-") as tmp:
        workdir = Path(tmp)
        empty, env = _setup(db_url, workdir)
        svc = service_in(db_url, workdir / "keys", empty["account_sid"], "bench export")
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite":
            bulk_users_sqlite(Path(url.database or ""), svc, n, prefix="exported-")
        else:
            bulk_users_pg(url.set(drivername="postgresql").render_as_string(hide_password=False), svc, n,
                          prefix="exported-")
        return measure_export(env, empty["sid"], svc["sid"], n, workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", help="a PostgreSQL server (a database is created and dropped on it)")
    parser.add_argument("--import-lines", type=int, default=50_000)
    parser.add_argument("--export-users", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokensvc-bench-admin-") as tmp:
        if args.database == "sqlite":
            results = [bench_import(f"sqlite:///{tmp}/import.db", args.import_lines),
                       bench_export(f"sqlite:///{tmp}/export.db", args.export_users)]
        else:
            import contextlib

            with contextlib.ExitStack() as stack:
                base = args.pg_url or stack.enter_context(temp_postgres(Path(tmp)))
                db_url, _ = stack.enter_context(pg_database(base, "tokensvc_bench_admin"))
                results = [bench_import(db_url, args.import_lines), bench_export(db_url, args.export_users)]
    imported, exported = results
    print(f"import  {imported['lines']:>9,} lines  {imported['lines_per_s']:>8,} lines/s  "
          f"(command {imported['seconds']} s, process {imported['wall_s']} s, CPU {imported['cpu_s']} s: "
          f"{imported['lines_per_cpu_s']:,} lines per CPU second past start-up)  "
          f"target >= {IMPORT_TARGET:,}  {imported['verdict']}")
    print(f"export  {exported['users']:>9,} users  {exported['users_per_s']:>8,} users/s  "
          f"({exported['seconds']} s past start-up, CPU {exported['cpu_s']} s: {exported['users_per_cpu_s']:,} per CPU "
          f"second; peak RSS {exported['rss_kib']:,} KiB, "
          f"empty service {exported['rss_empty_kib']:,} KiB)  target >= {EXPORT_TARGET:,}  {exported['verdict']}")
    return 0 if imported["verdict"] == exported["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
