"""`tokensvc webhooks list | retry | drop` as real commands: the outbox of one account or
service in commit order, identities only in --json, retry of what was given up on, drop, and
never every row by omission."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from cli_helpers import Cli, cli  # noqa: F401
from conftest import free_port
from tokensvc.store import outbox as ob
from tokensvc.store.accounts import create_account
from tokensvc.store.outbox_tables import outbox
from tokensvc.store.services import update_service


def hooked(cli: Cli, name: str = "hooked") -> dict[str, Any]:
    """A service whose onUserAdded goes to a port nobody listens on (no server runs here anyway)."""
    svc = cli.service(name)
    db = cli.database()
    try:
        db.call(update_service, account_sid=cli.account, sid=svc["sid"],
                changes={"post_webhook_url": f"http://127.0.0.1:{free_port()}/hook", "webhook_filters": ["onUserAdded"],
                         "post_webhook_retry_count": 2})
    finally:
        db.dispose()
    return svc


def rows(cli: Cli, **where: Any) -> list[dict[str, Any]]:
    db = cli.database()
    try:
        query = select(outbox).where(*(getattr(outbox.c, k) == v for k, v in where.items())).order_by(outbox.c.id)
        return [dict(r._mapping) for r in db.call(lambda conn: conn.execute(query).all())]
    finally:
        db.dispose()


def give_up(cli: Cli, ids: list[int]) -> None:
    db = cli.database()
    try:
        db.call(lambda conn: ob.finish(conn, delivered=[], failed=ids))
    finally:
        db.dispose()


def test_list_shows_the_account_s_rows_in_commit_order_and_identities_only_in_json(cli: Cli) -> None:
    svc = hooked(cli)
    for identity in ("secret-ann", "secret-bob"):
        cli.ok("token", identity, "--service", svc["sid"], account=False)
    listed = cli.lines("webhooks", "list")
    made = rows(cli, service_sid=svc["sid"])
    assert [r["id"] for r in listed] == [r["id"] for r in made] and len(made) == 2
    first = listed[0]
    assert first["status"] == "pending" and first["event_type"] == "onUserAdded"
    assert first["account_sid"] == cli.account and first["service_sid"] == svc["sid"]
    assert first["resource_sid"].startswith("US") and first["due"] and first["date_created"].endswith("Z")
    assert first["idempotency_token"] == made[0]["token"] and first["retries"] == 2
    assert first["method"] == "POST" and first["url"] == made[0]["url"]
    assert first["params"]["Identity"] == "secret-ann" and first["params"]["EventType"] == "onUserAdded"
    table = cli.ok("webhooks", "list").stdout
    assert table.splitlines()[0].split() == ["id", "status", "event_type", "service_sid", "resource_sid",
                                             "date_created", "due"]
    assert "secret-" not in table and made[0]["url"] not in table  # SIDs and times for people
    assert len(cli.lines("webhooks", "list", "--service", svc["sid"], "--status", "failed")) == 0


def test_retry_sends_again_what_was_given_up_on_with_its_token(cli: Cli) -> None:
    svc = hooked(cli)
    for identity in ("cat", "dan"):
        cli.ok("token", identity, "--service", svc["sid"], account=False)
    first, second = rows(cli, service_sid=svc["sid"])
    give_up(cli, [first["id"]])
    failed = cli.lines("webhooks", "list", "--status", "failed")
    assert [r["id"] for r in failed] == [first["id"]] and failed[0]["due"] is None
    assert cli.json("webhooks", "retry", str(first["id"]), str(second["id"])) == {"retried": 1}  # pending stays
    again = {r["id"]: r for r in rows(cli, service_sid=svc["sid"])}
    assert again[first["id"]]["status"] == "pending" and again[first["id"]]["token"] == first["token"]
    assert again[first["id"]]["due_at"] >= first["due_at"]
    assert again[second["id"]] == second
    assert cli.json("webhooks", "retry", "--service", svc["sid"]) == {"retried": 0}


def test_drop_deletes_only_the_rows_named(cli: Cli) -> None:
    mine, other = hooked(cli, "one"), hooked(cli, "two")
    for svc, identity in ((mine, "eve"), (mine, "fay"), (other, "gus")):
        cli.ok("token", identity, "--service", svc["sid"], account=False)
    eve, fay = rows(cli, service_sid=mine["sid"])
    give_up(cli, [fay["id"]])
    assert cli.json("webhooks", "drop", "--service", mine["sid"], "--status", "failed") == {"dropped": 1}
    assert [r["id"] for r in rows(cli, service_sid=mine["sid"])] == [eve["id"]]
    assert cli.json("webhooks", "drop", "--service", mine["sid"]) == {"dropped": 1}
    assert rows(cli, service_sid=mine["sid"]) == [] and len(rows(cli, service_sid=other["sid"])) == 1
    assert [r["service_sid"] for r in cli.lines("webhooks", "list")] == [other["sid"]]
    stranger = "AC" + "0" * 32  # another account's rows are not this account's
    assert json.loads(cli.ok("webhooks", "drop", "--account", stranger, "--json", account=False).stdout) == {
        "dropped": 0}
    assert len(rows(cli, service_sid=other["sid"])) == 1


def test_never_every_row_by_omission_and_usage_errors(cli: Cli) -> None:
    svc = hooked(cli)
    cli.ok("token", "hal", "--service", svc["sid"], account=False)
    for argv in (("webhooks", "drop"), ("webhooks", "retry"), ("webhooks", "drop", "--all-accounts")):
        done = cli.run(*argv, account=False)
        assert done.returncode == 2 and "name the rows" in done.stderr and "Traceback" not in done.stderr
    for argv in (("webhooks", "list", "--account", "not-a-sid"), ("webhooks", "drop", "--service", "IS123"),
                 ("webhooks", "drop", "x"), ("webhooks", "list", "--status", "sent"),
                 ("webhooks", "list", "--all-accounts", "--account", cli.account)):
        done = cli.run(*argv, account=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (argv, done.stderr)
    assert len(rows(cli, service_sid=svc["sid"])) == 1  # nothing dropped


def test_without_account_the_rows_are_the_only_account_s_or_all_accounts_must_be_said(cli: Cli) -> None:
    svc = hooked(cli)
    cli.ok("token", "ida", "--service", svc["sid"], account=False)
    db = cli.database()
    try:
        db.call(lambda conn: create_account(conn))  # now the database has several (on PostgreSQL: always)
    finally:
        db.dispose()
    done = cli.run("webhooks", "list", account=False)
    assert done.returncode == 2 and "--account" in done.stderr
    done = cli.run("webhooks", "drop", "--status", "pending", account=False)
    assert done.returncode == 2 and len(rows(cli, service_sid=svc["sid"])) == 1
    everyone = cli.lines("webhooks", "list", "--all-accounts", account=False)
    assert svc["sid"] in {r["service_sid"] for r in everyone}
    mine = cli.lines("webhooks", "list", account=False, env={"TOKENSVC_ACCOUNT_SID": cli.account})
    assert {r["service_sid"] for r in mine} == {svc["sid"]}
    by_service = cli.lines("webhooks", "list", "--service", svc["sid"], account=False)  # a service names its account
    assert [r["service_sid"] for r in by_service] == [svc["sid"]]
