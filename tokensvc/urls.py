"""The base URL of the links in responses (`url`, `links`, page URLs), for HTTP and /v2/Connect."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .config import Settings

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def base_url(settings: Settings, scope: Mapping[str, Any], host: str | None) -> str:
    """TOKENSVC_PUBLIC_URL, else the scheme of the request or WebSocket handshake (wss → https)
    with its Host header, or the address we listen on when Host is absent or not a host[:port]."""
    if settings.public_url:
        return settings.public_url
    scheme = scope.get("scheme", "http")
    if scope.get("type") == "websocket":
        scheme = "https" if scheme == "wss" else "http"
    if not host or not _HOST.fullmatch(host):
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}" if server[1] else server[0]  # no port on a Unix socket
    return f"{scheme}://{host}"
