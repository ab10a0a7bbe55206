"""OpenAPI 3.0 description of what tokensvc serves, generated from the app's routes.

The Chat v2 operations (ids, parameters, request bodies, response schemas) are Twilio's own,
vendored from its published description into `openapi_chat_v2.json` by `vendor_chat_v2` (run
`python -m tokensvc.openapi path/to/twilio_chat_v2.json` to refresh it); tokensvc's own
operations are described here. Starlette routes name their parameters differently from Twilio
(`{service_sid}` vs `{ServiceSid}`), so each route path is translated, and the one Users route
that matches the raw path expands into the three resources it serves.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata, resources
from typing import Any

from starlette.routing import WebSocketRoute

from .openapi_own import (
    BASIC,
    OWN_SCHEMAS,
    TOKEN,
    USER_LIST_FILTERS,
    WEBSOCKETS,
    error_refs,
    error_responses,
    own_paths,
)

# pyproject.toml is the one place the version is written; an installed package carries it.
VERSION = metadata.version("tokensvc")
CHAT_V2_DATA = "openapi_chat_v2.json"
CHAT_V2_PATHS = (
    "/v2/Services",
    "/v2/Services/{Sid}",
    "/v2/Services/{ServiceSid}/Roles",
    "/v2/Services/{ServiceSid}/Roles/{Sid}",
    "/v2/Services/{ServiceSid}/Users",
    "/v2/Services/{ServiceSid}/Users/{Sid}",
    "/v2/Services/{ServiceSid}/Users/{UserSid}/Channels",
    "/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings",
    # Channels (SPEC §8)
    "/v2/Services/{ServiceSid}/Users/{UserSid}/Channels/{ChannelSid}",
    "/v2/Services/{ServiceSid}/Channels",
    "/v2/Services/{ServiceSid}/Channels/{Sid}",
    "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Members",
    "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Members/{Sid}",
    "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Invites",
    "/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Invites/{Sid}",
    # Push (SPEC §9)
    "/v2/Credentials",
    "/v2/Credentials/{Sid}",
    "/v2/Services/{ServiceSid}/Bindings",
    "/v2/Services/{ServiceSid}/Bindings/{Sid}",
    "/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings/{Sid}",
)
METHODS = ("get", "post", "delete")

# Starlette parameter name -> the path segment(s) the document uses for it.
_PARAMS: dict[str, tuple[str, ...]] = {
    "sid": ("{Sid}",),
    "service_sid": ("{ServiceSid}",),
    "account_sid": ("{AccountSid}",),
    # /Users/{rest} is one route for the user and its two sub-lists (an identity may hold %2F).
    "rest": ("{Sid}", "{UserSid}/Channels", "{UserSid}/Bindings", "{UserSid}/Channels/{ChannelSid}",
             "{UserSid}/Bindings/{Sid}"),
    # /Channels/{channel_rest} likewise: the channel, its Members and Invites (SPEC §8).
    "channel_rest": ("{Sid}", "{ChannelSid}/Members", "{ChannelSid}/Members/{Sid}", "{ChannelSid}/Invites",
                     "{ChannelSid}/Invites/{Sid}"),
}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z]+)?\}")


def doc_paths(route_path: str) -> list[str]:
    """The document's path template(s) for a Starlette route path."""
    paths = [""]
    pos = 0
    for m in _PARAM.finditer(route_path):
        if m.group(1) not in _PARAMS:
            raise ValueError(f"route {route_path}: no OpenAPI name for parameter {m.group(1)!r}")
        literal = route_path[pos:m.start()]
        paths = [p + literal + seg for p in paths for seg in _PARAMS[m.group(1)]]
        pos = m.end()
    return [p + route_path[pos:] for p in paths]


# ---------------------------------------------------------------- the vendored Chat v2 subset


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def vendor_chat_v2(reference: dict[str, Any]) -> dict[str, Any]:
    """The part of Twilio's Chat v2 description that tokensvc serves: those paths' operations
    (without Twilio's `servers` and CORS headers, which are not ours) and every schema they use."""
    paths: dict[str, Any] = {}
    for path in CHAT_V2_PATHS:
        item = reference["paths"][path]
        out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in item.items()
                               if k in ("description", "x-twilio")}
        for method in METHODS:
            if method in item:
                op = copy.deepcopy(item[method])
                for response in op.get("responses", {}).values():
                    response.pop("headers", None)
                out[method] = op
        paths[path] = out
    schemas: dict[str, Any] = {}
    pending = list(_refs(paths))
    while pending:
        name = pending.pop().rsplit("/", 1)[-1]
        if name not in schemas:
            schemas[name] = copy.deepcopy(reference["components"]["schemas"][name])
            pending.extend(_refs(schemas[name]))
    return without_pem({"info": {"source": "twilio_chat_v2.json", "title": reference["info"]["title"],
                                  "openapi": reference["openapi"]},
                         "paths": paths, "schemas": dict(sorted(schemas.items()))})


# Twilio's Credential parameters give a (truncated) PEM private key as their example; the package
# carries no private-key block, not even an example one, so key scanners stay quiet.
_PEM = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)


def without_pem(node: Any) -> Any:
    if isinstance(node, str):
        return _PEM.sub("<PEM-encoded private key>", node)
    if isinstance(node, dict):
        return {k: without_pem(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_pem(v) for v in node]
    return node


@lru_cache(maxsize=1)
def _chat_v2_text() -> str:
    return resources.files("tokensvc").joinpath(CHAT_V2_DATA).read_text(encoding="utf-8")


def chat_v2() -> dict[str, Any]:
    """A fresh copy of the vendored Chat v2 subset."""
    return json.loads(_chat_v2_text())




def _chat_operation(op: dict[str, Any], doc_path: str, method: str) -> dict[str, Any]:
    """Twilio's operation plus tokensvc's error responses and, where a client may use it, the token."""
    statuses = ["400", "401", "403", "404", "429"]
    if method in ("post",):
        statuses.append("413")
    if doc_path.endswith("/Users") and method == "post":
        statuses.append("409")
    if doc_path.endswith("/Roles/{Sid}") and method == "delete":
        statuses.append("409")
    channel_write = "/Channels" in doc_path and method == "post" and "/Users/" not in doc_path
    if channel_write and not doc_path.endswith("/Members/{Sid}"):
        statuses.append("409")  # 50307 unique name taken, 50404 already a member, 50212 already invited
    op["responses"].update(error_refs(*statuses))
    if doc_path.endswith("/Users") and method == "get":
        op["parameters"] = [*op.get("parameters", []), *USER_LIST_FILTERS]
    if "/Users" in doc_path and not (doc_path.endswith("/Users") and method == "post") and method != "delete":
        # SPEC §5: a client app may read users of its service and edit itself with its access token.
        op["security"] = [{BASIC: []}, {TOKEN: []}]
    # SPEC §8: a client app acts in channels within its roles' permissions; §9: it lists, reads
    # and deletes its own bindings.
    if "/Channels" in doc_path or "/Bindings" in doc_path:
        op["security"] = [{BASIC: []}, {TOKEN: []}]
    return op


def build_openapi(routes: list[Any]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of every HTTP route in `routes` (a Starlette app's route list)."""
    chat = chat_v2()
    own = own_paths()
    paths: dict[str, Any] = {}
    websockets: dict[str, Any] = {}
    for route in routes:
        route_path = getattr(route, "path", None)
        if route_path is None or getattr(route, "include_in_schema", True) is False:
            continue  # the console's HTML pages (tokensvc/console) are no part of the API
        if isinstance(route, WebSocketRoute):  # OpenAPI 3.0 cannot describe it; say what it is
            if route_path not in WEBSOCKETS:
                raise ValueError(f"WebSocket route {route_path} is not described")
            websockets[route_path] = WEBSOCKETS[route_path]
            continue
        methods = getattr(route, "declared_methods", None)
        if methods is None:
            raise ValueError(f"route {route_path} declares no methods (build it with api.routing.resource)")
        allowed = {m.lower() for m in methods}
        for doc_path in doc_paths(route_path):
            theirs = chat["paths"].get(doc_path, {})
            # Twilio's operations, and tokensvc's own on the same path (POST /Bindings: registration)
            source = {**own.get(doc_path, {}), **theirs}
            if not source:
                raise ValueError(f"route {route_path} ({doc_path}) has no OpenAPI description")
            item = {k: v for k, v in source.items() if k in ("description", "x-twilio")}
            for method in METHODS:
                if method in allowed and method in source:
                    op = source[method]
                    item[method] = _chat_operation(op, doc_path, method) if method in theirs else op
            if not any(m in item for m in METHODS):
                raise ValueError(f"route {route_path} serves none of the described methods of {doc_path}")
            paths[doc_path] = item
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "tokensvc",
            "version": VERSION,
            "description": "Self-hosted access-token issuer that auto-provisions users. The Chat v2 operations are "
                           "Twilio's (from its published Chat v2 description); the token endpoint, API keys and the "
                           "operational endpoints are tokensvc's own. Every error body is a TwilioError.",
        },
        "servers": [{"url": "/"}],
        "security": [{BASIC: []}],
        "tags": [{"name": t} for t in sorted({tag for item in paths.values() for m in METHODS if m in item
                                              for tag in item[m].get("tags", ())})],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                BASIC: {"type": "http", "scheme": "basic",
                        "description": "Account SID + auth token, or API key SID + secret"},
                TOKEN: {"type": "apiKey", "in": "header", "name": "X-Twilio-Token",
                        "description": "A client app's access token (SPEC §5)"},
            },
            "schemas": {**chat["schemas"], **OWN_SCHEMAS},
            "responses": {f"Error{s.capitalize()}": r for s, r in error_responses().items()},
        },
    }
    if websockets:
        doc["x-websockets"] = websockets
    return doc


def main(argv: list[str]) -> int:
    """Refresh the vendored subset: python -m tokensvc.openapi path/to/twilio_chat_v2.json"""
    if len(argv) != 1:
        print(main.__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        subset = vendor_chat_v2(json.load(f))
    target = resources.files("tokensvc").joinpath(CHAT_V2_DATA)
    with open(str(target), "w", encoding="utf-8") as f:
        json.dump(subset, f, indent=1, ensure_ascii=False, sort_keys=False)
        f.write("\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
