"""The `tokensvc` command as a real process: `token --json` answers like the token endpoint, and
`serve` starts without Alembic's chatter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jwt

from conftest import Api, start_server
from tokensvc.formats import iso8601

ISO8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def run_cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "tokensvc.cli", *argv], env=full, capture_output=True,
                          text=True, timeout=60)


def test_token_json_has_the_fields_and_formats_of_the_token_endpoint(api: Api, service: dict, tmp_path: Path) -> None:
    settings = api.app.state.ctx.settings
    endpoint = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": "alice", "Ttl": "600"})
    assert endpoint.status_code == 201, endpoint.text
    done = run_cli("token", "alice", "--service", service["sid"], "--ttl", "600", "--json",
                   env={"TOKENSVC_DATABASE_URL": settings.database_url,
                        "TOKENSVC_KEYS_DIR": str(settings.keys_dir)})
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)  # the whole of stdout is one JSON document
    expected = endpoint.json()
    assert set(body) == set(expected)
    assert ISO8601.fullmatch(body["expires_at"]) and ISO8601.fullmatch(expected["expires_at"])
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert body["expires_at"] == iso8601(claims["exp"])
    assert body["ttl"] == expected["ttl"] == 600
    assert body["user_created"] is False
    for key in ("identity", "user_sid", "service_sid", "account_sid"):
        assert body[key] == expected[key], key


def test_token_without_json_prints_only_the_token(api: Api, service: dict) -> None:
    settings = api.app.state.ctx.settings
    done = run_cli("token", "bob", "--service", service["sid"],
                   env={"TOKENSVC_DATABASE_URL": settings.database_url,
                        "TOKENSVC_KEYS_DIR": str(settings.keys_dir)})
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert jwt.decode(token, options={"verify_signature": False})["grants"]["identity"] == "bob"


def test_token_on_a_new_database_keeps_stdout_for_the_answer(tmp_path: Path) -> None:
    # The database is created, and its bootstrap account with it: that one-time notice goes to
    # stderr, so a script reading stdout never takes credentials for a token.
    done = run_cli("token", "alice", "--service", "IS" + "0" * 32, "--json",
                   env={"TOKENSVC_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}",
                        "TOKENSVC_KEYS_DIR": str(tmp_path / "keys")})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "TOKENSVC_AUTH_TOKEN=" in done.stderr and "no service" in done.stderr


def test_serve_logs_migrations_without_alembic_preamble(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'serve.db'}"  # SQLite: serve migrates it itself
    logs = []
    for name in ("first", "second"):
        srv = start_server(tmp_path, database=database, name=name)
        srv.stop()
        logs.append(srv.logs())
    first, second = logs
    assert "Running upgrade  -> 0001" in first, first
    assert "Running upgrade" not in second, second
    for log in logs:
        assert "Context impl" not in log, log
        assert "Will assume" not in log, log
        assert "Traceback" not in log, log


def test_token_refuses_what_the_endpoint_refuses(api: Api, service: dict) -> None:
    """The CLI applies the token endpoint's Identity and Ttl rules (one rule, one place)."""
    settings = api.app.state.ctx.settings
    env = {"TOKENSVC_DATABASE_URL": settings.database_url, "TOKENSVC_KEYS_DIR": str(settings.keys_dir)}
    for args, words in ((["US" + "0" * 32], "User SID"), (["x" * 257], "256"), (["alice", "--ttl", "0"], "positive"),
                        (["alice", "--ttl", "999999999"], "maximum")):
        done = run_cli("token", *args, "--service", service["sid"], env=env)
        assert done.returncode != 0 and words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
