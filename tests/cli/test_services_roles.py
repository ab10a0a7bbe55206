"""`tokensvc services …` and `roles list` as real commands: the API's fields in --json, tables for
people, exit statuses, and which account a command acts for."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_helpers import Cli, cli, make_cli  # noqa: F401
from tokensvc.api.render import service_to_json
from tokensvc.store.services import find_service

ESCAPE = re.compile(r"\x1b\[")
DATE = re.compile(r"\d{4}-\d\d-\d\dT")


def test_service_create_get_list_delete(cli: Cli) -> None:
    made = cli.service("my app")
    assert made["friendly_name"] == "my app" and made["account_sid"] == cli.account
    db = cli.database()
    try:
        row = db.call(lambda conn: find_service(conn, made["sid"]))
    finally:
        db.dispose()
    # the API's serializer, with the base URL `serve` would use
    assert made == service_to_json(row, "http://127.0.0.1:8080")
    assert cli.json("services", "get", made["sid"]) == made
    listed = cli.lines("services", "list")
    assert [s["sid"] for s in listed] == [made["sid"]]  # a fresh account: its one service
    roles = cli.lines("roles", "list", made["sid"])
    assert {(r["friendly_name"], r["type"]) for r in roles} == {
        ("service admin", "deployment"), ("service user", "deployment"),
        ("channel admin", "channel"), ("channel user", "channel")}
    assert made["default_service_role_sid"] in {r["sid"] for r in roles}
    assert cli.json("services", "delete", made["sid"]) == {"sid": made["sid"], "deleted": True}
    cli.refused(20404, "services", "get", made["sid"])
    cli.refused(20404, "roles", "list", made["sid"])
    assert cli.lines("services", "list") == []


def test_tables_are_aligned_and_plain_off_a_terminal(cli: Cli) -> None:
    cli.service("first")
    cli.service("a service with a much longer friendly name than fits")
    out = cli.ok("services", "list").stdout
    assert not ESCAPE.search(out)  # stdout is a pipe: no colour, no escape code at all
    header, rule, *rows = out.splitlines()
    assert header.split() == ["sid", "friendly_name", "date_created", "post_webhook_url"]
    assert set(rule) == {"─"} and len(rows) == 2
    # date_created starts in one column on every row (found by its shape: a SID may hold "20")
    starts = {m.start() for line in rows if (m := DATE.search(line))}
    assert len(starts) == 1 and header.index("date_created") in starts
    assert "a service with a much longer friendly name than fits" in out  # no width asked: nothing cut


def test_tables_are_cut_to_the_width_asked(cli: Cli) -> None:
    cli.service("a service with a much longer friendly name than fits")
    done = cli.run("services", "list", env={"COLUMNS": "60"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(len(line) <= 60 for line in lines), lines
    assert "…" in done.stdout


def test_unknown_service_and_usage_errors(cli: Cli) -> None:
    stderr = cli.refused(20404, "services", "get", "IS" + "0" * 32)
    assert "no service" in stderr
    cli.refused(20404, "services", "get", "not-a-sid")
    cli.refused(50003, "services", "create", "x" * 257)  # FriendlyName over 256, as the API refuses it
    done = cli.run("services", "frobnicate")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = cli.run("services", "list", "--no-such-flag")
    assert done.returncode == 2


def test_json_errors_are_the_twilio_body_on_stderr(cli: Cli) -> None:
    done = cli.run("services", "get", "IS" + "0" * 32, "--json")
    assert done.returncode == 1 and done.stdout == ""
    body = json.loads(done.stderr)
    assert body["code"] == 20404 and body["status"] == 404
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"


def test_account_is_the_only_one_or_the_configured_one_else_named(tmp_path: Path) -> None:
    # a database of its own (the suite's PostgreSQL one holds many accounts)
    cli = make_cli(tmp_path, f"sqlite:///{tmp_path / 'own.db'}")
    only = cli.run("services", "create", "mine", "--json", account=False)
    assert only.returncode == 0, only.stderr
    assert json.loads(only.stdout)["account_sid"] == cli.account
    other = cli.json("accounts", "create", account=False)
    ambiguous = cli.run("services", "list", account=False)
    assert ambiguous.returncode == 2 and "--account" in ambiguous.stderr
    configured = cli.run("services", "create", "theirs", "--json", account=False,
                         env={"TOKENSVC_ACCOUNT_SID": other["account_sid"]})
    assert configured.returncode == 0, configured.stderr
    theirs = json.loads(configured.stdout)
    assert theirs["account_sid"] == other["account_sid"]
    # a service names its account; --account that is not its account is 404, as on the API
    assert cli.json("services", "get", theirs["sid"], account=False)["sid"] == theirs["sid"]
    cli.refused(20404, "services", "get", theirs["sid"])
    cli.refused(20404, "services", "list", "--account", "AC" + "0" * 32, account=False)
