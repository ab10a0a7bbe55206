"""The console in a real browser: Playwright driving the system Chromium against a real
`tokensvc serve` on 127.0.0.1 (SPEC §11). Skipped, saying why, where no Chromium is installed
(`apt-get install chromium`; Playwright's own browser download cannot work here)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from websockets.sync.client import connect

from conftest import Server, start_server

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH: the console's browser tests need "
                                "the system Chromium (apt-get install chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(Path(tmp_path_factory.mktemp("console-browser")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM)
    try:
        yield b
    finally:
        b.close()


class Seen:
    """Every request a browser context made (its URL), and every response status."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.statuses: list[tuple[int, str]] = []


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def context(browser: Browser, srv: Server, seen: Seen) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=srv.base)
    ctx.on("request", lambda request: seen.urls.append(request.url))
    ctx.on("response", lambda response: seen.statuses.append((response.status, response.url)))
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def api(srv: Server) -> httpx.Client:
    return httpx.Client(base_url=srv.base, auth=srv.auth, timeout=10)


def new_service(srv: Server, name: str, *, users: tuple[str, ...] | list[str] = (), reachability: bool = False) -> str:
    with api(srv) as http:
        sid = http.post("/v2/Services", data={"FriendlyName": name}).json()["sid"]
        if reachability:
            assert http.post(f"/v2/Services/{sid}", data={"ReachabilityEnabled": "true"}).status_code == 200
        for identity in users:
            assert http.post(f"/v2/Services/{sid}/Users", data={"Identity": identity}).status_code == 201
    return str(sid)


def user_json(srv: Server, service_sid: str, identity: str) -> httpx.Response:
    with api(srv) as http:
        return http.get(f"/v2/Services/{service_sid}/Users/{identity}")


def sign_in(page: Page, srv: Server, path: str = "/console/services") -> None:
    page.goto(path)
    page.get_by_label("Account SID").fill(srv.account_sid)
    page.get_by_label("Auth token").fill(srv.auth_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}")


# ---------------------------------------------------------------- signing in and out


def test_sign_in_wrong_then_right(page: Page, srv: Server, seen: Seen) -> None:
    page.goto("/console/services")
    assert "/console/sign-in?next=/console/services" in page.url
    expect(page).to_have_title("Sign in · tokensvc console")
    page.get_by_label("Account SID").fill(srv.account_sid)
    page.get_by_label("Auth token").fill("not-the-token")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("Wrong account SID or auth token.")
    expect(page.get_by_label("Account SID")).to_have_value(srv.account_sid)  # kept; the token is not
    expect(page.get_by_label("Auth token")).to_have_value("")
    page.get_by_label("Auth token").fill(srv.auth_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/services")
    expect(page.get_by_role("heading", level=1)).to_have_text("Services")
    expect(page.locator(".who")).to_have_text(srv.account_sid)


def test_keyboard_only_sign_in(page: Page, srv: Server) -> None:
    """Tab, type and Enter only; focus order follows the page, and focus is visible."""
    page.goto("/console/sign-in")
    focused = "document.activeElement.id || document.activeElement.className"
    assert page.evaluate(focused) == "account_sid"  # autofocus
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(focused) == "skip"  # the skip link comes first
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "account_sid"
    page.keyboard.type(srv.account_sid)
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "auth_token"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline  # a visible focus ring
    page.keyboard.type(srv.auth_token)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Sign in"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # submits from the token field
    page.wait_for_url("**/console/services")
    expect(page.get_by_role("heading", level=1)).to_have_text("Services")


def test_session_cookie_flags_seen_by_the_browser(page: Page, context: BrowserContext, srv: Server) -> None:
    sign_in(page, srv)
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["tokensvc_console"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/console"
    assert session["secure"] is False  # plain http on 127.0.0.1
    assert session["expires"] == -1  # a browser-session cookie
    assert "tokensvc_console" not in page.evaluate("document.cookie")  # out of scripts' reach


def test_sign_out(page: Page, srv: Server) -> None:
    sign_in(page, srv)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/sign-in?signed_out=1")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/console/keys")
    assert "/console/sign-in" in page.url
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


# ---------------------------------------------------------------- users: paging, edit, delete, CSRF


def test_users_paging(page: Page, srv: Server) -> None:
    identities = [f"pager-{i:02d}" for i in range(57)]
    sid = new_service(srv, "paging", users=identities)
    sign_in(page, srv)
    page.goto(f"/console/services/{sid}/users")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(50)
    first_page = rows.locator("td:first-child").all_inner_texts()
    assert first_page == identities[:50]
    expect(page.get_by_role("link", name="Previous page")).to_have_count(0)
    page.get_by_role("link", name="Next page").click()
    expect(rows).to_have_count(7)
    assert rows.locator("td:first-child").all_inner_texts() == identities[50:]
    assert "PageToken=PT" in page.url  # a keyset cursor, not an offset
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    page.get_by_role("link", name="Previous page").click()
    expect(rows).to_have_count(50)
    assert rows.locator("td:first-child").all_inner_texts() == identities[:50]


def test_search_by_identity_prefix(page: Page, srv: Server) -> None:
    sid = new_service(srv, "search", users=["zoe@example.com", "zed@example.com", "Zack@example.com",
                                            "amy@example.com"])
    sign_in(page, srv)
    page.goto(f"/console/services/{sid}/users")
    expect(page.locator("tbody tr")).to_have_count(4)
    page.get_by_role("searchbox", name="Identity starts with").fill("z")
    page.keyboard.press("Enter")
    page.wait_for_url("**/users?prefix=z")
    assert page.locator("tbody tr td:first-child").all_inner_texts() == ["zed@example.com", "zoe@example.com"]
    expect(page.get_by_role("searchbox", name="Identity starts with")).to_have_value("z")
    page.get_by_role("searchbox", name="Identity starts with").fill("q")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No user’s identity starts with “q”.")).to_be_visible()
    page.get_by_role("link", name="Clear the search").click()
    expect(page.locator("tbody tr")).to_have_count(4)


def test_edit_a_user(page: Page, srv: Server) -> None:
    sid = new_service(srv, "edit", users=["edith@example.com"])
    sign_in(page, srv)
    page.goto(f"/console/services/{sid}/users")
    page.get_by_role("link", name="edith@example.com").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("edith@example.com")
    page.get_by_label("Friendly name").fill("Edith")
    page.get_by_label("Attributes (JSON, at most 16 KiB)").fill('{"team": "red"}')
    page.get_by_label("Role").select_option(label="service admin")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    body = user_json(srv, sid, "edith@example.com").json()
    assert body["friendly_name"] == "Edith" and json.loads(body["attributes"]) == {"team": "red"}
    # a refused value: the use case's error on the page, with its status; nothing written
    page.get_by_label("Attributes (JSON, at most 16 KiB)").fill("{broken")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save changes").click()
    assert answer.value.status == 400
    expect(page.get_by_role("alert")).to_contain_text("(error 50304)")
    expect(page.get_by_label("Attributes (JSON, at most 16 KiB)")).to_have_value("{broken")  # kept for fixing
    assert json.loads(user_json(srv, sid, "edith@example.com").json()["attributes"]) == {"team": "red"}


def test_delete_a_user_after_confirming(page: Page, srv: Server) -> None:
    sid = new_service(srv, "delete", users=["dora@example.com", "keep@example.com"])
    sign_in(page, srv)
    page.goto(f"/console/services/{sid}/users")
    page.get_by_role("link", name="dora@example.com").click()
    page.get_by_role("link", name="Delete this user…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete dora@example.com?")
    page.get_by_role("link", name="Cancel").click()  # changing one's mind deletes nothing
    assert user_json(srv, sid, "dora@example.com").status_code == 200
    page.get_by_role("link", name="Delete this user…").click()
    page.get_by_role("button", name="Delete the user").click()
    page.wait_for_url(f"**/console/services/{sid}/users?deleted=1")
    expect(page.get_by_role("status")).to_have_text("The user was deleted.")
    expect(page.locator("tbody tr")).to_have_count(1)
    assert user_json(srv, sid, "dora@example.com").json()["code"] == 20404


def test_a_form_with_a_forged_csrf_token_is_refused(page: Page, srv: Server) -> None:
    sid = new_service(srv, "csrf", users=["cara@example.com"])
    sign_in(page, srv)
    page.goto(f"/console/services/{sid}/users/cara@example.com")
    page.get_by_label("Friendly name").fill("Mallory")
    page.locator("form.card input[name=csrf_token]").evaluate("el => el.value = 'forged'")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Save changes").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Refused")
    expect(page.get_by_role("alert")).to_contain_text("nothing was changed")
    assert user_json(srv, sid, "cara@example.com").json()["friendly_name"] is None


def test_works_without_javascript(browser: Browser, srv: Server) -> None:
    ctx = browser.new_context(base_url=srv.base, java_script_enabled=False)
    try:
        page = ctx.new_page()
        sid = new_service(srv, "nojs", users=["nojs@example.com"])
        sign_in(page, srv)
        page.goto(f"/console/services/{sid}/users/nojs@example.com")
        page.get_by_label("Friendly name").fill("Plain")
        page.get_by_role("button", name="Save changes").click()
        expect(page.get_by_role("status")).to_have_text("Changes saved.")
        page.goto(f"/console/services/{sid}")
        expect(page.locator("#online-count")).to_have_text("0")  # rendered by the server
    finally:
        ctx.close()
    assert user_json(srv, sid, "nojs@example.com").json()["friendly_name"] == "Plain"


# ---------------------------------------------------------------- keys


def test_api_key_created_shows_its_secret_once(page: Page, srv: Server) -> None:
    sign_in(page, srv)
    page.goto("/console/keys")
    page.get_by_label("Friendly name (optional)").fill("browser key")
    page.get_by_role("button", name="Create the key").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("API key created")
    secret = page.get_by_label("Secret").input_value()
    key_sid = page.locator("dd code").first.inner_text()
    assert httpx.get(f"{srv.base}/v2/Services", auth=(key_sid, secret), timeout=10).status_code == 200
    page.get_by_role("link", name="Back to the API keys").click()
    assert secret not in page.content()
    page.get_by_role("row", name=key_sid).get_by_role("link").click()
    page.get_by_role("button", name="Delete the key").click()
    expect(page.get_by_role("status")).to_have_text("The API key was deleted.")
    assert httpx.get(f"{srv.base}/v2/Services", auth=(key_sid, secret), timeout=10).status_code == 401


def test_signing_key_rotation(page: Page, srv: Server) -> None:
    before = httpx.get(f"{srv.base}/.well-known/jwks.json", timeout=10).json()["keys"]
    sign_in(page, srv)  # the server's bootstrap account: the deployment's own
    page.goto("/console/signing-keys")
    page.get_by_role("button", name="Rotate the signing key").click()
    expect(page.get_by_role("status")).to_contain_text("new tokens are signed with")
    after = httpx.get(f"{srv.base}/.well-known/jwks.json", timeout=10).json()["keys"]
    assert {k["kid"] for k in before} < {k["kid"] for k in after}
    expect(page.get_by_role("row").filter(has_text="active")).to_have_count(1)


# ---------------------------------------------------------------- live count, origin, accessibility


@contextlib.contextmanager
def _connected(srv: Server, service_sid: str, identity: str) -> Iterator[Any]:
    """A client connection on /v2/Connect with a token for `identity`, open while the block runs."""
    with api(srv) as http:
        token = http.post(f"/v2/Services/{service_sid}/Tokens", data={"Identity": identity}).json()["token"]
    with connect(srv.base.replace("http://", "ws://") + "/v2/Connect", additional_headers={"X-Twilio-Token": token},
                 proxy=None, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "connected"
        yield ws


def test_live_online_count_follows_connections(page: Page, srv: Server) -> None:
    sid = new_service(srv, "live", reachability=True)
    sign_in(page, srv)
    page.goto(f"/console/services/{sid}")
    count = page.locator("#online-count")
    expect(count).to_have_text("0")
    with _connected(srv, sid, "livewire@example.com"):
        expect(count).to_have_text("1", timeout=20_000)  # polled every 5 s, no reload
    expect(count).to_have_text("0", timeout=20_000)


def test_no_request_leaves_the_servers_origin(page: Page, srv: Server, seen: Seen) -> None:
    sid = new_service(srv, "origin", users=["ori@example.com"])
    sign_in(page, srv)
    for path in ("/console/services", f"/console/services/{sid}", f"/console/services/{sid}/users",
                 f"/console/services/{sid}/users/ori@example.com", f"/console/services/{sid}/roles",
                 "/console/keys", "/console/signing-keys"):
        page.goto(path)
    with page.expect_request(lambda r: r.url.endswith(f"/console/services/{sid}/online"), timeout=15_000):
        page.goto(f"/console/services/{sid}")  # and wait for one poll of the live count
    assert any(url.endswith("/console/static/console.css") for url in seen.urls)
    outside = [url for url in seen.urls if not url.startswith(srv.base + "/")]
    assert outside == [], outside
    assert not [s for s in seen.statuses if s[0] >= 500], seen.statuses


_A11Y = """() => {
  const problems = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    if (!el.labels || el.labels.length === 0) problems.push('no label: ' + (el.name || el.id));
  }
  let last = 0;
  const levels = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h => +h.tagName[1]);
  if (levels[0] !== 1) problems.push('first heading is not h1');
  for (const level of levels) { if (level > last + 1) problems.push('heading jumps to h' + level); last = level; }
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  if (!document.documentElement.lang) problems.push('no lang');
  if (!document.title.trim()) problems.push('no title');
  for (const t of document.querySelectorAll('table')) {
    if (!t.querySelector('caption')) problems.push('table without caption');
  }
  return problems;
}"""


def test_every_page_has_labels_ordered_headings_a_lang_and_a_title(page: Page, srv: Server) -> None:
    sid = new_service(srv, "a11y", users=["ally@example.com"])
    page.goto("/console/sign-in")
    assert page.evaluate(_A11Y) == []
    sign_in(page, srv)
    titles = set()
    ally = f"/console/services/{sid}/users/ally@example.com"
    for path in ("/console/services", f"/console/services/{sid}", f"/console/services/{sid}/users", ally,
                 f"{ally}/delete", f"/console/services/{sid}/roles", "/console/keys", "/console/signing-keys",
                 "/console/nowhere"):
        page.goto(path)
        assert page.evaluate(_A11Y) == [], path
        titles.add(page.title())
    assert len(titles) == 9  # each page says what it is
