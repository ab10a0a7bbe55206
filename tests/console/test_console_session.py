"""Console sessions and CSRF tokens as values (tokensvc/console/session.py): what a cookie is
bound to, when it expires, and what no one without the server's key can make."""

from __future__ import annotations

import os

from tokensvc.console.session import IDLE_SECONDS, MAX_SECONDS, REISSUE_AFTER, Sessions
from tokensvc.sids import new_sid

T0 = 1_800_000_000


def codec() -> Sessions:
    return Sessions(os.urandom(32), os.urandom(32), os.urandom(32))


def test_a_cookie_opens_with_its_key_only_and_names_its_account() -> None:
    ours, theirs = codec(), codec()
    account = new_sid("AC")
    session, cookie = ours.issue(account_sid=account, token_hash="h1", now=T0)
    opened = ours.open(cookie, now=T0 + 1)
    assert opened == session and opened.account_sid == account
    assert theirs.open(cookie, now=T0 + 1) is None  # another deployment's key
    payload, mac = cookie.split(".")
    for bad in (f"{payload}.{mac[::-1]}", f"{payload}x.{mac}", payload, "", "a.b.c", "é." + mac):
        assert ours.open(bad, now=T0 + 1) is None, bad


def test_a_session_is_bound_to_the_current_token_hash() -> None:
    c = codec()
    session, _ = c.issue(account_sid=new_sid("AC"), token_hash="h1", now=T0)
    assert c.bound_to(session, "h1")
    assert not c.bound_to(session, "h2")  # the token was rotated
    assert not c.bound_to(session, None)  # the account is gone


def test_idle_and_absolute_expiry_and_sliding_reissue() -> None:
    c = codec()
    session, cookie = c.issue(account_sid=new_sid("AC"), token_hash="h", now=T0)
    assert c.open(cookie, now=T0 + IDLE_SECONDS) is not None
    assert c.open(cookie, now=T0 + IDLE_SECONDS + 1) is None
    assert c.reissue(session, token_hash="h", now=T0 + REISSUE_AFTER - 1) is None  # not due yet
    now, current = T0, cookie
    while now + IDLE_SECONDS - 60 < T0 + MAX_SECONDS:  # in use all day long
        now += IDLE_SECONDS - 60
        opened = c.open(current, now=now)
        assert opened is not None and opened.nonce == session.nonce and opened.signed_in_at == T0
        current = c.reissue(opened, token_hash="h", now=now) or current
    assert c.open(current, now=T0 + MAX_SECONDS + 1) is None  # 12 h after signing in, whatever happened


def test_csrf_tokens_belong_to_one_nonce_and_one_purpose() -> None:
    c = codec()
    token = c.csrf("nonce-a")
    assert c.csrf_ok("nonce-a", token)
    assert not c.csrf_ok("nonce-b", token)
    assert not c.csrf_ok("nonce-a", c.csrf("nonce-a", purpose="signin"))
    assert not c.csrf_ok(None, token) and not c.csrf_ok("nonce-a", None) and not c.csrf_ok("nonce-a", "")
    assert not codec().csrf_ok("nonce-a", token)  # another key
