"""The delivery process, `python -m tokensvc.webhooks.worker`: one per server process, started
by webhooks/delivery.py. It runs the outbox's dispatcher on an event loop and database
connections of its own, so a post-event costs the request path its outbox row and, at most every
few milliseconds, a byte on a pipe (issue 14: in the server's loop, deliveries took the CPU the
token endpoint needed). Its stdin is that pipe: a byte wakes the dispatcher; the pipe's end (the
server stopped, or was killed) ends this process, whose claimed rows then wait for their lease,
and so does its silence for SILENCE_SECONDS (the server beats at least every second)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..config import Settings

SPEC = "TOKENSVC_DELIVERY_SETTINGS"  # the environment variable that carries the settings
# The server writes a byte at least every second while its event loop runs (webhooks/delivery.py):
# silence this long means its app stopped without ending us (a loop gone, a hang), and we end.
SILENCE_SECONDS = 10.0


def settings_spec(settings: Settings) -> str:
    """What the delivery process needs of the server's settings, as it reads them back."""
    return json.dumps({"database_url": settings.database_url, "keys_dir": str(settings.keys_dir),
                       "webhook_lease": settings.webhook_lease, "sqlite_synchronous": settings.sqlite_synchronous,
                       "log_level": settings.log_level})


async def serve(settings: Settings) -> None:
    from ..crypto import SecretBox
    from ..db import Database, make_engine
    from .dispatcher import Dispatcher

    db = Database(make_engine(settings))
    box = SecretBox.load_or_create(settings.keys_dir)
    dispatcher = Dispatcher(SimpleNamespace(db=db, box=box), lease_seconds=settings.webhook_lease)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # The server's own stop closes the pipe; a signal to the whole group (Ctrl-C) ends us the same way.
        loop.add_signal_handler(signum, stopping.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await dispatcher.start()

    async def woken() -> None:
        try:
            while True:
                async with asyncio.timeout(SILENCE_SECONDS):
                    if not await reader.read(4096):
                        break  # the server is gone
                dispatcher.wake()
        except TimeoutError:
            pass  # the server's loop stopped beating
        stopping.set()

    waker = asyncio.create_task(woken())
    try:
        await stopping.wait()
    finally:
        waker.cancel()
        await dispatcher.stop()
        await db.aclose()
        db.dispose()


def main() -> int:
    spec: dict[str, Any] = json.loads(os.environ[SPEC])
    settings = Settings(database_url=spec["database_url"], keys_dir=Path(spec["keys_dir"]),
                        webhook_lease=int(spec["webhook_lease"]), sqlite_synchronous=spec["sqlite_synchronous"],
                        log_level=spec["log_level"])
    from .. import logs

    logs.configure(settings.log_level)
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(settings))
    logs.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
