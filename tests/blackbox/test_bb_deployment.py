"""Running it (SPEC §1 absolute URLs, §4 keys directory and rotation, §6 health endpoints)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
    jwt_parts,
    start_server,
)


def test_health_and_readiness(bb: BB) -> None:
    anon = bb.client()
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/readyz").status_code == 200
    metrics = anon.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text or "# HELP" in metrics.text


def test_cli_token_mints_a_verifiable_token_and_provisions(bb: BB) -> None:
    svc = bb.new_service("cli")
    out = subprocess.run([sys.executable, "-m", "tokensvc.cli", "token", "cli-user", "--service", svc["sid"],
                          "--ttl", "120"], env=bb.server.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().split()[-1]
    header, claims, _ = jwt_parts(token)
    assert header["alg"] == "ES256" and claims["grants"]["identity"] == "cli-user"
    assert claims["exp"] - claims["iat"] == 120
    assert bb.http.get(f"/v2/Services/{svc['sid']}/Users/cli-user").status_code == 200
    r = bb.client(headers={"X-Twilio-Token": token}).get(f"/v2/Services/{svc['sid']}/Users/cli-user")
    assert r.status_code == 200, r.text
    bad = subprocess.run([sys.executable, "-m", "tokensvc.cli", "token", "x", "--service", "IS" + "0" * 32],
                         env=bb.server.env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0


def test_urls_follow_the_request_host(bb: BB) -> None:
    svc = bb.new_service("host")
    r = bb.http.get(f"/v2/Services/{svc['sid']}", headers={"Host": "chat.internal.test:8443"})
    assert r.status_code == 200
    body = r.json()
    assert body["url"] == f"http://chat.internal.test:8443/v2/Services/{svc['sid']}"
    assert all(v.startswith("http://chat.internal.test:8443/") for v in body["links"].values())
    r = bb.http.get(f"/v2/Services/{svc['sid']}/Users", headers={"Host": "chat.internal.test:8443"})
    assert r.json()["meta"]["url"].startswith("http://chat.internal.test:8443/")


@pytest.fixture(scope="module")
def public_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = start_server(tmp_path_factory.mktemp("public"), name="public",
                       extra_env={"TOKENSVC_PUBLIC_URL": "https://chat.example.com",
                                  "TOKENSVC_DEFAULT_TTL": "120", "TOKENSVC_MAX_TTL": "600"})
    try:
        yield srv
    finally:
        srv.stop()


def test_public_url_is_used_for_every_url(public_server: Any) -> None:
    with httpx.Client(base_url=public_server.base, auth=public_server.auth, timeout=30) as c:
        svc = c.post("/v2/Services", data={"FriendlyName": "public"}).json()
        assert svc["url"] == f"https://chat.example.com/v2/Services/{svc['sid']}"
        assert all(v.startswith("https://chat.example.com/") for v in svc["links"].values())
        for i in range(3):
            user = c.post(f"/v2/Services/{svc['sid']}/Users", data={"Identity": f"p{i}"}).json()
        assert user["url"].startswith("https://chat.example.com/v2/Services/")
        assert all(v.startswith("https://chat.example.com/") for v in user["links"].values())
        page = c.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 1}).json()
        for name in ("url", "first_page_url", "next_page_url"):
            assert page["meta"][name].startswith("https://chat.example.com/v2/Services/"), page["meta"]
        role = c.get(f"/v2/Services/{svc['sid']}/Roles").json()["roles"][0]
        assert role["url"].startswith("https://chat.example.com/")


def test_ttl_settings_are_honoured(public_server: Any) -> None:
    with httpx.Client(base_url=public_server.base, auth=public_server.auth, timeout=30) as c:
        svc = c.post("/v2/Services", data={"FriendlyName": "ttl"}).json()
        tok = c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "t"})
        assert tok.status_code == 201 and tok.json()["ttl"] == 120
        claims = jwt_parts(tok.json()["token"])[1]
        assert claims["exp"] - claims["iat"] == 120
        assert c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "t", "Ttl": "600"}).status_code == 201
        r = c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "t", "Ttl": "601"})
        assert_error(r, 400, 20157)


@pytest.fixture(scope="module")
def rotating_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = start_server(tmp_path_factory.mktemp("rotation"), name="rotation")
    try:
        yield srv
    finally:
        srv.stop()


def _cli(srv: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokensvc.cli", *args], env=srv.env, capture_output=True,
                          text=True, timeout=60)


def test_key_rotation_keeps_old_tokens_valid_on_a_running_server(rotating_server: Any) -> None:
    srv = rotating_server
    with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=30) as c:
        svc = c.post("/v2/Services", data={"FriendlyName": "rotation"}).json()
        old = c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "rotator"}).json()["token"]
        old_kid = jwt_parts(old)[0]["kid"]
        assert len(list(Path(srv.env["TOKENSVC_KEYS_DIR"]).glob("*.pem"))) == 1

        made = _cli(srv, "keys", "generate")
        assert made.returncode == 0, made.stderr
        new_kid = made.stdout.split()[0]
        assert new_kid != old_kid
        activated = _cli(srv, "keys", "activate", "--", new_kid)  # a kid may start with "-"
        assert activated.returncode == 0, activated.stderr

        def current_kid() -> str:
            tok = c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "rotator"}).json()["token"]
            return jwt_parts(tok)[0]["kid"]

        deadline = time.monotonic() + 3
        while current_kid() != new_kid and time.monotonic() < deadline:
            time.sleep(0.1)
        if current_kid() != new_kid:  # not re-read on change: the other documented way is SIGHUP
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    if current_kid() == new_kid:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        assert srv.proc.poll() is None, "server died during rotation"
        assert current_kid() == new_kid

        kids = {k["kid"] for k in c.get("/.well-known/jwks.json").json()["keys"]}
        assert {old_kid, new_kid} <= kids
        r = c.get(f"/v2/Services/{svc['sid']}/Users/rotator", headers={"X-Twilio-Token": old}, auth=None)
        assert r.status_code == 200, r.text

        # Retiring the old key while its tokens are unexpired is refused without --force.
        refused = _cli(srv, "keys", "retire", "--", old_kid)
        assert refused.returncode != 0
        assert "usage:" not in refused.stderr, refused.stderr
        r = c.get(f"/v2/Services/{svc['sid']}/Users/rotator", headers={"X-Twilio-Token": old}, auth=None)
        assert r.status_code == 200, r.text

        # Forced retirement: the key leaves the JWKS and its tokens stop verifying.
        forced = _cli(srv, "keys", "--force", "retire", "--", old_kid)  # usage: keys [--force] ACTION [kid]
        assert forced.returncode == 0, forced.stderr

        def old_key_gone() -> bool:
            kids = {k["kid"] for k in c.get("/.well-known/jwks.json").json()["keys"]}
            return old_kid not in kids

        deadline = time.monotonic() + 3
        while not old_key_gone() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not old_key_gone():
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 3
            while not old_key_gone() and time.monotonic() < deadline:
                time.sleep(0.1)
        assert old_key_gone()
        r = c.get(f"/v2/Services/{svc['sid']}/Users/rotator", headers={"X-Twilio-Token": old}, auth=None)
        assert_error(r, 401, 20101)
        new = c.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "rotator"}).json()["token"]
        r = c.get(f"/v2/Services/{svc['sid']}/Users/rotator", headers={"X-Twilio-Token": new}, auth=None)
        assert r.status_code == 200, r.text
