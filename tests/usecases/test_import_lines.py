"""usecases.imports.import_lines, the CLI import's chunk of lines without an onUserAdd hook: the
same outcome per line as import_user one line at a time (one rule), every created user's
onUserAdded in the outbox, a failed line leaving nothing, a deleted service failing cleanly."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from typing import Any

from sqlalchemy import select

from conftest import Api
from tokensvc import errors
from tokensvc.cli.import_results import Results
from tokensvc.cli.importer import run_import
from tokensvc.store.outbox import Origin
from tokensvc.store.outbox_tables import outbox
from tokensvc.store.services import delete_service
from tokensvc.store.tables import roles, users
from tokensvc.usecases.imports import Line, import_lines, import_user

POSTS = Origin("API", None, True)  # as --webhook-enabled


def _run(c: Any, coro: Any) -> Any:
    async def main() -> Any:
        try:
            return await coro
        finally:
            await c.db.aclose()

    return asyncio.run(main())


def _posting_service(api: Api) -> dict[str, Any]:
    svc = api.new_service()
    r = api.post(f"/v2/Services/{svc['sid']}", {"PostWebhookUrl": "https://hooks.example/post",
                                                "WebhookFilters": ["onUserAdded", "onUserUpdated"]})
    assert r.status_code == 200, r.text
    return svc


def _channel_role(c: Any, service_sid: str) -> str:
    return c.db.call(lambda conn: conn.execute(select(roles.c.sid).where(
        roles.c.service_sid == service_sid, roles.c.type == "channel")).scalars().first())


def _users(c: Any, service_sid: str) -> dict[str, dict[str, Any]]:
    rows = c.db.call(lambda conn: conn.execute(select(users).where(users.c.service_sid == service_sid)).all())
    return {r.identity: dict(r._mapping) for r in rows}


def _events(c: Any, service_sid: str) -> list[tuple[str, str]]:
    rows = c.db.call(lambda conn: conn.execute(select(outbox.c.event_type, outbox.c.data).where(
        outbox.c.service_sid == service_sid).order_by(outbox.c.id)).all())
    return sorted((event, json.loads(data)["identity"]) for event, data in rows)


def _kind(outcome: Any) -> Any:
    return outcome.code if isinstance(outcome, errors.TwilioError) else outcome[1]


def test_a_chunk_gives_each_line_the_outcome_of_one_line_at_a_time(api: Api) -> None:
    c = api.app.state.ctx
    chunked, single = _posting_service(api), _posting_service(api)
    for svc in (chunked, single):
        for identity, name in (("old", "Old"), ("same", "Same")):
            assert api.post(f"/v2/Services/{svc['sid']}/Users",
                            {"Identity": identity, "FriendlyName": name}).status_code == 201

    def lines(svc: dict[str, Any]) -> list[Line]:
        return [Line("a", friendly_name="A"),                       # new
                Line("old", friendly_name="New"),                   # existing, changed
                Line("a", friendly_name="A2"),                      # a new one's later line
                Line("same", friendly_name="Same"),                 # existing, unchanged
                Line("bad", role_sid="RL" + "0" * 32),              # new, no such role
                Line("b"),                                          # new, nothing given
                Line("old", role_sid=_channel_role(c, svc["sid"])),  # existing, a channel role
                Line("a", friendly_name="A2"),                      # unchanged by now
                Line("c", attributes='{"x":1}', friendly_name="C")]  # new

    outcomes, events = _run(c, import_lines(c, origin=POSTS, account_sid=api.account_sid,
                                            service_sid=chunked["sid"], lines=lines(chunked)))
    expected = ["created", "updated", "updated", "unchanged", 50102, "created", 50102, "unchanged", "created"]
    assert [_kind(o) for o in outcomes] == expected
    one_by_one: list[Any] = []
    for line in lines(single):
        try:
            (_, kind), _ = _run(c, import_user(c, origin=POSTS, account_sid=api.account_sid,
                                               service_sid=single["sid"], identity=line.identity,
                                               friendly_name=line.friendly_name, attributes=line.attributes,
                                               role_sid=line.role_sid))
            one_by_one.append(kind)
        except errors.TwilioError as exc:
            one_by_one.append(exc.code)
    assert one_by_one == expected
    assert len(events) == 5  # UserAdded ×3, UserUpdated ×2 (nothing for unchanged or failed lines)

    made, alone = _users(c, chunked["sid"]), _users(c, single["sid"])
    assert sorted(made) == sorted(alone) == ["a", "b", "c", "old", "same"]  # "bad" left nothing
    skip = {"id", "sid", "account_sid", "service_sid", "role_sid", "date_created", "date_updated"}
    for identity in made:
        assert ({k: v for k, v in made[identity].items() if k not in skip}
                == {k: v for k, v in alone[identity].items() if k not in skip}), identity
    assert made["old"]["friendly_name"] == "New" and made["a"]["friendly_name"] == "A2"
    assert made["old"]["role_sid"] == made["same"]["role_sid"]  # the refused role left it as it was
    assert made["c"]["attributes"] == '{"x":1}'
    for outcome in outcomes:
        if not isinstance(outcome, errors.TwilioError):
            assert outcome[0]["sid"] == made[outcome[0]["identity"]]["sid"]
    expected_events = sorted([("onUserAdded", "a"), ("onUserAdded", "b"), ("onUserAdded", "c"),
                              ("onUserUpdated", "old"), ("onUserUpdated", "a"),
                              ("onUserAdded", "old"), ("onUserAdded", "same")])  # the last two: POST /Users
    assert _events(c, chunked["sid"]) == _events(c, single["sid"]) == expected_events


class _DeletingStream(io.BytesIO):
    """An import's input that deletes the service once `after` lines have been read."""

    def __init__(self, data: bytes, after: int, delete: Any):
        super().__init__(data)
        self.read_lines, self.after, self.delete = 0, after, delete

    def readline(self, size: int | None = -1) -> bytes:
        self.read_lines += 1
        if self.read_lines == self.after:
            self.delete()
        return super().readline(size)


def test_a_service_deleted_during_an_import_fails_every_later_line_with_404(api: Api, tmp_path: Any) -> None:
    c = api.app.state.ctx
    svc = _posting_service(api)
    total, cut = 1500, 700
    data = "".join(json.dumps({"identity": f"u-{i}", "friendly_name": f"U {i}"}) + "\n" for i in range(total))
    stream = _DeletingStream(data.encode(), cut, lambda: c.db.call(
        lambda conn: delete_service(conn, account_sid=api.account_sid, sid=svc["sid"])))
    args = argparse.Namespace(service=svc["sid"], account=api.account_sid, dry_run=False, concurrency=None,
                              webhook_enabled=False)
    path = tmp_path / "results.jsonl"
    with Results(str(path), as_json=True) as results:
        tally = _run(c, run_import(c, args=args, stream=stream, fmt="jsonl", results=results,
                                   progress=lambda n: None))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, total + 1)) and tally.lines == total
    assert {r["outcome"] for r in rows} <= {"created", "error"}
    failed = [r for r in rows if r["outcome"] == "error"]
    assert all(r["code"] == 20404 for r in failed), {r["code"] for r in failed}  # never a 500
    assert all(r["outcome"] == "error" for r in rows if r["line"] >= cut)  # read after the deletion
    assert tally.failed == len(failed) >= total - cut + 1
    assert _users(c, svc["sid"]) == {}  # its users went with it
