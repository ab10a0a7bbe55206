"""Fuzzing: schemathesis against tokensvc's own /openapi.json, hypothesis for identities,
attributes, form bodies and raw requests. The property everywhere: never a 5xx, and every error
body is Twilio-shaped (SPEC §2).

Bounded by default so the suite stays fast; TOKENSVC_FUZZ_EXAMPLES=500 (examples per property
and generation mode) runs a long campaign.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from starlette.routing import WebSocketRoute

from conftest import Api, Server, basic, start_server
from tokensvc.app import _routes
from tokensvc.openapi import CHAT_V2_DATA, CHAT_V2_PATHS, build_openapi, doc_paths, vendor_chat_v2, without_pem
from tokensvc.openapi_own import EXTENSION

EXAMPLES = int(os.environ.get("TOKENSVC_FUZZ_EXAMPLES") or 15)
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "twilio_chat_v2.json"
_MORE_INFO = re.compile(r"https://www\.twilio\.com/docs/errors/\d+")


def fuzz_settings(examples: int = EXAMPLES) -> settings:
    # No example database: runs stay independent and nothing is written into the checkout.
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


def assert_twilio_error(status: int, text: str, headers: Any = None) -> None:
    """An error body of SPEC §2: exactly code, message, more_info, status; never a trace."""
    assert 400 <= status < 500, (status, text)
    body = json.loads(text)
    assert set(body) == {"code", "message", "more_info", "status"}, body
    assert body["status"] == status, body
    assert isinstance(body["code"], int) and not isinstance(body["code"], bool), body
    assert _MORE_INFO.fullmatch(body["more_info"]) and body["more_info"].endswith(str(body["code"])), body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]
    if headers is not None:
        if status == 429:
            assert int(headers["retry-after"]) >= 1
        if body["code"] == 20003:
            assert headers["www-authenticate"] == 'Basic realm="tokensvc"'


def assert_sane(response: httpx.Response) -> None:
    """No 5xx, a request id on every response, JSON (or Prometheus text) bodies, Twilio errors."""
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        assert_twilio_error(response.status_code, response.text, response.headers)
    elif response.status_code != 204 and not response.request.url.path.endswith("/metrics"):
        response.json()


def encode_identity(identity: str) -> str:
    """One path segment for any identity; dots too, so `.` and `..` are not dot-segments."""
    return quote(identity, safe="").replace(".", "%2E")


# ------------------------------------------------------------------ the document itself


def test_openapi_document_is_valid_and_served(api: Api) -> None:
    r = api.get("/openapi.json", auth=None)
    assert r.status_code == 200
    doc = r.json()
    validate_openapi(doc)
    assert doc == json.loads(json.dumps(build_openapi(api.app.routes)))
    basic_scheme = doc["components"]["securitySchemes"]["accountSid_authToken"]
    assert (basic_scheme["type"], basic_scheme["scheme"]) == ("http", "basic")
    assert doc["security"] == [{"accountSid_authToken": []}]
    for path in ("/healthz", "/readyz", "/metrics", "/.well-known/jwks.json", "/openapi.json"):
        assert doc["paths"][path]["get"]["security"] == []  # public
    assert set(doc["components"]["schemas"]["TwilioError"]["required"]) == {"code", "message", "more_info", "status"}


def test_openapi_documents_every_route_under_twilio_names(api: Api) -> None:
    doc = build_openapi(api.app.routes)
    for route in api.app.routes:
        if isinstance(route, WebSocketRoute):
            assert route.path in doc["x-websockets"]
            continue
        if not route.include_in_schema:  # the console's HTML pages are no part of the API
            assert route.path.startswith("/console")
            continue
        for path in doc_paths(route.path):
            assert path in doc["paths"], path
            assert "_sid" not in path and "rest" not in path
    for path in CHAT_V2_PATHS:
        assert path in doc["paths"]
    assert not [path for path in doc["paths"] if path.startswith("/console")]
    for path in ("/v2/Services/{ServiceSid}/Tokens", "/2010-04-01/Accounts/{AccountSid}/Keys.json",
                 "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", "/.well-known/jwks.json",
                 "/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"], path
    ids = [op["operationId"] for item in doc["paths"].values() for m, op in item.items()
           if m in ("get", "post", "delete")]
    assert len(ids) == len(set(ids))
    # Every operation answers errors with the TwilioError schema.
    for item in doc["paths"].values():
        for method in ("post", "delete"):
            if method in item:
                assert item[method]["responses"]["default"] == {"$ref": "#/components/responses/ErrorDefault"}


def test_doc_paths_map_starlette_names_to_twilio_names() -> None:
    assert doc_paths("/v2/Services/{sid}") == ["/v2/Services/{Sid}"]
    assert doc_paths("/v2/Services/{service_sid}/Users/{rest:path}") == [
        "/v2/Services/{ServiceSid}/Users/{Sid}",
        "/v2/Services/{ServiceSid}/Users/{UserSid}/Channels",
        "/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings",
        "/v2/Services/{ServiceSid}/Users/{UserSid}/Channels/{ChannelSid}",
        "/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings/{Sid}",
    ]
    assert doc_paths("/v2/Services/{service_sid}/Channels/{channel_rest:anypath}") == [
        "/v2/Services/{ServiceSid}/Channels/{Sid}",
        "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Members",
        "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Members/{Sid}",
        "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Invites",
        "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Invites/{Sid}",
    ]
    assert doc_paths("/2010-04-01/Accounts/{account_sid}/Keys/{sid}.json") == [
        "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json"]
    with pytest.raises(ValueError):
        doc_paths("/v2/Things/{thing_id}")


@pytest.mark.skipif(not REFERENCE.exists(), reason="Twilio's reference description is not checked out alongside")
def test_chat_v2_operations_are_twilios() -> None:
    reference = without_pem(json.loads(REFERENCE.read_text()))  # Twilio's, less its example private key
    vendored = json.loads((Path(__file__).resolve().parents[1] / "tokensvc" / CHAT_V2_DATA).read_text())
    assert vendored == json.loads(json.dumps(vendor_chat_v2(reference))), \
        "tokensvc/openapi_chat_v2.json is stale: python -m tokensvc.openapi path/to/twilio_chat_v2.json"
    doc = build_openapi(_routes())
    for path in CHAT_V2_PATHS:
        for method, theirs in reference["paths"][path].items():
            if method not in ("get", "post", "delete"):
                continue
            ours = doc["paths"][path][method]
            assert ours["operationId"] == theirs["operationId"]
            # Twilio's parameters, and after them tokensvc's extensions (SPEC §11), each marked as one
            twilios = [p for p in ours.get("parameters", []) if not p.get(EXTENSION)]
            assert twilios == theirs.get("parameters", [])
            assert ours.get("parameters", [])[:len(twilios)] == twilios
            assert ours.get("requestBody") == theirs.get("requestBody")
            for status, response in theirs["responses"].items():
                assert ours["responses"][status].get("content") == response.get("content")
    for name, schema in reference["components"]["schemas"].items():
        if name in doc["components"]["schemas"]:
            assert doc["components"]["schemas"][name] == schema


# ------------------------------------------------------------------ schemathesis, all operations

SCHEMA = schemathesis.openapi.from_dict(build_openapi(_routes()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


class World:
    """Real resources of one account on the fuzzed server, substituted into generated cases so
    that the fuzzer reaches past the 404 of a random SID."""

    def __init__(self, server: Server):
        self.server = server
        self.client = httpx.Client(base_url=server.base, auth=server.auth, timeout=10)
        self.reset()

    def reset(self) -> None:
        """(Re)create the service, a custom role, a user and an API key (after a DELETE hit one)."""
        svc = self.client.post("/v2/Services", data={"FriendlyName": "fuzz"}).json()
        self.service = svc["sid"]
        self.role = self.client.post(f"/v2/Services/{self.service}/Roles", data={
            "FriendlyName": "fuzz role", "Type": "deployment", "Permission": ["editOwnUserInfo"]}).json()["sid"]
        user = self.client.post(f"/v2/Services/{self.service}/Users", data={"Identity": "fuzz user/1"}).json()
        self.identity, self.user = user["identity"], user["sid"]
        self.key = self.client.post(f"/2010-04-01/Accounts/{self.server.account_sid}/Keys.json",
                                    data={"FriendlyName": "fuzz"}).json()["sid"]

    def substitute(self, case: Any, path: str, by_sid: bool) -> None:
        params = case.path_parameters or {}
        real = {
            "ServiceSid": self.service,
            "AccountSid": self.server.account_sid,
            "UserSid": self.user if by_sid else self.identity,
        }
        if "Sid" in params:
            if path == "/v2/Services/{Sid}":
                real["Sid"] = self.service
            elif "/Roles/" in path:
                real["Sid"] = self.role
            elif "/Users/" in path:
                real["Sid"] = self.user if by_sid else self.identity
            elif "/Keys/" in path:
                real["Sid"] = self.key
        for name in params:
            if name in real:
                params[name] = real[name]
        if isinstance(case.body, dict):
            for name in ("RoleSid", "DefaultServiceRoleSid"):
                if name in case.body:
                    case.body[name] = self.role


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # The fuzzer also sends bad and missing credentials on purpose; it must not lock itself out.
    server = start_server(tmp_path_factory.mktemp("fuzz"), extra_env={"TOKENSVC_AUTH_FAIL_LIMIT": "1000000000"})
    try:
        w = World(server)
        yield w
        w.client.close()
    finally:
        server.stop()


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters())) or bool(operation.body)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_schemathesis_operation(operation: Any, world: World) -> None:
    """Positive and negative cases of one operation, some on real resources: never a 5xx, the
    response conforms to the document (status, content type, headers, schema), errors are Twilio's."""
    load_all_checks()
    from schemathesis.checks import negative_data_rejection, positive_data_acceptance

    auth = basic(*world.server.auth)
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if _has_inputs(operation) else [])
    for mode in modes:
        strategy = operation.as_strategy(generation_mode=mode)

        @fuzz_settings()
        @given(case=strategy, real=st.booleans(), by_sid=st.booleans())
        def run(case: Any, real: bool, by_sid: bool) -> None:
            if real:
                world.substitute(case, operation.path, by_sid)
            response = case.call(base_url=world.server.base, headers=auth, timeout=10)
            assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text)
            headers = {k.lower(): v[0] for k, v in response.headers.items()}
            # Every answer has a request id, the transport's own too (a request line or head over
            # its bounds, which the Users list filters let a generated case reach, is a 431).
            assert headers.get("x-request-id")
            if response.status_code >= 400:
                assert_twilio_error(response.status_code, response.text, headers)
            # Not checked: positive_data_acceptance (a schema-valid random SID is rightly a 404, a
            # random PageToken a 21481) and negative_data_rejection: like Twilio, tokensvc ignores
            # unknown parameters and clamps PageSize (SPEC §3), the credentials added here repair a
            # case whose "invalid part" is a missing Authorization, and so may a swapped-in real SID.
            # Which malformed values must be refused, and with which code, is asserted below and in
            # the API tests.
            case.validate_response(response, excluded_checks=[positive_data_acceptance, negative_data_rejection],
                                   headers=auth)
            if case.method == "DELETE" and response.status_code == 204:
                world.reset()

        run()
    assert "Traceback" not in world.server.logs()


# ------------------------------------------------------------------ hypothesis: identities

TRICKY_IDENTITIES = [
    "alice@example.com", "a b", "ünï", "a/b", "a%2Fb", "%", "+", "a+b", "?x=1", "#frag", ".", "..", "...",
    "./x", "~", " ", "\t", "\r\n", "a\nb", "\n", "\u202e", "😀", "a;b", "Users", "Channels", "x" * 256, "x" * 257,
    "US" + "0" * 32, "US" + "A" * 32, "us" + "0" * 32, "US" + "0" * 31, "a\x00b", "",
]
identities = st.one_of(st.sampled_from(TRICKY_IDENTITIES), st.text(min_size=1, max_size=80),
                       st.text(alphabet=st.characters(codec="utf-8"), min_size=250, max_size=260))


def expected_identity_error(identity: str) -> tuple[int, int] | None:
    """SPEC §2: (status, code) the create must answer, or None when the identity is valid."""
    if "\x00" in identity:
        return 400, 20001
    if identity == "":
        return 400, 20001
    if len(identity) > 256:
        return 400, 50207
    if re.fullmatch(r"US[0-9a-fA-F]{32}", identity):
        return 400, 50206
    return None


def test_arbitrary_identities_round_trip(api: Api, service: dict) -> None:
    """create → fetch by URL-encoded identity → token reuses it → delete → gone; or the exact error."""
    users = f"/v2/Services/{service['sid']}/Users"

    @fuzz_settings(EXAMPLES * 4)
    @given(identity=identities)
    def run(identity: str) -> None:
        r = api.post(users, {"Identity": identity})
        error = expected_identity_error(identity)
        if error is not None:
            assert_sane(r)
            assert (r.status_code, r.json()["code"]) == error, (identity, r.text)
            return
        assert r.status_code == 201, (identity, r.text)
        created = r.json()
        try:
            assert created["identity"] == identity
            url = f"{users}/{encode_identity(identity)}"
            fetched = api.get(url)
            assert fetched.status_code == 200, (identity, url, fetched.text)
            assert (fetched.json()["sid"], fetched.json()["identity"]) == (created["sid"], identity)
            again = api.post(users, {"Identity": identity})
            assert (again.status_code, again.json()["code"]) == (409, 50201)
            token = api.post(f"/v2/Services/{service['sid']}/Tokens", {"Identity": identity})
            assert token.status_code == 201, token.text
            assert (token.json()["user_sid"], token.json()["user_created"]) == (created["sid"], False)
            assert api.delete(url).status_code == 204, (identity, url)
            gone = api.get(url)
            assert (gone.status_code, gone.json()["code"]) == (404, 20404)
        finally:  # so a failing example replays on a clean service
            api.delete(f"{users}/{created['sid']}")

    run()


# ------------------------------------------------------------------ hypothesis: attributes

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def _valid_json(text: str) -> bool:
    def reject(_: str) -> None:
        raise ValueError

    try:
        json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError):
        return False
    return True


def test_arbitrary_attributes_are_kept_verbatim_or_refused(api: Api, service: dict) -> None:
    users = f"/v2/Services/{service['sid']}/Users"
    counter = iter(range(10**9))

    @fuzz_settings(EXAMPLES * 3)
    @given(attributes=st.one_of(json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
                                json_values.map(json.dumps), st.text(max_size=200),
                                st.sampled_from(["NaN", "[Infinity]", "{", "", "1e999", "[" * 5000 + "]" * 5000,
                                                 json.dumps("x" * 16 * 1024), json.dumps("x" * (16 * 1024 - 2))])))
    def run(attributes: str) -> None:
        r = api.post(users, {"Identity": f"attr-{next(counter)}", "Attributes": attributes})
        assert_sane(r)
        if "\x00" in attributes:
            assert (r.status_code, r.json()["code"]) == (400, 20001)
        elif len(attributes.encode()) > 16 * 1024:
            assert (r.status_code, r.json()["code"]) == (400, 50303)
        elif not _valid_json(attributes):
            assert (r.status_code, r.json()["code"]) == (400, 50304), (attributes[:80], r.text)
        else:
            assert r.status_code == 201, r.text
            assert r.json()["attributes"] == attributes
            fetched = api.get(f"{users}/{r.json()['sid']}").json()
            assert fetched["attributes"] == attributes

    run()


# ------------------------------------------------------------------ hypothesis: bodies and requests

FORM_NAMES = ["Identity", "Ttl", "Attributes", "FriendlyName", "RoleSid", "Type", "Permission", "PageSize",
              "DefaultServiceRoleSid", "ReachabilityEnabled", "WebhookFilters", "PostWebhookUrl",
              "Notifications.NewMessage.Enabled", "Limits.UserChannels", "WebhookMethod", "TypingIndicatorTimeout"]
CONTENT_TYPES = [None, "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
                 "application/json", "text/plain", "multipart/form-data; boundary=x", "application/octet-stream",
                 "\x7f", "a" * 300]


def _post_targets(api: Api, service: dict) -> list[str]:
    svc = service["sid"]
    role = api.get(f"/v2/Services/{svc}/Roles").json()["roles"][0]["sid"]
    api.post(f"/v2/Services/{svc}/Users", {"Identity": "body target"})
    key = api.post(f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", {}).json()["sid"]
    return [
        "/v2/Services", f"/v2/Services/{svc}", f"/v2/Services/{svc}/Roles", f"/v2/Services/{svc}/Roles/{role}",
        f"/v2/Services/{svc}/Users", f"/v2/Services/{svc}/Users/body%20target", f"/v2/Services/{svc}/Tokens",
        f"/2010-04-01/Accounts/{api.account_sid}/Keys.json", f"/2010-04-01/Accounts/{api.account_sid}/Keys/{key}.json",
    ]


def test_arbitrary_byte_bodies_never_5xx(api: Api, service: dict) -> None:
    targets = _post_targets(api, service)

    @fuzz_settings(EXAMPLES * 4)
    @given(url=st.sampled_from(targets), body=st.binary(max_size=600), content_type=st.sampled_from(CONTENT_TYPES))
    def run(url: str, body: bytes, content_type: str | None) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        assert_sane(api.post(url, content=body, headers=headers))

    run()


def test_arbitrary_forms_never_5xx(api: Api, service: dict) -> None:
    targets = _post_targets(api, service)
    names = st.one_of(st.sampled_from(FORM_NAMES), st.text(max_size=20))
    values = st.one_of(st.text(max_size=40), st.sampled_from(["", "true", "-1", "0", "99999999999999999999", "1e3",
                                                              "RL" + "0" * 32, "US" + "0" * 32, "{}", "http://x"]))

    @fuzz_settings(EXAMPLES * 4)
    @given(url=st.sampled_from(targets), pairs=st.lists(st.tuples(names, values), max_size=8))
    def run(url: str, pairs: list[tuple[str, str]]) -> None:
        body = urlencode(pairs)
        assert_sane(api.post(url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}))

    run()


def test_arbitrary_requests_never_5xx(api: Api, service: dict) -> None:
    """Any method, any path under the real routes, any query: a Twilio error or a real answer."""
    prefixes = ["", "/v2", "/v2/Services", f"/v2/Services/{service['sid']}", f"/v2/Services/{service['sid']}/Users",
                f"/v2/Services/{service['sid']}/Roles", f"/2010-04-01/Accounts/{api.account_sid}",
                f"/2010-04-01/Accounts/{api.account_sid}/Keys"]
    segment = st.one_of(st.text(max_size=12).map(lambda s: quote(s, safe="")),
                        st.sampled_from(["Users", "Channels", "Bindings", "Tokens", "Keys.json", "%2F", "%00", "%FF",
                                         "..", "%2E%2E", "", "US" + "0" * 32, "IS" + "0" * 32]))
    query = st.dictionaries(st.sampled_from(["PageSize", "Page", "PageToken", "x"]), st.text(max_size=12), max_size=3)

    @fuzz_settings(EXAMPLES * 4)
    @given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]),
           prefix=st.sampled_from(prefixes), segments=st.lists(segment, max_size=3), params=query,
           by_token=st.booleans())
    def run(method: str, prefix: str, segments: list[str], params: dict[str, str], by_token: bool) -> None:
        url = "/".join([prefix, *segments]) or "/"
        if params:
            url += "?" + urlencode(params)
        if method == "DELETE" and segments == [] and prefix.endswith(service["sid"]):
            return  # keep the service for the next examples
        headers = {"X-Twilio-Token": "garbage." * 3} if by_token else {}
        r = api.client.request(method, url, auth=None if by_token else api.auth, headers=headers)
        assert r.status_code < 500, (method, url, r.text)
        if method != "HEAD":
            assert_sane(r)

    run()
