"""What every endpoint shares: the app context, form parsing, base URLs, auth and JSON output."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, urls
from ..auth import Principal
from ..context import Context
from ..paging import ROW_ID, Cursors, Page, PageRequest, page_meta, parse_page_request
from ..store.outbox import Origin, sdk
from ..usecases.effects import apply
from ..usecases.users import provision_user

FORM_TYPE = "application/x-www-form-urlencoded"


def ctx(request: Request) -> Context:
    return request.app.state.ctx


class Form:
    """A parsed form body; repeated names keep every value."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[-1] if values else None

    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise errors.missing_param(name)
        return value

    def names(self) -> list[str]:
        return list(self._values)


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 once it exceeds the bound, before it is read whole."""
    limit = ctx(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise errors.invalid_param("Content-Length", "must be a number")
        if int(declared) > limit:
            raise errors.body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> Form:
    """A urlencoded form body as UTF-8 text; anything else is a 400 20001, never a 500."""
    body = await read_body(request)
    if not body:
        return Form([])
    content_type = request.headers.get("content-type", FORM_TYPE).split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise errors.wrong_content_type(FORM_TYPE, content_type)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=1000)
    except UnicodeDecodeError:
        raise errors.body_not_utf8() from None
    except ValueError:
        raise errors.too_many_params() from None
    for name, value in pairs:
        if "\x00" in value or "\x00" in name:
            raise errors.invalid_param(name[:64].replace("\x00", ""), "must not contain NUL characters")
    return Form(pairs)


def query(request: Request) -> Mapping[str, str]:
    """Query parameters, refusing undecodable ones cleanly."""
    try:
        return dict(parse_qsl(request.scope.get("query_string", b"").decode("latin-1"),
                              keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        raise errors.invalid_query() from None


def query_values(request: Request) -> dict[str, list[str]]:
    """Query parameters with every value of a repeated name (the list filters `Type`, `Identity`,
    `BindingType`); a NUL in a name or a value is refused (400 20001), as in a form."""
    try:
        pairs = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True,
                          encoding="utf-8", errors="strict", max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise errors.invalid_query() from None
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if "\x00" in value or "\x00" in name:
            raise errors.invalid_param(name[:64].replace("\x00", ""), "must not contain NUL characters")
        values.setdefault(name, []).append(value)
    return values


def base_url(request: Request) -> str:
    """TOKENSVC_PUBLIC_URL, else the request's own scheme, host and port (urls.base_url)."""
    return urls.base_url(ctx(request).settings, request.scope, request.headers.get("host"))


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def empty_response() -> Response:
    return Response(status_code=204)


def client_addr(request: Request) -> str:
    return request.client.host if request.client else "-"


async def authenticate(request: Request, *, service_sid: str | None = None) -> Principal:
    """Basic or access-token authentication. A token must be for the service in the path (401
    20101 otherwise) and auto-provisions its user (SPEC §5)."""
    c = ctx(request)
    token = request.headers.get("x-twilio-token")
    if token is not None and request.headers.get("authorization") is None:
        principal = await c.auth.client(token)
        assert principal.token is not None  # a client principal always carries its verified token
        if service_sid is not None and principal.token.service_sid != service_sid:
            raise errors.invalid_token("Access Token is not for this service")
        await provision(request, principal)
        return principal
    principal = await c.auth.basic(request.headers.get("authorization"), client_addr(request))
    request.state.principal = principal
    return principal


async def provision(request: Request, principal: Principal) -> Mapping[str, Any]:
    """The token holder's user, created on first encounter unless the token predates the
    identity's deletion (SPEC §11, 401 20101)."""
    c = ctx(request)
    verified = principal.token
    assert verified is not None
    svc = await c.auth.service(verified.service_sid)
    if svc is None:
        raise errors.invalid_token("Access Token is for a service that does not exist")
    (user, _), events = await provision_user(c, service=svc, identity=verified.identity, token=verified)
    await apply(c, events)
    request.state.principal = principal
    request.state.user = user
    return user


def origin(request: Request, principal: Principal) -> Origin:
    """Who a change comes from, for its webhooks (SPEC §10): a client token is SDK and always posts;
    Basic is API and posts only with `X-Twilio-Webhook-Enabled: true`."""
    if principal.is_client:
        return sdk(principal.identity)
    return Origin("API", None, request.headers.get("x-twilio-webhook-enabled", "").lower() == "true")


def require_admin(principal: Principal) -> None:
    """Only Basic-authenticated callers manage services, roles, users and keys."""
    if principal.is_client:
        raise errors.forbidden()


async def service_list(request: Request, principal: Principal, service_sid: str, key: str,
                       lister: Callable[..., Awaitable[Page]],
                       to_json: Callable[[Any, str], dict[str, Any]]) -> Response:
    """A paged list of a service's children (roles, users) by its use case
    `lister(c, account_sid=, service_sid=, req=)`, which refuses another account's service."""
    path = f"/v2/Services/{service_sid}/{key.capitalize()}"
    cursors = page_cursors(request, path)
    req: PageRequest = parse_page_request(query(request), cursors)
    page = await lister(ctx(request), account_sid=principal.account_sid, service_sid=service_sid, req=req)
    base = base_url(request)
    return json_response({key: [to_json(row._mapping, base) for row in page.rows],
                          "meta": page_meta(f"{base}{path}", key, cursors, req, page)})


def page_cursors(request: Request, path: str, kind: str = ROW_ID) -> Cursors:
    """The PageToken codec of the list at `path` in the order `kind` (sealed with the app's secret box)."""
    return Cursors(ctx(request).box, path, kind)


class OwnedPage:
    """The page asked for of a list whose path names its owner's SID, known only once the use case
    has read the owner (a user's channels or bindings, reached by SID or identity): handed to the
    use case as `page_request`, it parses the query against that list's cursors and keeps both."""

    def __init__(self, request: Request, path: Callable[[str], str], *, max_size: int):
        self._request = request
        self._path = path
        self._max_size = max_size
        self.path = ""
        self.cursors: Cursors | None = None
        self.req: PageRequest | None = None

    def __call__(self, owner_sid: str) -> PageRequest:
        self.path = self._path(owner_sid)
        self.cursors = page_cursors(self._request, self.path)
        self.req = parse_page_request(query(self._request), self.cursors, max_size=self._max_size)
        return self.req

    def meta(self, base: str, key: str, page: Page) -> dict[str, Any]:
        """The `meta` block of the page read (after the use case called this object)."""
        assert self.cursors is not None and self.req is not None
        return page_meta(f"{base}{self.path}", key, self.cursors, self.req, page)
