"""urls.base_url: one rule for the links of HTTP responses and of /v2/Connect frames."""

from __future__ import annotations

from tokensvc.config import Settings
from tokensvc.urls import base_url

HTTP = {"type": "http", "scheme": "https", "server": ("10.0.0.5", 8443)}
WS = {"type": "websocket", "scheme": "wss", "server": ("10.0.0.5", 8443)}


def test_public_url_wins_over_the_request() -> None:
    settings = Settings(public_url="https://chat.example.com")
    assert base_url(settings, HTTP, "evil.example") == "https://chat.example.com"
    assert base_url(settings, WS, "evil.example") == "https://chat.example.com"


def test_request_scheme_and_host_without_public_url() -> None:
    assert base_url(Settings(), HTTP, "api.example:443") == "https://api.example:443"
    assert base_url(Settings(), {**HTTP, "scheme": "http"}, "[::1]:8080") == "http://[::1]:8080"


def test_handshake_scheme_becomes_http_or_https() -> None:
    assert base_url(Settings(), WS, "api.example") == "https://api.example"
    assert base_url(Settings(), {**WS, "scheme": "ws"}, "api.example") == "http://api.example"


def test_missing_or_malformed_host_falls_back_to_the_listening_address() -> None:
    for scope in (HTTP, WS):
        for host in (None, "", "a b", "x/y", "host\r\nX: 1"):
            assert base_url(Settings(), scope, host) == "https://10.0.0.5:8443"
    assert base_url(Settings(), {"type": "http", "server": ("sock", None)}, None) == "http://sock"
