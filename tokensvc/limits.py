"""Token issuance per account: a leaked or runaway backend minting tokens (and users) in bulk."""

from __future__ import annotations

import time
from collections import defaultdict

from . import errors


class TokenRateLimiter:
    """Tokens per account per second (a fixed one-second window); 0 disables it."""

    def __init__(self, per_second: int):
        self.per_second = per_second
        self._window = 0
        self._counts: dict[str, int] = defaultdict(int)

    def check(self, account_sid: str) -> None:
        if not self.per_second:
            return
        second = int(time.monotonic())
        if second != self._window:
            self._window = second
            self._counts.clear()
        self._counts[account_sid] += 1
        if self._counts[account_sid] > self.per_second:
            raise errors.too_many_requests(1, "Token issuance rate limit exceeded for this account")
