"""A server process's side of its delivery process (webhooks/worker.py): started when the outbox
holds pending rows, looked for at once after a commit that may have written some, and every
CHECK_SECONDS (a crash left them, another replica or the CLI wrote them); woken by a byte on its
stdin (and at least every second, a beat: worker.SILENCE_SECONDS), started again when it died,
stopped by closing that stdin. A server whose database never holds a post-event starts none:
neither do the services without a post URL or whose filters leave their events out, however many
first encounters they have.

"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio.to_thread
from sqlalchemy import Connection, select

from ..config import Settings
from ..db import Database
from ..store.outbox import PENDING
from ..store.outbox_tables import outbox
from .worker import SPEC, settings_spec

log = logging.getLogger("tokensvc.webhooks")

WAKE_SECONDS = 0.005  # at most one byte per 5 ms: the dispatcher cycles at most every 50 ms anyway
RESTART_SECONDS = 1.0
CHECK_SECONDS = 1.0
# With no delivery process, a commit's wake asks for a look at the outbox instead: at most one per
# LOOK_SECONDS (an indexed read of one row), so a busy service without webhooks costs a few reads a second.
LOOK_SECONDS = 0.1


def _pending(conn: Connection) -> bool:
    return conn.execute(select(outbox.c.id).where(outbox.c.status == PENDING).limit(1)).first() is not None


class DeliveryProcess:
    """The `Waker` of context.py: `wake()` after a commit that may have written outbox rows."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._woken = 0.0
        self._started_at = -RESTART_SECONDS
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._look = asyncio.Event()

    async def start(self, db: Database) -> None:
        """Look for pending rows now, when woken, and every CHECK_SECONDS; the process starts when
        there are. A database down at start delays nothing but that look."""
        self._watch = asyncio.create_task(self._watch_outbox(db), name="webhook-delivery-watch")

    def _running(self) -> bool:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            log.warning("webhook delivery process exited with %s; starting another when rows are pending",
                        proc.returncode)
            self._proc = proc = None
        return proc is not None

    async def _watch_outbox(self, db: Database) -> None:
        while not self._stopping:
            self._look.clear()
            if self._running():
                self._woken = 0.0
                self.wake()  # the beat by which it knows this app still runs (worker.SILENCE_SECONDS)
            else:
                try:
                    if await db.read(_pending):
                        self._spawn()
                except Exception as exc:
                    log.warning("could not look for pending webhooks (%s); trying again", type(exc).__name__)
            await asyncio.sleep(LOOK_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_SECONDS - LOOK_SECONDS):
                    await self._look.wait()

    def wake(self) -> None:
        now = time.monotonic()
        if now - self._woken < WAKE_SECONDS:
            return
        self._woken = now
        if not self._running():
            self._look.set()  # the watcher looks now: a process only for rows that are there
            return
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        try:
            os.write(proc.stdin.fileno(), b"w")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway
        except OSError:
            pass  # it died just now: the next wake starts another, its rows come due after their lease

    def _spawn(self) -> None:
        if self._stopping or self._starting is not None or time.monotonic() - self._started_at < RESTART_SECONDS:
            return
        self._started_at = time.monotonic()
        self._starting = asyncio.get_running_loop().create_task(self._start(), name="webhook-delivery-start")

    async def _start(self) -> None:
        try:
            # fork and exec off the event loop
            proc = await anyio.to_thread.run_sync(self._popen)
        except OSError:
            log.exception("could not start the webhook delivery process; trying again")
            return
        finally:
            self._starting = None
        self._proc = proc
        if self._stopping:
            await self._end(proc)

    def _popen(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[SPEC] = settings_spec(self.settings)
        # The delivery process imports the same tokensvc as this one, wherever it was imported from.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        proc = subprocess.Popen([sys.executable, "-m", "tokensvc.webhooks.worker"], stdin=subprocess.PIPE,
                                env=env, close_fds=True)
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        return proc

    async def stop(self) -> None:
        """Close its pipe and wait (10 s at most) for it to finish what it has in hand."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait([self._watch], timeout=2.0)
        if self._starting is not None:
            await asyncio.wait([self._starting], timeout=10.0)  # it ends what it started
        proc, self._proc = self._proc, None
        if proc is not None:
            await self._end(proc)

    @staticmethod
    async def _end(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        deadline = time.monotonic() + 10.0
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            await anyio.to_thread.run_sync(proc.wait)
