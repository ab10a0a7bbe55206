"""The webhooks' HTTP/1.1 client (SPEC §10): keep-alive connections per origin, each request one
prebuilt write, the response parsed by httptools (as server.py parses requests), redirects never
followed (a 3xx is just its status), at most `limit` bytes of a body read (the connection is then
closed, not drained). No web framework, no database.

Why not httpx, the client this started with (issue 14; `bench/webhook_clients.py` measures it):
one POST to a local receiver cost 0.9-2.2 ms of CPU through httpx/httpcore/anyio on the 2-core
machine (some 2,400 Python calls; with concurrent requests its pool's assignment loop rescans
every connection and retries), where this client costs 0.06-0.11 ms. At that price a 1 ms
onUserAdd hook halved the token endpoint alone, and one process could not deliver 1,000
events/s even with a core to itself."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import httptools

KEEPALIVE_SECONDS = 4.0  # under the 5 s idle timeout of common servers (uvicorn, Node), so a kept
#                          connection is rarely one the receiver is closing as we write to it
MAX_IDLE_PER_ORIGIN = 32


class Unreachable(Exception):
    """No answer: the connection failed, or the receiver closed it or sent what is not HTTP."""


@dataclass(frozen=True)
class Target:
    """What a URL's requests share: where to connect, and the bytes of their request line's tail
    and Host header (and Authorization, for credentials in the URL, as httpx sent them)."""

    origin: tuple[str, str, int]
    path: bytes
    head: bytes


_SAFE = "!#$%&'()*+,/:;=?@[]~"  # left as they are: only spaces, controls and non-ASCII are escaped


@lru_cache(maxsize=1024)
def target(url: str) -> Target:
    """The parts of an http(s) URL a request needs (ValueError when it is not one)."""
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError("not an http(s) URL")
    host = split.hostname
    port = split.port or (443 if split.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    if split.port is not None:
        shown += f":{split.port}"
    path = quote(split.path or "/", safe=_SAFE) + (f"?{quote(split.query, safe=_SAFE)}" if split.query else "")
    head = b"Host: " + shown.encode("ascii") + b"\r\n"
    if split.username is not None or split.password is not None:
        pair = f"{unquote(split.username or '')}:{unquote(split.password or '')}".encode()
        head += b"Authorization: Basic " + base64.b64encode(pair) + b"\r\n"
    return Target((split.scheme, host, port), path.encode("ascii"), head)


def request_bytes(method: str, url: str, headers: Mapping[str, str], form: bytes | None) -> tuple[Target, bytes]:
    """The whole request: `form` (urlencoded) is the body of a POST; a GET carries none."""
    t = target(url)
    lines = [method.encode("ascii"), b" ", t.path, b" HTTP/1.1\r\n", t.head]
    for name, value in headers.items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if form is None:
        lines.append(b"\r\n")
    else:
        lines.append(b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(form))
        lines.append(form)
    return t, b"".join(lines)


class _Stale(Exception):
    """A kept-alive connection closed before any byte of the answer: the request may be resent."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._parser: Any = None
        self._status = 0
        self._body = bytearray()
        self._limit = 0
        self._answered = False  # a byte of the current answer arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of asyncio's

    def exchange(self, data: bytes, limit: int) -> asyncio.Future[tuple[int, bytes, bool]]:
        """Send a request; the future's (status, body read, whether the connection may be kept)."""
        assert self.transport is not None
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._body, self._limit, self._answered = 0, bytearray(), limit, False
        self.transport.write(data)
        return waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(Unreachable("not an HTTP answer"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            return
        room = self._limit - len(self._body)
        self._body += chunk[:room]
        if len(self._body) >= self._limit:
            self._finish(keep=False)  # enough read: the rest is not waited for

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: the final one follows on this connection
            self._status, self._body = 0, bytearray()
            return
        self._finish(keep=self._parser.should_keep_alive())

    def _finish(self, *, keep: bool) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._status, bytes(self._body), keep))
        if not keep:
            self.close()

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._status >= 200:
            self._finish(keep=False)  # an answer delimited by the close
        elif not self._answered:
            self._fail(_Stale())
        else:
            self._fail(Unreachable("closed mid-answer"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """Pooled keep-alive connections; `request` is one attempt with no timeout of its own (the
    caller bounds it: a cancel closes the connection it was using)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None):
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def request(self, method: str, url: str, headers: Mapping[str, str], form: bytes | None = None, *,
                      limit: int) -> tuple[int, bytes]:
        """(status, at most `limit` bytes of its body); Unreachable when there is no answer."""
        t, data = request_bytes(method, url, headers, form)
        while True:
            conn = self._take(t.origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(t)
            try:
                status, body, keep = await conn.exchange(data, limit)
            except _Stale:
                if reused:
                    continue  # the receiver had closed it while it idled: once more, on a new connection
                raise Unreachable("closed before answering") from None
            except BaseException:
                conn.close()  # cancelled (a timeout) or broken: never reused mid-answer
                self._open.discard(conn)
                raise
            if keep and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(t.origin, deque()).append(conn)
                self._trim(t.origin)
            else:
                conn.close()
                self._open.discard(conn)
            return status, body

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                return conn
            conn.close()
            self._open.discard(conn)
        return None

    def _trim(self, origin: tuple[str, str, int]) -> None:
        idle = self._idle[origin]
        now = time.monotonic()
        while idle and (len(idle) > MAX_IDLE_PER_ORIGIN or now - idle[0].idle_since >= KEEPALIVE_SECONDS):
            old = idle.popleft()
            old.close()
            self._open.discard(old)

    async def _connect(self, t: Target) -> _Connection:
        scheme, host, port = t.origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._ssl = self._ssl or ssl.create_default_context()
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Connection, host, port, ssl=tls, server_hostname=host if tls else None)
        except OSError as exc:  # refused, unreachable, DNS, TLS
            raise Unreachable(type(exc).__name__) from None
        self._open.add(conn)
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
