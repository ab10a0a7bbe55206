"""The `tokensvc` command as a real process against a real database (the suite's: a SQLite file,
or the PostgreSQL of scripts/with-postgres), for tests/cli/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import database_url
from tokensvc.config import Settings
from tokensvc.crypto import SecretBox
from tokensvc.db import Database, make_engine
from tokensvc.store.accounts import create_account
from tokensvc.store.schema import ensure_schema


def run_cli(*argv: str, env: dict[str, str], stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_") and k != "COLUMNS"}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "tokensvc", *argv], env=full, capture_output=True, text=True,
                          input=stdin, timeout=timeout)


@dataclass
class Cli:
    """`tokensvc …` on one database and keys directory, for one account of its own."""

    env: dict[str, str]
    account: str
    auth_token: str
    tmp: Path

    @property
    def settings(self) -> Settings:
        return Settings(database_url=self.env["TOKENSVC_DATABASE_URL"], keys_dir=Path(self.env["TOKENSVC_KEYS_DIR"]))

    def run(self, *argv: str, account: bool = True, env: dict[str, str] | None = None,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """The command, with --account (all but keys/accounts/db take it), `env` added."""
        return run_cli(*argv, *(["--account", self.account] if account else []), env={**self.env, **(env or {})},
                       **kw)

    def ok(self, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        done = self.run(*argv, **kw)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done

    def json(self, *argv: str, **kw: Any) -> Any:
        """The one JSON document a command prints with --json (the whole of stdout)."""
        return json.loads(self.ok(*argv, "--json", **kw).stdout)

    def lines(self, *argv: str, **kw: Any) -> list[dict[str, Any]]:
        """The JSON Lines of a list (--json)."""
        return [json.loads(line) for line in self.ok(*argv, "--json", **kw).stdout.splitlines()]

    def refused(self, code: int, *argv: str, status: int = 1, **kw: Any) -> str:
        """A command that fails with that exit status and Twilio code on stderr, no traceback."""
        done = self.run(*argv, **kw)
        assert done.returncode == status, (argv, done.returncode, done.stdout, done.stderr)
        assert f"Twilio error {code}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        return done.stderr

    def service(self, name: str = "svc") -> dict[str, Any]:
        return self.json("services", "create", name)

    def database(self) -> Database:
        return Database(make_engine(self.settings))


def make_cli(tmp_path: Path, url: str | None = None) -> Cli:
    url = url or database_url(tmp_path)
    keys = tmp_path / "keys"
    ensure_schema(Settings(database_url=url, keys_dir=keys))
    box = SecretBox.load_or_create(keys)
    db = Database(make_engine(Settings(database_url=url, keys_dir=keys)))
    try:
        made = db.call(lambda conn: create_account(conn, box=box))  # its auth token signs its webhooks
    finally:
        db.dispose()
    return Cli({"TOKENSVC_DATABASE_URL": url, "TOKENSVC_KEYS_DIR": str(keys)}, made.sid, made.auth_token, tmp_path)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)
