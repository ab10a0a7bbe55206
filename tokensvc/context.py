"""The app context: everything a request handler, the Hub and the CLI share, built once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .auth import Authenticator
from .config import Settings
from .crypto import SecretBox
from .db import Database
from .limits import TokenRateLimiter
from .metrics import Metrics
from .signing import Keyring
from .store.outbox import Origin
from .store.tombstones import Tombstones


class Sessions(Protocol):
    """What request handlers ask of the client connections (connect.Hub), after a change."""

    async def user_deleted(self, service_sid: str, user_sid: str) -> None: ...

    async def service_deleted(self, service_sid: str) -> None: ...

    async def key_deleted(self, key_sid: str) -> None: ...

    async def serve(self, websocket: Any) -> None: ...  # one client connection, handshake to close


class Waker(Protocol):
    """The webhook delivery process (webhooks/delivery.py), as effects.apply sees it: told that
    outbox rows may be due."""

    def wake(self) -> None: ...


class PreEventHook(Protocol):
    """The pre-event hooks (webhooks/pre.py), as use cases see them."""

    async def user_add(self, service: Mapping[str, Any], identity: str, origin: Origin,
                       given: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    async def action(self, service: Mapping[str, Any], event_type: str, resource: Mapping[str, str],
                     origin: Origin) -> dict[str, Any]: ...


@dataclass
class Context:
    """Built once per app (app.build_context); `hub` is set while the app runs (its lifespan)."""

    settings: Settings
    db: Database
    keyring: Keyring
    box: SecretBox
    auth: Authenticator
    metrics: Metrics
    tombstones: Tombstones
    token_limiter: TokenRateLimiter
    hub: Sessions | None = None
    webhooks: Waker | None = None  # the outbox's delivery process, while the app runs
    pre_events: PreEventHook | None = None  # onUserAdd and friends, while the app runs
