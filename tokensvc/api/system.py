"""Operational endpoints: health, readiness, metrics, JWKS, OpenAPI, and the WebSocket entry."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from ..metrics import CONTENT_TYPE
from .common import base_url, ctx, json_response


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    c = ctx(request)
    try:
        await c.db.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
    except Exception:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    return json_response({"status": "ready"})


async def metrics(request: Request) -> Response:
    return Response(ctx(request).metrics.render(), media_type=CONTENT_TYPE)


async def jwks(request: Request) -> Response:
    response = json_response(ctx(request).keyring.current().jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


async def openid_configuration(request: Request) -> Response:
    """OpenID Connect Discovery 1.0 metadata for consumers of tokensvc's tokens (issue 15): what
    verifies them from the issuer alone. tokensvc is a token issuer, not an OpenID Provider: no
    authorization, token or userinfo endpoint is claimed. The fields are those Discovery requires
    (as Kubernetes' service-account issuer publishes them); `sub` is the account SID, the same for
    every consumer ("public")."""
    c = ctx(request)
    response = json_response({
        "issuer": c.settings.issuer,
        "jwks_uri": f"{base_url(request)}/.well-known/jwks.json",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "iat", "nbf", "exp", "jti", "grants"],
    })
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


async def openapi(request: Request) -> Response:
    from ..openapi import build_openapi

    return json_response(build_openapi(request.app.routes))


async def connect(websocket: WebSocket) -> None:
    hub = websocket.app.state.ctx.hub
    await hub.serve(websocket)
