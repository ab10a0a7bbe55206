"""The text frames of a client connection (SPEC §5): JSON objects with a `type`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import errors

MAX_FRAME = 16 * 1024  # a client frame carries at most a token (≤ 8 KiB) and a little JSON


def frame(kind: str, **fields: Any) -> str:
    """A server frame of this type."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), ensure_ascii=False)


def error_frame(err: errors.TwilioError) -> str:
    """The error frame of a Twilio error: its body, as an HTTP response would carry it."""
    return frame("error", **err.body())


def parse_frame(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """A client frame as a JSON object, or None when it is not one (binary, too long, not JSON)."""
    text = message.get("text")
    if not isinstance(text, str) or len(text) > MAX_FRAME:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
