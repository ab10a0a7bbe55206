"""Value rules shared by every resource (SPEC §2): lengths, JSON attributes, booleans."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from . import errors
from .sids import is_sid

MAX_IDENTITY = 256
MAX_FRIENDLY_NAME = 256
MAX_ATTRIBUTES_BYTES = 16 * 1024


def is_text(value: str) -> bool:
    """Encodable as UTF-8: JSON escapes (a token's claims) can carry lone surrogates, which no
    database driver can send and which would fail whatever statement shares their batch."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def identity(value: str | None) -> str:
    """A valid identity, or the SPEC §2 error for why not."""
    if value is None:
        raise errors.missing_param("Identity")
    if value == "":
        raise errors.invalid_param("Identity", "must not be empty")
    if len(value) > MAX_IDENTITY:
        raise errors.identity_too_long()
    if is_sid("US", value):
        raise errors.identity_looks_like_sid()
    if not is_text(value):
        raise errors.invalid_param("Identity", "must be Unicode text")
    return value


def friendly_name(value: str) -> str:
    if len(value) > MAX_FRIENDLY_NAME:
        raise errors.friendly_name_too_long()
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def attributes(value: str) -> str:
    """Attributes as given, once known to be at most 16 KiB of valid JSON."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ATTRIBUTES_BYTES:
        raise errors.attributes_too_long()
    try:
        json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise errors.invalid_attributes() from None
    return value


def boolean(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise errors.invalid_param(name, "must be true or false")


def integer(name: str, value: str, *, minimum: int | None = None, maximum: int | None = None,
            saturate: bool = False) -> int:
    """An ASCII decimal integer within bounds. More than 18 digits is refused, or with
    `saturate` taken as ±10**18 (PageSize: however large, it is clamped, SPEC §3)."""
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or (len(digits) > 18 and not saturate):
        raise errors.invalid_param(name, "must be an integer")
    if len(digits) > 18:  # never convert thousands of digits
        return -(10**18) if text.startswith("-") else 10**18
    number = int(text)
    if minimum is not None and number < minimum:
        raise errors.invalid_param(name, f"must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise errors.invalid_param(name, f"must be at most {maximum}")
    return number


def url(name: str, value: str) -> str | None:
    """An http(s) URL, or None for an empty value (which clears it)."""
    if value == "":
        return None
    if not value.startswith(("http://", "https://")) or len(value) > 2048 or any(c.isspace() for c in value):
        raise errors.invalid_param(name, "must be an http or https URL")
    return value


def ttl(raw: str | None, *, default: int, maximum: int) -> int:
    """A token lifetime in seconds (the Ttl parameter): 1..maximum, else 20001 / 20157."""
    if raw is None:
        return default
    value = integer("Ttl", raw)
    if value <= 0:
        raise errors.invalid_param("Ttl", "must be positive")
    if value > maximum:
        raise errors.ttl_too_long(maximum)
    return value


# ---- Channels, Members, User Channels (SPEC §8)

MAX_UNIQUE_NAME = 256
CHANNEL_TYPES = ("public", "private")
NOTIFICATION_LEVELS = ("default", "muted")


def unique_name(value: str) -> str:
    if len(value) > MAX_UNIQUE_NAME:
        raise errors.unique_name_too_long()
    if is_sid("CH", value):
        raise errors.unique_name_looks_like_sid()
    if not is_text(value):
        raise errors.invalid_param("UniqueName", "must be Unicode text")
    return value


def channel_type(value: str) -> str:
    if value not in CHANNEL_TYPES:
        raise errors.invalid_param("Type", "must be public or private")
    return value


def iso_date(value: str, error: errors.TwilioError) -> int:
    """An ISO 8601 date-time (`2016-03-24T21:05:19Z`, or with an offset) as epoch seconds;
    `error` when it is none. A date without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise error from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        seconds = int(parsed.timestamp())
    except (OverflowError, OSError, ValueError):
        raise error from None
    if not 0 <= seconds < 2**62:
        raise error
    return seconds


def message_index(value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise errors.invalid_message_index()
    return int(text)


def notification_level(value: str) -> str:
    if value not in NOTIFICATION_LEVELS:
        raise errors.invalid_notification_level()
    return value
