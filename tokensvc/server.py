"""The HTTP/1.1 transport: uvicorn's httptools protocol with a bounded request head and deadlines.

httptools accumulates a header line in memory without any bound, and uvicorn times a connection
out only once it has had a response: one connection sending an endless header line grew the
server's memory by 200 MiB and slowed every other request (each new piece is copied onto what it
holds), and idle, slow-header and slow-body connections stayed open for as long as their
clients liked. This protocol counts the bytes of each request head as they arrive and refuses a
head over `max_head_bytes` (or with a line over `max_line_bytes`) with a 431 and a close, and it
closes a connection whose request head is not complete within `head_timeout` seconds of the
connection (or of the head's first bytes, on a kept-alive connection) or whose body is not
complete within `body_timeout` seconds of its head.

Cost on the hot path: the counting is an addition per read and a comparison per request; a
timer is armed once per connection, and per request only when a head or a body spans several
reads (a request that arrives in one read, the usual case, arms none). The exact size of a
head is summed only when its reads were large enough for it to matter.

uvicorn imports the class by name in every worker process ("tokensvc.server:BoundedHttpToolsProtocol"),
so `--workers N` works; `configure()` gives it the limits from the settings in each process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import errors
from .api.routing import allowed_methods
from .config import Settings
from .errors import TwilioError

PROTOCOL = "tokensvc.server:BoundedHttpToolsProtocol"

_HEAD, _BODY, _IDLE = 0, 1, 2  # where the connection is in its current request


@dataclass(frozen=True)
class TransportLimits:
    """Bounds on what a client may make the transport hold, and for how long."""

    max_line_bytes: int = 16 * 1024
    max_head_bytes: int = 64 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportLimits:
        return cls(max_line_bytes=settings.max_header_line_bytes, max_head_bytes=settings.max_head_bytes,
                   head_timeout=settings.head_timeout, body_timeout=settings.body_timeout)


def configure(settings: Settings, routes: list[Any] | None = None) -> None:
    """Use the limits of these settings for the connections this process accepts from now on;
    `routes` (the app's) name the methods of a path whose method the parser refused."""
    BoundedHttpToolsProtocol.limits = TransportLimits.from_settings(settings)
    if routes is not None:
        BoundedHttpToolsProtocol.routes = list(routes)


_REASONS = {400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large"}
_REQUEST_LINE = re.compile(rb"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}) (/[^ ?#\r\n]*)")


def error_bytes(err: TwilioError) -> bytes:
    """A whole HTTP/1.1 answer carrying a Twilio error body (SPEC §2), closing the connection:
    for what the transport refuses before the app sees it."""
    body = json.dumps(err.body()).encode()
    head = [b"HTTP/1.1 %d %s" % (err.status, _REASONS.get(err.status, b"Error")),
            b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close",
            # as every answer has one (app.py); the request's own never got parsed, so a new one
            b"x-request-id: " + os.urandom(16).hex().encode()]
    head += [f"{name}: {value}".encode("latin-1") for name, value in err.headers.items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _head_too_large(limits: TransportLimits) -> bytes:
    return error_bytes(errors.head_too_large(limits.max_head_bytes, limits.max_line_bytes))


def unparsable_request(data: bytes, routes: list[Any], invalid_method: bool) -> TwilioError:
    """What a request the HTTP parser refused gets: an unknown method on a path we serve is
    405 20004 with that resource's Allow (SPEC §7), on any other path 404; anything else 400."""
    if invalid_method:
        line = _REQUEST_LINE.match(data)
        if line is not None:
            allowed = allowed_methods(routes, line.group(2).decode("latin-1"))
            if allowed is None:
                return errors.not_found()
            return errors.method_not_allowed(allowed)
    return errors.invalid_http_request()


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop the parser; the 431 has been sent by then."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bounded request head and head/body deadlines (module docstring)."""

    limits = TransportLimits()
    routes: list[Any] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = self.limits
        self._phase = _HEAD
        # Bytes read since the current head began (an over-estimate: whole reads are counted).
        self._head_bytes = 0
        self._read_counted = True  # whether the current read was counted in _head_bytes
        self._began_in_read = False  # whether a request already began in the current read
        self._exact = False  # the head's size must be summed from what the parser gave
        self._deadline: asyncio.TimerHandle | None = None
        self._upgraded = False
        self._refusing = False  # a head was too large: its 431 follows the answers before it

    # -- connection ---------------------------------------------------------------------------

    # asyncio.Protocol takes a BaseTransport; uvicorn's HttpToolsProtocol narrows it to Transport
    # (with its own ignore), and so does this override of it.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn times out only kept-alive connections, after a response: this covers the first.
        self._deadline = self.loop.call_later(self._limits.head_timeout, self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, plus the counting and the deadlines around the parser.
        if self._refusing:  # nothing after a refused head is parsed (nor held)
            return
        self._unset_keepalive_if_required()
        self._began_in_read = False
        if self._phase != _BODY:
            self._read_counted = True
            self._head_bytes += len(data)
        else:
            self._read_counted = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self._refusing:  # _HeadTooLarge stopped the parser
                return
            # A Twilio error body, not uvicorn's plain text; no warning per malformed request
            # (a client could fill the log with them), and the request itself is never logged.
            err = unparsable_request(data if self._phase == _IDLE or self.cycle is None else b"",
                                     self.routes, isinstance(exc, httptools.HttpParserInvalidMethodError))
            self._cancel_deadline()
            self.transport.write(error_bytes(err))
            self.transport.close()
            return
        if self._upgraded or self._refusing or self.transport.is_closing():
            return
        phase = self._phase
        if phase == _BODY:
            if self._deadline is None:
                self._deadline = self.loop.call_later(self._limits.body_timeout, self._expire)
        elif self._head_bytes > self._limits.max_head_bytes:
            self._refuse_head()
        elif self._deadline is None and (phase == _HEAD or (
                (self.cycle is None or self.cycle.response_complete) and not self.pipeline)):
            # a head under way; or bytes that start no request (the parser skips blank lines)
            # on a connection with nothing left to answer: they must not keep it open either
            self._deadline = self.loop.call_later(self._limits.head_timeout, self._expire)

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the connection over, with its own timeouts.
        self._upgraded = True
        self._cancel_deadline()
        super().handle_websocket_upgrade()

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._began_in_read or not self._read_counted:
            # This head began inside a read that held the end of the previous request: the
            # count restarts here (under-counting by less than one read) and the size is summed.
            self._head_bytes = 0
            self._exact = True
        else:
            self._exact = False
        self._began_in_read = True
        self._phase = _HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._deadline is not None:  # (inline: this and the next two run for every request)
            self._deadline.cancel()
            self._deadline = None
        self._phase = _BODY
        limits = self._limits
        if (self._exact or self._head_bytes > limits.max_line_bytes) and self._oversized_head(limits):
            self._refuse_head()
            raise _HeadTooLarge
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = _IDLE
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusing and self._answered_all():
            self._send_431()

    # -- helpers ------------------------------------------------------------------------------

    def _oversized_head(self, limits: TransportLimits) -> bool:
        longest = len(self.url)
        total = longest
        for name, value in self.headers:
            size = len(name) + len(value) + 4  # ": " and CRLF
            total += size
            if size > longest:
                longest = size
        return longest > limits.max_line_bytes or total > limits.max_head_bytes

    def _refuse_head(self) -> None:
        # Pipelined requests before this one are answered first, in order; then the 431.
        self._refusing = True
        if self._answered_all():
            self._send_431()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self._limits.head_timeout, self._expire)

    def _answered_all(self) -> bool:
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _send_431(self) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.write(_head_too_large(self._limits))
            self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        # A head or a body not complete in time: the connection is closed without an answer
        # (a client this slow would rarely read one); an application waiting for the body sees
        # a disconnect.
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
