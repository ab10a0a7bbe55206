"""A minimal RFC 6455 client for bench/connect.py: as little client CPU per connect as possible.

The `websockets` client spends ~0.7–0.9 ms of CPU per connect on this machine, as much as the
server it measures, and the two share the cores. This one writes a prebuilt handshake, checks the
101 and its Sec-WebSocket-Accept, reads frames (answering pings so uvicorn keeps idle connections
open) and hands the first text frame to its caller. It is for benchmarks only: no fragmentation,
no extensions (it offers permessage-deflate like a browser; tokensvc declines it, and a server
that accepted it would fail the check), client frames only for pong and close.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    pass


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + body


class Client(asyncio.Protocol):
    __slots__ = ("transport", "buffer", "accept", "upgraded", "first", "closed")

    def __init__(self, accept: bytes, first: asyncio.Future, closed: asyncio.Future):
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.accept = accept
        self.upgraded = False
        self.first = first
        self.closed = closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a connection's transport is a Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            if not self.upgraded and not self._handshake():
                return
            self._frames()
        except HandshakeError as exc:
            self._fail(exc)

    def _handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 101"):
            raise HandshakeError(lines[0].decode("latin-1"))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"sec-websocket-accept") != self.accept:
            raise HandshakeError("bad Sec-WebSocket-Accept")
        if b"sec-websocket-extensions" in headers:
            raise HandshakeError("the server accepted an extension this client does not speak")
        self.upgraded = True
        return True

    def _frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode, length, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if buf[1] & 0x80 or not buf[0] & 0x80:
                raise HandshakeError("masked or fragmented server frame")
            if length == 126:
                if len(buf) < 4:
                    break
                length, start = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, start = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < start + length:
                break
            payload, buf = buf[start:start + length], buf[start + length:]
            if opcode == 0x1 and not self.first.done():
                self.first.set_result(payload.decode())
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(_masked(0xA, payload))
            elif opcode == 0x8:
                if self.transport is not None:
                    self.transport.write(_masked(0x8, payload[:2]))
                    self.transport.close()
                if not self.first.done():
                    self.first.set_exception(HandshakeError(f"closed before a text frame: {payload[:2].hex()}"))
        self.buffer = buf

    def _fail(self, exc: Exception) -> None:
        if not self.first.done():
            self.first.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_exception(exc or HandshakeError("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self, timeout: float = 10) -> None:
        """Send close 1000 and wait for the server to close the TCP connection."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked(0x8, struct.pack("!H", 1000)))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


async def connect(host: str, port: int, path: str, headers: dict[str, str],
                  offer_deflate: bool = True) -> tuple[Client, str]:
    """Open a WebSocket; returns the client and the first text frame the server sent."""
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
               + ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if offer_deflate else "")
               + f"{extra}\r\n").encode()
    first, closed = loop.create_future(), loop.create_future()
    transport, client = await loop.create_connection(lambda: Client(accept, first, closed), host, port)
    transport.write(request)
    try:
        return client, await first
    except BaseException:
        transport.abort()
        raise
