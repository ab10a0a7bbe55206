"""The verifier's bounds (SPEC §4): a token lives at most TOKENSVC_MAX_TTL (+ 30 s of skew), its
numeric claims are sane numbers, and one token has exactly one spelling.

Unit tests call tokens.verify directly; the end-to-end ones run a real `tokensvc serve` with the
official `twilio` helper and a real `websockets` client, over HTTP and /v2/Connect."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant
from websockets.sync.client import connect

from conftest import Server, start_server
from tokensvc import errors, signing
from tokensvc.signing import Snapshot, load_snapshot
from tokensvc.tokens import mint, parse, verify

ACCOUNT = "AC" + "1" * 32
SERVICE = "IS" + "2" * 32
KEY_SID = "SK" + "3" * 32
SECRET = "s" * 32
MAX_TTL = 3600
YEAR = 365 * 86400
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # the order of P-256


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def hs256(claims_json: str, secret: str = SECRET, header: dict[str, Any] | None = None) -> str:
    """An HS256 JWT over claims given as JSON text (so 1e400, NaN or 10**400 stay as written)."""
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}).encode())
    body = b64(claims_json.encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def es256(snapshot: Snapshot, claims_json: str, header: dict[str, Any] | None = None) -> str:
    """An ES256 JWT signed with the active key, over claims given as JSON text."""
    key = snapshot.active
    head = b64(json.dumps(header or {"alg": "ES256", "typ": "JWT", "cty": "twilio-fpa;v=1",
                                     "kid": key.kid}).encode())
    signing_input = f"{head}.{b64(claims_json.encode())}"
    r, s = decode_dss_signature(key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    s = min(s, N - s)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def claims_text(*, sub: str = ACCOUNT, service_sid: str = SERVICE, identity: str = "alice", iss: str = KEY_SID,
                **times: Any) -> str:
    """Claims as JSON text; a time given as a str is inserted verbatim (e.g. "1e400", "NaN")."""
    parts = [f'"jti":"j","iss":"{iss}","sub":"{sub}"']
    parts += [f'"{name}":{value if isinstance(value, str) else json.dumps(value)}' for name, value in times.items()]
    parts.append(f'"grants":{{"identity":"{identity}","chat":{{"service_sid":"{service_sid}"}}}}')
    return "{" + ",".join(parts) + "}"


def twilio_token(ttl: int, *, account_sid: str = ACCOUNT, key_sid: str = KEY_SID, secret: str = SECRET,
                 service_sid: str = SERVICE, identity: str = "alice", **kw: Any) -> str:
    token = AccessToken(account_sid, key_sid, secret, identity=identity, ttl=ttl, **kw)
    token.add_grant(ChatGrant(service_sid=service_sid))
    return token.to_jwt()


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    keys = tmp_path_factory.mktemp("keys")
    signing.ensure_keys(keys)
    return load_snapshot(keys)


def check(token: str, snapshot: Snapshot, *, max_ttl: int = MAX_TTL) -> Any:
    return verify(token, snapshot=snapshot, lookup_api_key=lambda sid: (ACCOUNT, SECRET) if sid == KEY_SID else None,
                  max_ttl=max_ttl)


def refused(token: str, snapshot: Snapshot, code: int = 20101, *, max_ttl: int = MAX_TTL) -> errors.TwilioError:
    with pytest.raises(errors.TwilioError) as caught:
        check(token, snapshot, max_ttl=max_ttl)
    assert (caught.value.status, caught.value.code) == (401, code), caught.value.body()
    return caught.value


# ---- A. lifetime bounds --------------------------------------------------------------------------

def test_twilio_helper_writes_nbf_and_exp_but_no_iat() -> None:
    """What the lifetime is measured from for backend-minted tokens: `nbf` (no `iat` is written)."""
    claims = json.loads(unb64(twilio_token(600).split(".")[1]))
    assert "iat" not in claims and claims["exp"] - claims["nbf"] in (600, 601)


@pytest.mark.parametrize("ttl", [MAX_TTL, MAX_TTL - 1, 60])
def test_a_twilio_token_of_at_most_max_ttl_verifies(snapshot: Snapshot, ttl: int) -> None:
    assert check(twilio_token(ttl), snapshot).identity == "alice"


@pytest.mark.parametrize("ttl", [MAX_TTL + 31, MAX_TTL + 3600, 10 * YEAR])
def test_a_twilio_token_living_longer_than_max_ttl_is_refused(snapshot: Snapshot, ttl: int) -> None:
    refused(twilio_token(ttl), snapshot)


def test_a_twilio_token_with_an_old_nbf_is_measured_from_it(snapshot: Snapshot) -> None:
    now = int(time.time())
    refused(twilio_token(600, nbf=now - 2 * MAX_TTL), snapshot)  # issued two max lifetimes ago


def test_a_twilio_token_without_nbf_is_bounded_from_now(snapshot: Snapshot) -> None:
    assert check(twilio_token(MAX_TTL, nbf=None), snapshot).identity == "alice"
    refused(twilio_token(MAX_TTL + 60, nbf=None), snapshot)
    refused(twilio_token(0, nbf=None, valid_until=int(time.time()) + 10 * YEAR), snapshot)


@pytest.mark.parametrize("exp", ["NOW+10Y", 2**63, 10**400, 2**63 - 1, 10**4000])
def test_far_expiries_are_refused_without_raising(snapshot: Snapshot, exp: Any) -> None:
    now = int(time.time())
    exp = now + 10 * YEAR if exp == "NOW+10Y" else exp
    refused(hs256(claims_text(exp=exp)), snapshot)
    refused(hs256(claims_text(nbf=now, exp=exp)), snapshot)
    refused(es256(snapshot, claims_text(iss="tokensvc", iat=now, nbf=now, exp=exp)), snapshot)


def test_the_setting_is_the_bound(snapshot: Snapshot) -> None:
    token = twilio_token(7200)
    refused(token, snapshot, max_ttl=3600)
    assert check(token, snapshot, max_ttl=7200).identity == "alice"


def test_lifetime_is_measured_from_iat_first(snapshot: Snapshot) -> None:
    now = int(time.time())
    # nbf is recent but the token was issued long ago: it lives longer than the maximum
    refused(es256(snapshot, claims_text(iss="tokensvc", iat=now - MAX_TTL, nbf=now, exp=now + 600)), snapshot)
    assert check(es256(snapshot, claims_text(iss="tokensvc", iat=now - 600, nbf=now - 600, exp=now + MAX_TTL - 600)),
                 snapshot).identity == "alice"


def test_tokensvc_minted_tokens_obey_the_same_bound(snapshot: Snapshot) -> None:
    ok = mint(snapshot, issuer="tokensvc", account_sid=ACCOUNT, service_sid=SERVICE, identity="alice", ttl=MAX_TTL)
    assert check(ok.token, snapshot).identity == "alice"
    long = mint(snapshot, issuer="tokensvc", account_sid=ACCOUNT, service_sid=SERVICE, identity="alice",
                ttl=MAX_TTL + 31)
    refused(long.token, snapshot)
    ten_years = mint(snapshot, issuer="tokensvc", account_sid=ACCOUNT, service_sid=SERVICE, identity="alice",
                     ttl=10 * YEAR)
    refused(ten_years.token, snapshot)


@pytest.mark.parametrize("times", [
    {"nbf": "NaN"}, {"iat": "NaN"}, {"nbf": "Infinity"}, {"iat": "-Infinity"}, {"iat": "1e400"},
    {"nbf": "-1e400"}, {"iat": -10**400}, {"nbf": 10**400}, {"iat": 10**400}, {"exp": "1e400"},
    {"exp": "NaN"}, {"nbf": -1}, {"iat": True}, {"nbf": "\"0\""},
])
def test_absurd_numeric_claims_are_refused(snapshot: Snapshot, times: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"iat": now, "nbf": now, "exp": now + 600}
    claims.update(times)
    refused(hs256(claims_text(**claims)), snapshot)


def test_an_iat_in_the_future_beyond_the_skew_is_refused(snapshot: Snapshot) -> None:
    now = int(time.time())
    assert check(hs256(claims_text(iat=now + 20, exp=now + 600)), snapshot).identity == "alice"
    refused(hs256(claims_text(iat=now + 600, exp=now + 700)), snapshot)


def test_a_non_finite_number_anywhere_is_not_json(snapshot: Snapshot) -> None:
    now = int(time.time())
    text = claims_text(nbf=now, exp=now + 600)[:-1] + ',"extra":NaN}'
    refused(hs256(text), snapshot)


# ---- B. one token, one string --------------------------------------------------------------------

def _with_dash_and_underscore(snapshot: Snapshot) -> str:
    """A minted token whose signature holds both '-' and '_' (most do)."""
    for _ in range(200):
        token = mint(snapshot, issuer="tokensvc", account_sid=ACCOUNT, service_sid=SERVICE, identity="alice",
                     ttl=600).token
        if "-" in token.split(".")[2] and "_" in token.split(".")[2]:
            return token
    raise AssertionError("no signature with both - and _")


def _high_s(token: str) -> str:
    head, body, sig = token.split(".")
    raw = unb64(sig)
    s = int.from_bytes(raw[32:], "big")
    return f"{head}.{body}.{b64(raw[:32] + (N - s).to_bytes(32, 'big'))}"


def _non_canonical_last_char(segment: str) -> str:
    """The same bytes, spelled with unused low bits set in the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {2: 0b1111, 3: 0b11}[len(segment) % 4]
    value = alphabet.index(segment[-1])
    assert value & spare == 0
    changed = segment[:-1] + alphabet[value | 1]
    assert unb64(changed) == unb64(segment)  # Python's decoder does not tell them apart
    return changed


def malleated(token: str, snapshot: Snapshot) -> dict[str, str]:
    head, body, sig = token.split(".")
    padded = lambda seg: seg + ("=" * (-len(seg) % 4) or "====")  # noqa: E731
    std = lambda seg: seg.replace("-", "+").replace("_", "/")  # noqa: E731
    header = json.loads(unb64(head))
    claims = unb64(body).decode()
    crit = es256(snapshot, claims, header=dict(header, crit=["exp"]))
    crit_unknown = es256(snapshot, claims, header=dict(header, crit=["x-tokensvc"], **{"x-tokensvc": 1}))
    variants = {
        "padded signature": f"{head}.{body}.{padded(sig)}",
        "padded header": f"{padded(head)}.{body}.{sig}",
        "padded claims": f"{head}.{padded(body)}.{sig}",
        "standard alphabet signature": f"{head}.{body}.{std(sig)}",
        "non-canonical last char of the signature": f"{head}.{body}.{_non_canonical_last_char(sig)}",
        # (a changed header or claims segment changes the signing input: the signature says no)
        "non-alphabet characters inside": f"{head}.{body}.{sig[:8]}****{sig[8:]}",
        "whitespace inside": f"{head}.{body}.{sig[:8]}\n\t  {sig[8:]}",
        "high-S signature": _high_s(token),
        "crit header": crit,
        "crit with an unknown parameter": crit_unknown,
    }
    if len(body) % 4 in (2, 3):
        variants["non-canonical last char of the claims"] = f"{head}.{_non_canonical_last_char(body)}.{sig}"
    if len(head) % 4 in (2, 3):
        variants["non-canonical last char of the header"] = f"{_non_canonical_last_char(head)}.{body}.{sig}"
    return variants


MALLEATIONS = ["padded signature", "padded header", "padded claims", "standard alphabet signature",
               "non-canonical last char of the signature", "non-alphabet characters inside", "whitespace inside",
               "high-S signature", "crit header", "crit with an unknown parameter"]


@pytest.fixture(scope="module")
def es_token(snapshot: Snapshot) -> str:
    return _with_dash_and_underscore(snapshot)


def test_the_original_spelling_verifies(snapshot: Snapshot, es_token: str) -> None:
    assert check(es_token, snapshot).identity == "alice"
    assert set(MALLEATIONS) <= set(malleated(es_token, snapshot))


@pytest.mark.parametrize("name", MALLEATIONS)
def test_every_other_spelling_of_a_valid_token_is_refused(snapshot: Snapshot, es_token: str, name: str) -> None:
    variant = malleated(es_token, snapshot)[name]
    assert variant != es_token
    refused(variant, snapshot)


def test_non_canonical_last_chars_of_header_and_claims_are_refused(snapshot: Snapshot) -> None:
    tried = 0
    for identity in ("a", "ab", "abc", "abcd"):  # one of these lengths leaves spare bits in each segment
        token = mint(snapshot, issuer="tokensvc", account_sid=ACCOUNT, service_sid=SERVICE, identity=identity,
                     ttl=600).token
        for name, variant in malleated(token, snapshot).items():
            if name.startswith("non-canonical last char of the") and not name.endswith("signature"):
                tried += 1
                refused(variant, snapshot)
    assert tried >= 3


def test_other_spellings_of_an_hs256_token_are_refused(snapshot: Snapshot) -> None:
    token = twilio_token(600)
    assert check(token, snapshot).identity == "alice"
    head, body, sig = token.split(".")
    for variant in (f"{head}.{body}.{sig}=", f"{head}.{body}.{_non_canonical_last_char(sig)}",
                    f"{head}.{body}.{sig.replace('-', '+').replace('_', '/')}" if "-" in sig or "_" in sig else None,
                    hs256(unb64(body).decode(), header=dict(json.loads(unb64(head)), crit=["cty"]))):
        if variant is not None:
            refused(variant, snapshot)


def test_a_high_s_signature_verifies_with_plain_ecdsa_but_not_here(snapshot: Snapshot) -> None:
    """The refusal is ours: the high-S twin is a mathematically valid ECDSA signature."""
    import jwt

    token = mint(snapshot, issuer="tokensvc", account_sid=ACCOUNT, service_sid=SERVICE, identity="alice", ttl=600).token
    twin = _high_s(token)
    jwt.decode(twin, snapshot.active.public, algorithms=["ES256"])
    refused(twin, snapshot)


def test_minted_signatures_are_low_s(snapshot: Snapshot) -> None:
    for _ in range(1000):
        sig = unb64(snapshot.active.sign({"jti": "x"}).split(".")[2])
        assert len(sig) == 64 and int.from_bytes(sig[32:], "big") <= N // 2


def test_parse_refuses_utf16_json() -> None:
    body = b64(json.dumps({"a": 1}).encode("utf-16"))
    with pytest.raises(errors.TwilioError) as caught:
        parse(f"{b64(b'{}')}.{body}.AAAA")
    assert caught.value.code == 20101


# ---- end to end: a real server, HTTP and /v2/Connect ------------------------------------------------

@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any], dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("e2e")
    srv = start_server(tmp, extra_env={"TOKENSVC_MAX_TTL": str(MAX_TTL), "TOKENSVC_DEFAULT_TTL": "600"})
    try:
        svc = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "chat"}, auth=srv.auth).json()
        key = httpx.post(f"{srv.base}/2010-04-01/Accounts/{srv.account_sid}/Keys.json",
                         data={"FriendlyName": "backend"}, auth=srv.auth).json()
        yield srv, svc, key
    finally:
        srv.stop()


def _e2e_tokens(srv: Server, svc: dict[str, Any], key: dict[str, Any]) -> dict[str, str]:
    now = int(time.time())
    snap = load_snapshot(Path(srv.env["TOKENSVC_KEYS_DIR"]))
    common = dict(account_sid=srv.account_sid, key_sid=key["sid"], secret=key["secret"], service_sid=svc["sid"])

    def hand(**times: Any) -> str:
        return hs256(claims_text(sub=srv.account_sid, service_sid=svc["sid"], iss=key["sid"], **times),
                     secret=key["secret"])

    return {
        "twilio helper, ttl 10 years": twilio_token(10 * YEAR, **common),
        "twilio helper, ttl max+60": twilio_token(MAX_TTL + 60, **common),
        "hand-built, exp now+10y": hand(exp=now + 10 * YEAR),
        "hand-built, exp 2**63": hand(nbf=now, exp=2**63),
        "hand-built, exp 10**400": hand(exp=10**400),
        "hand-built, exp 10**400 with nbf": hand(nbf=now, exp=10**400),
        "hand-built, nbf NaN": hand(nbf="NaN", exp=now + 600),
        "hand-built, iat 1e400": hand(iat="1e400", exp=now + 600),
        "tokensvc-signed, ttl 10 years": mint(snap, issuer="tokensvc", account_sid=srv.account_sid,
                                              service_sid=svc["sid"], identity="alice", ttl=10 * YEAR).token,
        "tokensvc-signed, exp 10**400": es256(snap, claims_text(sub=srv.account_sid, service_sid=svc["sid"],
                                                                iss="tokensvc", iat=now, exp=10**400)),
    }


def _ws(srv: Server, token: str) -> Any:
    return connect(srv.base.replace("http://", "ws://") + "/v2/Connect", additional_headers={"X-Twilio-Token": token},
                   proxy=None, open_timeout=10)


def _expect_error_then_4001(ws: Any, code: int) -> None:
    frame = json.loads(ws.recv(timeout=5))
    assert frame["type"] == "error" and frame["code"] == code and frame["status"] == 401, frame
    try:
        extra = ws.recv(timeout=5)
    except Exception:  # ConnectionClosed: what we expect
        pass
    else:
        raise AssertionError(f"expected the close, got {extra!r}")
    assert ws.close_code == 4001, (ws.close_code, ws.close_reason)


def _assert_clean_log(srv: Server, tokens: list[str]) -> None:
    log = srv.logs()
    assert "Traceback" not in log and "OverflowError" not in log, log[-3000:]
    for token in tokens:
        for part in token.split("."):
            assert part not in log


UNBOUNDED = ["twilio helper, ttl 10 years", "twilio helper, ttl max+60", "hand-built, exp now+10y",
             "hand-built, exp 2**63", "hand-built, exp 10**400", "hand-built, exp 10**400 with nbf",
             "hand-built, nbf NaN", "hand-built, iat 1e400", "tokensvc-signed, ttl 10 years",
             "tokensvc-signed, exp 10**400"]


@pytest.mark.parametrize("name", UNBOUNDED)
def test_unbounded_tokens_are_refused_over_http(e2e: tuple[Server, dict[str, Any], dict[str, Any]], name: str) -> None:
    srv, svc, key = e2e
    token = _e2e_tokens(srv, svc, key)[name]
    r = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users", headers={"X-Twilio-Token": token}, timeout=10)
    assert r.status_code == 401 and r.json()["code"] == 20101, (r.status_code, r.text)
    _assert_clean_log(srv, [token])


@pytest.mark.parametrize("name", UNBOUNDED)
def test_unbounded_tokens_are_refused_on_connect(e2e: tuple[Server, dict[str, Any], dict[str, Any]], name: str) -> None:
    srv, svc, key = e2e
    token = _e2e_tokens(srv, svc, key)[name]
    with _ws(srv, token) as ws:
        _expect_error_then_4001(ws, 20101)
    _assert_clean_log(srv, [token])


def test_update_token_with_an_unbounded_token_closes_4001(e2e: tuple[Server, dict[str, Any], dict[str, Any]]) -> None:
    srv, svc, key = e2e
    common = dict(account_sid=srv.account_sid, key_sid=key["sid"], secret=key["secret"], service_sid=svc["sid"])
    with _ws(srv, twilio_token(600, **common, identity="upd")) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        bad = hs256(claims_text(sub=srv.account_sid, service_sid=svc["sid"], iss=key["sid"], identity="upd",
                                exp=10**400), secret=key["secret"])
        ws.send(json.dumps({"type": "updateToken", "token": bad}))
        _expect_error_then_4001(ws, 20101)
    _assert_clean_log(srv, [bad])


def test_tokens_of_exactly_max_ttl_work_over_http_and_connect(
        e2e: tuple[Server, dict[str, Any], dict[str, Any]]) -> None:
    srv, svc, key = e2e
    common = dict(account_sid=srv.account_sid, key_sid=key["sid"], secret=key["secret"], service_sid=svc["sid"])
    issued = httpx.post(f"{srv.base}/v2/Services/{svc['sid']}/Tokens", data={"Identity": "own", "Ttl": str(MAX_TTL)},
                        auth=srv.auth)
    assert issued.status_code == 201, issued.text
    for identity, token in (("backend", twilio_token(MAX_TTL, **common, identity="backend")),
                            ("own", issued.json()["token"])):
        r = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users/{identity}", headers={"X-Twilio-Token": token})
        assert r.status_code == 200, (identity, r.text)
        with _ws(srv, token) as ws:
            frame = json.loads(ws.recv(timeout=5))
            assert frame["type"] == "connected" and frame["user"]["identity"] == identity, frame
