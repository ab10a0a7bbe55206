"""Access tokens (SPEC §4): mint and verify. Pure: no HTTP, no database session.

Verification is two steps, as in joserfc: pick the one key and algorithm the token may use
(never trusting the header's `alg` alone), check the signature with that algorithm pinned; then
validate the claims.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import jwt

from . import errors
from .signing import Snapshot
from .sids import is_sid

LEEWAY = 30  # seconds of clock skew allowed


@dataclass(frozen=True)
class Minted:
    token: str
    expires_at: int
    jti: str


def mint(snapshot: Snapshot, *, issuer: str, account_sid: str, service_sid: str, identity: str,
         ttl: int, now: int | None = None) -> Minted:
    """A Twilio-shaped access token signed with the active ES256 key."""
    iat = int(time.time()) if now is None else now
    jti = uuid.uuid4().hex
    claims = {
        "jti": jti,
        "iss": issuer,
        "sub": account_sid,
        "iat": iat,
        "nbf": iat,
        "exp": iat + ttl,
        "grants": {"identity": identity, "chat": {"service_sid": service_sid}},
    }
    return Minted(snapshot.active.sign(claims), iat + ttl, jti)


@dataclass(frozen=True)
class Verified:
    account_sid: str
    service_sid: str
    identity: str
    expires_at: int
    key_sid: str | None  # the API key of an HS256 token, None for tokensvc-signed ones
    claims: dict[str, Any]


# Looks up an API key SID → (account SID, secret), or None when no such key exists (any more).
ApiKeyLookup = Callable[[str], "tuple[str, str] | None"]


def verify(token: str, *, snapshot: Snapshot, lookup_api_key: ApiKeyLookup,
           refresh_snapshot: Callable[[], Snapshot] | None = None, now: float | None = None) -> Verified:
    """Claims of a valid token; raises TwilioError 20101 (invalid) or 20104 (expired)."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 8192:
        raise errors.invalid_token()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise errors.invalid_token() from None
    alg = header.get("alg")
    key: Any
    key_sid = None
    if alg == "ES256":
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise errors.invalid_token("Access Token has no key id")
        key = snapshot.verification_key(kid)
        if key is None and refresh_snapshot is not None:
            key = refresh_snapshot().verification_key(kid)  # maybe rotated a moment ago
        if key is None:
            raise errors.invalid_token("Access Token signed by an unknown key")
        expected_sub = None
    elif alg == "HS256":
        # Twilio-format token: iss is the API key that signed it with its secret.
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise errors.invalid_token() from None
        key_sid = unverified.get("iss")
        if not isinstance(key_sid, str) or not is_sid("SK", key_sid):
            raise errors.invalid_token("Access Token issuer is not an API key")
        found = lookup_api_key(key_sid)
        if found is None:
            raise errors.invalid_token("Access Token signed by an unknown or deleted API key")
        expected_sub, key = found
    else:
        raise errors.invalid_token("Access Token algorithm not accepted")

    try:
        claims = jwt.decode(
            token, key, algorithms=[alg], leeway=LEEWAY,
            options={"require": ["exp"], "verify_aud": False, "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise errors.expired_token() from None
    except jwt.ImmatureSignatureError:
        raise errors.invalid_token("Access Token is not yet valid") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise errors.invalid_token() from None
    return _claims(claims, expected_sub=expected_sub, key_sid=key_sid, now=now)


def _claims(claims: dict[str, Any], *, expected_sub: str | None, key_sid: str | None, now: float | None) -> Verified:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_sid("AC", sub):
        raise errors.invalid_token("Access Token has no account")
    if expected_sub is not None and sub != expected_sub:
        raise errors.invalid_token("Access Token account does not own its API key")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise errors.invalid_token("Access Token has an invalid expiry")
    if exp + LEEWAY < (time.time() if now is None else now):
        raise errors.expired_token()
    grants = claims.get("grants")
    if not isinstance(grants, dict):
        raise errors.invalid_token("Access Token has no grants")
    identity = grants.get("identity")
    if (not isinstance(identity, str) or not identity or len(identity) > 256 or "\x00" in identity
            or is_sid("US", identity)):  # could never be fetched by identity (SPEC §2, 50206)
        raise errors.invalid_token("Access Token has no valid identity")
    chat = grants.get("chat")
    service_sid = chat.get("service_sid") if isinstance(chat, dict) else None
    if not isinstance(service_sid, str) or not is_sid("IS", service_sid):
        raise errors.invalid_token("Access Token has no Chat grant for a service")
    return Verified(sub, service_sid, identity, exp, key_sid, claims)
