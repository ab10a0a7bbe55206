"""SIDs (SPEC §1): two-letter prefix + 32 lowercase hex."""

from __future__ import annotations

import re
import uuid

_PATTERNS: dict[str, re.Pattern[str]] = {}


def new_sid(prefix: str) -> str:
    """A fresh random SID with the given two-letter prefix."""
    return prefix + uuid.uuid4().hex


def is_sid(prefix: str, value: str) -> bool:
    """Whether value is shaped like a SID of that prefix (hex in either case, as Twilio accepts)."""
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = _PATTERNS[prefix] = re.compile(rf"{prefix}[0-9a-fA-F]{{32}}")
    return pattern.fullmatch(value) is not None
