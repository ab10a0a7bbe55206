"""Access tokens (SPEC §4): mint and verify. Pure: no HTTP, no database session.

Verification is two steps, as in joserfc: pick the one key and algorithm the token may use
(never trusting the header's `alg` alone), check the signature with that algorithm pinned; then
validate the claims.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import errors
from .signing import Snapshot
from .sids import is_sid
from .validation import is_text

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


@dataclass(frozen=True, slots=True)
class Verified:
    account_sid: str
    service_sid: str
    identity: str
    expires_at: int
    key_sid: str | None  # the API key of an HS256 token, None for tokensvc-signed ones
    issued_at: int | None = None  # iat, else nbf (Twilio's helper writes only nbf); None without both


# Looks up an API key SID → (account SID, secret), or None when no such key exists (any more).
ApiKeyLookup = Callable[[str], "tuple[str, str] | None"]


def _b64decode(segment: str) -> bytes:
    if not segment or len(segment) % 4 == 1 or "=" in segment:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class Jws(NamedTuple):
    """A compact JWS taken apart, its signature not yet checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse(token: str) -> Jws:
    """A compact JWS taken apart (signature unchecked); 20101 when it is not one."""
    if not isinstance(token, str) or len(token) > 8192 or token.count(".") != 2 or not token.isascii():
        raise errors.invalid_token()
    head, body, sig = token.split(".")
    try:
        header = json.loads(_b64decode(head))
        claims = json.loads(_b64decode(body))
        signature = _b64decode(sig)
    except (ValueError, RecursionError):
        raise errors.invalid_token() from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise errors.invalid_token()
    return Jws(header, claims, f"{head}.{body}".encode("ascii"), signature)


def api_key_issuer(jws: Jws) -> str | None:
    """The API key SID an HS256 token names as its issuer (to fetch its secret before verify)."""
    iss = jws.claims.get("iss")
    return iss if jws.header.get("alg") == "HS256" and isinstance(iss, str) and is_sid("SK", iss) else None


def verify(token: str | Jws, *, snapshot: Snapshot, lookup_api_key: ApiKeyLookup,
           refresh_snapshot: Callable[[], Snapshot] | None = None, now: float | None = None) -> Verified:
    """Claims of a valid token; raises TwilioError 20101 (invalid) or 20104 (expired).

    The algorithm is pinned by the key, never taken from the header alone: ES256 only with a
    keyring public key named by `kid`, HS256 only with the secret of the API key named by `iss`."""
    header, claims, signing_input, signature = token if isinstance(token, Jws) else parse(token)
    alg = header.get("alg")
    key_sid = None
    if alg == "ES256":
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise errors.invalid_token("Access Token has no key id")
        public = snapshot.verification_key(kid)
        if public is None and refresh_snapshot is not None:
            public = refresh_snapshot().verification_key(kid)  # maybe rotated a moment ago
        if public is None:
            raise errors.invalid_token("Access Token signed by an unknown key")
        expected_sub = None
        if len(signature) != 64:
            raise errors.invalid_token()
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise errors.invalid_token() from None
    elif alg == "HS256":
        # Twilio-format token: iss is the API key that signed it with its secret.
        key_sid = claims.get("iss")
        if not isinstance(key_sid, str) or not is_sid("SK", key_sid):
            raise errors.invalid_token("Access Token issuer is not an API key")
        found = lookup_api_key(key_sid)
        if found is None:
            raise errors.invalid_token("Access Token signed by an unknown or deleted API key")
        expected_sub, secret = found
        expected = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise errors.invalid_token()
    else:
        raise errors.invalid_token("Access Token algorithm not accepted")
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
    current = time.time() if now is None else now
    if exp + LEEWAY <= current:
        raise errors.expired_token()
    issued_at = None
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise errors.invalid_token(f"Access Token has an invalid {name}")
        if name == "nbf" and value > current + LEEWAY:
            raise errors.invalid_token("Access Token is not yet valid")
        issued_at = math.floor(value)  # iat, read last, wins over nbf
    grants = claims.get("grants")
    if not isinstance(grants, dict):
        raise errors.invalid_token("Access Token has no grants")
    identity = grants.get("identity")
    if (not isinstance(identity, str) or not identity or len(identity) > 256 or "\x00" in identity
            or is_sid("US", identity)  # could never be fetched by identity (SPEC §2, 50206)
            or not is_text(identity)):
        raise errors.invalid_token("Access Token has no valid identity")
    chat = grants.get("chat")
    service_sid = chat.get("service_sid") if isinstance(chat, dict) else None
    if not isinstance(service_sid, str) or not is_sid("IS", service_sid):
        raise errors.invalid_token("Access Token has no Chat grant for a service")
    return Verified(sub, service_sid, identity, exp, key_sid, issued_at)
