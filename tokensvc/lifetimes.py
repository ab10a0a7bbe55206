"""How long a token may be accepted: the clock skew allowed, and what must outlive a token."""

from __future__ import annotations

LEEWAY = 30  # seconds of clock skew allowed


def acceptable_for(max_ttl: int) -> int:
    """How long after its issue second a token may still be accepted: a lifetime of up to
    max_ttl + LEEWAY, LEEWAY more before it counts as expired, and the second itself. What must
    outlive every token issued at a moment (a tombstone, a retired signing key) lives this long."""
    return max_ttl + 2 * LEEWAY + 1
