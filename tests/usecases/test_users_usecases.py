"""Use cases return what changed as events, and effects.apply acts on them in one place."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import Api
from tokensvc import errors
from tokensvc.usecases import api_keys as api_keys_uc
from tokensvc.usecases import users as users_uc
from tokensvc.usecases.effects import apply
from tokensvc.usecases.events import ApiKeyRemoved, TokenIssued, UserAdded, UserRemoved


def _run(c: Any, coro: Any) -> Any:
    async def main() -> Any:
        try:
            return await coro
        finally:
            await c.db.aclose()  # PostgreSQL: the async connections live on this loop

    return asyncio.run(main())


def _provisioned(c: Any) -> float:
    return c.metrics.users_provisioned._value.get()


def test_provision_user_reports_a_user_added_only_on_first_encounter(api: Api, service: dict[str, Any]) -> None:
    c = api.app.state.ctx
    svc = _run(c, c.auth.service(service["sid"]))
    (user, created), events = _run(c, users_uc.provision_user(c, service=svc, identity="first"))
    assert created and events == [UserAdded(user)]
    (again, created), events = _run(c, users_uc.provision_user(c, service=svc, identity="first"))
    assert not created and events == [] and again["sid"] == user["sid"]


def test_create_user_is_added_but_not_provisioned(api: Api, service: dict[str, Any]) -> None:
    c = api.app.state.ctx
    user, events = _run(c, users_uc.create_user(c, account_sid=api.account_sid, service_sid=service["sid"],
                                                identity="made", role_sid=None, attributes=None, friendly_name=None))
    assert events == [UserAdded(user, first_encounter=False)]
    before = _provisioned(c)
    _run(c, apply(c, events + [TokenIssued(service["sid"])]))
    assert _provisioned(c) == before  # POST /Users is no first encounter
    with pytest.raises(errors.TwilioError) as taken:
        _run(c, users_uc.create_user(c, account_sid=api.account_sid, service_sid=service["sid"], identity="made",
                                     role_sid=None, attributes=None, friendly_name=None))
    assert taken.value.code == 50201


def test_delete_user_reports_its_removal_and_another_account_gets_404(api: Api, service: dict[str, Any]) -> None:
    c = api.app.state.ctx
    assert api.post(f"/v2/Services/{service['sid']}/Users", {"Identity": "gone"}).status_code == 201
    other, _ = api.new_account()
    with pytest.raises(errors.TwilioError) as foreign:
        _run(c, users_uc.delete_user(c, account_sid=other, service_sid=service["sid"], key="gone"))
    assert foreign.value.code == 20404
    sid, events = _run(c, users_uc.delete_user(c, account_sid=api.account_sid, service_sid=service["sid"], key="gone"))
    assert events == [UserRemoved(service["sid"], sid)]
    assert api.get(f"/v2/Services/{service['sid']}/Users/gone").status_code == 404


def test_a_removed_api_key_is_forgotten_by_this_process_at_once(api: Api) -> None:
    c = api.app.state.ctx
    r = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json")
    key_sid, secret = r.json()["sid"], r.json()["secret"]
    assert api.get("/v2/Services", auth=(key_sid, secret)).status_code == 200  # now cached
    _, events = _run(c, api_keys_uc.delete_api_key(c, account_sid=api.account_sid, sid=key_sid))
    assert events == [ApiKeyRemoved(key_sid)]
    _run(c, apply(c, events))
    assert api.get("/v2/Services", auth=(key_sid, secret)).status_code == 401  # not served from the cache
