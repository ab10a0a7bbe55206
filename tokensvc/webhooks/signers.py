"""The auth token a webhook of an account is signed with (X-Twilio-Signature, SPEC §10), read
from the store's AES-GCM copy and cached a minute; None when only its hash is kept. Shared by
the dispatcher (delivery process) and the pre-events (server process)."""

from __future__ import annotations

import time
from typing import Any

from ..store.accounts import signing_token

CACHE_SECONDS = 60.0


class SigningTokens:
    def __init__(self, db: Any, box: Any):
        self._db = db
        self._box = box
        self._tokens: dict[str, tuple[str | None, float]] = {}

    async def get(self, account_sid: str) -> str | None:
        cached = self._tokens.get(account_sid)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        token = await self._db.read(lambda conn: signing_token(conn, sid=account_sid, box=self._box))
        self._tokens[account_sid] = (token, time.monotonic() + CACHE_SECONDS)
        return token
