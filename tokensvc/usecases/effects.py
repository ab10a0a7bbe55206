"""The one place that acts on events after their transaction committed."""

from __future__ import annotations

from collections.abc import Iterable

from ..context import Context
from .events import (
    ApiKeyRemoved,
    ChannelAdded,
    ChannelDestroyed,
    ChannelUpdated,
    Event,
    MemberAdded,
    MemberRemoved,
    MemberUpdated,
    ServiceRemoved,
    ServiceUpdated,
    TokenIssued,
    UserAdded,
    UserRemoved,
    UserUpdated,
)

_POSTABLE = (UserAdded, UserUpdated, UserRemoved, ChannelAdded, ChannelUpdated, ChannelDestroyed, MemberAdded,
             MemberUpdated, MemberRemoved)


async def apply(c: Context, events: Iterable[Event]) -> None:
    """Caches, client connections, metrics and the SQLite checkpoint, for committed events."""
    checkpoint = False
    events = list(events)
    if c.webhooks is not None and any(isinstance(e, _POSTABLE) for e in events):
        c.webhooks.wake()  # the outbox rows of this commit go out now, not at the next poll
    for event in events:
        if isinstance(event, UserAdded):
            if event.first_encounter:
                c.metrics.users_provisioned.inc()
        elif isinstance(event, TokenIssued):
            c.metrics.tokens_issued.inc()
        elif isinstance(event, UserRemoved):
            checkpoint = True  # no copy of the deleted identity stays in the SQLite WAL
            if c.hub is not None:
                await c.hub.user_deleted(event.service_sid, event.user_sid)
        elif isinstance(event, ServiceUpdated):
            c.auth.forget()  # this process sees the change at once; others within cache_seconds
        elif isinstance(event, ServiceRemoved):
            c.auth.forget()
            checkpoint = True  # its users' PII leaves no copy in the WAL either
            if c.hub is not None:
                await c.hub.service_deleted(event.sid)
        elif isinstance(event, ApiKeyRemoved):
            c.auth.forget()  # this process stops honouring the key at once; others within cache_seconds
            if c.hub is not None:  # its sessions here close now; other replicas' by the kick row, within a second
                await c.hub.key_deleted(event.sid)
    if checkpoint:
        await c.db.checkpoint()
