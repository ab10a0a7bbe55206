"""The HTTP transport of a real `tokensvc serve` (tokensvc/server.py): a bounded request head,
deadlines for the head and the body, and WebSocket upgrades untouched by either.

Raw sockets on 127.0.0.1 throughout: the point is what a misbehaving client can make the server
hold, which no well-behaved HTTP client library would send.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Server, start_server
from test_connect import mint_local, new_service, open_ws, recv

HEAD_TIMEOUT = 2
BODY_TIMEOUT = 3


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default limits: a 10 s head deadline, so only the byte bound can end a flood quickly."""
    srv = start_server(tmp_path_factory.mktemp("transport-default"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short deadlines, so the tests that wait for them stay quick."""
    srv = start_server(tmp_path_factory.mktemp("transport-fast"), extra_env={
        "TOKENSVC_HEAD_TIMEOUT": str(HEAD_TIMEOUT), "TOKENSVC_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    try:
        yield srv
    finally:
        srv.stop()


def address(srv: Server) -> tuple[str, int]:
    port = int(srv.base.rsplit(":", 1)[1])
    return ("127.0.0.1", port)


def rss_kib(srv: Server) -> int:
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_response(sock: socket.socket, timeout: float = 5) -> bytes:
    """What the server sends until it closes the connection (b"" on a reset)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def assert_head_refused(raw: bytes) -> None:
    """A 431 with a Twilio error body (or nothing, when the close overtook it: a reset)."""
    if not raw:
        return
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), raw[:200]
    error = json.loads(body)
    assert error["status"] == 431 and error["code"] == 20001, error
    assert error["more_info"] == "https://www.twilio.com/docs/errors/20001"


def get_with_headers(srv: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{srv.base}/healthz", headers=headers, timeout=5)


# ---- request-head bounds ----------------------------------------------------------------------


def test_a_header_flood_is_cut_off_quickly_without_growing_memory_or_slowing_others(default_server: Server) -> None:
    srv = default_server
    probe = httpx.Client(base_url=srv.base, timeout=5)

    def healthz_latencies(n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            started = time.monotonic()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        return latencies

    quiet = statistics.median(healthz_latencies(10))
    before = rss_kib(srv)
    flood_mib = 8
    outcomes: list[tuple[float, int]] = []  # (seconds until the server ended it, bytes sent)
    answers: list[bytes] = []
    stop = threading.Event()

    def flood() -> None:
        # Connection after connection, each an endless header line, for at most 3 s in all.
        deadline = time.monotonic() + 3
        while not stop.is_set() and time.monotonic() < deadline and len(outcomes) < 20:
            sock = socket.create_connection(address(srv))
            sock.settimeout(5)
            started = time.monotonic()
            sent = 0
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                piece = b"a" * 65536
                while sent < flood_mib << 20 and time.monotonic() - started < 5:
                    sock.sendall(piece)
                    sent += len(piece)
                # the whole flood went in: wait for the server's verdict
                answers.append(read_response(sock, timeout=5))
            except TimeoutError:  # the server neither answered nor closed
                outcomes.append((float("inf"), sent))
                sock.close()
                continue
            except OSError:  # EPIPE / ECONNRESET: the server closed it
                pass
            outcomes.append((time.monotonic() - started, sent))
            sock.close()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        latencies = healthz_latencies(40)
    finally:
        stop.set()
        thread.join(10)
        probe.close()
    assert outcomes, "the flood never ran"
    # each flood was ended by the server well before its 8 MiB went in, and far inside the
    # 10 s head deadline: the byte bound did it
    assert max(t for t, _ in outcomes) < 2.0, outcomes
    assert all(sent < flood_mib << 20 for _, sent in outcomes), outcomes
    for raw in answers:
        assert_head_refused(raw)
    # (the flood runs in this process too, so the probe shares its CPU with the flood's client)
    # Unbounded, the flood held /healthz at a 2.2 s median: a few times the quiet latency plus
    # scheduling noise on a loaded 2-core machine is what a bounded head leaves.
    assert statistics.median(latencies) < 3 * quiet + 0.1, (quiet, latencies)
    assert max(latencies) < 1.5, latencies
    grown = rss_kib(srv) - before
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB"


def test_a_head_with_a_10_kib_header_is_served(default_server: Server) -> None:
    r = get_with_headers(default_server, {"X-Large": "a" * 10 * 1024})
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_a_header_line_over_16_kib_is_refused_with_431(default_server: Server) -> None:
    r = get_with_headers(default_server, {"X-Large": "a" * 17 * 1024})
    assert r.status_code == 431, r.text
    assert len(r.headers["x-request-id"]) == 32
    body = r.json()
    assert body["code"] == 20001 and body["status"] == 431
    assert r.headers["connection"] == "close"


def test_a_head_over_64_kib_in_many_lines_is_refused_with_431(default_server: Server) -> None:
    # Each line within the bound, nine of them over the total. Sent slowly in pieces, so the
    # count across reads is what refuses it, and all at once, where the summed head does.
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Part-%d: " % i + b"a" * 8000 + b"\r\n" for i in range(9)) + b"\r\n"
    for pieces in (1, 40):
        with socket.create_connection(address(default_server)) as sock:
            size = len(head) // pieces + 1
            try:
                for i in range(0, len(head), size):
                    sock.sendall(head[i:i + size])
                    if pieces > 1:
                        time.sleep(0.005)
            except OSError:
                pass
            raw = read_response(sock)
            assert_head_refused(raw)
            assert raw, "expected the 431 itself: the client sent nothing the server had not read"


def test_a_url_over_the_line_bound_is_refused_with_431(default_server: Server) -> None:
    r = httpx.get(f"{default_server.base}/healthz?" + "a" * 20 * 1024, timeout=5)
    assert r.status_code == 431
    assert r.json()["code"] == 20001


def test_pipelined_requests_are_each_bounded_and_served(default_server: Server) -> None:
    # Two requests in one write: both answered. A third with a 20 KiB line in the same write: 431.
    ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    with socket.create_connection(address(default_server)) as sock:
        sock.sendall(ok + ok + big)
        raw = read_response(sock)
    # in order: the two answers, then the refusal
    assert raw.count(b"HTTP/1.1 200 OK") == 2, raw[:500]
    assert raw.index(b"HTTP/1.1 431 ") > raw.rindex(b"HTTP/1.1 200 OK"), raw[:500]


# ---- deadlines ----------------------------------------------------------------------------------


def test_idle_slow_head_and_slow_body_connections_are_closed_at_their_deadlines(fast_server: Server) -> None:
    srv = fast_server
    started = time.monotonic()
    idle = socket.create_connection(address(srv))
    slow_head = socket.create_connection(address(srv))
    slow_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    slow_body = socket.create_connection(address(srv))
    # unauthenticated, with a body that never comes: the transport must not wait for it forever
    slow_body.sendall(b"POST /v2/Services HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendly")
    blank_lines = socket.create_connection(address(srv))  # after a request: the parser skips them
    blank_lines.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    closed: dict[str, float] = {}

    def trickle_and_wait(name: str, sock: socket.socket, dribble: bytes | None) -> None:
        sock.settimeout(0.2)
        deadline = started + max(HEAD_TIMEOUT, BODY_TIMEOUT) + 4
        while time.monotonic() < deadline:
            try:
                if dribble is not None:
                    sock.sendall(dribble)  # a byte now and then: activity must not extend it
                data = sock.recv(65536)
                if not data:
                    closed[name] = time.monotonic() - started
                    return
            except TimeoutError:
                continue
            except OSError:
                closed[name] = time.monotonic() - started
                return

    threads = [threading.Thread(target=trickle_and_wait, args=a) for a in
               (("idle", idle, None), ("slow head", slow_head, b"X"), ("slow body", slow_body, b"a"),
                ("blank lines", blank_lines, b"\r\n"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for sock in (idle, slow_head, slow_body, blank_lines):
        sock.close()
    assert set(closed) == {"idle", "slow head", "slow body", "blank lines"}, closed
    assert HEAD_TIMEOUT - 0.3 <= closed["idle"] <= HEAD_TIMEOUT + 1.5, closed
    assert HEAD_TIMEOUT - 0.3 <= closed["slow head"] <= HEAD_TIMEOUT + 1.5, closed
    assert BODY_TIMEOUT - 0.3 <= closed["slow body"] <= BODY_TIMEOUT + 1.5, closed
    assert closed["blank lines"] <= HEAD_TIMEOUT + 1.5, closed
    assert httpx.get(f"{srv.base}/healthz").status_code == 200
    logs = srv.logs()
    assert "Traceback" not in logs and '"status": 500' not in logs, logs[-3000:]


def test_a_slow_body_of_an_authenticated_request_ends_quietly(fast_server: Server) -> None:
    # The application is waiting for this body when the deadline closes the connection: it sees
    # a disconnect, logs no error and answers nothing.
    import base64

    auth = base64.b64encode(f"{fast_server.account_sid}:{fast_server.auth_token}".encode())
    with socket.create_connection(address(fast_server)) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v2/Services HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth +
                     b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendly")
        assert read_response(sock, timeout=BODY_TIMEOUT + 3) == b""
        assert BODY_TIMEOUT - 0.3 <= time.monotonic() - started <= BODY_TIMEOUT + 1.5
    time.sleep(0.7)  # the access log is flushed every half second
    logs = fast_server.logs()
    assert "Traceback" not in logs and "unhandled error" not in logs, logs[-3000:]
    assert '"status": 499' in logs


def test_requests_that_finish_in_time_are_served_across_reads_and_keep_alive(fast_server: Server) -> None:
    with socket.create_connection(address(fast_server)) as sock:
        sock.settimeout(5)
        for _ in range(2):  # the deadline of the first head must not reach into the second
            for piece in (b"GET /heal", b"thz HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
                sock.sendall(piece)
                time.sleep(HEAD_TIMEOUT * 0.3)
            data = sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 OK"), data
        # a kept-alive connection whose next head stalls is closed at the head deadline
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        assert read_response(sock, timeout=HEAD_TIMEOUT + 3) == b""
        assert time.monotonic() - started <= HEAD_TIMEOUT + 1.5


def test_a_websocket_outlives_the_head_and_body_deadlines(fast_server: Server) -> None:
    svc = new_service(fast_server)
    token = mint_local(fast_server, svc["sid"], "alice")
    with open_ws(fast_server, token) as ws:
        assert recv(ws)["type"] == "connected"
        time.sleep(max(HEAD_TIMEOUT, BODY_TIMEOUT) + 1)
        ws.send(json.dumps({"type": "updateToken", "token": mint_local(fast_server, svc["sid"], "alice")}))
        assert recv(ws)["type"] == "tokenUpdated"


# ---- settings -----------------------------------------------------------------------------------


def test_transport_limits_come_from_the_environment_with_sane_defaults() -> None:
    from tokensvc.config import ConfigError, load_settings
    from tokensvc.server import TransportLimits

    assert TransportLimits.from_settings(load_settings({})) == TransportLimits(
        max_line_bytes=16 * 1024, max_head_bytes=64 * 1024, head_timeout=10, body_timeout=30)
    custom = load_settings({"TOKENSVC_HEAD_TIMEOUT": "2", "TOKENSVC_BODY_TIMEOUT": "5",
                            "TOKENSVC_MAX_HEAD_BYTES": "32768", "TOKENSVC_MAX_HEADER_LINE_BYTES": "8192"})
    assert TransportLimits.from_settings(custom) == TransportLimits(8192, 32768, 2, 5)
    for bad in ({"TOKENSVC_HEAD_TIMEOUT": "0"}, {"TOKENSVC_BODY_TIMEOUT": "soon"},
                {"TOKENSVC_MAX_HEAD_BYTES": "100"},
                {"TOKENSVC_MAX_HEAD_BYTES": "8192", "TOKENSVC_MAX_HEADER_LINE_BYTES": "16384"}):
        with pytest.raises(ConfigError):
            load_settings(bad)


def test_the_bounds_hold_in_every_worker_process(tmp_path: Path) -> None:
    # uvicorn imports the protocol by name in each worker; each worker configures its limits.
    srv = start_server(tmp_path, args=("--workers", "2"), extra_env={"TOKENSVC_HEAD_TIMEOUT": str(HEAD_TIMEOUT)})
    try:
        for _ in range(4):  # connections spread over the workers
            assert get_with_headers(srv, {"X-Large": "a" * 17 * 1024}).status_code == 431
        idle = [socket.create_connection(address(srv)) for _ in range(4)]
        started = time.monotonic()
        for sock in idle:
            assert read_response(sock, timeout=HEAD_TIMEOUT + 3) == b""
            sock.close()
        assert time.monotonic() - started <= HEAD_TIMEOUT + 1.5
    finally:
        srv.stop()


def test_the_protocol_copies_uvicorns_data_received_as_this_uvicorn_writes_it() -> None:
    # BoundedHttpToolsProtocol.data_received is uvicorn's, with the counting around the parser:
    # when uvicorn changes its own, ours must be reviewed against it.
    import inspect
    import textwrap

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert textwrap.dedent(inspect.getsource(HttpToolsProtocol.data_received)) == textwrap.dedent('''\
        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()

            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
        ''')
