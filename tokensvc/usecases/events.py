"""What a use case changed, for effects.apply (and, next, the webhook outbox)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UserAdded:
    """A user was created: by a first encounter (token endpoint, presented token, connect) or
    by POST /Users."""

    user: Mapping[str, Any]
    first_encounter: bool = True  # provisioned (tokensvc_users_provisioned_total), not POST /Users


@dataclass(frozen=True)
class UserUpdated:
    user: Mapping[str, Any]


@dataclass(frozen=True)
class UserRemoved:
    service_sid: str
    user_sid: str


@dataclass(frozen=True)
class ServiceUpdated:
    sid: str


@dataclass(frozen=True)
class ServiceRemoved:
    sid: str


@dataclass(frozen=True)
class ApiKeyRemoved:
    sid: str


@dataclass(frozen=True)
class TokenIssued:
    service_sid: str


# ---- Channels and Members (SPEC §8): for the webhooks of the next issue


@dataclass(frozen=True)
class ChannelAdded:
    channel: Mapping[str, Any]


@dataclass(frozen=True)
class ChannelUpdated:
    channel: Mapping[str, Any]


@dataclass(frozen=True)
class ChannelDestroyed:
    channel: Mapping[str, Any]  # as it was before the delete


@dataclass(frozen=True)
class MemberAdded:
    member: Mapping[str, Any]


@dataclass(frozen=True)
class MemberUpdated:
    member: Mapping[str, Any]


@dataclass(frozen=True)
class MemberRemoved:
    member: Mapping[str, Any]  # as it was before the delete


Event = (UserAdded | UserUpdated | UserRemoved | ServiceUpdated | ServiceRemoved | ApiKeyRemoved | TokenIssued
         | ChannelAdded | ChannelUpdated | ChannelDestroyed | MemberAdded | MemberUpdated | MemberRemoved)
