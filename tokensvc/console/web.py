"""What every console page shares: templates, routes with declared methods, the signed-in admin,
the CSRF check, cookies, security headers and the HTML error page."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import errors, urls
from ..api.common import Form, ctx, query, read_form
from ..api.routing import DeclaredRoute, allow_header, dispatch, method_table
from ..auth import Principal
from ..formats import iso8601
from ..paging import ROW_ID, Cursors, PageRequest, page_links, parse_page_request
from ..paging import Page as PagingPage
from .session import COOKIE, Session, Sessions, SignOuts

PREFIX = "/console"
CSRF_FIELD = "csrf_token"
# Nothing leaves the origin: no CDN, no font, no inline script or style; nothing frames us.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a search's URL holds an identity prefix
    "Cache-Control": "no-store",  # pages show identities, attributes and, once, an API key secret
}
_NEXT = re.compile(r"/console(/[A-Za-z0-9_-]+)*")


@lru_cache(maxsize=1)
def templates() -> Environment:
    """The Jinja2 environment (package data: tokensvc/console/templates), built once."""
    env = Environment(loader=PackageLoader("tokensvc.console", "templates"), autoescape=select_autoescape(),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["date"] = lambda ts: iso8601(ts) if ts is not None else "—"
    env.globals["prefix"] = PREFIX  # imported macros see globals, not the page's values
    return env


def sessions(request: Request) -> Sessions:
    """The app's session codec, keyed by secrets.key (one per app, made at first use)."""
    state = request.app.state
    found = getattr(state, "console_sessions", None)
    if found is None:
        box = ctx(request).box
        found = state.console_sessions = Sessions(box.derive("console-session-mac"),
                                                  box.derive("console-session-binding"),
                                                  box.derive("console-csrf"))
    return found


def signouts(request: Request) -> SignOuts:
    """The app's record of sessions signed out of (one per app, made at first use)."""
    state = request.app.state
    found = getattr(state, "console_signouts", None)
    if found is None:
        found = state.console_signouts = SignOuts()
    return found


def is_https(request: Request) -> bool:
    """The scheme the browser sees, decided as for every URL we return (urls.base_url):
    TOKENSVC_PUBLIC_URL, else the request's, which follows X-Forwarded-Proto from trusted proxies only."""
    return urls.base_url(ctx(request).settings, request.scope, request.headers.get("host")).startswith("https://")


def set_cookie(request: Request, response: Response, name: str, value: str, *, clear: bool = False) -> None:
    """HttpOnly, SameSite=Strict, Path=/console, Secure behind https; a browser-session cookie."""
    response.set_cookie(name, value, max_age=0 if clear else None, path=PREFIX, secure=is_https(request),
                        httponly=True, samesite="strict")


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def html(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page rendered from `template` (autoescaped) with the console's security headers."""
    values.setdefault("admin", getattr(request.state, "admin", None))
    values.setdefault("nav", "")
    body = templates().get_template(template).render(**values)
    response = HTMLResponse(body, status_code=status)
    secured(response)
    return response


def redirect(location: str) -> Response:
    """303 See Other: after a POST the browser GETs the result (no resubmission on reload)."""
    return secured(RedirectResponse(location, status_code=303))


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path of ours, never another origin."""
    return value if value and _NEXT.fullmatch(value) else f"{PREFIX}/services"


def error_page(request: Request, exc: errors.TwilioError) -> Response:
    """A TwilioError as an HTML page with its status (and Allow, Retry-After): never a 500 for
    what a use case refuses, never a stack trace."""
    response = html(request, "error.html", exc.status, error=exc, title=f"Error {exc.status}")
    for name in ("Allow", "Retry-After"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


def page_route(path: str, **handlers: Callable[[Request], Awaitable[Response]] | None) -> DeclaredRoute:
    """A console resource answering exactly `handlers` (GET=…, POST=…; HEAD follows GET, anything
    else 405 with Allow: app.py renders a console path's errors as HTML pages)."""
    table = method_table(**handlers)

    async def endpoint(request: Request) -> Response:
        return secured(await dispatch(request, table))

    endpoint.__name__ = "|".join(f"{m}:console.{h.__name__}" for m, h in table.items() if m != "HEAD")
    return DeclaredRoute(PREFIX + path, endpoint, declared=allow_header(table), include_in_schema=False)


@dataclass(frozen=True)
class Admin:
    """The signed-in account, as templates and handlers see it."""

    account_sid: str
    csrf: str

    @property
    def principal(self) -> Principal:
        """The use cases' caller: the account itself, as with its Basic credentials."""
        return Principal("account", self.account_sid)


async def signed_in(request: Request) -> tuple[Session, str] | None:
    """(session, current token hash) of a valid session cookie bound to the current auth token."""
    codec = sessions(request)
    session = codec.open(request.cookies.get(COOKIE), now=int(time.time()))
    if session is None:
        return None
    token_hash = await ctx(request).auth.account_token_hash(session.account_sid)
    if not codec.bound_to(session, token_hash):
        return None
    if await signouts(request).ended(ctx(request).db, session):
        return None
    assert token_hash is not None
    return session, token_hash


Page = Callable[[Request, Admin], Awaitable[Response]]
Action = Callable[[Request, Admin, Form], Awaitable[Response]]


def _sign_in_first(request: Request) -> Response:
    return redirect(f"{PREFIX}/sign-in?next={quote(request.url.path, safe='/')}")


async def _admin(request: Request) -> tuple[Admin, Session, str] | None:
    found = await signed_in(request)
    if found is None:
        return None
    session, token_hash = found
    admin = Admin(session.account_sid, sessions(request).csrf(session.nonce))
    request.state.admin = admin
    return admin, session, token_hash


def _slide(request: Request, response: Response, session: Session, token_hash: str) -> Response:
    cookie = sessions(request).reissue(session, token_hash=token_hash, now=int(time.time()))
    if cookie is not None:
        set_cookie(request, response, COOKIE, cookie)
    return response


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A GET handler for signed-in admins; anyone else is sent to the sign-in form."""

    async def run(request: Request) -> Response:
        found = await _admin(request)
        if found is None:
            return _sign_in_first(request)
        admin, session, token_hash = found
        return _slide(request, await handler(request, admin), session, token_hash)

    run.__name__ = handler.__name__
    return run


def action(handler: Action) -> Callable[[Request], Awaitable[Response]]:
    """A POST handler for signed-in admins whose form carries the session's CSRF token: without
    one, or with a wrong one, a 403 page and nothing is done."""

    async def run(request: Request) -> Response:
        found = await _admin(request)
        if found is None:
            return _sign_in_first(request)  # nothing is done for a request without a session
        admin, session, token_hash = found
        form = await read_form(request)
        if not sessions(request).csrf_ok(session.nonce, form.get(CSRF_FIELD)):
            return error_page(request, csrf_refused())
        return _slide(request, await handler(request, admin, form), session, token_hash)

    run.__name__ = handler.__name__
    return run


def csrf_refused() -> errors.TwilioError:
    return errors.forbidden("This form's security token is missing or out of date: nothing was changed. "
                            "Reload the page and try again.")


@dataclass(frozen=True)
class Listing:
    """One page of a console list: the API's paging (PageSize, Page, PageToken; keyset cursors
    sealed to this list and its order) with links that keep the list's own query (a search)."""

    req: PageRequest
    cursors: Cursors
    path: str
    keep: tuple[tuple[str, str], ...] = ()
    row_key: Callable[[Any], Any] = lambda row: row.id

    def links(self, page: PagingPage) -> dict[str, str | None]:
        found = page_links(self.path, self.cursors, self.req, page, self.row_key)
        extra = ("&" + urlencode(self.keep)) if self.keep else ""
        return {"first": found.first + extra if self.req.page else None,
                "previous": found.previous + extra if found.previous else None,
                "next": found.next + extra if found.next else None}


def listing(request: Request, path: str, *, keep: tuple[tuple[str, str], ...] = (), size: int = 50,
            kind: str = ROW_ID, row_key: Callable[[Any], Any] = lambda row: row.id) -> Listing:
    """The page asked for of the list at `path` (400 20001 / 21481 pages for bad paging values);
    `kind` and `row_key`: its order, when not creation order (paging.Cursors)."""
    cursors = Cursors(ctx(request).box, path + ("?" + urlencode(keep) if keep else ""), kind)
    return Listing(parse_page_request(query(request), cursors, default_size=size), cursors, path, keep, row_key)
