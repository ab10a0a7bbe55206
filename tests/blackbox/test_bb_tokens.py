"""The token endpoint and the token format (SPEC §4), verified with PyJWT against the JWKS."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from blackbox.blackbox_helpers import (
    BB,
    ISO_Z,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    jwt_parts,
)

TOKEN_RESPONSE_KEYS = {"token", "identity", "user_sid", "service_sid", "account_sid", "ttl", "expires_at",
                       "user_created"}


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    return bb.new_service("tokens")


def tokens_url(svc: dict[str, Any]) -> str:
    return f"/v2/Services/{svc['sid']}/Tokens"


def jwks(bb: BB) -> dict[str, Any]:
    r = bb.client().get("/.well-known/jwks.json")  # public: no credentials needed
    assert r.status_code == 200, r.text
    return r.json()


def test_token_endpoint_answers_201_with_exactly_the_spec_fields(bb: BB, svc: dict[str, Any]) -> None:
    identity = f"tok-{uuid.uuid4().hex[:8]}"
    before = int(time.time())
    r = bb.http.post(tokens_url(svc), data={"Identity": identity})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == TOKEN_RESPONSE_KEYS
    assert body["identity"] == identity
    assert body["service_sid"] == svc["sid"]
    assert body["account_sid"] == bb.account_sid
    assert body["ttl"] == 3600
    assert body["user_created"] is True
    assert ISO_Z.match(body["expires_at"]), body["expires_at"]
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert before + 3600 - 2 <= expires <= time.time() + 3600 + 2
    _, claims, _ = jwt_parts(body["token"])
    assert claims["exp"] == int(expires)

    user = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}")
    assert user.status_code == 200
    assert user.json()["sid"] == body["user_sid"]
    assert user.json()["role_sid"] == svc["default_service_role_sid"]


def test_second_token_for_same_identity_reuses_user(bb: BB, svc: dict[str, Any]) -> None:
    identity = f"again-{uuid.uuid4().hex[:8]}"
    first = bb.token(svc["sid"], identity)
    second = bb.token(svc["sid"], identity)
    assert first["user_created"] is True and second["user_created"] is False
    assert first["user_sid"] == second["user_sid"]
    assert first["token"] != second["token"]
    listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()["users"]
    assert [u["identity"] for u in listed].count(identity) == 1


def test_token_for_existing_user_is_not_created(bb: BB, svc: dict[str, Any]) -> None:
    made = bb.new_user(svc["sid"], f"pre-{uuid.uuid4().hex[:8]}")
    tok = bb.token(svc["sid"], made["identity"])
    assert tok["user_created"] is False and tok["user_sid"] == made["sid"]


def test_custom_ttl_is_honoured(bb: BB, svc: dict[str, Any]) -> None:
    for ttl in (1, 60, 86400):
        tok = bb.token(svc["sid"], "ttl-user", Ttl=str(ttl))
        assert tok["ttl"] == ttl
        _, claims, _ = jwt_parts(tok["token"])
        assert claims["exp"] - claims["iat"] == ttl


def test_ttl_above_maximum_is_20157(bb: BB, svc: dict[str, Any]) -> None:
    for ttl in ("86401", "100000", "999999999999"):
        assert_error(bb.http.post(tokens_url(svc), data={"Identity": "ttl-max", "Ttl": ttl}), 400, 20157)


@pytest.mark.parametrize("ttl", ["0", "-1", "abc", "1.5", "", "-86401", "1e3"])
def test_ttl_not_a_positive_integer_is_20001(bb: BB, svc: dict[str, Any], ttl: str) -> None:
    assert_error(bb.http.post(tokens_url(svc), data={"Identity": "ttl-bad", "Ttl": ttl}), 400, 20001)


def test_token_without_identity_is_20001(bb: BB, svc: dict[str, Any]) -> None:
    body = assert_error(bb.http.post(tokens_url(svc), data={}), 400, 20001)
    assert "Identity" in body["message"]
    assert_error(bb.http.post(tokens_url(svc), data={"Identity": ""}), 400, 20001)


def test_token_identity_rules_match_user_rules(bb: BB, svc: dict[str, Any]) -> None:
    assert_error(bb.http.post(tokens_url(svc), data={"Identity": "t" * 257}), 400, 50207)
    assert_error(bb.http.post(tokens_url(svc), data={"Identity": "US" + uuid.uuid4().hex}), 400, 50206)


def test_token_for_unknown_service_is_404(bb: BB) -> None:
    assert_error(bb.http.post(f"/v2/Services/IS{uuid.uuid4().hex}/Tokens", data={"Identity": "x"}), 404, 20404)


def test_token_header_shape(bb: BB, svc: dict[str, Any]) -> None:
    tok = bb.token(svc["sid"], "header-user")
    header, _, _ = jwt_parts(tok["token"])
    assert header["alg"] == "ES256"
    assert header["typ"] == "JWT"
    assert header["cty"] == "twilio-fpa;v=1"
    assert isinstance(header["kid"], str) and header["kid"]
    assert header["kid"] in [k["kid"] for k in jwks(bb)["keys"]]


def test_token_claims_shape(bb: BB, svc: dict[str, Any]) -> None:
    identity = "claims-user@example.com"
    before = int(time.time())
    tok = bb.token(svc["sid"], identity, Ttl="120")
    _, claims, _ = jwt_parts(tok["token"])
    assert {"jti", "iss", "sub", "iat", "nbf", "exp", "grants"} <= set(claims)
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert isinstance(claims["iss"], str) and claims["iss"]
    assert claims["sub"] == bb.account_sid
    for k in ("iat", "nbf", "exp"):
        assert isinstance(claims[k], int), (k, claims[k])
    assert before - 2 <= claims["iat"] <= time.time() + 2
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["exp"] == claims["iat"] + 120
    assert claims["grants"]["identity"] == identity
    assert claims["grants"]["chat"]["service_sid"] == svc["sid"]


def test_jti_is_unique_across_calls(bb: BB, svc: dict[str, Any]) -> None:
    jtis = {jwt_parts(bb.token(svc["sid"], f"jti-{i % 3}")["token"])[1]["jti"] for i in range(30)}
    assert len(jtis) == 30


def test_token_verifies_with_pyjwt_against_published_jwks(bb: BB, svc: dict[str, Any]) -> None:
    tok = bb.token(svc["sid"], "pyjwt-user")
    header = jwt.get_unverified_header(tok["token"])
    keys = {k["kid"]: k for k in jwks(bb)["keys"]}
    jwk = keys[header["kid"]]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert "d" not in jwk, "JWKS must publish only public keys"
    key = jwt.PyJWK(jwk, algorithm="ES256")
    claims = jwt.decode(tok["token"], key=key.key, algorithms=["ES256"], options={"verify_aud": False})
    assert claims["grants"]["identity"] == "pyjwt-user"
    assert claims["sub"] == bb.account_sid


def test_token_verifies_with_pyjwkclient(bb: BB, svc: dict[str, Any]) -> None:
    tok = bb.token(svc["sid"], "jwkclient-user")
    client = jwt.PyJWKClient(f"{bb.base}/.well-known/jwks.json", cache_keys=False)
    signing_key = client.get_signing_key_from_jwt(tok["token"])
    claims = jwt.decode(tok["token"], signing_key.key, algorithms=["ES256"])
    assert claims["grants"]["chat"]["service_sid"] == svc["sid"]


def test_jwks_is_json_with_kids(bb: BB) -> None:
    r = bb.client().get("/.well-known/jwks.json")
    assert r.headers["content-type"].startswith("application/json")
    keys = r.json()["keys"]
    assert keys
    for k in keys:
        assert k["kid"] and k["kty"] == "EC" and k["crv"] == "P-256" and k["x"] and k["y"]
        assert "d" not in k


def test_issued_token_is_accepted_as_x_twilio_token(bb: BB, svc: dict[str, Any]) -> None:
    tok = bb.token(svc["sid"], "presenter")
    c = bb.client(headers={"X-Twilio-Token": tok["token"]})
    r = c.get(f"/v2/Services/{svc['sid']}/Users/presenter")
    assert r.status_code == 200, r.text
    assert r.json()["sid"] == tok["user_sid"]


def test_token_endpoint_with_form_via_twilio_style_request(bb: BB, svc: dict[str, Any]) -> None:
    # The twilio package's generic request() sends the same form encoding the SDK uses.
    client = bb.twilio()
    resp = client.request("POST", f"{bb.base}/v2/Services/{svc['sid']}/Tokens", data={"Identity": "via-sdk"})
    assert resp.status_code == 201
