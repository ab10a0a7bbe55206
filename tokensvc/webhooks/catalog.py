"""The webhook events a service may filter on (SPEC §10): Twilio Chat's names plus tokensvc's
extensions (`onUserAdd`, `onUserRemoved`). Pure data: no web framework, no database."""

from __future__ import annotations

PRE_EVENTS = frozenset({
    "onMessageSend", "onMessageUpdate", "onMessageRemove", "onMediaMessageSend",
    "onChannelAdd", "onChannelUpdate", "onChannelDestroy",
    "onMemberAdd", "onMemberUpdate", "onMemberRemove",
    "onUserAdd", "onUserUpdate",
})
POST_EVENTS = frozenset({
    "onMessageSent", "onMessageUpdated", "onMessageRemoved", "onMediaMessageSent",
    "onChannelAdded", "onChannelUpdated", "onChannelDestroyed",
    "onMemberAdded", "onMemberUpdated", "onMemberRemoved",
    "onUserAdded", "onUserUpdated", "onUserRemoved",
})
FILTERS = PRE_EVENTS | POST_EVENTS
