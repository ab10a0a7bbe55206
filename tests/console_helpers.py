"""What the console's tests share: signing in over plain HTTP and reading forms' CSRF tokens."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token of the (first) form on a page."""
    found = _CSRF.search(page)
    assert found, page[:2000]
    return html.unescape(found.group(1))


def set_cookies(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """Each Set-Cookie of a response: name -> its value and attributes (lower-case names)."""
    out: dict[str, dict[str, Any]] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            flags = {k: morsel[k] for k in morsel.keys() if morsel[k]}
            flags["raw"] = header
            flags["value"] = morsel.value
            out[name] = flags
    return out


@dataclass
class Console:
    """A browser-like client of /console with a cookie jar of its own (several "browsers" can share
    one TestClient, whose app has one event loop); follows no redirect by itself."""

    http: Any  # httpx.Client or starlette's TestClient
    jar: httpx.Cookies = field(default_factory=httpx.Cookies)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        outer = httpx.Cookies(self.http.cookies)
        self.http.cookies = self.jar
        try:
            return self.http.request(method, path, follow_redirects=False, **kw)
        finally:
            self.jar = httpx.Cookies(self.http.cookies)
            self.http.cookies = outer

    def sign_in_form(self) -> str:
        r = self.page("/console/sign-in")
        assert r.status_code == 200, r.text
        return csrf_of(r.text)

    def sign_in(self, account_sid: str, auth_token: str, *, next_path: str = "/console/services") -> httpx.Response:
        token = self.sign_in_form()
        return self.post("/console/sign-in", {"csrf_token": token, "account_sid": account_sid,
                                              "auth_token": auth_token, "next": next_path})

    def page(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def csrf(self, path: str = "/console/services") -> str:
        r = self.page(path)
        assert r.status_code == 200, (r.status_code, r.text[:500])
        return csrf_of(r.text)

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.request("POST", path, data=data)
