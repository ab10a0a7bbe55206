"""Abuse limits (SPEC §2: "too many requests / failed logins → 429 (+ Retry-After), 20429")."""

from __future__ import annotations

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
)

# Poisons 127.0.0.1 for a while on purpose: its own server, default limits (README: 20 per 60 s).
OWN_SERVER = True


def test_repeated_failed_logins_are_answered_429_with_retry_after(bb: BB) -> None:
    bad = bb.client(auth=(bb.account_sid, "not-the-token"))
    statuses = []
    for _ in range(60):
        r = bad.get("/v2/Services")
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
        assert_error(r, 401, 20003)
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} failed logins"
    assert_error(r, 429, 20429)
    retry_after = r.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0, dict(r.headers)
