"""Observability (issue 6): Prometheus metrics, JSON access logs, request ids, logged 500s."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Api, Server, assert_error, start_server

USERS_ROUTE = "/v2/Services/{service_sid}/Users"
TOKENS_ROUTE = "/v2/Services/{service_sid}/Tokens"


def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    r = api.get("/metrics", auth=None)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_latency_tokens_users_and_failures(api: Api, service: dict) -> None:
    svc = service["sid"]
    before = scrape(api)
    for n in range(3):
        assert api.post(f"/v2/Services/{svc}/Tokens", {"Identity": f"m{n}"}).status_code == 201
    assert api.post(f"/v2/Services/{svc}/Tokens", {"Identity": "m0"}).status_code == 201  # existing user
    assert api.post(f"/v2/Services/{svc}/Users", {"Identity": "admin-made"}).status_code == 201
    assert_error(api.get(f"/v2/Services/{svc}/Users/nobody"), 404, 20404)
    assert_error(api.get("/v2/Services", auth=(api.account_sid, "wrong")), 401, 20003)
    assert_error(api.get("/v2/Services", headers={"Authorization": "Basic !!"}, auth=None), 401, 20003)
    assert_error(api.get(f"/v2/Services/{svc}/Users", headers={"X-Twilio-Token": "a.b.c"}, auth=None), 401, 20101)
    token = api.post(f"/v2/Services/{svc}/Tokens", {"Identity": "m1"}).json()["token"]
    assert api.get(f"/v2/Services/{svc}/Users", headers={"X-Twilio-Token": token}, auth=None).status_code == 200
    after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Requests by method, route template (never the identity) and status.
    assert delta("tokensvc_requests_total", method="POST", route=TOKENS_ROUTE, status="201") == 5
    assert delta("tokensvc_requests_total", method="POST", route=USERS_ROUTE, status="201") == 1
    assert delta("tokensvc_requests_total", method="GET", route=USERS_ROUTE, status="401") == 1
    assert delta("tokensvc_requests_total", method="GET", route="/v2/Services", status="401") == 2
    item_404 = [k for k in after if k[0] == "tokensvc_requests_total" and dict(k[1])["status"] == "404"]
    assert item_404 and all("nobody" not in dict(k[1])["route"] for k in item_404)
    # Latency histograms by route: buckets, count and sum agree with the requests.
    assert delta("tokensvc_request_duration_seconds_count", route=TOKENS_ROUTE) == 5
    assert delta("tokensvc_request_duration_seconds_bucket", route=TOKENS_ROUTE, le="+Inf") == 5
    assert delta("tokensvc_request_duration_seconds_sum", route=TOKENS_ROUTE) > 0
    assert value(after, "tokensvc_request_duration_seconds_bucket", route=TOKENS_ROUTE, le="0.001") <= \
        value(after, "tokensvc_request_duration_seconds_bucket", route=TOKENS_ROUTE, le="1.0")
    # Business counters: 5 tokens, 3 users provisioned on first encounter (the admin's create is not one).
    assert delta("tokensvc_tokens_issued_total") == 5
    assert delta("tokensvc_users_provisioned_total") == 3
    # Authentication failures by kind.
    assert delta("tokensvc_auth_failures_total", kind="basic") == 2
    assert delta("tokensvc_auth_failures_total", kind="token") == 1
    # Open client connections: a gauge, zero with none open.
    assert ("tokensvc_open_connections", ()) in after
    assert value(after, "tokensvc_open_connections") == 0


def test_limited_logins_are_counted(tmp_path: Path, settings: Any) -> None:
    from starlette.testclient import TestClient

    from tokensvc.app import create_app
    from tokensvc.store.accounts import create_account

    app = create_app(settings.with_(auth_fail_limit=2))
    made = app.state.ctx.db.call(lambda conn: create_account(conn))
    with TestClient(app) as client:
        for _ in range(2):
            assert_error(client.get("/v2/Services", auth=(made.sid, "x")), 401, 20003)
        r = client.get("/v2/Services", auth=(made.sid, made.auth_token))
        assert_error(r, 429, 20429)
        text = client.get("/metrics").text
    assert 'tokensvc_auth_failures_total{kind="basic"} 2.0' in text
    assert 'tokensvc_auth_failures_total{kind="limited"} 1.0' in text


# ------------------------------------------------------------------ request ids and access logs


@pytest.fixture
def logged(tmp_path: Path) -> Server:
    srv = start_server(tmp_path)  # the default log level: info
    yield srv
    srv.stop()


def access_lines(server: Server) -> list[dict[str, Any]]:
    lines = [line for line in server.logs().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_request_id_is_echoed_and_a_sane_incoming_one_honoured(logged: Server) -> None:
    with httpx.Client(base_url=logged.base, auth=logged.auth, timeout=10) as c:
        r = c.get("/v2/Services")
        generated = r.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert c.get("/v2/Services").headers["X-Request-Id"] != generated  # one per request
        mine = "trace-4bf92f3577b34da6.a3ce929d0e0e4736"
        assert c.get("/v2/Services", headers={"X-Request-Id": mine}).headers["X-Request-Id"] == mine
        # An error response carries it too.
        r = c.get("/v2/Services/nope", headers={"X-Request-Id": "err-1"})
        assert_error(r, 404, 20404)
        assert r.headers["X-Request-Id"] == "err-1"
        # Anything that could forge log lines or smuggle data is replaced, not echoed.
        for bad in ["a b", "x" * 65, "id\\u2028", "id\"},{\"admin\":1", "ünï", ""]:
            r = c.get("/v2/Services", headers={"X-Request-Id": bad.encode("utf-8")})
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]), bad


def test_access_log_is_one_json_object_per_request(logged: Server) -> None:
    with httpx.Client(base_url=logged.base, auth=logged.auth, timeout=10) as c:
        svc = c.post("/v2/Services", data={"FriendlyName": "obs"}).json()["sid"]
        c.post(f"/v2/Services/{svc}/Users", data={"Identity": "secret identity"}, headers={"X-Request-Id": "log-1"})
        c.get(f"/v2/Services/{svc}/Users/secret%20identity?PageToken=hidden", headers={"X-Request-Id": "log-2"})
        c.get("/v2/Services", auth=(logged.account_sid, "wrong"), headers={"X-Request-Id": "log-3"})
    logged.stop()
    lines = access_lines(logged)
    by_id = {line["request_id"]: line for line in lines}
    for line in lines:
        assert {"request_id", "method", "route", "status", "ms", "client"} <= set(line)
        assert isinstance(line["ms"], (int, float)) and line["ms"] >= 0
    assert by_id["log-1"]["route"] == USERS_ROUTE and by_id["log-1"]["status"] == 201
    assert by_id["log-1"]["method"] == "POST" and by_id["log-1"]["client"] == "127.0.0.1"
    assert by_id["log-2"]["status"] == 200 and by_id["log-2"]["route"].startswith(USERS_ROUTE + "/")
    assert by_id["log-3"]["status"] == 401
    text = logged.logs()
    assert "secret identity" not in text and "secret%20identity" not in text and "hidden" not in text


def test_unexpected_failure_is_a_logged_500_with_its_request_id(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    api.app.state.ctx.db.run = api.app.state.ctx.db.read = broken
    with caplog.at_level(logging.INFO):
        r = api.get("/v2/Services", headers={"X-Request-Id": "boom-1"})
    body = assert_error(r, 500, 20500)
    assert "boom-1" in body["message"] and "fire" not in r.text
    assert r.headers["X-Request-Id"] == "boom-1"
    errors = [rec for rec in caplog.records if rec.name == "tokensvc" and rec.levelno >= logging.ERROR]
    assert errors and "boom-1" in errors[0].getMessage() and errors[0].exc_info
    access = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "tokensvc.access"]
    assert {"request_id": "boom-1", "status": 500}.items() <= access[-1].items()
    metrics = api.get("/metrics", auth=None).text
    assert 'tokensvc_requests_total{method="GET",route="/v2/Services",status="500"} 1.0' in metrics
