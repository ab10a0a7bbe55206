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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import errors
from .config import Settings
from .formats import iso8601
from .lifetimes import LEEWAY
from .sids import is_sid
from .signing import HALF_ORDER, Snapshot
from .validation import is_text


@dataclass(frozen=True)
class Minted:
    token: str
    expires_at: int
    jti: str


def issued_json(minted: Minted, *, identity: str, user_sid: str, service_sid: str, account_sid: str, ttl: int,
                user_created: bool) -> dict[str, Any]:
    """The answer of POST /v2/Services/{IS}/Tokens (SPEC §4), also what `tokensvc token --json` prints."""
    return {"token": minted.token, "identity": identity, "user_sid": user_sid, "service_sid": service_sid,
            "account_sid": account_sid, "ttl": ttl, "expires_at": iso8601(minted.expires_at),
            "user_created": user_created}


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
    # The ChatGrant's push defaults (SPEC §9 registration): None when absent or not text.
    push_credential_sid: str | None = None
    endpoint_id: str | None = None


# Looks up an API key SID → (account SID, secret), or None when no such key exists (any more).
ApiKeyLookup = Callable[[str], "tuple[str, str] | None"]


def _b64decode(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2), so one token has exactly one spelling.

    Python's decoder skips characters outside the alphabet, takes `+/` as well as `-_` and
    ignores the unused low bits of the last character; only the canonical spelling re-encodes
    to itself, which rules out every variant at the cost of one encode."""
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))  # binascii.Error is a ValueError
    if not segment or base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("not canonical base64url")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN and ±Infinity by default


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError("number out of range")
    return value


# RFC 8259 JSON, UTF-8 only (json.loads also takes UTF-16/32 bytes), every number finite.
_json = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float).decode


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
        header = _json(_b64decode(head).decode("utf-8"))
        claims = _json(_b64decode(body).decode("utf-8"))
        signature = _b64decode(sig)
    except (ValueError, RecursionError):  # UnicodeDecodeError and binascii.Error are ValueErrors
        raise errors.invalid_token() from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise errors.invalid_token()
    if "crit" in header:
        # RFC 7515 §4.1.11: extensions a recipient does not understand make the token invalid;
        # tokensvc understands none.
        raise errors.invalid_token("Access Token has critical header parameters")
    return Jws(header, claims, f"{head}.{body}".encode("ascii"), signature)


def api_key_issuer(jws: Jws) -> str | None:
    """The API key SID an HS256 token names as its issuer (to fetch its secret before verify)."""
    iss = jws.claims.get("iss")
    return iss if jws.header.get("alg") == "HS256" and isinstance(iss, str) and is_sid("SK", iss) else None


def verify(token: str | Jws, *, snapshot: Snapshot, lookup_api_key: ApiKeyLookup,
           refresh_snapshot: Callable[[], Snapshot] | None = None, now: float | None = None,
           max_ttl: int = Settings.max_ttl, issuer: str | None = None) -> Verified:
    """Claims of a valid token; raises TwilioError 20101 (invalid) or 20104 (expired).

    The algorithm is pinned by the key, never taken from the header alone: ES256 only with a
    keyring public key named by `kid`, HS256 only with the secret of the API key named by `iss`.
    No token lives longer than `max_ttl` (TOKENSVC_MAX_TTL) + the clock skew, whoever signed it.
    With `issuer` (the server's, Settings.issuer), an ES256 token's `iss` must be exactly it: what
    a standard consumer configured from the discovery document accepts, tokensvc accepts."""
    header, claims, signing_input, signature = token if isinstance(token, Jws) else parse(token)
    alg = header.get("alg")
    key_sid = None
    high_s = False
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
        s = int.from_bytes(signature[32:], "big")
        # (r, n - s) verifies too: only the low-S twin, the one we sign, is the token. Tokens an
        # earlier version signed before this keyring went low-S may be high-S: they stay valid
        # until they expire (checked with the claims below), then the rule has no exception.
        high_s = s > HALF_ORDER
        if high_s and not snapshot.high_s_before:
            raise errors.invalid_token()
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), s)
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
    if alg == "ES256" and issuer is not None and claims.get("iss") != issuer:
        raise errors.invalid_token("Access Token is not from this issuer")
    verified = _claims(claims, expected_sub=expected_sub, key_sid=key_sid, now=now, max_ttl=max_ttl)
    if high_s and not (verified.issued_at is not None and verified.issued_at < snapshot.high_s_before):
        raise errors.invalid_token()
    return verified


def _claims(claims: dict[str, Any], *, expected_sub: str | None, key_sid: str | None, now: float | None,
            max_ttl: int) -> Verified:
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
    # Compared as Python ints/floats, never converted: exp may be 10**400 here.
    longest = max_ttl + LEEWAY
    if exp > current + longest:
        raise errors.invalid_token(f"Access Token lives longer than the maximum of {max_ttl} seconds")
    issued = None
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        # json gives finite floats only (see _json); a date before 1970 is no date we issue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value:
            raise errors.invalid_token(f"Access Token has an invalid {name}")
        if value > current + LEEWAY:
            raise errors.invalid_token("Access Token is not yet valid" if name == "nbf" else
                                       "Access Token is issued in the future")
        if issued is None:
            issued = value  # the lifetime runs from iat, else nbf (Twilio's helper writes no iat)
    issued_at = math.floor(issued) if issued is not None else None
    if issued is not None and exp - issued > longest:
        raise errors.invalid_token(f"Access Token lives longer than the maximum of {max_ttl} seconds")
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
    assert isinstance(chat, dict)
    return Verified(sub, service_sid, identity, exp, key_sid, issued_at,
                    _grant_text(chat.get("push_credential_sid")), _grant_text(chat.get("endpoint_id")))


def _grant_text(value: Any) -> str | None:
    """An optional ChatGrant string: anything else is ignored (it is only a default)."""
    return value if isinstance(value, str) and value and is_text(value) and "\x00" not in value else None
