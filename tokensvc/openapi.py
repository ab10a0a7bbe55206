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
)
METHODS = ("get", "post", "delete")
BASIC = "accountSid_authToken"  # Twilio's name for the Basic scheme, kept so its operations read as-is
TOKEN = "accessToken"

# Starlette parameter name -> the path segment(s) the document uses for it.
_PARAMS: dict[str, tuple[str, ...]] = {
    "sid": ("{Sid}",),
    "service_sid": ("{ServiceSid}",),
    "account_sid": ("{AccountSid}",),
    # /Users/{rest} is one route for the user and its two sub-lists (an identity may hold %2F).
    "rest": ("{Sid}", "{UserSid}/Channels", "{UserSid}/Bindings"),
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
    return {"info": {"source": "twilio_chat_v2.json", "title": reference["info"]["title"],
                     "openapi": reference["openapi"]},
            "paths": paths, "schemas": dict(sorted(schemas.items()))}


@lru_cache(maxsize=1)
def _chat_v2_text() -> str:
    return resources.files("tokensvc").joinpath(CHAT_V2_DATA).read_text(encoding="utf-8")


def chat_v2() -> dict[str, Any]:
    """A fresh copy of the vendored Chat v2 subset."""
    return json.loads(_chat_v2_text())


# ---------------------------------------------------------------- tokensvc's own operations


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _sid(prefix: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 34, "maxLength": 34, "pattern": f"^{prefix}[0-9a-fA-F]{{32}}$"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, prefix: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _sid(prefix)}


def _form(title: str, properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "title": title, "properties": properties}
    if required:
        schema["required"] = required
    return {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}


_PAGING = [
    {"name": "PageSize", "in": "query",
     "description": "Resources per page: default 50, at most 100 (larger values are clamped).",
     "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 100}},
    {"name": "Page", "in": "query", "description": "The page index (client state).",
     "schema": {"type": "integer", "minimum": 0}},
    {"name": "PageToken", "in": "query", "description": "The opaque cursor from a page URL.",
     "schema": {"type": "string"}},
]
_ACCOUNT = _path_param("AccountSid", "AC", "The SID of the account that owns the API keys (the caller's own).")
_KEY = _path_param("Sid", "SK", "The SID of the API key.")
_KEY_NAME = {"FriendlyName": {"type": "string", "maxLength": 256,
                              "description": "A descriptive string for the key."}}
_PUBLIC: list[dict[str, list[str]]] = []  # no authentication

OWN_SCHEMAS: dict[str, Any] = {
    "TwilioError": {
        "type": "object", "additionalProperties": False,
        "required": ["code", "message", "more_info", "status"],
        "description": "Every error body (SPEC §2): a Twilio error code, a message, its docs URL and the HTTP status.",
        "properties": {
            "code": {"type": "integer", "description": "The Twilio error code, e.g. 20404."},
            "message": {"type": "string"},
            "more_info": {"type": "string", "format": "uri",
                          "pattern": "^https://www\\.twilio\\.com/docs/errors/[0-9]+$"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
        },
    },
    "tokensvc.token": {
        "type": "object", "additionalProperties": False,
        "required": ["token", "identity", "user_sid", "service_sid", "account_sid", "ttl", "expires_at",
                     "user_created"],
        "properties": {
            "token": {"type": "string",
                      "description": "An ES256 JWT shaped like a Twilio Access Token, with a Chat grant."},
            "identity": {"type": "string"},
            "user_sid": _sid("US"),
            "service_sid": _sid("IS"),
            "account_sid": _sid("AC"),
            "ttl": {"type": "integer", "minimum": 1},
            "expires_at": {"type": "string", "format": "date-time"},
            "user_created": {"type": "boolean", "description": "Whether this request created the user."},
        },
    },
    "api.v2010.account.key": {
        "type": "object", "required": ["sid", "friendly_name", "date_created", "date_updated"],
        "properties": {
            "sid": _sid("SK"),
            "friendly_name": {"type": "string", "nullable": True},
            "date_created": {"type": "string", "format": "date-time-rfc-2822"},
            "date_updated": {"type": "string", "format": "date-time-rfc-2822"},
        },
    },
    "api.v2010.account.new_key": {
        "allOf": [_ref("api.v2010.account.key"), {
            "type": "object", "required": ["secret"],
            "properties": {"secret": {"type": "string", "minLength": 32,
                                      "description": "The key's secret, shown only in this response."}},
        }],
    },
    "api.v2010.account.key_list": {
        "type": "object",
        "required": ["keys", "first_page_uri", "next_page_uri", "previous_page_uri", "uri", "page", "page_size",
                     "start", "end"],
        "properties": {
            "keys": {"type": "array", "items": _ref("api.v2010.account.key")},
            "first_page_uri": {"type": "string"},
            "next_page_uri": {"type": "string", "nullable": True},
            "previous_page_uri": {"type": "string", "nullable": True},
            "uri": {"type": "string"},
            "page": {"type": "integer"},
            "page_size": {"type": "integer"},
            "start": {"type": "integer"},
            "end": {"type": "integer"},
        },
    },
    "JWKS": {
        "type": "object", "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {
            "type": "object", "required": ["kty", "crv", "x", "y", "kid", "use", "alg"],
            "properties": {"kty": {"enum": ["EC"]}, "crv": {"enum": ["P-256"]}, "x": {"type": "string"},
                           "y": {"type": "string"}, "kid": {"type": "string"}, "use": {"enum": ["sig"]},
                           "alg": {"enum": ["ES256"]}}}}},
    },
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}},
               "additionalProperties": {"type": "string"}},
}

# Error responses by status; `default` covers the 500 20500 that must never happen.
_ERRORS = {
    "400": "Invalid parameter (20001, 21481, 50xxx)",
    "401": "No or bad credentials (20003) or an invalid or expired access token (20101, 20104)",
    "403": "Not permitted for this principal (20403)",
    "404": "No such resource, or one of another account (20404)",
    "409": "Conflict: the identity exists (50201) or the role is in use (50100)",
    "413": "Request body over the size bound",
    "429": "Too many failed logins or tokens (20429); retry after Retry-After seconds",
    "default": "Unexpected failure (20500, with a request id)",
}


def _error_responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, text in _ERRORS.items():
        response = _json(_ref("TwilioError"), text)
        if status == "429":
            response["headers"] = {"Retry-After": {"required": True, "description": "Seconds to wait",
                                                   "schema": {"type": "integer", "minimum": 1}}}
        if status == "401":
            response["headers"] = {"WWW-Authenticate": {"description": "Basic realm=\"tokensvc\" (credential failures)",
                                                        "schema": {"type": "string"}}}
        out[status] = response
    return out


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/Error{s.capitalize()}"} for s in (*statuses, "default")}


def own_paths() -> dict[str, dict[str, Any]]:
    """tokensvc's own operations (SPEC §3 API keys, §4 tokens, §6 operations)."""
    return {
        "/v2/Services/{ServiceSid}/Tokens": {"post": {
            "operationId": "CreateToken", "tags": ["TokensvcToken"],
            "summary": "Get a signed access token for an identity, creating its user on first encounter",
            "parameters": [_path_param("ServiceSid", "IS", "The service the token grants Chat access to.")],
            "requestBody": _form("CreateTokenRequest", {
                "Identity": {"type": "string", "minLength": 1, "maxLength": 256,
                             "description": "The user's identity; not a User SID."},
                "Ttl": {"type": "integer", "minimum": 1, "maximum": 86400,
                        "description": "Lifetime in seconds: default TOKENSVC_DEFAULT_TTL (3600), "
                                       "at most TOKENSVC_MAX_TTL (86400)."},
            }, ["Identity"]),
            "responses": {"201": _json(_ref("tokensvc.token"), "Created"),
                          **_errors("400", "401", "403", "404", "409", "413", "429")},
        }},
        "/2010-04-01/Accounts/{AccountSid}/Keys.json": {
            "get": {"operationId": "ListKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, *_PAGING],
                    "responses": {"200": _json(_ref("api.v2010.account.key_list"), "OK"),
                                  **_errors("400", "401", "403", "404", "429")}},
            "post": {"operationId": "CreateNewKey", "tags": ["Api20100401NewKey"], "parameters": [_ACCOUNT],
                     "requestBody": _form("CreateNewKeyRequest", _KEY_NAME),
                     "responses": {"201": _json(_ref("api.v2010.account.new_key"), "Created"),
                                   **_errors("400", "401", "403", "404", "413", "429")}},
        },
        "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json": {
            "get": {"operationId": "FetchKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, _KEY],
                    "responses": {"200": _json(_ref("api.v2010.account.key"), "OK"),
                                  **_errors("401", "403", "404", "429")}},
            "post": {"operationId": "UpdateKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, _KEY],
                     "requestBody": _form("UpdateKeyRequest", _KEY_NAME),
                     "responses": {"200": _json(_ref("api.v2010.account.key"), "OK"),
                                   **_errors("400", "401", "403", "404", "413", "429")}},
            "delete": {"operationId": "DeleteKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, _KEY],
                       "responses": {"204": {"description": "Deleted; its credentials and tokens stop working"},
                                     **_errors("401", "403", "404", "429")}},
        },
        "/.well-known/jwks.json": {"get": {
            "operationId": "FetchJwks", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "Public halves of the signing keys that may still verify",
            "responses": {"200": _json(_ref("JWKS"), "OK")},
        }},
        "/healthz": {"get": {
            "operationId": "FetchHealth", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "200 while the process lives", "responses": {"200": _json(_ref("Status"), "OK")},
        }},
        "/readyz": {"get": {
            "operationId": "FetchReadiness", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "200 only while the database is reachable",
            "responses": {"200": _json(_ref("Status"), "Ready"), "503": _json(_ref("Status"), "Database unreachable")},
        }},
        "/metrics": {"get": {
            "operationId": "FetchMetrics", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "operationId": "FetchOpenApi", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OK")},
        }},
    }


_WEBSOCKETS = {
    "/v2/Connect": {
        "description": "Client connection (SPEC §5): the access token in X-Twilio-Token or as the first text frame "
                       "{\"type\": \"authenticate\", \"token\": ...}. Server frames: connected, tokenAboutToExpire, "
                       "tokenExpired (then close 4001); client frame updateToken -> tokenUpdated. A bad token gets "
                       "an error frame with the Twilio code, then close 4001.",
    },
}


def _chat_operation(op: dict[str, Any], doc_path: str, method: str) -> dict[str, Any]:
    """Twilio's operation plus tokensvc's error responses and, where a client may use it, the token."""
    statuses = ["400", "401", "403", "404", "429"]
    if method in ("post",):
        statuses.append("413")
    if doc_path.endswith("/Users") and method == "post":
        statuses.append("409")
    if doc_path.endswith("/Roles/{Sid}") and method == "delete":
        statuses.append("409")
    op["responses"].update(_errors(*statuses))
    if "/Users" in doc_path and not (doc_path.endswith("/Users") and method == "post") and method != "delete":
        # SPEC §5: a client app may read users of its service and edit itself with its access token.
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
        if route_path is None:
            continue
        if isinstance(route, WebSocketRoute):  # OpenAPI 3.0 cannot describe it; say what it is
            if route_path not in _WEBSOCKETS:
                raise ValueError(f"WebSocket route {route_path} is not described")
            websockets[route_path] = _WEBSOCKETS[route_path]
            continue
        methods = getattr(route, "declared_methods", None)
        if methods is None:
            raise ValueError(f"route {route_path} declares no methods (build it with api.routing.resource)")
        allowed = {m.lower() for m in methods}
        for doc_path in doc_paths(route_path):
            source = chat["paths"].get(doc_path) or own.get(doc_path)
            if source is None:
                raise ValueError(f"route {route_path} ({doc_path}) has no OpenAPI description")
            item = {k: v for k, v in source.items() if k in ("description", "x-twilio")}
            for method in METHODS:
                if method in allowed and method in source:
                    op = source[method]
                    item[method] = _chat_operation(op, doc_path, method) if doc_path in chat["paths"] else op
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
            "responses": {f"Error{s.capitalize()}": r for s, r in _error_responses().items()},
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
