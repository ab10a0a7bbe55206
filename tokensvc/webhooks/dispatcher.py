"""The outbox's dispatcher (SPEC §10), run by each server's delivery process (webhooks/worker.py,
started by webhooks/delivery.py): claims due rows (leased, so a crashed
claimer's rows come due again), delivers each resource's rows in commit order over one pooled
keep-alive client (webhooks/http.py), retries a timeout, a 429 or a 5xx with backoff up to the
row's retry count (the same idempotency token on every attempt), deletes what was delivered and
keeps what it gave up on (`failed`, error 50057 logged) for 7 days. The claims of rows still in
flight are renewed while their deliveries last, so a slow receiver's row is not claimed twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from ..db import is_busy
from ..errors import TwilioError, database_busy
from ..store import outbox
from ..store.accounts import ForeignSecret
from ..store.outbox_tables import outbox as outbox_table
from .http import Client, Unreachable
from .params import form, render, signature
from .signers import SigningTokens

log = logging.getLogger("tokensvc.webhooks")

ATTEMPT_SECONDS = 5.0
MAX_RESPONSE_BYTES = 64 * 1024
GIVE_UP = 50057
# One cycle (one write transaction: finish, renew, claim) per CYCLE_SECONDS at most however many
# commits wake it. On SQLite each takes (with its fsync) the write lock the server's first
# encounters wait for, and a writer that finds it taken sleeps in SQLite's busy handler: 2 a
# second there (bench/webhooks.py, same runs: onUserAdded on/off 0.89, 0.94 against 0.74, 0.84 at
# 5 a second; p99 delivery at 300 events/s 0.51 s against 0.21, target <= 1 s). PostgreSQL
# locks rows, not the database: 5 a second. While a claim comes back full, a backlog waits:
# cycles follow every BACKLOG_CYCLE_SECONDS.
CYCLE_SECONDS = 0.2
SQLITE_CYCLE_SECONDS = 0.5
BACKLOG_CYCLE_SECONDS = 0.05
CONNECTIONS = 8
# An account whose auth token copy this process's secrets.key cannot open (another deployment's
# key on a shared database) is left out of its claims this long before it looks again.
FOREIGN_SECONDS = 60.0
RELEASED = "released"


def _any_due(conn: Connection) -> bool:
    t = outbox.ms()
    query = select(outbox_table.c.id).where(outbox_table.c.status == outbox.PENDING,
                                            outbox_table.c.due_at <= t).limit(1)
    return conn.execute(query).first() is not None


class Dispatcher:
    """Started and stopped by the delivery process; `wake()` when its server committed rows
    that may be due, so they go out at once instead of at the next poll."""

    def __init__(self, c: Any, *, poll_seconds: float = 0.25, lease_seconds: float = 60.0,
                 max_in_flight: int = 256, backoff_seconds: float = 0.5):
        self.c = c
        self.poll_seconds = poll_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.max_in_flight = max_in_flight
        self.backoff_seconds = backoff_seconds
        self.cycle_seconds = SQLITE_CYCLE_SECONDS if c.db.is_sqlite else CYCLE_SECONDS
        self._client: Client | None = None
        self._leases: dict[int, int] = {}  # outbox id of a row in flight -> when its claim ends (epoch ms)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._delivered: list[int] = []
        self._failed: list[int] = []
        self._released: list[int] = []
        self._foreign: dict[str, float] = {}  # account SID -> until when its rows are left to others (monotonic)
        self._chains: set[asyncio.Task[None]] = set()
        self._signers = SigningTokens(c.db, c.box)
        self._purged_at = 0.0
        self._stopping = False

    async def start(self) -> None:
        # Deliveries wait for one of CONNECTIONS slots (not counted in the attempt's 5 s) rather than
        # open hundreds of connections at once: a receiver's accept queue drops a burst of connects,
        # costing seconds of SYN retries.
        self._slots = asyncio.Semaphore(CONNECTIONS)
        self._client = Client()
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        # The flag as well as the cancel: on Python 3.11 a cancel that meets a finishing
        # wait_for/await can be lost, and the loop would run on.
        self._stopping = True  # a delivery between attempts stops too; its row comes due after its lease
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)
        for chain in list(self._chains):
            chain.cancel()
        if self._chains:
            await asyncio.wait(list(self._chains), timeout=2.0)
        with contextlib.suppress(Exception):
            await self._flush()  # what was delivered is not sent again by the next claimer
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            backlog = False
            try:
                backlog = await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_busy(exc) or isinstance(exc, TwilioError) and exc.code == database_busy().code:
                    # Another process (the CLI, a backup) holds SQLite's write lock: expected, no trace.
                    log.warning("webhook dispatcher: the database is busy; retrying")
                else:
                    log.exception("webhook dispatcher cycle failed; retrying")
                await asyncio.sleep(1.0)
            await asyncio.sleep(BACKLOG_CYCLE_SECONDS if backlog else self.cycle_seconds)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def _cycle(self) -> bool:
        """Finish what was delivered and claim what is due, in one transaction; whether rows
        were left waiting (the claim was full, or there was no room for one)."""
        db = self.c.db
        if time.monotonic() - self._purged_at > 600:
            self._purged_at = time.monotonic()
            await db.run(outbox.purge)
        room = self.max_in_flight - self._in_flight
        due = room > 0 and await db.read(_any_due)
        delivered, failed, released = self._delivered, self._failed, self._released
        now = time.monotonic()
        self._foreign = {sid: until for sid, until in self._foreign.items() if until > now}
        skip = sorted(self._foreign)
        # Claims ending within half a lease are renewed: a delivery may outlast a lease (5 s per
        # attempt, backoff between retries), and a row whose claim ran out is another's to claim.
        t = outbox.ms()
        renew = [i for i, until in self._leases.items() if until - t < self.lease_ms // 2]
        if not due and not delivered and not failed and not released and not renew:
            return False
        self._delivered, self._failed, self._released = [], [], []

        def job(conn: Connection) -> list[dict[str, Any]]:
            outbox.finish(conn, delivered=delivered, failed=failed, released=released)
            if renew:
                outbox.renew(conn, ids=renew, until=t + self.lease_ms)
            return outbox.claim(conn, limit=room, lease_ms=self.lease_ms, skip_accounts=skip) if due else []

        try:
            rows = await db.run(job)
        except BaseException:
            self._delivered[:0], self._failed[:0], self._released[:0] = delivered, failed, released  # next cycle
            raise
        for i in renew:
            if i in self._leases:  # not finished meanwhile
                self._leases[i] = t + self.lease_ms
        chains: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            self._leases[row["id"]] = row["due_at"]
            chains.setdefault(row["resource_sid"], []).append(row)
        for chain in chains.values():
            self._in_flight += len(chain)
            task = asyncio.create_task(self._deliver_chain(chain))
            self._chains.add(task)
            task.add_done_callback(self._chains.discard)
        return due and len(rows) >= room or room <= 0

    async def _flush(self) -> None:
        delivered, failed, released = self._delivered, self._failed, self._released
        if not delivered and not failed and not released:
            return
        self._delivered, self._failed, self._released = [], [], []
        try:
            await self.c.db.run(lambda conn: outbox.finish(conn, delivered=delivered, failed=failed,
                                                           released=released))
        except Exception:
            self._delivered[:0], self._failed[:0], self._released[:0] = delivered, failed, released  # next cycle
            raise

    async def _deliver_chain(self, chain: list[dict[str, Any]]) -> None:
        """One resource's rows, in commit order."""
        for row in chain:
            try:
                ok = await self._deliver(row)
            except Exception:
                log.exception("webhook delivery crashed (outbox id %s); it is retried after its lease", row["id"])
                ok = None
            if ok == RELEASED:
                self._released.append(row["id"])
            elif ok is not None:
                (self._delivered if ok else self._failed).append(row["id"])
            self._leases.pop(row["id"], None)  # finished, or left to its lease
            self._in_flight -= 1
        self.wake()

    async def _deliver(self, row: Mapping[str, Any]) -> bool | str | None:
        """Attempts until one succeeds or the retries are spent; whether it was delivered (None:
        the dispatcher is stopping, the row is left to its lease; RELEASED: this process cannot
        sign it, and never sends unsigned what an auth token copy exists for)."""
        try:
            auth_token = await self._signers.get(row["account_sid"])
        except ForeignSecret:
            if row["account_sid"] not in self._foreign:
                log.warning("webhooks of account %s left to another process: this process's secrets.key cannot "
                            "open its auth token copy (another deployment's key on this database? if no process has "
                            "it, `tokensvc webhooks drop --account` clears them)",
                            row["account_sid"])
            self._foreign[row["account_sid"]] = time.monotonic() + FOREIGN_SECONDS
            return RELEASED
        status: int | str = "?"
        for attempt in range(int(row["retries"]) + 1):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            if self._stopping:
                return None
            status = await self._attempt(row, render(row, attempt), auth_token)
            if isinstance(status, int) and 200 <= status < 300:
                return True
            if isinstance(status, int) and status != 429 and status < 500:
                break  # a refusal (or a redirect, not followed): retrying would not change it
        # No PII: SIDs, the event's name and what the receiver answered.
        log.error("webhook given up: error %d, %s of %s (service %s) after %d attempt(s), last outcome %s",
                  GIVE_UP, row["event_type"], row["resource_sid"], row["service_sid"], attempt + 1, status)
        return False

    async def _attempt(self, row: Mapping[str, Any], params: dict[str, str], auth_token: str | None) -> int | str:
        """One request within ATTEMPT_SECONDS: the status, or "timeout" / "unreachable"."""
        assert self._client is not None
        headers = {"I-Twilio-Idempotency-Token": row["token"], "User-Agent": "tokensvc-webhooks"}
        url, body = row["url"], None
        if row["method"] == "GET":
            url = url + ("&" if "?" in url else "?") + form(params)
            signed = signature(auth_token, url, {}) if auth_token else None
        else:
            signed = signature(auth_token, url, params) if auth_token else None
            body = form(params).encode()
        if signed is not None:
            headers["X-Twilio-Signature"] = signed
        try:
            async with self._slots, asyncio.timeout(ATTEMPT_SECONDS):
                status, _ = await self._client.request(row["method"], url, headers, body, limit=MAX_RESPONSE_BYTES)
                return status
        except TimeoutError:
            return "timeout"
        except (Unreachable, ValueError):
            return "unreachable"
