"""create_app(settings) -> Starlette: routes, the error renderer, the request middleware, lifespan."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from . import console, errors, logs
from .api import api_keys as api_keys_api
from .api import channels as channels_api
from .api import push as push_api
from .api import roles as roles_api
from .api import services as services_api
from .api import system as system_api
from .api import tokens as tokens_api
from .api import users as users_api
from .api.render import error_response
from .api.routing import DeclaredRoute, resource
from .auth import Authenticator
from .config import Settings
from .context import Context
from .crypto import SecretBox
from .db import Database, make_engine
from .limits import TokenRateLimiter
from .metrics import Metrics
from .signing import Keyring
from .store.schema import ensure_schema
from .store.tombstones import Tombstones


class _AnyPath(PathConvertor):
    """`path` that also spans a newline: an identity may hold one (`%0A`), and `.*` stops there."""

    regex = r"[\s\S]*"


register_url_convertor("anypath", _AnyPath())

log = logging.getLogger("tokensvc")
access_log = logging.getLogger("tokensvc.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _routes() -> list[Any]:
    """Every route with exactly the methods it serves, a handler each (SPEC §7)."""
    return [
        # The hot paths first: the router tries routes in order (each miss costs a regex match).
        resource("/v2/Services/{service_sid}/Tokens", POST=tokens_api.create_token),
        # Matched on the raw path in the handler, so an identity may contain an encoded slash;
        # the handler tells the user from its sub-lists and dispatches on their own methods.
        DeclaredRoute("/v2/Services/{service_sid}/Users/{rest:anypath}", users_api.item,
                      declared=users_api.ITEM_METHODS, allow_for=users_api.item_allow),
        resource("/healthz", GET=system_api.healthz),
        resource("/readyz", GET=system_api.readyz),
        resource("/metrics", GET=system_api.metrics),
        resource("/openapi.json", GET=system_api.openapi),
        resource("/.well-known/jwks.json", GET=system_api.jwks),
        resource("/.well-known/openid-configuration", GET=system_api.openid_configuration),
        resource("/v2/Services", GET=services_api.list_, POST=services_api.create),
        resource("/v2/Services/{sid}", GET=services_api.fetch, POST=services_api.update,
                 DELETE=services_api.delete),
        resource("/v2/Services/{service_sid}/Roles", GET=roles_api.list_, POST=roles_api.create),
        resource("/v2/Services/{service_sid}/Roles/{sid}", GET=roles_api.fetch, POST=roles_api.update,
                 DELETE=roles_api.delete),
        resource("/v2/Services/{service_sid}/Users", GET=users_api.list_, POST=users_api.create),
        resource("/v2/Services/{service_sid}/Channels", GET=channels_api.list_, POST=channels_api.create),
        # Matched on the raw path like /Users/{rest}: a unique name or an identity may hold %2F.
        DeclaredRoute("/v2/Services/{service_sid}/Channels/{channel_rest:anypath}", channels_api.item,
                      declared=channels_api.ITEM_METHODS, allow_for=channels_api.item_allow),
        resource("/2010-04-01/Accounts/{account_sid}/Keys.json", GET=api_keys_api.list_, POST=api_keys_api.create),
        resource("/2010-04-01/Accounts/{account_sid}/Keys/{sid}.json", GET=api_keys_api.fetch,
                 POST=api_keys_api.update, DELETE=api_keys_api.delete),
        # Push (SPEC §9); /Users/{key}/Bindings[/{BS}] are served by the users route above.
        resource("/v2/Credentials", GET=push_api.list_credentials, POST=push_api.create_credential),
        resource("/v2/Credentials/{sid}", GET=push_api.fetch_credential, POST=push_api.update_credential,
                 DELETE=push_api.delete_credential),
        resource("/v2/Services/{service_sid}/Bindings", GET=push_api.list_bindings, POST=push_api.register),
        resource("/v2/Services/{service_sid}/Bindings/{sid}", GET=push_api.fetch_binding,
                 DELETE=push_api.delete_binding),
        WebSocketRoute("/v2/Connect", system_api.connect),
        *console.routes(),  # the admin console's HTML pages (SPEC §11), last: the API's routes are hotter
    ]


def _is_console(request: Request) -> bool:
    path = request.scope.get("path", "")
    return path == console.PREFIX or path.startswith(console.PREFIX + "/")


async def _twilio_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.TwilioError)
    if _is_console(request):  # the same error, as a page for a person
        return console.error_page(request, exc)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = errors.not_found()
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        err = errors.method_not_allowed(tuple(sorted(m.strip() for m in allowed.split(",") if m.strip())))
    else:
        err = errors.http_status(exc.status_code, str(exc.detail))
    return await _twilio_error(request, err)


class RequestMiddleware:
    """Request id (echoed in X-Request-Id), JSON access log, metrics, and the last line of
    defence: any unexpected exception becomes a logged 500 20500 with no trace in the body."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            # The client left (or the transport closed it: body deadline, server.py) before its
            # body was read: nobody to answer, nothing broken. 499 as nginx logs it.
            status = 499
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)", scope["method"], _route(scope), request_id)
            status = 500
            if not response_started:
                await error_response(errors.internal_error(request_id))(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            key = (scope["method"], route, status)
            children = self._children.get(key)
            if children is None:  # labelled children looked up once: routes x methods x statuses
                children = self._children[key] = (self.metrics.requests.labels(scope["method"], route, str(status)),
                                                  self.metrics.latency.labels(route))
            children[0].inc()
            children[1].observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                # Route templates only: identities in paths and query strings are not logged.
                # A record made directly: Logger.info would also look up the caller's frame.
                access_log.handle(logging.LogRecord("tokensvc.access", logging.INFO, __file__, 0, json.dumps({
                    "request_id": request_id, "method": scope["method"], "route": route, "status": status,
                    "ms": round(elapsed * 1000, 2), "client": (scope.get("client") or ("-",))[0],
                }), None, None))


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class TokensvcApp:
    """The ASGI app: client connections (/v2/Connect) go straight to the Hub, everything else to
    Starlette (routes, middleware, error renderer, lifespan).

    A WebSocket session's coroutine chain lives as long as the connection: through Starlette's
    middleware, router and endpoint wrappers it held ten more frames (~4 KiB per idle connection,
    bench/connect.py) and cost their CPU on every connect, for nothing a session needs: the Hub
    handles its own errors, and the request middleware only serves HTTP. The WebSocketRoute stays
    for the route list (OpenAPI) and as the path taken before the Hub runs."""

    def __init__(self, starlette: Starlette, ctx: Context):
        self.starlette = starlette
        self.ctx = ctx
        self.state = starlette.state  # tests and tools reach the context as app.state.ctx
        self.routes = starlette.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/v2/Connect":
            hub = self.ctx.hub
            if hub is not None:
                await hub.serve(WebSocket(scope, receive, send))
                return
        await self.starlette(scope, receive, send)


def build_context(settings: Settings) -> Context:
    """Everything a request needs; the schema must exist already (see schema.ensure_schema)."""
    db = Database(make_engine(settings))
    keyring = Keyring(settings.keys_dir)
    box = SecretBox.load_or_create(settings.keys_dir)
    metrics = Metrics()
    auth = Authenticator(settings=settings, db=db, keyring=keyring, box=box, metrics=metrics)
    return Context(settings=settings, db=db, keyring=keyring, box=box, auth=auth, metrics=metrics,
                   tombstones=Tombstones(box.derive("tombstones"), max_ttl=settings.max_ttl),
                   token_limiter=TokenRateLimiter(settings.token_rate_limit))


def create_app(settings: Settings, *, migrate: bool = True) -> TokensvcApp:
    """The ASGI app. `migrate` brings the schema up to date at start (the SQLite default)."""
    if migrate:
        ensure_schema(settings)
    c = build_context(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from .connect import Hub
        from .webhooks.delivery import DeliveryProcess
        from .webhooks.http import Client
        from .webhooks.pre import PreEvents
        from .webhooks.signers import SigningTokens

        hub = Hub(c)
        c.hub = hub
        delivery = DeliveryProcess(c.settings)
        client: Client | None = Client()
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread (tests)
            signal.signal(signal.SIGHUP, lambda *_: c.keyring.request_reload())
        await hub.start()
        await delivery.start(c.db)
        c.webhooks = delivery
        c.pre_events = PreEvents(lambda: client, SigningTokens(c.db, c.box).get)
        try:
            yield
        finally:
            c.webhooks = c.pre_events = None
            await delivery.stop()
            if client is not None:
                await client.aclose()
                client = None
            await hub.stop()
            await c.db.aclose()
            c.db.dispose()
            logs.flush()

    starlette = Starlette(
        routes=_routes(),
        exception_handlers={errors.TwilioError: _twilio_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    starlette.router.redirect_slashes = False  # a 307 with an empty body is no Twilio answer: 404 JSON
    starlette.state.ctx = c
    starlette.add_middleware(RequestMiddleware, metrics=c.metrics)
    return TokensvcApp(starlette, c)
