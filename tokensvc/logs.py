"""Logging setup for `tokensvc serve`: plain lines for events, buffered JSON lines for access.

The access log writes one line per request. Written and flushed one by one, a line costs a
syscall and ~30-70 µs per request on the token hot path (bench/tokens.py); buffered, it costs a
list append. The buffer is written when it holds 64 KiB, every half second, and at exit, so
a SIGKILL loses at most the last half second of access lines, never an event or error line.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

ACCESS_LOGGER = "tokensvc.access"


class BufferedLineHandler(logging.Handler):
    """Formatted records gathered in memory and written in one go."""

    def __init__(self, stream: TextIO, *, max_bytes: int = 64 * 1024, interval: float = 0.5):
        super().__init__()
        self.stream = stream
        self.max_bytes = max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, args=(interval,),
                                         name="tokensvc-access-log", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # pragma: no cover - logging's own convention
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]  # Handler.__init__ creates it; typeshed says RLock | None
            self._lines.append(line)
            self._size += len(line) + 1
            full = self._size >= self.max_bytes
        if full:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__, as in emit()
            lines, self._lines, self._size = self._lines, [], 0
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # the stream is gone (shutdown): nothing to do
                pass

    def _flush_periodically(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            self.flush()

    @property
    def closed(self) -> bool:
        return self._stopping.is_set()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()


class AlembicPreamble(logging.Filter):
    """Drops the two lines Alembic logs each time it opens a migration context ("Context impl
    SQLiteImpl.", "Will assume non-transactional DDL."): every `tokensvc serve` checks the schema,
    so they would open every log while saying nothing; "Running upgrade ..." lines pass."""

    PREAMBLE = ("Context impl %s.", "Will assume %s DDL.")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.PREAMBLE


def configure(level: str) -> None:
    """Events to stderr as plain lines; access lines (JSON, already formatted) buffered to stderr."""
    access = logging.getLogger(ACCESS_LOGGER)
    for h in list(access.handlers):
        if isinstance(h, BufferedLineHandler):
            if not h.closed:
                return  # already configured in this process
            # uvicorn's dictConfig closes every existing handler: install a fresh one
            access.removeHandler(h)
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr,
                        format="%(message)s" if level != "debug" else "%(levelname)s %(name)s %(message)s")
    # Alembic narrates every plugin and step at INFO; only "Running upgrade" lines are news.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    migration.setLevel(numeric)
    if not any(isinstance(f, AlembicPreamble) for f in migration.filters):
        migration.addFilter(AlembicPreamble())
    access.propagate = False
    handler = BufferedLineHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)


def flush() -> None:
    """Write buffered access lines now: at shutdown, uvicorn re-raises SIGTERM after the app's
    lifespan ends, which kills the process before `atexit` would flush them."""
    for handler in logging.getLogger(ACCESS_LOGGER).handlers:
        handler.flush()
