"""`tokensvc users import` and `users export` as real commands: bad lines reported and skipped,
a result per line, CSV and JSON Lines, --dry-run, the onUserAdd hook refusing a line (a real
local receiver, a real `tokensvc serve` delivering the post-events), and an export that gives
every user exactly once while users are being added."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from cli_helpers import Cli, cli  # noqa: F401
from conftest import start_server
from webhook_receiver import Receiver, serve


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
def posts() -> Iterator[Receiver]:
    """The post-events' receiver, apart from the hook's: its answers are not the hook's turns."""
    yield from serve()


def _results(path: Path) -> dict[int, dict]:
    return {r["line"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_jsonl_import_reports_bad_lines_and_goes_on(cli: Cli, tmp_path: Path) -> None:
    svc = cli.service()
    admin = next(r["sid"] for r in cli.lines("roles", "list", svc["sid"]) if r["friendly_name"] == "service admin")
    lines = [
        {"identity": "kept", "friendly_name": "Kept"},                    # 1 created
        {"identity": "ann", "attributes": {"tier": 1}, "role": "service admin"},  # 2 created, role by name
        "{not json",                                                        # 3 20001
        {"friendly_name": "nobody"},                                        # 4 identity missing: 20001
        {"identity": "bad-attrs", "attributes": "{oops"},                   # 5 50304
        {"identity": "bad-role", "role": "no such role"},                   # 6 50102
        {"identity": "x" * 257},                                            # 7 50207
        {"identity": "US" + "0" * 32},                                      # 8 50206
        {"identity": "typo", "frendly_name": "?"},                          # 9 20001: not a field
        "",                                                                 # 10 blank: skipped
        {"identity": "ann", "friendly_name": "Ann", "role": admin},         # 11 updated (ann exists now)
        {"identity": "kept", "friendly_name": "Kept"},                      # 12 unchanged
        {"identity": "long-name", "friendly_name": "n" * 257},              # 13 50003
        [1, 2],                                                             # 14 not an object
    ]
    source = tmp_path / "users.jsonl"
    source.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    results = tmp_path / "results.jsonl"
    done = cli.run("users", "import", svc["sid"], str(source), "--results", str(results), "--concurrency", "1")
    assert done.returncode == 1, done.stderr  # some lines failed
    assert "Traceback" not in done.stderr
    assert "13 lines: 2 created, 1 updated, 1 unchanged, 9 failed" in done.stdout
    assert "line 5:" in done.stderr and "Twilio error 50304" in done.stderr
    assert "bad-attrs" not in done.stderr  # identities go to the results file, not the terminal
    got = _results(results)
    assert set(got) == set(range(1, 15)) - {10}
    outcomes = {n: (r["outcome"], r["code"]) for n, r in got.items()}
    assert outcomes == {1: ("created", None), 2: ("created", None), 3: ("error", 20001), 4: ("error", 20001),
                        5: ("error", 50304), 6: ("error", 50102), 7: ("error", 50207), 8: ("error", 50206),
                        9: ("error", 20001), 11: ("updated", None), 12: ("unchanged", None),
                        13: ("error", 50003), 14: ("error", 20001)}
    assert got[2]["user_sid"] == got[11]["user_sid"] and got[5]["identity"] == "bad-attrs"
    ann = cli.json("users", "get", svc["sid"], "ann")
    assert ann["friendly_name"] == "Ann" and ann["role_sid"] == admin and json.loads(ann["attributes"]) == {"tier": 1}
    exported = {u["identity"] for u in map(json.loads, cli.ok("users", "export", svc["sid"]).stdout.splitlines())}
    assert exported == {"kept", "ann"}  # nothing of the bad lines was written


def test_csv_import_with_dry_run_first(cli: Cli, tmp_path: Path) -> None:
    svc = cli.service()
    roles = {r["friendly_name"]: r["sid"] for r in cli.lines("roles", "list", svc["sid"])}
    _ = cli.ok("users", "import", svc["sid"], "-", "--format", "jsonl",
               stdin=json.dumps({"identity": "old", "friendly_name": "Old"}) + "\n")
    source = tmp_path / "users.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Identity", "role", "attributes", "friendly_name"])  # any order, any case
        w.writerow(["csv-1", "service admin", '{"a": [1, 2]}', "Smith, Jane"])
        w.writerow(["csv-2", roles["service user"], "", ""])  # empty cells: not given
        w.writerow(["old", "", "", "Renamed"])
        w.writerow(["csv-bad", "", "[1,", ""])
        w.writerow(["üñï-çødé", "", "", "ünïcode"])
    results = tmp_path / "dry.csv"
    dry = cli.run("users", "import", svc["sid"], str(source), "--dry-run", "--results", str(results), "--json")
    assert dry.returncode == 1, dry.stderr
    summary = json.loads(dry.stdout)
    assert summary | {"seconds": 0} == {"lines": 5, "created": 3, "updated": 1, "unchanged": 0, "failed": 1,
                                        "dry_run": True, "seconds": 0}
    with results.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["line"], r["outcome"], r["code"]) for r in rows] == [
        ("2", "created", ""), ("3", "created", ""), ("4", "updated", ""), ("5", "error", "50304"),
        ("6", "created", "")]
    assert {u["identity"] for u in cli.lines("users", "list", svc["sid"])} == {"old"}  # nothing written
    assert cli.json("users", "get", svc["sid"], "old")["friendly_name"] == "Old"
    real = cli.run("users", "import", svc["sid"], str(source), "--json")
    assert real.returncode == 1 and json.loads(real.stdout)["created"] == 3
    jane = cli.json("users", "get", svc["sid"], "csv-1")
    assert jane["friendly_name"] == "Smith, Jane" and jane["role_sid"] == roles["service admin"]
    assert json.loads(jane["attributes"]) == {"a": [1, 2]}
    two = cli.json("users", "get", svc["sid"], "csv-2")
    assert two["friendly_name"] is None and two["attributes"] == "{}"
    assert cli.json("users", "get", svc["sid"], "old")["friendly_name"] == "Renamed"
    assert cli.json("users", "get", svc["sid"], "üñï-çødé")["friendly_name"] == "ünïcode"
    again = cli.run("users", "import", svc["sid"], str(source), "--json")  # the same file again
    assert json.loads(again.stdout) | {"seconds": 0} == {"lines": 5, "created": 0, "updated": 0, "unchanged": 4,
                                                         "failed": 1, "dry_run": False, "seconds": 0}
    bad = tmp_path / "bad.csv"
    bad.write_text("identity,nickname\nx,y\n")
    cli.refused(20001, "users", "import", svc["sid"], str(bad))  # an unknown column refuses the file
    missing = cli.run("users", "import", svc["sid"], str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_hook_refuses_a_line_and_a_server_delivers_the_post_events(cli: Cli, tmp_path: Path, receiver: Receiver,
                                                                     posts: Receiver) -> None:
    srv = start_server(tmp_path, database=cli.env["TOKENSVC_DATABASE_URL"], keys_dir=Path(cli.env["TOKENSVC_KEYS_DIR"]),
                       account=(cli.account, cli.auth_token))
    try:
        with httpx.Client(base_url=srv.base, auth=srv.auth) as http:
            svc = http.post("/v2/Services", data={"FriendlyName": "policed"}).json()
            r = http.post(f"/v2/Services/{svc['sid']}", data={
                "PreWebhookUrl": receiver.url, "PostWebhookUrl": posts.url,
                "WebhookFilters": ["onUserAdd", "onUserAdded", "onUserUpdated"]})
            assert r.status_code == 200, r.text
            receiver.statuses = [200, 403, 200]  # in turn: the second new identity is refused
            source = "".join(json.dumps({"identity": i}) + "\n" for i in ("first", "refused", "third"))
            results = tmp_path / "results.jsonl"
            done = cli.run("users", "import", svc["sid"], "-", "--results", str(results), "--concurrency", "1",
                           stdin=source)
            assert done.returncode == 1, done.stderr
            assert "Twilio error 50056" in done.stderr
            got = _results(results)
            assert [got[n]["outcome"] for n in (1, 2, 3)] == ["created", "error", "created"]
            assert got[2]["code"] == 50056
            asked = receiver.matching(EventType="onUserAdd")
            assert [h.params["Identity"] for h in asked] == ["first", "refused", "third"]
            assert all(h.params["Source"] == "API" for h in asked)
            assert RequestValidator(cli.auth_token).validate(asked[0].url, asked[0].params,
                                                             asked[0].headers["x-twilio-signature"])
            assert http.get(f"/v2/Services/{svc['sid']}/Users/refused").status_code == 404  # nothing written
            # the CLI wrote onUserAdded into the outbox; the running server delivers it
            posted = posts.wait(2, EventType="onUserAdded")
            assert sorted(h.params["Identity"] for h in posted) == ["first", "third"]
            assert all(h.params["Source"] == "API" for h in posted)
            # an update posts onUserUpdated only when asked, as Basic REST without/with the header
            cli.ok("users", "import", svc["sid"], "-", stdin=json.dumps({"identity": "first", "friendly_name": "A"}))
            cli.ok("users", "import", svc["sid"], "-", "--webhook-enabled",
                   stdin=json.dumps({"identity": "third", "friendly_name": "C"}))
            updated = posts.wait(1, EventType="onUserUpdated")
            assert [h.params["Identity"] for h in updated] == ["third"]
    finally:
        srv.stop()


def test_export_gives_every_user_once_while_others_are_added(cli: Cli, tmp_path: Path) -> None:
    svc = cli.service()
    before = [f"before-{i:05}" for i in range(3000)]
    cli.ok("users", "import", svc["sid"], "-", stdin="".join(json.dumps({"identity": i}) + "\n" for i in before))
    listed = {u["identity"]: u for u in cli.lines("users", "list", svc["sid"], "--identity", "before-00042")}
    adding = threading.Thread(target=lambda: cli.ok(
        "users", "import", svc["sid"], "-", "--concurrency", "8",
        stdin="".join(json.dumps({"identity": f"during-{i:05}"}) + "\n" for i in range(1500))))
    adding.start()
    try:
        done = cli.ok("users", "export", svc["sid"], "--page-size", "100")  # 30+ pages, a read each
    finally:
        adding.join(120)
    exported = [json.loads(line) for line in done.stdout.splitlines()]
    identities = [u["identity"] for u in exported]
    assert len(identities) == len(set(identities))  # none twice
    assert set(before) <= set(identities)  # every user that existed at the start
    assert set(identities) - set(before) <= {f"during-{i:05}" for i in range(1500)}
    assert exported[identities.index("before-00042")] == listed["before-00042"]  # the fields the list renders
    out = tmp_path / "all.jsonl"
    cli.ok("users", "export", svc["sid"], "--output", str(out))
    assert len(out.read_text().splitlines()) == 4500
