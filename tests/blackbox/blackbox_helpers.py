"""Black-box helpers: talk to a real `tokensvc serve` over HTTP only.

Everything here talks to the server the way a customer would: raw HTTP (httpx), the official
`twilio` package, and the `tokensvc` CLI run as a subprocess against the same database. Nothing
imports tokensvc itself; the only thing reused from tests/conftest.py is `start_server`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from conftest import start_server  # tests/conftest.py, imported the way the other test modules do

PG_URL = os.environ.get("TOKENSVC_TEST_DATABASE_URL") or None

ERROR_KEYS = {"code", "message", "more_info", "status"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
RFC2822 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                     r"\d{4} \d{2}:\d{2}:\d{2} \+0000$")
# Property names of Twilio's Chat v2 OpenAPI schemas (../shared/reference/twilio_chat_v2.json).
SERVICE_FIELDS = {
    "sid", "account_sid", "friendly_name", "date_created", "date_updated", "default_service_role_sid",
    "default_channel_role_sid", "default_channel_creator_role_sid", "read_status_enabled",
    "reachability_enabled", "typing_indicator_timeout", "consumption_report_interval", "limits",
    "pre_webhook_url", "post_webhook_url", "webhook_method", "webhook_filters", "pre_webhook_retry_count",
    "post_webhook_retry_count", "notifications", "media", "url", "links",
}
ROLE_FIELDS = {"sid", "account_sid", "service_sid", "friendly_name", "type", "permissions", "date_created",
               "date_updated", "url"}
# SPEC §3 lists the user fields exactly.
USER_FIELDS = {"sid", "account_sid", "service_sid", "role_sid", "identity", "attributes", "is_online",
               "is_notifiable", "friendly_name", "joined_channels_count", "date_created", "date_updated",
               "links", "url"}
META_KEYS = {"page", "page_size", "first_page_url", "previous_page_url", "url", "next_page_url", "key"}


def sid_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{prefix}[0-9a-f]{{32}}$")


def assert_error(r: httpx.Response, status: int, code: int | None = None) -> dict[str, Any]:
    """SPEC §2: exactly {code, message, more_info, status}, JSON, right status/code."""
    assert r.status_code == status, (r.request.method, str(r.request.url), r.status_code, r.text[:500])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers.get("content-type")
    body = r.json()
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["code"], int) and not isinstance(body["code"], bool), body
    if code is not None:
        assert body["code"] == code, body
    assert body["status"] == status, body
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}", body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]
    return body


def assert_not_5xx(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, str(r.request.url), r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert_error(r, r.status_code)


def form(pairs: list[tuple[str, str]], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """httpx kwargs for a form body with repeated names (`Permission=a&Permission=b`)."""
    return {"content": urlencode(pairs).encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


@dataclass
class BB:
    """One running tokensvc and handy ways to talk to it."""

    server: Any
    tmp: Path
    http: httpx.Client
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def auth(self) -> tuple[str, str]:
        return self.server.auth

    @property
    def account_sid(self) -> str:
        return self.server.account_sid

    @property
    def keys_dir(self) -> Path:
        return Path(self.server.env["TOKENSVC_KEYS_DIR"])

    def client(self, auth: Any = None, **kw: Any) -> httpx.Client:
        """A fresh httpx client on this server (closed at module teardown)."""
        c = httpx.Client(base_url=self.base, auth=auth, timeout=30, **kw)
        self._clients.append(c)
        return c

    def twilio(self, username: str | None = None, password: str | None = None,
               account_sid: str | None = None) -> Any:
        """The official twilio package pointed at this server."""
        from twilio.rest import Client

        if username is None:
            username, password = self.auth
        c = Client(username, password, account_sid)
        c.chat.base_url = self.base
        c.api.base_url = self.base
        return c

    def new_service(self, name: str = "svc", auth: Any = None) -> dict[str, Any]:
        r = self.http.post("/v2/Services", data={"FriendlyName": name}, auth=auth or self.auth)
        assert r.status_code == 201, r.text
        return r.json()

    def new_user(self, service_sid: str, identity: str, **form: str) -> dict[str, Any]:
        r = self.http.post(f"/v2/Services/{service_sid}/Users", data={"Identity": identity, **form})
        assert r.status_code == 201, r.text
        return r.json()

    def roles(self, service_sid: str, auth: Any = None) -> dict[str, dict[str, Any]]:
        r = self.http.get(f"/v2/Services/{service_sid}/Roles", auth=auth or self.auth)
        assert r.status_code == 200, r.text
        return {role["friendly_name"]: role for role in r.json()["roles"]}

    def token(self, service_sid: str, identity: str, auth: Any = None, **form: str) -> dict[str, Any]:
        r = self.http.post(f"/v2/Services/{service_sid}/Tokens", data={"Identity": identity, **form},
                           auth=auth or self.auth)
        assert r.status_code == 201, r.text
        return r.json()

    def new_api_key(self, name: str = "key") -> dict[str, Any]:
        r = self.http.post(f"/2010-04-01/Accounts/{self.account_sid}/Keys.json", data={"FriendlyName": name})
        assert r.status_code == 201, r.text
        return r.json()

    def new_account(self) -> tuple[str, str]:
        """`tokensvc accounts create` against the server's database; returns (sid, auth token)."""
        out = subprocess.run([sys.executable, "-m", "tokensvc.cli", "accounts", "create"],
                             env=self.server.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        text = out.stdout + out.stderr
        sid = re.search(r"\bAC[0-9a-f]{32}\b", text)
        token = re.search(r"auth[_ ]token\s*[=:]\s*(\S+)", text, re.I)
        assert sid and token, text
        return sid.group(0), token.group(1)


# --- the server fixture -------------------------------------------------------------------------
# There is deliberately no tests/blackbox/conftest.py: a second module named `conftest` would
# shadow tests/conftest.py for the other test modules that do `from conftest import ...`. Each
# black-box module imports `bb` from here instead.

_shared: BB | None = None


def _start(tmp: Path, extra_env: dict[str, str] | None = None) -> BB:
    srv = start_server(tmp, name="bb", extra_env=extra_env)
    return BB(srv, tmp, httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30))


def _stop(made: BB) -> None:
    made.http.close()
    for c in made._clients:
        c.close()
    made.server.stop()


@pytest.fixture(scope="module")
def bb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BB]:
    """The server a module talks to: one shared by all black-box modules (tests isolate themselves
    by creating their own services), or the module's own when it sets OWN_SERVER = True (e.g. a
    module that provokes failed logins, which the server rate-limits per client address), started
    with the module's SERVER_ENV."""
    global _shared
    if getattr(request.module, "OWN_SERVER", False):
        made = _start(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]),
                      getattr(request.module, "SERVER_ENV", None))
        try:
            yield made
        finally:
            _stop(made)
        return
    if _shared is None:
        _shared = _start(tmp_path_factory.mktemp("shared"))

        def stop_shared() -> None:
            global _shared
            if _shared is not None:
                _stop(_shared)
                _shared = None

        request.config.add_cleanup(stop_shared)
    yield _shared
