"""--json on the commands that came before the admin CLI: keys, accounts, db (token: tests/test_cli.py)."""

from __future__ import annotations

import json

from cli_helpers import Cli, cli  # noqa: F401
from tokensvc.store.schema import head_revision


def test_keys_accounts_and_db_speak_json(cli: Cli) -> None:
    made = cli.json("keys", "generate", account=False)
    assert made["status"] == "generated" and made["kid"]
    listed = {k["kid"]: k for k in cli.lines("keys", "list", account=False)}
    assert made["kid"] in listed and listed[made["kid"]]["status"] != "active"
    assert cli.json("keys", "activate", made["kid"], account=False) == {"kid": made["kid"], "status": "active"}
    assert {k["kid"]: k["status"] for k in cli.lines("keys", "list", account=False)}[made["kid"]] == "active"
    table = cli.ok("keys", "list", account=False).stdout
    assert table.splitlines()[0].split() == ["kid", "status", "created"] and made["kid"] in table
    account = cli.json("accounts", "create", account=False)
    assert set(account) == {"account_sid", "auth_token"}
    assert account["account_sid"] in {a["sid"] for a in cli.lines("accounts", "list", account=False)}
    rotated = cli.json("accounts", "rotate-token", "--sid", account["account_sid"], account=False)
    assert rotated["account_sid"] == account["account_sid"] and rotated["auth_token"] != account["auth_token"]
    missing = cli.run("accounts", "rotate-token", account=False)
    assert missing.returncode == 2 and "--sid" in missing.stderr
    assert cli.json("db", "current", account=False) == {"current": head_revision(), "head": head_revision()}
    kid_refused = cli.run("keys", "activate", account=False)
    assert kid_refused.returncode == 2 and "KID" in kid_refused.stderr
    assert json.loads(cli.ok("keys", "list", "--json", account=False).stdout.splitlines()[0])["kid"]
