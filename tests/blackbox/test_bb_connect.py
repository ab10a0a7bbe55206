"""Client connections over WebSocket (SPEC §5): frames, token lifecycle, presence on fetch."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import websockets

from blackbox.blackbox_helpers import (
    BB,
    assert_error,
    bb,  # noqa: F401  (the server fixture, module-scoped)
)


@pytest.fixture(scope="module")
def svc(bb: BB) -> dict[str, Any]:
    made = bb.new_service("connect")
    r = bb.http.post(f"/v2/Services/{made['sid']}", data={"ReachabilityEnabled": "true"})
    assert r.status_code == 200 and r.json()["reachability_enabled"] is True
    return made


def ws_url(bb: BB) -> str:
    return bb.base.replace("http://", "ws://", 1) + "/v2/Connect"


async def recv_json(ws: Any, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_connect_with_header_sends_connected_with_the_user(bb: BB, svc: dict[str, Any]) -> None:
    identity = f"ws-{uuid.uuid4().hex[:8]}"
    tok = bb.token(svc["sid"], identity)

    async def run() -> None:
        async with websockets.connect(ws_url(bb), additional_headers={"X-Twilio-Token": tok["token"]}) as ws:
            frame = await recv_json(ws)
            assert frame["type"] == "connected"
            assert frame["user"]["identity"] == identity and frame["user"]["sid"] == tok["user_sid"]
            # Online while connected: true on fetch, still null in lists.
            fetched = bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}").json()
            assert fetched["is_online"] is True
            listed = bb.http.get(f"/v2/Services/{svc['sid']}/Users", params={"PageSize": 100}).json()["users"]
            assert all(u["is_online"] is None and u["is_notifiable"] is None for u in listed)

    asyncio.run(run())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}").json()["is_online"] is False:
            break
        time.sleep(0.1)
    assert bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}").json()["is_online"] is False


def test_connect_with_authenticate_frame_and_update_token(bb: BB, svc: dict[str, Any]) -> None:
    identity = f"ws-auth-{uuid.uuid4().hex[:8]}"
    tok = bb.token(svc["sid"], identity)["token"]
    fresh = bb.token(svc["sid"], identity)["token"]

    async def run() -> None:
        async with websockets.connect(ws_url(bb)) as ws:
            await ws.send(json.dumps({"type": "authenticate", "token": tok}))
            frame = await recv_json(ws)
            assert frame["type"] == "connected" and frame["user"]["identity"] == identity
            await ws.send(json.dumps({"type": "updateToken", "token": fresh}))
            assert (await recv_json(ws))["type"] == "tokenUpdated"

    asyncio.run(run())


def test_connect_auto_provisions_from_a_twilio_minted_token(bb: BB, svc: dict[str, Any]) -> None:
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import ChatGrant

    key = bb.new_api_key("ws-signer")
    identity = f"ws-twilio-{uuid.uuid4().hex[:8]}"
    at = AccessToken(bb.account_sid, key["sid"], key["secret"], identity=identity)
    at.add_grant(ChatGrant(service_sid=svc["sid"]))

    async def run() -> None:
        async with websockets.connect(ws_url(bb), additional_headers={"X-Twilio-Token": at.to_jwt()}) as ws:
            frame = await recv_json(ws)
            assert frame["type"] == "connected" and frame["user"]["identity"] == identity

    asyncio.run(run())
    assert bb.http.get(f"/v2/Services/{svc['sid']}/Users/{identity}").status_code == 200


@pytest.mark.parametrize("token", ["garbage", "a.b.c"])
def test_bad_token_gets_error_frame_then_close_4001(bb: BB, token: str) -> None:
    async def run() -> None:
        async with websockets.connect(ws_url(bb)) as ws:
            await ws.send(json.dumps({"type": "authenticate", "token": token}))
            frame = await recv_json(ws)
            assert frame["type"] == "error" and frame["code"] == 20101, frame
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4001

    asyncio.run(run())


def test_expiring_token_warns_then_expires_with_close_4001(bb: BB, svc: dict[str, Any]) -> None:
    short = bb.token(svc["sid"], f"ws-short-{uuid.uuid4().hex[:6]}", Ttl="2")["token"]

    async def run() -> None:
        async with websockets.connect(ws_url(bb), additional_headers={"X-Twilio-Token": short}) as ws:
            assert (await recv_json(ws))["type"] == "connected"
            warned = await recv_json(ws)
            assert warned["type"] == "tokenAboutToExpire" and isinstance(warned["expires_in"], int)
            assert warned["expires_in"] <= 180
            assert (await recv_json(ws, 10))["type"] == "tokenExpired"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4001

    asyncio.run(run())


def test_plain_http_to_connect_is_not_5xx(bb: BB) -> None:
    r = bb.client().get("/v2/Connect")
    assert r.status_code < 500
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        assert_error(r, r.status_code)
