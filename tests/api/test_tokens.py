"""The token endpoint, token format, the verifier's forged-token matrix, client principals (SPEC §4, §5)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from conftest import Api, assert_error, basic
from tokensvc.signing import generate_key, load_snapshot


def tokens_url(service: dict) -> str:
    return f"/v2/Services/{service['sid']}/Tokens"


def issue(api: Api, service: dict, identity: str = "alice", **extra: str) -> dict:
    r = api.post(tokens_url(service), {"Identity": identity, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_token_endpoint_provisions_then_reuses_the_user(api: Api, service: dict) -> None:
    first = issue(api, service, "alice")
    assert set(first) == {"token", "identity", "user_sid", "service_sid", "account_sid", "ttl", "expires_at",
                          "user_created"}
    assert first["user_created"] is True and first["ttl"] == 3600 and first["identity"] == "alice"
    assert first["account_sid"] == api.account_sid and first["service_sid"] == service["sid"]
    second = issue(api, service, "alice")
    assert second["user_created"] is False and second["user_sid"] == first["user_sid"]
    user = api.get(f"/v2/Services/{service['sid']}/Users/alice").json()
    assert user["sid"] == first["user_sid"] and user["role_sid"] == service["default_service_role_sid"]


def test_token_format_and_jwks_verification(api: Api, service: dict) -> None:
    body = issue(api, service, "bob", Ttl="120")
    token = body["token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and header["cty"] == "twilio-fpa;v=1"
    jwks = api.client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"])
    assert claims["sub"] == api.account_sid and claims["iss"]
    assert claims["grants"] == {"identity": "bob", "chat": {"service_sid": service["sid"]}}
    assert claims["exp"] - claims["iat"] == 120 and claims["nbf"] <= claims["iat"] + 1
    assert body["ttl"] == 120
    assert body["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    other = jwt.decode(issue(api, service, "bob")["token"], options={"verify_signature": False})
    assert other["jti"] != claims["jti"]


@pytest.mark.parametrize("ttl, status, code", [
    ("86401", 400, 20157), ("0", 400, 20001), ("-5", 400, 20001), ("abc", 400, 20001), ("1.5", 400, 20001),
    ("²", 400, 20001), ("9" * 40, 400, 20001),
])
def test_bad_ttl(api: Api, service: dict, ttl: str, status: int, code: int) -> None:
    assert_error(api.post(tokens_url(service), {"Identity": "t", "Ttl": ttl}), status, code)


@pytest.mark.parametrize("data, code", [({}, 20001), ({"Identity": ""}, 20001), ({"Identity": "x" * 257}, 50207),
                                        ({"Identity": "US" + "b" * 32}, 50206)])
def test_token_identity_validation(api: Api, service: dict, data: dict, code: int) -> None:
    assert_error(api.post(tokens_url(service), data), 400, code)


def test_token_for_unknown_or_foreign_service_is_404(api: Api, service: dict) -> None:
    assert_error(api.post(f"/v2/Services/IS{'0' * 32}/Tokens", {"Identity": "a"}), 404, 20404)
    other = api.new_account()
    assert_error(api.post(tokens_url(service), {"Identity": "a"}, auth=other), 404, 20404)


def test_wrong_credentials_are_401_20003(api: Api, service: dict) -> None:
    r = api.post(tokens_url(service), {"Identity": "a"}, auth=(api.account_sid, "wrong"))
    assert_error(r, 401, 20003)
    assert r.headers["www-authenticate"] == 'Basic realm="tokensvc"'
    assert_error(api.client.post(tokens_url(service), data={"Identity": "a"}), 401, 20003)
    assert_error(api.client.post(tokens_url(service), data={"Identity": "a"},
                                 headers={"Authorization": "Basic !!!"}), 401, 20003)
    assert_error(api.client.post(tokens_url(service), data={"Identity": "a"},
                                 headers={"Authorization": "Bearer x"}), 401, 20003)
    assert_error(api.client.post(tokens_url(service), data={"Identity": "a"},
                                 headers=basic("SK" + "0" * 32, "x")), 401, 20003)


# ---- API keys -------------------------------------------------------------------------------

def new_key(api: Api, name: str = "backend") -> dict:
    r = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {"FriendlyName": name})
    assert r.status_code == 201, r.text
    return r.json()


def test_api_key_crud_and_rfc2822_dates(api: Api) -> None:
    key = new_key(api)
    assert set(key) == {"sid", "friendly_name", "date_created", "date_updated", "secret"}
    assert key["sid"].startswith("SK") and len(key["secret"]) >= 32
    assert key["date_created"].endswith("+0000") and "," in key["date_created"]
    url = f"/2010-04-01/Accounts/{api.account_sid}/Keys/{key['sid']}.json"
    fetched = api.get(url).json()
    assert "secret" not in fetched and fetched["friendly_name"] == "backend"
    listed = api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json").json()
    assert [k["sid"] for k in listed["keys"]] == [key["sid"]] and "secret" not in listed["keys"][0]
    assert api.post(url, {"FriendlyName": "renamed"}).json()["friendly_name"] == "renamed"
    assert api.delete(url).status_code == 204
    assert_error(api.get(url), 404, 20404)


def test_api_key_works_as_basic_credentials_until_deleted(api: Api, service: dict) -> None:
    key = new_key(api)
    creds = (key["sid"], key["secret"])
    r = api.post(tokens_url(service), {"Identity": "k"}, auth=creds)
    assert r.status_code == 201 and r.json()["account_sid"] == api.account_sid
    assert api.get(f"/v2/Services/{service['sid']}/Users/k", auth=creds).status_code == 200
    assert_error(api.post(tokens_url(service), {"Identity": "k"}, auth=(key["sid"], "wrong")), 401, 20003)
    assert api.delete(f"/2010-04-01/Accounts/{api.account_sid}/Keys/{key['sid']}.json").status_code == 204
    assert_error(api.post(tokens_url(service), {"Identity": "k"}, auth=creds), 401, 20003)


def test_api_keys_are_managed_with_account_credentials_only(api: Api) -> None:
    key = new_key(api)
    creds = (key["sid"], key["secret"])
    assert_error(api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", auth=creds), 403, 20403)
    assert_error(api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {}, auth=creds), 403, 20403)


def test_api_keys_of_another_account_are_404(api: Api) -> None:
    key = new_key(api)
    other = api.new_account()
    assert_error(api.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", auth=other), 404, 20404)
    assert_error(api.get(f"/2010-04-01/Accounts/{other[0]}/Keys/{key['sid']}.json", auth=other), 404, 20404)


def twilio_token(account_sid: str, key: dict, service_sid: str, identity: str, ttl: int = 3600) -> str:
    token = AccessToken(account_sid, key["sid"], key["secret"], identity=identity, ttl=ttl)
    token.add_grant(ChatGrant(service_sid=service_sid))
    return token.to_jwt()


def test_twilio_minted_token_is_accepted_and_provisions(api: Api, service: dict) -> None:
    key = new_key(api)
    token = twilio_token(api.account_sid, key, service["sid"], "from-twilio")
    r = api.client.get(f"/v2/Services/{service['sid']}/Users/from-twilio", headers={"X-Twilio-Token": token})
    assert r.status_code == 200, r.text
    assert r.json()["identity"] == "from-twilio"
    # deleting the key makes its tokens fail at once
    api.delete(f"/2010-04-01/Accounts/{api.account_sid}/Keys/{key['sid']}.json")
    r = api.client.get(f"/v2/Services/{service['sid']}/Users/from-twilio", headers={"X-Twilio-Token": token})
    assert_error(r, 401, 20101)


# ---- the forged-token matrix -------------------------------------------------------------------

def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict, dict, str]:
    h, p, s = token.split(".")
    pad = lambda x: x + "=" * (-len(x) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(h))), json.loads(base64.urlsafe_b64decode(pad(p))), s


def forged_tokens(api: Api, service: dict, settings) -> dict[str, tuple[str, int]]:
    good = issue(api, service, "victim")["token"]
    header, claims, sig = _parts(good)
    now = int(time.time())
    snap = load_snapshot(settings.keys_dir)
    public_pem = snap.active.public.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_json = json.dumps(api.client.get("/.well-known/jwks.json").json()["keys"][0])
    # a key that is not in the keyring, with its own kid
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        kid = generate_key(Path(tmp))
        stray = serialization.load_pem_private_key((Path(tmp) / f"{kid}.pem").read_bytes(), None)
    other_service = api.new_service("other")
    other_account = api.new_account()
    other_acc_service = api.post("/v2/Services", {"FriendlyName": "x"}, auth=other_account).json()
    key = new_key(api)

    def es256(c: dict, **hdr: str) -> str:
        return snap.active.sign(c) if not hdr else jwt.encode(c, snap.active.private, "ES256", headers=hdr)

    def hmac_token(secret: bytes, c: dict) -> str:
        import hashlib
        import hmac

        h = _b64({"alg": "HS256", "typ": "JWT", "kid": header["kid"]})
        p = _b64(c)
        s = base64.urlsafe_b64encode(hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()).rstrip(b"=")
        return f"{h}.{p}.{s.decode()}"

    grants = lambda sid, ident="victim": {"identity": ident, "chat": {"service_sid": sid}}  # noqa: E731
    base = dict(claims)
    return {
        "alg none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", 20101),
        "alg none with kid": (f"{_b64({'alg': 'none', 'kid': header['kid']})}.{_b64(claims)}.", 20101),
        "tampered payload": (
            f"{good.split('.')[0]}.{_b64(dict(claims, grants=grants(service['sid'], 'admin')))}.{sig}", 20101),
        "tampered signature": (good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), 20101),
        "HS256 with the PEM public key": (hmac_token(public_pem, claims), 20101),
        "HS256 with the JWK": (hmac_token(jwk_json.encode(), claims), 20101),
        "unknown kid": (jwt.encode(claims, stray, "ES256", headers={"kid": kid, "cty": "twilio-fpa;v=1"}), 20101),
        "no kid": (jwt.encode(claims, snap.active.private, "ES256"), 20101),
        "RS/other alg": (f"{_b64({'alg': 'RS256', 'kid': header['kid']})}.{_b64(claims)}.{sig}", 20101),
        "other service in grant": (es256(dict(base, grants=grants(other_service["sid"]))), 20101),
        "service of another account": (es256(dict(base, grants=grants(other_acc_service["sid"]))), 20101),
        "wrong account sub": (es256(dict(base, sub=other_account[0])), 20101),
        "missing exp": (es256({k: v for k, v in base.items() if k != "exp"}), 20101),
        "missing identity": (es256(dict(base, grants={"chat": {"service_sid": service["sid"]}})), 20101),
        "missing chat grant": (es256(dict(base, grants={"identity": "victim"})), 20101),
        # JSON can escape a lone surrogate; no database can store it (and the statement batched with it would fail)
        "identity not Unicode text": (es256(dict(base, grants=grants(service["sid"], "vic\ud800tim")),
                                            kid=header["kid"], cty="twilio-fpa;v=1"), 20101),
        "not yet valid": (es256(dict(base, nbf=now + 600, exp=now + 1200)), 20101),
        "expired": (es256(dict(base, iat=now - 700, nbf=now - 700, exp=now - 60)), 20104),
        "expired twilio token": (twilio_token(api.account_sid, key, service["sid"], "victim", ttl=-60), 20104),
        "twilio token with wrong secret": (
            twilio_token(api.account_sid, dict(key, secret="x" * 32), service["sid"], "v"), 20101),
        "twilio token of another account": (twilio_token(other_account[0], key, service["sid"], "v"), 20101),
        "garbage": ("not.a.token", 20101),
        "empty": ("", 20101),
    }


def test_forged_tokens_are_rejected(api: Api, service: dict, settings) -> None:
    cases = forged_tokens(api, service, settings)
    for name, (token, code) in cases.items():
        r = api.client.get(f"/v2/Services/{service['sid']}/Users", headers={"X-Twilio-Token": token})
        assert r.status_code == 401 and r.json()["code"] == code, (name, r.status_code, r.text)
    # nothing was provisioned by a forged token
    names = [u["identity"] for u in api.get(f"/v2/Services/{service['sid']}/Users").json()["users"]]
    assert names == ["victim"]


def test_clock_skew_of_30s_is_tolerated(api: Api, service: dict, settings) -> None:
    snap = load_snapshot(settings.keys_dir)
    now = int(time.time())
    claims = {"jti": "j", "iss": "tokensvc", "sub": api.account_sid, "iat": now + 20, "nbf": now + 20,
              "exp": now + 600, "grants": {"identity": "skewed", "chat": {"service_sid": service["sid"]}}}
    r = api.client.get(f"/v2/Services/{service['sid']}/Users", headers={"X-Twilio-Token": snap.active.sign(claims)})
    assert r.status_code == 200
    just_expired = dict(claims, iat=now - 100, nbf=now - 100, exp=now - 20)
    r = api.client.get(f"/v2/Services/{service['sid']}/Users",
                       headers={"X-Twilio-Token": snap.active.sign(just_expired)})
    assert r.status_code == 200


# ---- client principals ---------------------------------------------------------------------

def client_headers(api: Api, service: dict, identity: str) -> dict[str, str]:
    return {"X-Twilio-Token": issue(api, service, identity)["token"]}


def test_client_reads_users_of_its_service_and_edits_itself(api: Api, service: dict) -> None:
    api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "other"})
    h = client_headers(api, service, "me")
    users = f"/v2/Services/{service['sid']}/Users"
    assert api.client.get(users, headers=h).status_code == 200
    assert api.client.get(f"{users}/other", headers=h).status_code == 200
    r = api.client.post(f"{users}/me", data={"FriendlyName": "Me!", "Attributes": '{"a":1}'}, headers=h)
    assert r.status_code == 200 and r.json()["friendly_name"] == "Me!"
    assert_error(api.client.post(f"{users}/other", data={"FriendlyName": "x"}, headers=h), 403, 20403)
    assert_error(api.client.post(f"{users}/me", data={"RoleSid": service["default_service_role_sid"]}, headers=h),
                 403, 20403)
    assert_error(api.client.post(users, data={"Identity": "new"}, headers=h), 403, 20403)
    assert_error(api.client.delete(f"{users}/other", headers=h), 403, 20403)
    assert_error(api.client.get("/v2/Services", headers=h), 403, 20403)
    assert_error(api.client.get(f"/v2/Services/{service['sid']}", headers=h), 403, 20403)
    assert_error(api.client.get(f"/v2/Services/{service['sid']}/Roles", headers=h), 403, 20403)
    assert_error(api.client.post(tokens_url(service), data={"Identity": "x"}, headers=h), 403, 20403)
    assert_error(api.client.get(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", headers=h), 403, 20403)


def test_client_with_edit_any_user_info_edits_others(api: Api, service: dict) -> None:
    roles = api.get(f"/v2/Services/{service['sid']}/Roles").json()["roles"]
    admin = next(r for r in roles if r["friendly_name"] == "service admin")
    api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "boss", "RoleSid": admin["sid"]})
    api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "other"})
    h = client_headers(api, service, "boss")
    r = api.client.post(f"/v2/Services/{service['sid']}/Users/other", data={"FriendlyName": "edited"}, headers=h)
    assert r.status_code == 200 and r.json()["friendly_name"] == "edited"


def test_custom_role_without_edit_own_user_info(api: Api, service: dict) -> None:
    role = api.post(f"/v2/Services/{service['sid']}/Roles",
                    {"FriendlyName": "readonly", "Type": "deployment", "Permission": "joinChannel"}).json()
    api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "ro", "RoleSid": role["sid"]})
    h = client_headers(api, service, "ro")
    assert api.client.get(f"/v2/Services/{service['sid']}/Users/ro", headers=h).status_code == 200
    r = api.client.post(f"/v2/Services/{service['sid']}/Users/ro", data={"FriendlyName": "x"}, headers=h)
    assert_error(r, 403, 20403)


def test_token_for_another_service_than_the_path_is_401(api: Api, service: dict) -> None:
    other = api.new_service("other")
    h = client_headers(api, service, "me")
    assert_error(api.client.get(f"/v2/Services/{other['sid']}/Users", headers=h), 401, 20101)
    assert api.get(f"/v2/Services/{other['sid']}/Users").json()["users"] == []


def test_presenting_a_valid_token_auto_provisions(api: Api, service: dict, settings) -> None:
    snap = load_snapshot(settings.keys_dir)
    now = int(time.time())
    claims = {"jti": "j", "iss": "tokensvc", "sub": api.account_sid, "iat": now, "nbf": now, "exp": now + 60,
              "grants": {"identity": "newcomer", "chat": {"service_sid": service["sid"]}}}
    r = api.client.get(f"/v2/Services/{service['sid']}/Users/newcomer",
                       headers={"X-Twilio-Token": snap.active.sign(claims)})
    assert r.status_code == 200 and r.json()["identity"] == "newcomer"


@pytest.mark.parametrize("mutate", [
    lambda h, p, s: f"{h}.{p}.{s}=",            # padding is not base64url
    lambda h, p, s: f"{h}.{p}.{s[:-2]}",         # a short signature
    lambda h, p, s: f"{h}.{p}",                  # two segments
    lambda h, p, s: f"{h}.{p}.{s}.{s}",          # four segments
    lambda h, p, s: f"{_b64([1])}.{p}.{s}",      # a header that is not an object
    lambda h, p, s: f"{h}.{_b64('x')}.{s}",      # claims that are not an object
    lambda h, p, s: f"{h}.{p}.\xe9{s}",           # not ASCII
])
def test_malformed_jws_is_20101(api: Api, service: dict, mutate) -> None:
    h, p, s = issue(api, service, "m")["token"].split(".")
    token = mutate(h, p, s).encode("latin-1")
    r = api.client.get(f"/v2/Services/{service['sid']}/Users", headers={"X-Twilio-Token": token})
    assert_error(r, 401, 20101)



# ---- one token, one spelling ---------------------------------------------------------------------

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _unb64(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def _respelled(token: str, how: str, settings) -> str:
    h, p, s = token.split(".")
    if how == "padding":
        return f"{h}.{p}.{s}=="
    if how == "standard alphabet":
        return f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}"
    if how == "non-canonical last char":  # 64 bytes: the last character carries 4 unused bits
        return f"{h}.{p}.{s[:-1]}{ALPHABET[ALPHABET.index(s[-1]) | 1]}"
    if how == "high-S":
        raw = _unb64(s)
        high = P256_ORDER - int.from_bytes(raw[32:], "big")
        return f"{h}.{p}.{base64.urlsafe_b64encode(raw[:32] + high.to_bytes(32, 'big')).rstrip(b'=').decode()}"
    if how == "crit":
        snap = load_snapshot(settings.keys_dir)
        header = dict(json.loads(_unb64(h)), crit=["exp"])
        return jwt.encode(json.loads(_unb64(p)), snap.active.private, "ES256", headers=header)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["padding", "standard alphabet", "non-canonical last char", "high-S", "crit"])
def test_other_spellings_of_a_valid_token_are_20101(api: Api, service: dict, settings, how: str) -> None:
    users = f"/v2/Services/{service['sid']}/Users"
    for _ in range(50):  # a token whose signature has a '-' or '_' to respell
        token = issue(api, service, "spelled")["token"]
        if how != "standard alphabet" or {"-", "_"} & set(token.split(".")[2]):
            break
    assert api.client.get(users, headers={"X-Twilio-Token": token}).status_code == 200
    variant = _respelled(token, how, settings)
    assert variant != token
    assert_error(api.client.get(users, headers={"X-Twilio-Token": variant}), 401, 20101)
