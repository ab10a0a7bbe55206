"""Console sessions and CSRF tokens: signed cookies, no server-side state.

A session cookie is `base64url(payload).base64url(HMAC-SHA256(mac key, payload))`; the payload
names the account, a random session nonce, when the admin signed in and when the cookie was
last issued, and a binding: an HMAC of the account's *current* auth-token hash. So:

- forging or altering a cookie needs the server's key, derived (HKDF) from `keys/secrets.key`,
  which every process sharing the database has: a session works on any replica;
- rotating the account's auth token (`tokensvc accounts rotate-token`) ends every session of it,
  on every replica within the credential cache's second;
- a session ends after IDLE_SECONDS without a request and MAX_SECONDS after its sign-in, whatever
  happens; the cookie is re-issued (sliding) at most once a minute while in use.

No session table, so no write per sign-in. Sign-out is the one thing a signed cookie cannot do
alone: it removes the cookie from the browser and records the session's nonce (its SHA-256) in
`console_signouts` until the session would have ended anyway (SignOuts), so a copy of the cookie
taken before stops working too: at once on this process, within CHECK_SECONDS on the others
(the other workers of `serve --workers N` too: each process has its own SignOuts).

CSRF: every form carries a synchronizer token, an HMAC of the session's nonce under a key of its
own, compared in constant time; the sign-in form's is bound the same way to a random pre-session
nonce held in a cookie of its own. No web framework here: console/web.py sets the cookies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass

from ..db import Database
from ..sids import is_sid
from ..store.console_signouts import record, signed_out

COOKIE = "tokensvc_console"
SIGNIN_COOKIE = "tokensvc_console_signin"
IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 3600
REISSUE_AFTER = 60
_MAX_COOKIE = 512  # ours are ~250 characters: anything longer is not worth decoding
SIGNOUT_MARGIN = 300
CHECK_SECONDS = 1.0  # a sign-out on another replica ends a session here within this (as a token rotation)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_nonce() -> str:
    """128 random bits, base64url: a session's or a sign-in form's."""
    return _b64(os.urandom(16))


@dataclass(frozen=True)
class Session:
    """A session whose cookie was signed by us (and not yet checked against the token)."""

    account_sid: str
    nonce: str
    signed_in_at: int
    issued_at: int
    binding: str


class Sessions:
    """Issues and opens session cookies and CSRF tokens under keys derived from one secret."""

    def __init__(self, mac_key: bytes, binding_key: bytes, csrf_key: bytes):
        self._mac_key = mac_key
        self._binding_key = binding_key
        self._csrf_key = csrf_key

    def _binding(self, account_sid: str, token_hash: str) -> str:
        return _b64(hmac.new(self._binding_key, f"{account_sid}|{token_hash}".encode(), hashlib.sha256).digest()[:16])

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._mac_key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, *, account_sid: str, token_hash: str, now: int, nonce: str | None = None,
              signed_in_at: int | None = None) -> tuple[Session, str]:
        """(session, cookie value): a new session (fresh nonce), or `nonce`'s re-issued."""
        session = Session(account_sid, nonce or new_nonce(), now if signed_in_at is None else signed_in_at, now,
                          self._binding(account_sid, token_hash))
        payload = _b64(json.dumps({"a": session.account_sid, "n": session.nonce, "s": session.signed_in_at,
                                   "t": session.issued_at, "b": session.binding}, separators=(",", ":")).encode())
        return session, f"{payload}.{self._mac(payload)}"

    def reissue(self, session: Session, *, token_hash: str, now: int) -> str | None:
        """A fresh cookie for a session in use (sliding idle expiry), None when not due yet."""
        if now - session.issued_at < REISSUE_AFTER:
            return None
        return self.issue(account_sid=session.account_sid, token_hash=token_hash, now=now, nonce=session.nonce,
                          signed_in_at=session.signed_in_at)[1]

    def open(self, cookie: str | None, *, now: int) -> Session | None:
        """The session of a cookie we signed that has not expired, else None. Still to check:
        `bound_to` the account's current token."""
        if not cookie or len(cookie) > _MAX_COOKIE or cookie.count(".") != 1 or not cookie.isascii():
            return None  # ours are base64url and one dot: anything else is not worth a MAC
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode("ascii"), self._mac(payload).encode("ascii")):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["a"]), str(data["n"]), int(data["s"]), int(data["t"]), str(data["b"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None  # signed by us, so never expected: a format of another version
        if not is_sid("AC", session.account_sid):
            return None
        if now - session.issued_at > IDLE_SECONDS or now - session.signed_in_at > MAX_SECONDS:
            return None
        if session.issued_at > now + 60:  # from a clock far ahead (another replica's)
            return None
        return session

    def bound_to(self, session: Session, token_hash: str | None) -> bool:
        """Whether the session was issued under the account's current auth token."""
        if token_hash is None:
            return False
        return hmac.compare_digest(session.binding, self._binding(session.account_sid, token_hash))

    def csrf(self, nonce: str, *, purpose: str = "session") -> str:
        """The synchronizer token of a session's nonce (`purpose` "signin": of a sign-in form's)."""
        return _b64(hmac.new(self._csrf_key, f"{purpose}|{nonce}".encode(), hashlib.sha256).digest())

    def csrf_ok(self, nonce: str | None, token: str | None, *, purpose: str = "session") -> bool:
        """Constant-time check of a form's token against the one of `nonce`."""
        if not nonce or not token:
            return False
        return hmac.compare_digest(token.encode("utf-8", "replace"), self.csrf(nonce, purpose=purpose).encode())


class SignOuts:
    """Which sessions were signed out of: `console_signouts`, with what this process knows kept
    in memory. Its own sign-outs count at once and until the session's end; that a session was
    not signed out is trusted for CHECK_SECONDS, then read again (one indexed read a second per
    session in use, at most)."""

    MAX_KNOWN = 10_000

    def __init__(self) -> None:
        self._ended: dict[str, int] = {}  # nonce hash -> when the session would have ended (epoch s)
        self._live: dict[str, float] = {}  # nonce hash -> when it was last read not signed out (monotonic)

    @staticmethod
    def _key(session: Session) -> str:
        return hashlib.sha256(session.nonce.encode("ascii")).hexdigest()

    async def ended(self, db: Database, session: Session) -> bool:
        key = self._key(session)
        if key in self._ended:
            return True
        t = time.monotonic()
        seen = self._live.get(key)
        if seen is not None and t - seen < CHECK_SECONDS:
            return False
        if await db.read(lambda conn: signed_out(conn, nonce_hash=key)):
            self._remember(key, session.signed_in_at + MAX_SECONDS + SIGNOUT_MARGIN)
            return True
        if len(self._live) >= self.MAX_KNOWN:
            self._live.clear()  # only costs reads
        self._live[key] = t
        return False

    async def end(self, db: Database, session: Session) -> None:
        """Sign out of `session`: on this process at once, on every replica within CHECK_SECONDS."""
        key, now = self._key(session), int(time.time())
        # No copy of its cookie, however re-issued, lives longer; the margin covers a replica whose
        # clock is behind this one's (open() takes cookies from clocks up to a minute ahead).
        until = session.signed_in_at + MAX_SECONDS + SIGNOUT_MARGIN
        await db.run(lambda conn: record(conn, nonce_hash=key, expires_at=until, now=now))
        self._remember(key, until)

    def _remember(self, key: str, until: int) -> None:
        self._live.pop(key, None)
        if len(self._ended) >= self.MAX_KNOWN:
            now = int(time.time())
            self._ended = {k: v for k, v in self._ended.items() if v > now}
            if len(self._ended) >= self.MAX_KNOWN:
                self._ended.clear()  # the table still knows them
        self._ended[key] = until
