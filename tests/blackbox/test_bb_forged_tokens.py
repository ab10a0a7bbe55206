"""The verifier (SPEC §4 "Accepted tokens"): every forgery is 401 20101, expiry is 401 20104.

Tokens are presented as `X-Twilio-Token` on GET /v2/Services/{IS}/Users/{identity}. Some cases
need a validly signed token with chosen claims; those are signed with the operator's own key file
from TOKENSVC_KEYS_DIR (SPEC §4 "Keys directory"), matched to the published JWKS by public key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    b64url,
    b64url_decode,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    jwt_parts,
)


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("forgery")


@pytest.fixture(scope="module")
def valid(bb: BB, svc: dict[str, Any]) -> str:
    return bb.token(svc["sid"], "victim")["token"]


@pytest.fixture(scope="module")
def signer(bb: BB, valid: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """(kid, private key) of the key that signed `valid`, found in the keys directory."""
    kid = jwt_parts(valid)[0]["kid"]
    jwk = next(k for k in bb.client().get("/.well-known/jwks.json").json()["keys"] if k["kid"] == kid)
    x = int.from_bytes(b64url_decode(jwk["x"]), "big")
    for pem in Path(bb.keys_dir).glob("*.pem"):
        key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key().public_numbers().x == x:
            return kid, key
    pytest.fail("no PEM in the keys directory matches the published signing key")


@pytest.fixture(scope="module")
def other_account(bb: BB) -> tuple[str, str]:
    return bb.new_account()


@pytest.fixture(scope="module")
def api_key(bb: BB) -> dict[str, Any]:
    return bb.new_api_key("forgery")


def url(svc: dict[str, Any], identity: str = "victim") -> str:
    return f"/v2/Services/{svc['sid']}/Users/{identity}"


def present(bb: BB, token: str, path: str) -> Any:
    return bb.client(headers={"X-Twilio-Token": token}).get(path)


def claims_for(bb: BB, svc_sid: str, identity: str = "victim", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"jti": uuid.uuid4().hex, "iss": "tokensvc", "sub": bb.account_sid, "iat": now, "nbf": now,
              "exp": now + 600, "grants": {"identity": identity, "chat": {"service_sid": svc_sid}}}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def es256(signer: tuple[str, Any], claims: dict[str, Any]) -> str:
    """Signed as tokensvc signs: PyJWT leaves half its signatures high-S (s > n/2), and tokensvc
    accepts only the low-S twin (README "Security model": one token, one spelling)."""
    kid, key = signer
    h, p, s = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "cty": "twilio-fpa;v=1"}).split(".")
    raw = b64url_decode(s)
    low = min(int.from_bytes(raw[32:], "big"), P256_ORDER - int.from_bytes(raw[32:], "big"))
    return f"{h}.{p}.{b64url(raw[:32] + low.to_bytes(32, 'big'))}"


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def test_the_untampered_token_is_accepted(bb: BB, svc: dict[str, Any], valid: str) -> None:
    assert present(bb, valid, url(svc)).status_code == 200


def test_our_own_es256_signature_is_accepted(bb: BB, svc: dict[str, Any], signer: Any) -> None:
    """Sanity check of the signing helper the forgeries below rely on."""
    assert present(bb, es256(signer, claims_for(bb, svc["sid"])), url(svc)).status_code == 200


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_20101(bb: BB, svc: dict[str, Any], valid: str, alg: str) -> None:
    header, claims, _ = jwt_parts(valid)
    header["alg"] = alg
    assert_error(present(bb, raw_jwt(header, claims, None), url(svc)), 401, 20101)
    # Also with the original signature left in place.
    forged = raw_jwt(header, claims, None).rsplit(".", 1)[0] + "." + valid.rsplit(".", 1)[1]
    assert_error(present(bb, forged, url(svc)), 401, 20101)


def test_tampered_payload_is_20101(bb: BB, svc: dict[str, Any], valid: str) -> None:
    h, p, s = valid.split(".")
    claims = json.loads(b64url_decode(p))
    claims["grants"]["identity"] = "mallory"
    forged = f"{h}.{b64url(json.dumps(claims).encode())}.{s}"
    assert_error(present(bb, forged, url(svc, "mallory")), 401, 20101)
    assert_error(bb.http.get(url(svc, "mallory")), 404, 20404)
    claims = json.loads(b64url_decode(p))
    claims["exp"] += 86400 * 365
    forged = f"{h}.{b64url(json.dumps(claims).encode())}.{s}"
    assert_error(present(bb, forged, url(svc)), 401, 20101)


def test_tampered_signature_is_20101(bb: BB, svc: dict[str, Any], valid: str) -> None:
    h, p, s = valid.split(".")
    sig = bytearray(b64url_decode(s))
    for i in (0, len(sig) // 2, len(sig) - 1):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        assert_error(present(bb, f"{h}.{p}.{b64url(bytes(bad))}", url(svc)), 401, 20101)
    assert_error(present(bb, f"{h}.{p}.", url(svc)), 401, 20101)
    assert_error(present(bb, f"{h}.{p}.{b64url(bytes(sig[:-1]))}", url(svc)), 401, 20101)


@pytest.mark.parametrize("material", ["pem", "pem-stripped", "jwk-json", "x-coordinate"])
def test_hs256_signed_with_the_public_key_is_20101(bb: BB, svc: dict[str, Any], valid: str, signer: Any,
                                                   material: str) -> None:
    kid, key = signer
    pub = key.public_key()
    jwk = next(k for k in bb.client().get("/.well-known/jwks.json").json()["keys"] if k["kid"] == kid)
    secret = {
        "pem": pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "pem-stripped": pub.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).strip(),
        "jwk-json": json.dumps(jwk).encode(),
        "x-coordinate": jwk["x"].encode(),
    }[material]
    header, claims, _ = jwt_parts(valid)
    header["alg"] = "HS256"
    assert_error(present(bb, raw_jwt(header, claims, secret), url(svc)), 401, 20101)


def test_unknown_kid_is_20101(bb: BB, svc: dict[str, Any]) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = es256(("not-a-known-kid", stranger), claims_for(bb, svc["sid"]))
    assert_error(present(bb, token, url(svc)), 401, 20101)


def test_known_kid_signed_by_another_key_is_20101(bb: BB, svc: dict[str, Any], signer: Any) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = es256((signer[0], stranger), claims_for(bb, svc["sid"]))
    assert_error(present(bb, token, url(svc)), 401, 20101)


def test_es256_token_without_kid_from_an_unknown_key_is_20101(bb: BB, svc: dict[str, Any]) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims_for(bb, svc["sid"]), stranger, algorithm="ES256")
    assert_error(present(bb, token, url(svc)), 401, 20101)


def test_token_for_another_service_than_the_path_is_20101(bb: BB, svc: dict[str, Any]) -> None:
    other = bb.new_service("other")
    tok = bb.token(other["sid"], "victim")["token"]
    assert_error(present(bb, tok, url(svc)), 401, 20101)
    assert_error(present(bb, tok, f"/v2/Services/{svc['sid']}/Users"), 401, 20101)
    assert present(bb, tok, url(other)).status_code == 200


def test_token_of_another_accounts_service_is_20101(bb: BB, svc: dict[str, Any], other_account: Any) -> None:
    other_svc = bb.new_service("theirs", auth=other_account)
    tok = bb.token(other_svc["sid"], "victim", auth=other_account)["token"]
    assert_error(present(bb, tok, url(svc)), 401, 20101)
    assert present(bb, tok, url(other_svc)).status_code == 200


def test_signed_token_with_wrong_account_subject_is_20101(bb: BB, svc: dict[str, Any], signer: Any,
                                                          other_account: Any) -> None:
    token = es256(signer, claims_for(bb, svc["sid"], sub=other_account[0]))
    assert_error(present(bb, token, url(svc)), 401, 20101)
    token = es256(signer, claims_for(bb, svc["sid"], sub="AC" + uuid.uuid4().hex))
    assert_error(present(bb, token, url(svc)), 401, 20101)


def test_twilio_token_claiming_another_account_is_20101(bb: BB, svc: dict[str, Any], api_key: dict[str, Any],
                                                        other_account: Any) -> None:
    tok = AccessToken(other_account[0], api_key["sid"], api_key["secret"], identity="victim")
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    assert_error(present(bb, tok.to_jwt(), url(svc)), 401, 20101)


def test_twilio_token_of_another_accounts_key_for_this_service_is_20101(bb: BB, svc: dict[str, Any],
                                                                        other_account: Any) -> None:
    r = bb.http.post(f"/2010-04-01/Accounts/{other_account[0]}/Keys.json", data={"FriendlyName": "theirs"},
                     auth=other_account)
    assert r.status_code == 201, r.text
    key = r.json()
    tok = AccessToken(other_account[0], key["sid"], key["secret"], identity="intruder")
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    assert_error(present(bb, tok.to_jwt(), url(svc, "intruder")), 401, 20101)
    assert_error(bb.http.get(url(svc, "intruder")), 404, 20404)


def test_twilio_token_without_chat_grant_is_20101(bb: BB, svc: dict[str, Any], api_key: dict[str, Any]) -> None:
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity="grantless")
    assert_error(present(bb, tok.to_jwt(), url(svc, "grantless")), 401, 20101)
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity="grantless")
    tok.add_grant(ChatGrant())
    assert_error(present(bb, tok.to_jwt(), url(svc, "grantless")), 401, 20101)
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"])
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    assert_error(present(bb, tok.to_jwt(), url(svc)), 401, 20101)
    assert_error(bb.http.get(url(svc, "grantless")), 404, 20404)


def test_twilio_token_for_another_service_is_20101(bb: BB, svc: dict[str, Any], api_key: dict[str, Any]) -> None:
    other = bb.new_service("other-twilio")
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity="victim")
    tok.add_grant(ChatGrant(service_sid=other["sid"]))
    assert_error(present(bb, tok.to_jwt(), url(svc)), 401, 20101)


def test_expired_tokensvc_token_is_20104(bb: BB, svc: dict[str, Any], signer: Any) -> None:
    now = int(time.time())
    token = es256(signer, claims_for(bb, svc["sid"], iat=now - 7200, nbf=now - 7200, exp=now - 3600))
    assert_error(present(bb, token, url(svc)), 401, 20104)
    token = es256(signer, claims_for(bb, svc["sid"], iat=now - 700, nbf=now - 700, exp=now - 120))
    assert_error(present(bb, token, url(svc)), 401, 20104)
    # Beyond the 30 s of allowed clock skew.
    token = es256(signer, claims_for(bb, svc["sid"], "expired-new", iat=now - 700, nbf=now - 700, exp=now - 45))
    assert_error(present(bb, token, url(svc, "expired-new")), 401, 20104)
    assert_error(bb.http.get(url(svc, "expired-new")), 404, 20404)


def test_expired_twilio_token_is_20104(bb: BB, svc: dict[str, Any], api_key: dict[str, Any]) -> None:
    now = int(time.time())
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity="victim",
                      valid_until=now - 300, nbf=now - 900)
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    assert_error(present(bb, tok.to_jwt(), url(svc)), 401, 20104)


def test_token_within_clock_skew_is_accepted(bb: BB, svc: dict[str, Any], signer: Any) -> None:
    now = int(time.time())
    token = es256(signer, claims_for(bb, svc["sid"], iat=now + 10, nbf=now + 10, exp=now + 600))
    assert present(bb, token, url(svc)).status_code == 200


def test_token_not_yet_valid_is_20101(bb: BB, svc: dict[str, Any], signer: Any, api_key: dict[str, Any]) -> None:
    now = int(time.time())
    token = es256(signer, claims_for(bb, svc["sid"], iat=now, nbf=now + 300, exp=now + 900))
    assert_error(present(bb, token, url(svc)), 401, 20101)
    token = es256(signer, claims_for(bb, svc["sid"], "early-new", iat=now, nbf=now + 45, exp=now + 900))
    assert_error(present(bb, token, url(svc, "early-new")), 401, 20101)
    assert_error(bb.http.get(url(svc, "early-new")), 404, 20404)
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity="victim", nbf=now + 300)
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    assert_error(present(bb, tok.to_jwt(), url(svc)), 401, 20101)


@pytest.mark.parametrize("drop", ["exp", "grants", "identity", "chat", "service_sid"])
def test_signed_token_missing_required_claims_is_20101(bb: BB, svc: dict[str, Any], signer: Any, drop: str) -> None:
    claims = claims_for(bb, svc["sid"], identity=f"missing-{drop}")
    if drop in ("exp", "grants"):
        del claims[drop]
    elif drop in ("identity", "chat"):
        del claims["grants"][drop]
    else:
        del claims["grants"]["chat"]["service_sid"]
    assert_error(present(bb, es256(signer, claims), url(svc, f"missing-{drop}")), 401, 20101)
    assert_error(bb.http.get(url(svc, f"missing-{drop}")), 404, 20404)


def test_twilio_format_token_without_exp_is_20101(bb: BB, svc: dict[str, Any], api_key: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"jti": f"{api_key['sid']}-{now}", "iss": api_key["sid"], "sub": bb.account_sid, "nbf": now,
              "grants": {"identity": "victim", "chat": {"service_sid": svc["sid"]}}}
    header = {"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}
    token = raw_jwt(header, claims, api_key["secret"].encode())
    assert_error(present(bb, token, url(svc)), 401, 20101)


def test_twilio_format_token_signed_with_hs512_or_rs_is_20101(bb: BB, svc: dict[str, Any],
                                                              api_key: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"jti": f"{api_key['sid']}-{now}", "iss": api_key["sid"], "sub": bb.account_sid, "nbf": now,
              "exp": now + 600, "grants": {"identity": "victim", "chat": {"service_sid": svc["sid"]}}}
    header = {"alg": "HS512", "typ": "JWT", "cty": "twilio-fpa;v=1"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    sig = hmac.new(api_key["secret"].encode(), signing_input.encode(), hashlib.sha512).digest()
    token = f"{signing_input}.{b64url(sig)}"
    r = present(bb, token, url(svc))
    # HS512 with the right secret is not the Twilio format (HS256); a verifier pinning HS256 refuses it.
    assert r.status_code in (200, 401)
    if r.status_code == 401:
        assert_error(r, 401, 20101)


@pytest.mark.parametrize("garbage", ["", "x", "a.b", "a.b.c", "a.b.c.d", "....", "eyJ.eyJ.", "\u00e9t\u00e9",
                                     "Bearer x", "null", "x" * 10000])
def test_garbage_tokens_are_20101(bb: BB, svc: dict[str, Any], garbage: str) -> None:
    headers = {"X-Twilio-Token": garbage.encode("utf-8")}
    r = bb.client(headers=headers).get(url(svc))
    if garbage == "":
        # An empty header may be treated as no credentials at all.
        assert r.status_code == 401
        assert_error(r, 401)
        return
    assert_error(r, 401, 20101)


def test_deleted_user_is_not_reprovisioned_by_a_token_issued_before_its_deletion(
        bb: BB, svc: dict[str, Any]) -> None:
    # SPEC §11: a deleted user stays deleted; a token issued after the deletion provisions anew.
    tok = bb.token(svc["sid"], "phoenix")
    assert bb.http.delete(url(svc, "phoenix")).status_code == 204
    assert_error(present(bb, tok["token"], url(svc, "phoenix")), 401, 20101)
    assert bb.http.get(url(svc, "phoenix")).status_code == 404
    fresh = bb.token(svc["sid"], "phoenix")
    r = present(bb, fresh["token"], url(svc, "phoenix"))
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == "phoenix"
    assert r.json()["sid"] == fresh["user_sid"] != tok["user_sid"]


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(exp=str(c["exp"])),
    lambda c: c.update(exp=None),
    lambda c: c.update(exp=[c["exp"]]),
    lambda c: c.update(exp=10**30),
    lambda c: c.update(nbf="soon"),
    lambda c: c.update(iat={"x": 1}),
    lambda c: c.update(grants=[]),
    lambda c: c.update(grants="chat"),
    lambda c: c["grants"].update(identity=123),
    lambda c: c["grants"].update(identity=["victim"]),
    lambda c: c["grants"].update(identity=None),
    lambda c: c["grants"].update(chat="IS"),
    lambda c: c["grants"].update(chat={"service_sid": ["x"]}),
    lambda c: c["grants"].update(chat={"service_sid": None}),
    lambda c: c.update(sub=None),
    lambda c: c.update(sub=12),
], ids=["exp-str", "exp-null", "exp-list", "exp-huge", "nbf-str", "iat-obj", "grants-list", "grants-str",
        "identity-int", "identity-list", "identity-null", "chat-str", "service-list", "service-null", "sub-null",
        "sub-int"])
def test_ill_typed_claims_in_a_validly_signed_token_are_rejected_not_5xx(bb: BB, svc: dict[str, Any], signer: Any,
                                                                        mutate: Any) -> None:
    claims = claims_for(bb, svc["sid"], identity="typed")
    mutate(claims)
    r = present(bb, es256(signer, claims), url(svc, "typed"))
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert_error(r, 401, 20101)


@pytest.mark.parametrize("kid", [None, 7, ["x"], {"k": 1}, "", "../../etc/passwd", "a" * 5000])
def test_odd_kid_headers_are_20101(bb: BB, svc: dict[str, Any], valid: str, kid: Any) -> None:
    header, claims, sig = jwt_parts(valid)
    header["kid"] = kid
    token = f"{b64url(json.dumps(header).encode())}.{valid.split('.')[1]}.{sig}"
    assert_error(present(bb, token, url(svc)), 401, 20101)


def test_twilio_token_identity_that_looks_like_a_user_sid_does_not_provision(bb: BB, svc: dict[str, Any],
                                                                              api_key: dict[str, Any]) -> None:
    # SPEC §2: an identity that looks like a user SID is refused (50206) — also when it would be
    # auto-provisioned from a token; the server already refuses an over-long identity there (20101).
    identity = "US" + uuid.uuid4().hex
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity=identity)
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    r = present(bb, tok.to_jwt(), f"/v2/Services/{svc['sid']}/Users")
    assert r.status_code in (400, 401), r.text
    assert_error(r, r.status_code, 50206 if r.status_code == 400 else 20101)
    listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()["users"]
    assert identity not in [u["identity"] for u in listed]


def test_twilio_token_identity_too_long_does_not_provision(bb: BB, svc: dict[str, Any],
                                                           api_key: dict[str, Any]) -> None:
    identity = "L" * 257
    tok = AccessToken(bb.account_sid, api_key["sid"], api_key["secret"], identity=identity)
    tok.add_grant(ChatGrant(service_sid=svc["sid"]))
    r = present(bb, tok.to_jwt(), f"/v2/Services/{svc['sid']}/Users")
    assert r.status_code in (400, 401), r.text
    assert_error(r, r.status_code, 50207 if r.status_code == 400 else 20101)
