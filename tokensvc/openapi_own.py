"""tokensvc's own operations in the OpenAPI document (the token endpoint, API keys, the
operational endpoints, the WebSocket), and the Twilio-shaped error responses every operation shares.
The Chat v2 operations are Twilio's, vendored; `openapi.build_openapi` puts both together."""

from __future__ import annotations

from typing import Any

BASIC = "accountSid_authToken"  # Twilio's name for the Basic scheme, kept so its operations read as-is
TOKEN = "accessToken"


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
# SPEC §11: tokensvc extensions of Twilio's ListUser, marked so they read apart from Twilio's own.
EXTENSION = "x-tokensvc-extension"
USER_LIST_FILTERS = [
    {"name": "Identity", "in": "query", EXTENSION: True, "style": "form", "explode": True,
     "description": "tokensvc extension (Basic credentials only: a client token is 403 20403). Only the users of "
                    "these exact identities; repeat it for several.",
     "schema": {"type": "array", "items": {"type": "string", "maxLength": 256}}},
    {"name": "IdentityPrefix", "in": "query", EXTENSION: True,
     "description": "tokensvc extension (Basic only). Users whose identity starts with this text, taken literally "
                    "(% and _ are plain characters) and case-sensitively; the list is then in identity order "
                    "(Unicode code points) instead of creation order.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
    {"name": "RoleSid", "in": "query", EXTENSION: True,
     "description": "tokensvc extension (Basic only). Users holding this service role.",
     "schema": _sid("RL")},
    {"name": "UpdatedAfter", "in": "query", EXTENSION: True,
     "description": "tokensvc extension (Basic only). Users whose date_updated is strictly after this ISO 8601 "
                    "date-time (2016-03-24T21:05:19Z; an offset is converted, none means UTC); the list is then "
                    "in (date_updated, sid) order, and sets the order when combined with IdentityPrefix. Filters "
                    "combine with AND; every page URL carries them.",
     "schema": {"type": "string", "format": "date-time"}},
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
    "OpenIdConfiguration": {
        "type": "object",
        "required": ["issuer", "jwks_uri", "response_types_supported", "subject_types_supported",
                     "id_token_signing_alg_values_supported"],
        "properties": {
            "issuer": {"type": "string", "description": "The `iss` of every token tokensvc signs (TOKENSVC_ISSUER)."},
            "jwks_uri": {"type": "string", "format": "uri"},
            "response_types_supported": {"type": "array", "items": {"type": "string"}},
            "subject_types_supported": {"type": "array", "items": {"enum": ["public"]}},
            "id_token_signing_alg_values_supported": {"type": "array", "items": {"enum": ["ES256"]}},
            "claims_supported": {"type": "array", "items": {"type": "string"}},
        },
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


def error_responses() -> dict[str, Any]:
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


def error_refs(*statuses: str) -> dict[str, Any]:
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
                          **error_refs("400", "401", "403", "404", "409", "413", "429")},
        }},
        "/2010-04-01/Accounts/{AccountSid}/Keys.json": {
            "get": {"operationId": "ListKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, *_PAGING],
                    "responses": {"200": _json(_ref("api.v2010.account.key_list"), "OK"),
                                  **error_refs("400", "401", "403", "404", "429")}},
            "post": {"operationId": "CreateNewKey", "tags": ["Api20100401NewKey"], "parameters": [_ACCOUNT],
                     "requestBody": _form("CreateNewKeyRequest", _KEY_NAME),
                     "responses": {"201": _json(_ref("api.v2010.account.new_key"), "Created"),
                                   **error_refs("400", "401", "403", "404", "413", "429")}},
        },
        "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json": {
            "get": {"operationId": "FetchKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, _KEY],
                    "responses": {"200": _json(_ref("api.v2010.account.key"), "OK"),
                                  **error_refs("401", "403", "404", "429")}},
            "post": {"operationId": "UpdateKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, _KEY],
                     "requestBody": _form("UpdateKeyRequest", _KEY_NAME),
                     "responses": {"200": _json(_ref("api.v2010.account.key"), "OK"),
                                   **error_refs("400", "401", "403", "404", "413", "429")}},
            "delete": {"operationId": "DeleteKey", "tags": ["Api20100401Key"], "parameters": [_ACCOUNT, _KEY],
                       "responses": {"204": {"description": "Deleted; its credentials and tokens stop working"},
                                     **error_refs("401", "403", "404", "429")}},
        },
        "/v2/Services/{ServiceSid}/Bindings": {"post": {
            "operationId": "CreateBinding", "tags": ["ChatV2Binding"],
            "summary": "Register a device for push (a tokensvc extension, SPEC §9): 201 new, 200 the same key again",
            "security": [{BASIC: []}, {TOKEN: []}],
            "parameters": [_path_param("ServiceSid", "IS", "The service of the user whose device registers.")],
            "requestBody": _form("CreateBindingRequest", {
                "BindingType": {"$ref": "#/components/schemas/binding_enum_binding_type"},
                "Address": {"type": "string", "minLength": 1, "maxLength": 4096,
                            "description": "The device token; write-only, never returned."},
                "CredentialSid": {**_sid("CR"), "description": "Default: the token's push_credential_sid."},
                "Endpoint": {"type": "string", "minLength": 1, "maxLength": 256,
                             "description": "Default: the token's endpoint_id."},
                "Identity": {"type": "string", "minLength": 1, "maxLength": 256,
                             "description": "With Basic credentials: the existing user's identity."},
            }, ["BindingType", "Address"]),
            "responses": {"201": _json(_ref("chat.v2.service.binding"), "Created"),
                          "200": _json(_ref("chat.v2.service.binding"), "Updated: the same key was registered"),
                          **error_refs("400", "401", "403", "404", "413", "429")},
        }},
        "/.well-known/jwks.json": {"get": {
            "operationId": "FetchJwks", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "Public halves of the signing keys that may still verify",
            "responses": {"200": _json(_ref("JWKS"), "OK")},
        }},
        "/.well-known/openid-configuration": {"get": {
            "operationId": "FetchOpenIdConfiguration", "tags": ["TokensvcSystem"], "security": _PUBLIC,
            "summary": "OpenID Connect Discovery metadata: the issuer of tokensvc-signed tokens and its JWKS",
            "responses": {"200": _json(_ref("OpenIdConfiguration"), "OK")},
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


WEBSOCKETS = {
    "/v2/Connect": {
        "description": "Client connection (SPEC §5): the access token in X-Twilio-Token or as the first text frame "
                       "{\"type\": \"authenticate\", \"token\": ...}. Server frames: connected, tokenAboutToExpire, "
                       "tokenExpired (then close 4001); client frame updateToken -> tokenUpdated; registerPush "
                       "(the fields of POST /Bindings) -> pushRegistered with the binding (SPEC §9). A bad token gets "
                       "an error frame with the Twilio code, then close 4001.",
    },
}
