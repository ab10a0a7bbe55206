"""X-Forwarded-For and X-Forwarded-Proto are believed only from TOKENSVC_TRUSTED_PROXIES.

uvicorn trusts them from 127.0.0.1 by default, where tokensvc listens: a local client could then
pick a new address for every wrong password and never meet the failed-login limit.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import Server, assert_error, start_server
from tokensvc.config import ConfigError, load_settings

LIMIT = 3


def wrong_password(srv: Server, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return httpx.get(f"{srv.base}/v2/Services", auth=(srv.account_sid, "not-the-token"), headers=headers)


def create_service(srv: Server, proto: str) -> dict[str, str]:
    r = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "svc"}, auth=srv.auth,
                   headers={"X-Forwarded-Proto": proto})
    assert r.status_code == 201, r.text
    return r.json()


def test_by_default_x_forwarded_for_does_not_escape_the_failed_login_limit(tmp_path: Path) -> None:
    srv = start_server(tmp_path, extra_env={"TOKENSVC_AUTH_FAIL_LIMIT": str(LIMIT)})
    try:
        for i in range(LIMIT):
            assert_error(wrong_password(srv, f"203.0.113.{i + 1}"), 401, 20003)
        refused = wrong_password(srv, "203.0.113.200")
        assert_error(refused, 429, 20429)
        assert int(refused.headers["Retry-After"]) > 0
    finally:
        srv.stop()


def test_by_default_x_forwarded_proto_does_not_change_returned_urls(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        svc = create_service(srv, "https")
        assert svc["url"].startswith(f"{srv.base}/v2/Services/IS"), svc["url"]
    finally:
        srv.stop()


def test_a_trusted_proxy_s_x_forwarded_for_is_the_client_address(tmp_path: Path) -> None:
    srv = start_server(tmp_path, extra_env={"TOKENSVC_AUTH_FAIL_LIMIT": str(LIMIT),
                                            "TOKENSVC_TRUSTED_PROXIES": "127.0.0.1"})
    try:
        for _ in range(LIMIT):
            assert_error(wrong_password(srv, "203.0.113.1"), 401, 20003)
        assert_error(wrong_password(srv, "203.0.113.1"), 429, 20429)
        # another client behind the same proxy has its own budget
        assert_error(wrong_password(srv, "203.0.113.2"), 401, 20003)
        ok = httpx.get(f"{srv.base}/v2/Services", auth=srv.auth, headers={"X-Forwarded-For": "203.0.113.3"})
        assert ok.status_code == 200, ok.text
        svc = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "svc"}, auth=srv.auth,
                         headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.3"})
        assert svc.status_code == 201, svc.text
        assert svc.json()["url"].startswith("https://127.0.0.1:"), svc.json()["url"]
    finally:
        srv.stop()


def test_trusted_proxies_parse_addresses_and_networks() -> None:
    assert load_settings({}).trusted_proxies == ()
    parsed = load_settings({"TOKENSVC_TRUSTED_PROXIES": " 127.0.0.1, 10.1.2.3/8 ,::1,, fd00::/8"}).trusted_proxies
    assert parsed == ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8")


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "127.0.0.1;10.0.0.1", "*", "1.2.3"])
def test_trusted_proxies_refuse_what_is_not_an_address(value: str) -> None:
    with pytest.raises(ConfigError, match="TOKENSVC_TRUSTED_PROXIES"):
        load_settings({"TOKENSVC_TRUSTED_PROXIES": value})
