"""OIDC discovery (issue 15): GET /.well-known/openid-configuration names the issuer of the
tokens tokensvc signs and its JWKS; `iss` is TOKENSVC_ISSUER (default the public URL, else
`tokensvc`); tokensvc refuses its own tokens of another issuer; and the README's PyJWT example,
run as written against a real `tokensvc serve`, verifies a token from the issuer alone.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from conftest import Api, assert_error, free_port, start_server
from tokensvc.app import create_app
from tokensvc.config import ConfigError, Settings, load_settings
from tokensvc.signing import load_snapshot
from tokensvc.store.accounts import create_account
from tokensvc.tokens import mint

README = Path(__file__).resolve().parents[1] / "README.md"
DISCOVERY = "/.well-known/openid-configuration"


def test_the_discovery_document_names_the_issuer_and_the_jwks(api: Api) -> None:
    r = api.client.get(DISCOVERY)  # public: no credentials
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "public, max-age=60"  # as the JWKS
    doc = r.json()
    assert doc == {
        "issuer": "tokensvc",  # no TOKENSVC_ISSUER and no public URL
        "jwks_uri": "http://testserver/.well-known/jwks.json",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "iat", "nbf", "exp", "jti", "grants"],
    }
    # No endpoint is claimed that tokensvc does not have.
    assert not any(name.endswith("_endpoint") for name in doc)
    jwks = api.client.get("/.well-known/jwks.json").json()
    assert jwks["keys"] and all(k["alg"] == "ES256" for k in jwks["keys"])


def test_discovery_answers_get_and_head_only(api: Api) -> None:
    get = api.client.get(DISCOVERY)
    head = api.client.head(DISCOVERY)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = api.client.request(method, DISCOVERY)
        assert_error(r, 405, 20004)
        assert r.headers["allow"] == "GET, HEAD"


def _app(tmp_path: Path, **settings: Any) -> tuple[TestClient, tuple[str, str]]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'oidc.db'}", keys_dir=tmp_path / "keys",
                              **settings))
    made = app.state.ctx.db.call(lambda conn: create_account(conn))
    return TestClient(app, raise_server_exceptions=False), (made.sid, made.auth_token)


def _issued_iss(client: TestClient, auth: tuple[str, str]) -> str:
    svc = client.post("/v2/Services", data={"FriendlyName": "s"}, auth=auth).json()
    token = client.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "a"}, auth=auth).json()["token"]
    return str(jwt.decode(token, options={"verify_signature": False})["iss"])


@pytest.mark.parametrize(("settings", "issuer", "jwks_base"), [
    ({"public_url": "https://chat.example.com"}, "https://chat.example.com", "https://chat.example.com"),
    ({"token_issuer": "https://auth.example.com/tokensvc"}, "https://auth.example.com/tokensvc", "http://testserver"),
    ({"token_issuer": "https://auth.example.com", "public_url": "https://chat.example.com"},
     "https://auth.example.com", "https://chat.example.com"),
])
def test_tokens_carry_the_issuer_the_document_names(tmp_path: Path, settings: dict[str, str], issuer: str,
                                                    jwks_base: str) -> None:
    client, auth = _app(tmp_path, **settings)
    with client:
        doc = client.get(DISCOVERY).json()
        assert doc["issuer"] == issuer and doc["jwks_uri"] == f"{jwks_base}/.well-known/jwks.json"
        assert _issued_iss(client, auth) == issuer


def test_the_default_issuer_is_what_earlier_versions_wrote(api: Api, service: dict[str, Any]) -> None:
    r = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": "a"})
    assert jwt.decode(r.json()["token"], options={"verify_signature": False})["iss"] == "tokensvc"


def test_an_own_token_of_another_issuer_is_refused(tmp_path: Path) -> None:
    client, auth = _app(tmp_path, token_issuer="https://auth.example.com")
    with client:
        svc = client.post("/v2/Services", data={"FriendlyName": "s"}, auth=auth).json()
        snapshot = client.app.state.ctx.keyring.current()  # type: ignore[attr-defined]

        def token(issuer: str) -> dict[str, str]:
            minted = mint(snapshot, issuer=issuer, account_sid=auth[0], service_sid=svc["sid"], identity="bob",
                          ttl=600)
            return {"X-Twilio-Token": minted.token}

        url = f"/v2/Services/{svc['sid']}/Users"
        assert client.get(url, headers=token("https://auth.example.com")).status_code == 200
        # Signed with the very key, but for another issuer (the old one after a change, or `tokensvc`):
        for other in ("tokensvc", "https://auth.example.com/", "https://AUTH.example.com", ""):
            assert_error(client.get(url, headers=token(other)), 401, 20101)


@pytest.mark.parametrize("value", ["tokensvc", "auth.example.com", "ftp://auth.example.com",
                                   "https://auth.example.com/?x=1", "https://auth.example.com/#f", "https://"])
def test_a_token_issuer_that_is_no_url_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="TOKENSVC_ISSUER"):
        load_settings({"TOKENSVC_ISSUER": value})


def test_token_issuer_is_read_from_the_environment() -> None:
    assert load_settings({"TOKENSVC_ISSUER": "https://auth.example.com/t/"}).issuer == "https://auth.example.com/t/"
    assert load_settings({"TOKENSVC_PUBLIC_URL": "https://chat.example.com/"}).issuer == "https://chat.example.com"
    assert load_settings({}).issuer == "tokensvc"


def _readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- tests/test_oidc.py runs this block against a real server -->\n```python\n(.*?)```",
                      text, re.S)
    assert match, "README.md lost its PyJWT example"
    return match.group(1)


def test_the_readme_pyjwt_example_verifies_a_token_from_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"  # what TOKENSVC_ISSUER is here: the URL consumers reach
    srv = start_server(tmp_path, port=port, extra_env={"TOKENSVC_ISSUER": issuer})
    try:
        with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
            svc = http.post("/v2/Services", data={"FriendlyName": "oidc"}).json()
            issued = http.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "alice@example.com"}).json()
        code, replaced = re.subn(r'^ISSUER = ".*?"', f'ISSUER = "{issuer}"', _readme_example(), flags=re.M)
        assert replaced == 1
        example: dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), example)  # the README's code, as a reader runs it

        claims = example["verify"](issued["token"])
        assert claims["iss"] == issuer and claims["sub"] == srv.account_sid
        assert claims["grants"] == {"identity": "alice@example.com", "chat": {"service_sid": svc["sid"]}}
        assert claims["exp"] > time.time()

        # The same key, another issuer: the example refuses it, as the server does.
        snapshot = load_snapshot(Path(srv.env["TOKENSVC_KEYS_DIR"]))
        foreign = mint(snapshot, issuer="https://elsewhere.example.com", account_sid=srv.account_sid,
                       service_sid=svc["sid"], identity="alice@example.com", ttl=600).token
        with pytest.raises(jwt.InvalidIssuerError):
            example["verify"](foreign)
        r = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users", headers={"X-Twilio-Token": foreign})
        assert r.status_code == 401 and r.json()["code"] == 20101
        # A token of the server, tampered with, fails its signature.
        head, body, sig = issued["token"].split(".")
        with pytest.raises(jwt.InvalidSignatureError):
            example["verify"](f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}")
    finally:
        srv.stop()
