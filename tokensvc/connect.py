"""WebSocket client connections and presence (SPEC §5)."""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket


class Hub:
    """The process's open client connections."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def user_deleted(self, service_sid: str, user_sid: str) -> None:
        pass

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.close(code=1011)
