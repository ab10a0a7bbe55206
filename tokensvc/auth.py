"""Authentication: HTTP Basic (account or API key) or an access token → a Principal.

Credentials and API keys are served from small process caches that live `cache_seconds` (1 s by
default), so a deleted key or changed auth token is seen by every process within that time while
the hot path stays free of database reads. An entry in use is reloaded in the background before
it expires, one load per key at a time (LoadingCache): when every request's entry expired at
once, each of the ~64 in flight read it again through the threadpool (tens of ms, p99).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.exceptions import InvalidTag
from sqlalchemy import Connection, select

from . import errors
from .config import Settings
from .crypto import SecretBox, secret_matches
from .db import Database
from .metrics import Metrics
from .sids import is_sid
from .signing import Keyring
from .store.services import find_service
from .store.tables import accounts, api_keys
from .tokens import Verified, api_key_issuer, parse, verify

log = logging.getLogger("tokensvc")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()


class TTLCache(Generic[K, V]):
    """A bounded mapping whose entries expire after `ttl` seconds."""

    def __init__(self, ttl: float, maxsize: int = 10_000):
        self.ttl = ttl
        self.maxsize = maxsize
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> Any:
        item = self._data.get(key)
        if item is None or item[0] < time.monotonic():
            return _MISSING
        return item[1]

    def put(self, key: K, value: V) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class LoadingCache(TTLCache[K, V]):
    """A TTLCache that loads what it lacks with `load(key)`, never twice at once for one key.

    Callers that miss together share one load (a cache expiring under load sent every request in
    flight to the database at the same moment, bench/tokens.py --database postgresql: p99 ×4).
    An entry asked for in the last half of its life is reloaded in the background while callers
    keep getting it, so a busy key never expires in front of its callers; no entry is served
    past its `ttl`. After `clear()`, a load already under way stores nothing."""

    def __init__(self, ttl: float, load: Callable[[K], Awaitable[V]], maxsize: int = 10_000):
        super().__init__(ttl, maxsize)
        self.load = load
        self._loading: dict[K, asyncio.Task[V]] = {}
        self._generation = 0

    async def fetch(self, key: K) -> V:
        task = self._loading.get(key)
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            task = None  # left by another event loop (tests, a restarted app)
        item = self._data.get(key)
        if item is not None:
            left = item[0] - time.monotonic()
            if left > 0:
                if left < self.ttl / 2 and task is None:
                    self._start(key)  # refresh ahead; this caller keeps the entry it has
                return item[1]
        if task is None:
            task = self._start(key)
        return await asyncio.shield(task)  # a caller cancelled does not cancel the others' load

    def _start(self, key: K) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._load(key, self._generation))
        self._loading[key] = task
        task.add_done_callback(lambda t: self._done(key, t))
        return task

    async def _load(self, key: K, generation: int) -> V:
        value = await self.load(key)
        if generation == self._generation:
            self.put(key, value)
        return value

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failed background reload is retried by the next caller

    def clear(self) -> None:
        super().clear()
        self._loading.clear()
        self._generation += 1


@dataclass(frozen=True)
class Principal:
    """Who is calling: an account, an API key acting for its account, or a client app's token."""

    kind: str  # "account" | "key" | "client"
    account_sid: str
    key_sid: str | None = None
    token: Verified | None = None

    @property
    def is_client(self) -> bool:
        return self.kind == "client"

    @property
    def identity(self) -> str | None:
        return self.token.identity if self.token else None


class FailureLimiter:
    """Failed Basic-auth attempts per client address and per account SID in a sliding window.

    An address over its limit is refused outright. An account over its limit refuses only the
    addresses that have failed against it in the window, so valid callers are never slowed."""

    def __init__(self, limit: int, window: int):
        self.limit = limit
        self.window = window
        self._by_addr: dict[str, deque[float]] = defaultdict(deque)
        self._by_account: dict[str, deque[float]] = defaultdict(deque)
        self._pairs: dict[tuple[str, str], float] = {}

    def _trim(self, q: deque[float], now: float) -> int:
        while q and q[0] <= now - self.window:
            q.popleft()
        return len(q)

    def retry_after(self, addr: str, username: str) -> int | None:
        now = time.monotonic()
        q = self._by_addr.get(addr)
        if q is not None and self._trim(q, now) >= self.limit:
            return int(q[0] + self.window - now) + 1
        q = self._by_account.get(username)
        if q is not None and self._trim(q, now) >= self.limit:
            failed_at = self._pairs.get((addr, username))
            if failed_at is not None and failed_at > now - self.window:
                return int(q[0] + self.window - now) + 1
        return None

    def failed(self, addr: str, username: str) -> None:
        now = time.monotonic()
        self._by_addr[addr].append(now)
        self._by_account[username[:34]].append(now)
        self._pairs[(addr, username[:34])] = now
        if len(self._pairs) > 100_000:  # bounded memory under a spray of addresses
            cutoff = now - self.window
            self._pairs = {k: v for k, v in self._pairs.items() if v > cutoff}
            for table in (self._by_addr, self._by_account):
                for key in [k for k, q in table.items() if self._trim(q, now) == 0]:
                    del table[key]


def _credential(conn: Connection, username: str) -> tuple[str, str, str] | None:
    """(kind, account SID, secret hash) of an account or API key SID."""
    # Only SID-shaped names reach the database: PostgreSQL rejects a NUL in text outright.
    if is_sid("AC", username):
        row = conn.execute(select(accounts.c.auth_token_hash).where(accounts.c.sid == username)).first()
        return ("account", username, row.auth_token_hash) if row else None
    if is_sid("SK", username):
        row = conn.execute(select(api_keys.c.account_sid, api_keys.c.secret_hash)
                           .where(api_keys.c.sid == username)).first()
        return ("key", row.account_sid, row.secret_hash) if row else None
    return None


class Authenticator:
    def __init__(self, *, settings: Settings, db: Database, keyring: Keyring, box: SecretBox,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics
        self.db = db
        self.keyring = keyring
        self.box = box
        ttl = settings.cache_seconds
        self._credentials: LoadingCache[str, Any] = LoadingCache(ttl, self._load_credential)
        self._api_keys: LoadingCache[str, Any] = LoadingCache(ttl, self._load_api_key_secret)
        self._services: LoadingCache[str, Any] = LoadingCache(ttl, lambda sid: self.db.read(find_service, sid))
        self.limiter = FailureLimiter(settings.auth_fail_limit, settings.auth_fail_window)

    def _failed(self, kind: str) -> None:
        """Count a refused authentication: `basic` (wrong or malformed credentials), `limited`
        (refused by the failure limiter), `token` (invalid or expired access token). A request
        with no credentials at all is the ordinary start of a Basic challenge, not counted."""
        if self.metrics is not None:
            self.metrics.auth_failures.labels(kind).inc()

    def forget(self) -> None:
        """Drop every cache entry (after a change made by this process)."""
        self._credentials.clear()
        self._api_keys.clear()
        self._services.clear()

    async def service(self, sid: str) -> Mapping[str, Any] | None:
        """A service row, cached briefly: the token hot path reads it on every request."""
        found: Mapping[str, Any] | None = await self._services.fetch(sid)
        return found

    async def _load_credential(self, username: str) -> tuple[str, str, str] | None:
        return await self.db.read(_credential, username) if len(username) == 34 else None

    async def basic(self, authorization: str | None, addr: str) -> Principal:
        """The principal of a Basic Authorization header, or 401 20003 / 429 20429."""
        if not authorization or not authorization[:6].lower() == "basic ":
            raise errors.unauthorized()
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        username, sep, secret = decoded.partition(":")
        return await self.password(username, secret if sep else None, addr)

    async def password(self, username: str, secret: str | None, addr: str) -> Principal:
        """The principal of a SID and its secret however they came (a Basic header, the console's
        sign-in form): the failure limits, then a constant-time check; 401 20003 / 429 20429.
        `secret` None: malformed credentials, counted as a failure like a wrong secret."""
        retry = self.limiter.retry_after(addr, username)
        if retry is not None:
            self._failed("limited")
            raise errors.too_many_requests(retry, "Too many failed authentication attempts")
        if secret is None:  # malformed: counts against the address like a wrong secret
            self.limiter.failed(addr, username)
            self._failed("basic")
            raise errors.unauthorized("Malformed Basic credentials")
        cred = await self._credentials.fetch(username)
        if not secret_matches(secret, cred[2] if cred else None):
            self.limiter.failed(addr, username)
            self._failed("basic")
            raise errors.unauthorized()
        kind, account_sid, _ = cred
        return Principal(kind, account_sid, key_sid=username if kind == "key" else None)

    async def account_token_hash(self, sid: str) -> str | None:
        """The stored hash of an account's auth token (cached like Basic credentials), None when
        there is no such account: what a console session is bound to (console/session.py)."""
        cred = await self._credentials.fetch(sid)
        return cred[2] if cred is not None and cred[0] == "account" else None

    async def api_key_secret(self, sid: str) -> tuple[str, str] | None:
        """(account SID, secret) of an API key, decrypted, cached briefly."""
        found: tuple[str, str] | None = await self._api_keys.fetch(sid)
        return found

    async def _load_api_key_secret(self, sid: str) -> tuple[str, str] | None:
        row = await self.db.read(lambda conn: conn.execute(
            select(api_keys.c.account_sid, api_keys.c.secret_enc).where(api_keys.c.sid == sid)).first())
        if row is None:
            return None
        try:
            return (row.account_sid, self.box.decrypt(row.secret_enc, sid))
        except (InvalidTag, ValueError):
            # Stored with another secrets.key (a replica whose keys dir differs) or
            # damaged: the key cannot verify anything, so its tokens are invalid (401).
            log.warning("API key %s: its stored secret does not open with this process's "
                        "secrets.key; tokens it signed are refused", sid)
            return None

    async def verify_token(self, token: str) -> Verified:
        """A verified token whose service exists and belongs to the token's account."""
        try:
            return await self._verify_token(token)
        except errors.TwilioError:
            self._failed("token")
            raise

    async def _verify_token(self, token: str) -> Verified:
        prefetched: dict[str, Any] = {}
        jws = parse(token)  # taken apart once, for the issuer lookup and for verify
        issuer = api_key_issuer(jws)
        if issuer is not None:
            prefetched[issuer] = await self.api_key_secret(issuer)
        verified = verify(
            jws,
            snapshot=self.keyring.current(),
            lookup_api_key=lambda sid: prefetched.get(sid),
            refresh_snapshot=lambda: self.keyring.current(urgent=True),
            max_ttl=self.settings.max_ttl,
            issuer=self.settings.issuer,
        )
        svc = await self.service(verified.service_sid)
        if svc is None or svc["account_sid"] != verified.account_sid:
            raise errors.invalid_token("Access Token is for a service of another account")
        return verified

    async def client(self, token: str) -> Principal:
        verified = await self.verify_token(token)
        return Principal("client", verified.account_sid, key_sid=verified.key_sid, token=verified)

