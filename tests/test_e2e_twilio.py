"""End to end: a real `tokensvc serve` driven by the official `twilio` package."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time

import httpx
import jwt
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from conftest import Server, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = start_server(tmp_path_factory.mktemp("e2e"))
    yield s
    s.stop()


@pytest.fixture
def client(srv: Server) -> Client:
    c = Client(srv.account_sid, srv.auth_token)
    c.chat.base_url = srv.base
    c.api.base_url = srv.base
    return c


def test_services_roles_users_through_the_twilio_package(client: Client) -> None:
    svc = client.chat.v2.services.create(friendly_name="e2e")
    assert svc.sid.startswith("IS") and svc.friendly_name == "e2e"
    assert client.chat.v2.services(svc.sid).fetch().default_service_role_sid == svc.default_service_role_sid
    updated = client.chat.v2.services(svc.sid).update(friendly_name="renamed", reachability_enabled=True)
    assert updated.friendly_name == "renamed" and updated.reachability_enabled is True

    roles = client.chat.v2.services(svc.sid).roles
    assert {r.friendly_name for r in roles.list()} == {"service admin", "service user", "channel admin", "channel user"}
    role = roles.create(friendly_name="mod", type="deployment", permission=["editAnyUserInfo", "joinChannel"])
    assert role.permissions == ["editAnyUserInfo", "joinChannel"]
    assert roles(role.sid).update(permission=["joinChannel"]).permissions == ["joinChannel"]
    assert roles(role.sid).fetch().type == "deployment"

    users = client.chat.v2.services(svc.sid).users
    for identity in ("alice@example.com", "a b", "ünï"):
        made = users.create(identity=identity, attributes='{"k": 1}', friendly_name="F")
        by_identity = users(identity).fetch()
        assert by_identity.sid == made.sid and by_identity.identity == identity
        assert users(made.sid).fetch().attributes == '{"k": 1}'
        assert users(identity).update(friendly_name="G").friendly_name == "G"
        assert users(made.sid).update(role_sid=role.sid).role_sid == role.sid
        assert users(identity).delete() is True
        with pytest.raises(TwilioRestException) as err:
            users(identity).fetch()
        assert err.value.status == 404 and err.value.code == 20404

    assert roles(role.sid).delete() is True
    assert client.chat.v2.services(svc.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        client.chat.v2.services(svc.sid).fetch()
    assert err.value.code == 20404


def test_list_250_users_with_page_size_40(client: Client, srv: Server) -> None:
    svc = client.chat.v2.services.create(friendly_name="paging")
    # create through raw HTTP in parallel to keep the test quick; order is by creation
    made = []
    with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
        for i in range(250):
            r = http.post(f"/v2/Services/{svc.sid}/Users", data={"Identity": f"user-{i:03d}"})
            assert r.status_code == 201
            made.append(r.json()["sid"])
    listed = client.chat.v2.services(svc.sid).users.list(page_size=40)
    assert [u.sid for u in listed] == made
    page = client.chat.v2.services(svc.sid).users.page(page_size=40)
    count = 0
    while page is not None:
        count += 1
        page = page.next_page()
    assert count == 7


def test_twilio_rest_exception_codes(client: Client) -> None:
    svc = client.chat.v2.services.create(friendly_name="errors")
    users = client.chat.v2.services(svc.sid).users
    users.create(identity="dup")
    with pytest.raises(TwilioRestException) as err:
        users.create(identity="dup")
    assert err.value.status == 409 and err.value.code == 50201
    with pytest.raises(TwilioRestException) as err:
        users.create(identity="x" * 300)
    assert err.value.status == 400 and err.value.code == 50207
    with pytest.raises(TwilioRestException) as err:
        users.create(identity="u", attributes="{bad")
    assert err.value.status == 400 and err.value.code == 50304
    with pytest.raises(TwilioRestException) as err:
        users("nobody").fetch()
    assert err.value.status == 404 and err.value.code == 20404
    bad = Client(client.username, "wrong-token")
    bad.chat.base_url = client.chat.base_url
    with pytest.raises(TwilioRestException) as err:
        bad.chat.v2.services(svc.sid).fetch()
    assert err.value.status == 401 and err.value.code == 20003


def test_api_keys_through_the_twilio_package(client: Client, srv: Server) -> None:
    key = client.api.v2010.account.new_keys.create(friendly_name="backend")
    assert key.sid.startswith("SK") and len(key.secret) >= 32
    assert client.api.v2010.account.keys(key.sid).fetch().friendly_name == "backend"
    assert key.sid in [k.sid for k in client.api.v2010.account.keys.list()]
    svc = client.chat.v2.services.create(friendly_name="keys")
    # the key + secret act as Basic credentials
    as_key = Client(key.sid, key.secret, srv.account_sid)
    as_key.chat.base_url = srv.base
    assert as_key.chat.v2.services(svc.sid).fetch().sid == svc.sid
    assert client.api.v2010.account.keys(key.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        as_key.chat.v2.services(svc.sid).fetch()
    assert err.value.code == 20003


def race(srv: Server, resource: str, identity: str, threads: int) -> tuple[list[httpx.Response], int]:
    """POST the same identity to a new service's resource from many threads at once; returns the
    responses and how many users the service ends up with."""
    with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
        svc = http.post("/v2/Services", data={"FriendlyName": "race"}).json()

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
            return http.post(f"/v2/Services/{svc['sid']}/{resource}", data={"Identity": identity})

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(post, range(threads)))
    with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
        return results, len(http.get(f"/v2/Services/{svc['sid']}/Users").json()["users"])


def test_same_identity_from_32_threads_creates_one_user(srv: Server) -> None:
    results, users = race(srv, "Users", "racer", 32)
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 1 and statuses.count(409) == 31, statuses
    assert all(r.json()["code"] == 50201 for r in results if r.status_code == 409)
    assert users == 1


def test_64_concurrent_first_encounters_create_one_user(srv: Server) -> None:
    results, users = race(srv, "Tokens", "newbie", 64)
    assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201]
    assert len({r.json()["user_sid"] for r in results}) == 1
    assert sum(r.json()["user_created"] for r in results) == 1
    assert users == 1


def _cli(srv: Server, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tokensvc.cli", *args], env=srv.env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_rotation_keeps_old_tokens_valid_on_a_running_server(srv: Server) -> None:
    with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
        svc = http.post("/v2/Services", data={"FriendlyName": "rotation"}).json()
        old = http.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "r"}).json()["token"]
        old_kid = jwt.get_unverified_header(old)["kid"]
        new_kid = _cli(srv, "keys", "generate").strip()
        _cli(srv, "keys", "activate", new_kid)
        deadline = time.monotonic() + 5
        while True:  # the server notices within a second
            fresh = http.post(f"/v2/Services/{svc['sid']}/Tokens", data={"Identity": "r"}).json()["token"]
            if jwt.get_unverified_header(fresh)["kid"] == new_kid or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert jwt.get_unverified_header(fresh)["kid"] == new_kid
        users = f"/v2/Services/{svc['sid']}/Users/r"
        assert httpx.get(srv.base + users, headers={"X-Twilio-Token": old}).status_code == 200
        assert httpx.get(srv.base + users, headers={"X-Twilio-Token": fresh}).status_code == 200
        kids = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
        assert {old_kid, new_kid} <= kids
        listing = _cli(srv, "keys", "list")
        assert new_kid in listing and "active" in listing
        # retiring early is refused; forced, the old key stops verifying
        refused = subprocess.run([sys.executable, "-m", "tokensvc.cli", "keys", "retire", old_kid], env=srv.env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "--force" in refused.stderr
        _cli(srv, "keys", "retire", old_kid, "--force")
        deadline = time.monotonic() + 5
        while httpx.get(srv.base + users, headers={"X-Twilio-Token": old}).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        r = httpx.get(srv.base + users, headers={"X-Twilio-Token": old})
        assert r.status_code == 401 and r.json()["code"] == 20101
        assert old_kid not in {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}


def test_cli_token_mints_and_provisions(srv: Server) -> None:
    with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
        svc = http.post("/v2/Services", data={"FriendlyName": "cli"}).json()
        token = _cli(srv, "token", "dev-user", "--service", svc["sid"], "--ttl", "60").strip()
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["grants"]["identity"] == "dev-user" and claims["exp"] - claims["iat"] == 60
        assert http.get(f"/v2/Services/{svc['sid']}/Users/dev-user").status_code == 200
        r = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users/dev-user", headers={"X-Twilio-Token": token})
        assert r.status_code == 200


def test_cli_accounts_create_adds_a_working_account(srv: Server) -> None:
    out = _cli(srv, "accounts", "create")
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    r = httpx.get(f"{srv.base}/v2/Services", auth=(fields["account_sid"], fields["auth_token"]))
    assert r.status_code == 200 and r.json()["services"] == []


def test_serve_prints_generated_credentials_once(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
    env.update(TOKENSVC_DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}", TOKENSVC_KEYS_DIR=str(tmp_path / "keys"))
    from conftest import free_port

    outputs = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tokensvc.cli", "serve", "--port", str(port)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "serving on" in line:
                break
        for _ in range(50):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.terminate()
        proc.wait(10)
        outputs.append("".join(lines))
    first, second = outputs
    assert "TOKENSVC_AUTH_TOKEN=" in first and "TOKENSVC_AUTH_TOKEN=" not in second
    fields = dict(line.strip().split("=", 1) for line in first.splitlines()
                  if line.strip().startswith("TOKENSVC_"))
    assert fields["TOKENSVC_ACCOUNT_SID"].startswith("AC")
    key_files = list((tmp_path / "keys").glob("*.pem"))
    assert len(key_files) == 1 and (key_files[0].stat().st_mode & 0o777) == 0o600
