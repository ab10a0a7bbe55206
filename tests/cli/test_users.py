"""`tokensvc users list | get | update | delete` as real commands on a real database: the API's
rules and fields, filters and paging, exit statuses."""

from __future__ import annotations

import json

from cli_helpers import Cli, cli  # noqa: F401
from tokensvc.sids import is_sid


def _seed(cli: Cli, svc: dict, identities: list[str]) -> None:
    lines = "".join(json.dumps({"identity": i}) + "\n" for i in identities)
    cli.ok("users", "import", svc["sid"], "-", "--format", "jsonl", "--concurrency", "1", stdin=lines)  # in order


def test_get_update_delete_as_the_api_does(cli: Cli) -> None:
    svc = cli.service()
    _seed(cli, svc, ["ann/with slash"])
    user = cli.json("users", "get", svc["sid"], "ann/with slash")
    assert is_sid("US", user["sid"]) and user["identity"] == "ann/with slash"
    assert user["attributes"] == "{}" and user["friendly_name"] is None
    assert user["is_online"] is None and user["is_notifiable"] is None  # reachability off
    assert user["url"].endswith(f"/v2/Services/{svc['sid']}/Users/{user['sid']}")
    assert cli.json("users", "get", svc["sid"], user["sid"]) == user  # by SID as by identity
    changed = cli.json("users", "update", svc["sid"], user["sid"], "--friendly-name", "Ann",
                       "--attributes", '{"tier": 2}', "--role", "service admin")
    roles = {r["friendly_name"]: r["sid"] for r in cli.lines("roles", "list", svc["sid"])}
    assert changed["friendly_name"] == "Ann" and json.loads(changed["attributes"]) == {"tier": 2}
    assert changed["role_sid"] == roles["service admin"]
    back = cli.json("users", "update", svc["sid"], "ann/with slash", "--role", roles["service user"])
    assert back["role_sid"] == roles["service user"] and back["friendly_name"] == "Ann"
    cli.refused(50304, "users", "update", svc["sid"], user["sid"], "--attributes", "{not json")
    cli.refused(50102, "users", "update", svc["sid"], user["sid"], "--role", "no such role")
    cli.refused(50102, "users", "update", svc["sid"], user["sid"], "--role", roles["channel user"])  # a channel role
    cli.refused(50003, "users", "update", svc["sid"], user["sid"], "--friendly-name", "x" * 257)
    done = cli.run("users", "update", svc["sid"], user["sid"])  # nothing to change: usage
    assert done.returncode == 2 and "--friendly-name" in done.stderr
    assert cli.json("users", "delete", svc["sid"], "ann/with slash") == {"sid": user["sid"], "deleted": True}
    cli.refused(20404, "users", "get", svc["sid"], user["sid"])
    cli.refused(20404, "users", "delete", svc["sid"], user["sid"])
    cli.refused(20404, "users", "get", "IS" + "0" * 32, "anyone")


def test_list_filters_and_paging(cli: Cli) -> None:
    svc = cli.service()
    names = [f"team-{i:02}" for i in range(7)] + ["other-1", "Team-caps"]
    _seed(cli, svc, names)
    everyone = cli.lines("users", "list", svc["sid"])
    assert [u["identity"] for u in everyone] == names  # creation order
    assert all(u["is_online"] is None for u in everyone)  # as in the API's lists
    first = cli.run("users", "list", svc["sid"], "--limit", "4", "--json")
    assert first.returncode == 0, first.stderr
    page = [json.loads(line) for line in first.stdout.splitlines()]
    assert [u["identity"] for u in page] == names[:4]
    cursor = first.stderr.split("--after ", 1)[1].strip()
    rest = cli.lines("users", "list", svc["sid"], "--after", cursor)
    assert [u["identity"] for u in page + rest] == names  # each exactly once
    last = cli.run("users", "list", svc["sid"], "--after", cursor, "--limit", "50")
    assert "--after" not in last.stderr  # the end: no cursor
    cli.refused(21481, "users", "list", svc["sid"], "--after", "PTnot-a-cursor")
    prefixed = cli.lines("users", "list", svc["sid"], "--prefix", "team-0")
    assert [u["identity"] for u in prefixed] == names[:7]  # literal, case-sensitive: not Team-caps
    exact = cli.lines("users", "list", svc["sid"], "--identity", "other-1", "--identity", "Team-caps")
    assert sorted(u["identity"] for u in exact) == ["Team-caps", "other-1"]
    admin = cli.json("users", "update", svc["sid"], "team-03", "--role", "service admin")
    by_role = cli.lines("users", "list", svc["sid"], "--role", "service admin")
    assert [u["sid"] for u in by_role] == [admin["sid"]]
    since = cli.lines("users", "list", svc["sid"], "--updated-after", "2000-01-01T00:00:00Z")
    assert len(since) == len(names) and since[-1]["sid"] == admin["sid"]  # (date_updated, sid) order
    cli.refused(20001, "users", "list", svc["sid"], "--updated-after", "yesterday")
    cli.refused(20001, "users", "list", svc["sid"], "--prefix", "")
    table = cli.ok("users", "list", svc["sid"], "--prefix", "team-0").stdout
    assert table.splitlines()[0].split() == ["sid", "identity", "friendly_name", "role_sid", "date_updated"]
    assert len(table.splitlines()) == 2 + 7
