"""Signing in and out of the console: account SID + auth token, checked exactly as Basic
credentials are (Authenticator.password: the same failure limits, the same constant-time check)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from .. import errors
from ..api.common import client_addr, ctx, read_form
from .session import COOKIE, SIGNIN_COOKIE, new_nonce
from .web import CSRF_FIELD, PREFIX, error_page, html, redirect, safe_next, sessions, set_cookie, signed_in, signouts


def _form(request: Request, nonce: str, *, status: int = 200, error: str | None = None, account_sid: str = "",
          notice: str | None = None, next_path: str | None = None) -> Response:
    """The sign-in form, its CSRF token bound to the pre-session nonce cookie it (re)sets."""
    response = html(request, "sign_in.html", status, title="Sign in", error=error, notice=notice,
                    csrf=sessions(request).csrf(nonce, purpose="signin"), account_sid=account_sid,
                    next=safe_next(next_path if next_path is not None else request.query_params.get("next")))
    set_cookie(request, response, SIGNIN_COOKIE, nonce)
    return response


async def sign_in_form(request: Request) -> Response:
    if await signed_in(request) is not None:
        return redirect(safe_next(request.query_params.get("next")))
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return _form(request, request.cookies.get(SIGNIN_COOKIE) or new_nonce(), notice=notice)


async def sign_in(request: Request) -> Response:
    """POST /console/sign-in: a session cookie for the right credentials, the form again (401, or
    429 with Retry-After once the failure limit is reached) for wrong ones."""
    form = await read_form(request)
    codec = sessions(request)
    nonce = request.cookies.get(SIGNIN_COOKIE)
    if not codec.csrf_ok(nonce, form.get(CSRF_FIELD), purpose="signin"):
        return error_page(request, errors.forbidden("The sign-in form expired: nothing was checked. Reload the page "
                                                    "and sign in again."))
    assert nonce is not None
    next_path = safe_next(form.get("next"))
    account_sid = (form.get("account_sid") or "").strip()
    auth_token = form.get("auth_token") or ""
    if not account_sid or not auth_token:
        return _form(request, nonce, status=400, error="Enter the account SID and its auth token.",
                     account_sid=account_sid, next_path=next_path)
    c = ctx(request)
    try:
        principal = await c.auth.password(account_sid, auth_token, client_addr(request))
    except errors.TwilioError as exc:
        if exc.status == 429:
            response = _form(request, nonce, status=429, account_sid=account_sid, next_path=next_path,
                             error="Too many failed sign-ins from here: wait a minute and try again.")
            response.headers["Retry-After"] = exc.headers.get("Retry-After", "60")
            return response
        if exc.status != 401:
            raise
        # no WWW-Authenticate: a browser would answer it with its own Basic prompt
        return _form(request, nonce, status=401, error="Wrong account SID or auth token.", account_sid=account_sid,
                     next_path=next_path)
    token_hash = await c.auth.account_token_hash(principal.account_sid)
    if principal.kind != "account" or token_hash is None:
        return _form(request, nonce, status=401, account_sid=account_sid, next_path=next_path,
                     error="Sign in with an account SID (AC…) and its auth token, not an API key.")
    _, cookie = codec.issue(account_sid=principal.account_sid, token_hash=token_hash, now=int(time.time()))
    response = redirect(next_path)
    set_cookie(request, response, COOKIE, cookie)
    set_cookie(request, response, SIGNIN_COOKIE, "", clear=True)
    return response


async def sign_out(request: Request) -> Response:
    """POST /console/sign-out: the session ends (on every replica: a copy of its cookie stops
    working too) and the cookie goes. With a live session the form's CSRF token must be right
    (no other site signs an admin out)."""
    found = await signed_in(request)
    if found is not None:
        form = await read_form(request)
        if not sessions(request).csrf_ok(found[0].nonce, form.get(CSRF_FIELD)):
            return error_page(request, errors.forbidden("This form's security token is wrong: you are still signed "
                                                        "in. Reload the page and try again."))
        await signouts(request).end(ctx(request).db, found[0])
    response = redirect(f"{PREFIX}/sign-in?signed_out=1")
    set_cookie(request, response, COOKIE, "", clear=True)
    return response


async def home(request: Request) -> Response:
    """/console: the services, or the sign-in form."""
    return redirect(f"{PREFIX}/services" if await signed_in(request) is not None else f"{PREFIX}/sign-in")
