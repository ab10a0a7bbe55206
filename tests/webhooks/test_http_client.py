"""The webhooks' HTTP/1.1 client (tokensvc/webhooks/http.py) against scripted servers on
127.0.0.1: keep-alive reuse, a connection the receiver closed while idle, redirects not followed,
64 KiB read at most, chunked and close-delimited answers, what is not HTTP, timeouts."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from tokensvc.webhooks.http import Client, Unreachable, request_bytes

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Seen"], Awaitable[None]]


class Seen:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


def run(script: Script, test: Callable[[Client, str, Seen], Awaitable[None]]) -> Seen:
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        try:
            await script(reader, writer, seen)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Client()
        try:
            async with asyncio.timeout(20):
                await test(client, f"http://127.0.0.1:{port}", seen)
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())
    return seen


def answering(*answers: bytes, close_after: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        for answer in answers:
            seen.requests.append(await read_request(reader))
            writer.write(answer)
            await writer.drain()
        if not close_after:
            await reader.read()  # keep the connection until the client closes it
    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_requests_reuse_one_kept_alive_connection_and_send_the_form() -> None:
    async def test(client: Client, base: str, seen: Seen) -> None:
        for n in range(3):
            assert await client.request("POST", f"{base}/hook?x=1", {"X-N": str(n)}, b"A=1&B=%20", limit=100) == (
                200, b"ok")

    seen = run(answering(OK, OK, OK), test)
    assert seen.connections == 1
    first = seen.requests[0]
    assert first.startswith(b"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-N: 0\r\n" in first and b"Content-Type: application/x-www-form-urlencoded\r\n" in first
    assert first.endswith(b"Content-Length: 9\r\n\r\nA=1&B=%20")


def test_a_connection_the_receiver_drops_unanswered_is_retried_once_on_a_new_one() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        seen.requests.append(await read_request(reader))
        if seen.connections == 1:
            writer.write(OK)
            await writer.drain()
            seen.requests.append(await read_request(reader))  # read, then closed unanswered (an idle timeout)
        else:
            writer.write(OK)
            await writer.drain()
            await reader.read()

    async def test(client: Client, base: str, seen: Seen) -> None:
        assert (await client.request("POST", base + "/a", {}, b"", limit=10))[0] == 200
        assert (await client.request("POST", base + "/b", {}, b"", limit=10))[0] == 200

    seen = run(script, test)
    assert seen.connections == 2 and len(seen.requests) == 3


def test_a_connection_closed_while_idle_is_not_reused() -> None:
    async def test(client: Client, base: str, seen: Seen) -> None:
        assert (await client.request("POST", base + "/a", {}, b"", limit=10))[0] == 200
        await asyncio.sleep(0.2)  # the receiver closes it meanwhile
        assert (await client.request("POST", base + "/b", {}, b"", limit=10))[0] == 200

    seen = run(answering(OK, close_after=True), test)
    assert seen.connections == 2 and len(seen.requests) == 2


def test_a_redirect_is_its_status_and_is_not_followed() -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"

    async def test(client: Client, base: str, seen: Seen) -> None:
        assert await client.request("GET", base + "/r?Identity=a", {}, None, limit=10) == (302, b"")

    seen = run(answering(moved), test)
    assert len(seen.requests) == 1 and seen.requests[0].startswith(b"GET /r?Identity=a HTTP/1.1\r\n")
    assert b"Content-Length" not in seen.requests[0]


def test_at_most_the_limit_is_read_of_a_huge_body() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        seen.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n")
        for _ in range(1600):  # 100 MiB promised; the client stops after 64 KiB and closes
            writer.write(b"x" * 65536)
            await writer.drain()

    async def test(client: Client, base: str, seen: Seen) -> None:
        status, body = await client.request("POST", base, {}, b"", limit=65536)
        assert status == 200 and body == b"x" * 65536
        assert (await client.request("POST", base, {}, b"", limit=65536))[0] == 200  # on a new connection

    seen = run(script, test)
    assert seen.connections == 2


def test_chunked_and_close_delimited_answers() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    closing = b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\nuntil the end"

    async def test(client: Client, base: str, seen: Seen) -> None:
        assert await client.request("POST", base, {}, b"", limit=100) == (200, b"abcde")
        assert await client.request("POST", base, {}, b"", limit=100) == (201, b"until the end")
        assert await client.request("POST", base, {}, b"", limit=100) == (200, b"ok")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        answers = {1: [chunked, closing], 2: [OK]}[seen.connections]
        await answering(*answers, close_after=True)(reader, writer, seen)

    seen = run(script, test)
    assert seen.connections == 2  # the close-delimited answer ended its connection


def test_what_is_not_http_and_a_refused_port_are_unreachable() -> None:
    async def test(client: Client, base: str, seen: Seen) -> None:
        with pytest.raises(Unreachable):
            await client.request("POST", base, {}, b"", limit=10)
        with pytest.raises(Unreachable):
            await client.request("POST", "http://127.0.0.1:1/", {}, b"", limit=10)

    run(answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close_after=True), test)


def test_a_cancelled_request_closes_its_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen) -> None:
        seen.requests.append(await read_request(reader))
        if seen.connections == 1:
            await asyncio.sleep(0.5)  # too slow: the client gave up; a late answer must not be read as the next
            writer.write(b"HTTP/1.1 500 Late\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read()
        else:
            writer.write(OK)
            await writer.drain()
            await reader.read()

    async def test(client: Client, base: str, seen: Seen) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.request("POST", base, {}, b"", limit=10)
        await asyncio.sleep(0.6)
        assert await client.request("POST", base, {}, b"", limit=10) == (200, b"ok")

    seen = run(script, test)
    assert seen.connections == 2


def test_url_credentials_become_basic_authorization_and_not_the_host() -> None:
    _, data = request_bytes("POST", "https://us%40er:p%3Ass@hooks.example.com/in", {}, b"")
    head = data.split(b"\r\n")
    assert head[0] == b"POST /in HTTP/1.1" and head[1] == b"Host: hooks.example.com"
    assert head[2] == b"Authorization: Basic " + base64.b64encode(b"us@er:p:ss")


@pytest.mark.parametrize("url", ["ftp://x/", "http:///nohost", "file:///etc/passwd"])
def test_only_http_urls_are_requested(url: str) -> None:
    with pytest.raises(ValueError):
        request_bytes("POST", url, {}, b"")


def test_non_ascii_paths_are_escaped_not_sent_raw() -> None:
    _, data = request_bytes("GET", "http://h/é p?q=ü", {}, None)
    assert data.startswith(b"GET /%C3%A9%20p?q=%C3%BC HTTP/1.1\r\n")


