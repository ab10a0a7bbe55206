"""Malformed input never breaks it: a Twilio-shaped 4xx, never a 5xx or a half-written record."""

from __future__ import annotations

import json

import pytest

from conftest import Api, assert_error


def test_invalid_utf8_form_body(api: Api, service: dict) -> None:
    r = api.client.post(f"/v2/Services/{service['sid']}/Users", content=b"Identity=%FF%FE%00abc",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, auth=api.auth)
    assert_error(r, 400, 20001)
    r = api.client.post(f"/v2/Services/{service['sid']}/Users", content=b"Identity=\xff\xfe",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, auth=api.auth)
    assert_error(r, 400, 20001)


def test_json_body_instead_of_form(api: Api, service: dict) -> None:
    r = api.client.post(f"/v2/Services/{service['sid']}/Users", content=json.dumps({"Identity": "x"}),
                        headers={"Content-Type": "application/json"}, auth=api.auth)
    assert_error(r, 400, 20001)
    assert api.get(f"/v2/Services/{service['sid']}/Users").json()["users"] == []


@pytest.mark.parametrize("identity", ["a\x00b", "\x00"])
def test_nul_bytes_in_identity(api: Api, service: dict, identity: str) -> None:
    assert_error(api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": identity}), 400, 20001)
    assert_error(api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": identity}), 400, 20001)


def test_one_megabyte_attributes_is_refused_before_being_read(api: Api, service: dict) -> None:
    r = api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "big", "Attributes": "x" * (1 << 20)})
    assert_error(r, 413, 20001)


def test_attributes_just_over_16k_is_50303(api: Api, service: dict) -> None:
    attrs = json.dumps({"k": "v" * (16 * 1024)})
    assert_error(api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "big", "Attributes": attrs}), 400, 50303)


def test_deeply_nested_attributes(api: Api, service: dict) -> None:
    attrs = "[" * 5000 + "]" * 5000
    r = api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "deep", "Attributes": attrs})
    assert r.status_code in (201, 400) and r.status_code < 500


def test_garbage_in_path_segments(api: Api, service: dict) -> None:
    for path in ("/v2/Services/%FF", f"/v2/Services/{service['sid']}/Users/%FF%FE",
                 f"/v2/Services/{service['sid']}/Roles/x", "/v2/Services/IS" + "z" * 32,
                 "/2010-04-01/Accounts/x/Keys/y.json"):
        r = api.get(path)
        assert r.status_code in (404, 401, 403), (path, r.status_code)
        assert r.json()["code"] in (20404, 20003, 20403)


def test_unknown_route_and_wrong_method(api: Api) -> None:
    assert_error(api.client.get("/nope"), 404, 20404)
    assert_error(api.client.put("/v2/Services", auth=api.auth), 405, 20004)
    assert_error(api.client.patch(f"/v2/Services/IS{'0' * 32}", auth=api.auth), 405, 20004)
    assert_error(api.client.get(f"/v2/Services/IS{'0' * 32}/Tokens", auth=api.auth), 405, 20004)


def test_unexpected_exception_is_a_logged_500_with_request_id(api: Api, caplog) -> None:
    from starlette.routing import Route

    async def boom(request):
        raise RuntimeError("kaboom secret-value")

    api.app.starlette.router.routes.append(Route("/boom", boom))
    with caplog.at_level("ERROR", logger="tokensvc"):
        r = api.client.get("/boom")
    body = assert_error(r, 500, 20500)
    request_id = r.headers["x-request-id"]
    assert request_id in body["message"]
    assert "kaboom" not in r.text and "Traceback" not in r.text
    assert any(request_id in rec.getMessage() for rec in caplog.records)


def test_request_id_is_echoed(api: Api) -> None:
    r = api.client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = api.client.get("/healthz", headers={"X-Request-Id": "bad id\n"})
    assert r.headers["x-request-id"] != "bad id\n" and len(r.headers["x-request-id"]) == 32


def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path) -> None:
    from starlette.testclient import TestClient

    from conftest import free_port
    from tokensvc.app import create_app
    from tokensvc.config import Settings

    nobody = f"postgresql+psycopg://tokensvc@127.0.0.1:{free_port()}/none?connect_timeout=2"
    app = create_app(Settings(database_url=nobody, keys_dir=tmp_path / "k"), migrate=False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_a_host_header_that_is_not_a_host_does_not_reach_urls(api: Api, service: dict) -> None:
    r = api.get(f"/v2/Services/{service['sid']}", headers={"Host": "evil.example/x?y"})
    assert r.status_code == 200
    assert "evil" not in r.json()["url"] and r.json()["url"].startswith("http://")
    r = api.get(f"/v2/Services/{service['sid']}", headers={"Host": "chat.example.com:8443"})
    assert r.json()["url"] == f"http://chat.example.com:8443/v2/Services/{service['sid']}"
