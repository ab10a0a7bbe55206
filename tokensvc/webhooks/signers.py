"""The auth token a webhook of an account is signed with (X-Twilio-Signature, SPEC §10), read
from the store's AES-GCM copy and cached a minute; None when only its hash is kept, and
ForeignSecret (cached too) when this process's secrets.key cannot open the copy. Shared by the
dispatcher (delivery process: such an account's rows are left to a process that can sign them)
and the pre-events (server process)."""

from __future__ import annotations

import time
from typing import Any

from ..store.accounts import ForeignSecret, signing_token

CACHE_SECONDS = 60.0


class SigningTokens:
    def __init__(self, db: Any, box: Any):
        self._db = db
        self._box = box
        self._tokens: dict[str, tuple[str | None, bool, float]] = {}  # sid -> (token, foreign, until)

    async def get(self, account_sid: str) -> str | None:
        cached = self._tokens.get(account_sid)
        if cached is None or cached[2] <= time.monotonic():
            try:
                token = await self._db.read(lambda conn: signing_token(conn, sid=account_sid, box=self._box))
            except ForeignSecret:
                cached = (None, True, time.monotonic() + CACHE_SECONDS)
            else:
                cached = (token, False, time.monotonic() + CACHE_SECONDS)
            self._tokens[account_sid] = cached
        if cached[1]:
            raise ForeignSecret(account_sid)
        return cached[0]
