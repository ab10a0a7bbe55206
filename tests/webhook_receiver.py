"""A real HTTP receiver on 127.0.0.1 for the webhook tests: records every request and answers
with the statuses it is told, after an optional delay."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Hit:
    method: str
    url: str  # as the sender addressed it (scheme, host, port, path, query)
    headers: dict[str, str]
    params: dict[str, str]  # the form body (POST) or the query (GET)


@dataclass
class Receiver:
    base: str
    hits: list[Hit] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn; 200 once they run out
    delay: float = 0.0
    body: bytes = b"ok"
    lock: threading.Lock = field(default_factory=threading.Lock)

    path: str = field(default_factory=lambda: f"/hook/{uuid.uuid4().hex}")

    @property
    def url(self) -> str:
        # A path of its own: a stray event of an earlier test (a shared PostgreSQL outbox) that
        # reaches a reused port is not taken for this test's.
        return f"{self.base}{self.path}"

    def wait(self, n: int, timeout: float = 15.0, **match: str) -> list[Hit]:
        """The first n hits whose params match, waiting for them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(**match)
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def matching(self, **match: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if all(h.params.get(k) == v for k, v in match.items())]


def serve(port: int = 0, path: str | None = None) -> Iterator[Receiver]:
    server: ThreadingHTTPServer
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            split = urlsplit(self.path)
            params = dict(parse_qsl(raw if self.command == "POST" else split.query, keep_blank_values=True))
            hit = Hit(self.command, receiver.base + self.path, {k.lower(): v for k, v in self.headers.items()}, params)
            with receiver.lock:
                if split.path.startswith(receiver.path):
                    receiver.hits.append(hit)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            if receiver.delay:
                time.sleep(receiver.delay)
            self.send_response(status)
            self.send_header("Content-Length", str(len(receiver.body)))
            self.end_headers()
            self.wfile.write(receiver.body)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.request_queue_size = 1024  # socketserver's 5 drops SYNs under a burst of connects
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    if path is not None:
        receiver.path = path
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
