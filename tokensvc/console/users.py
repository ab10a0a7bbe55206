"""Console pages for a service's users: the list (identity-prefix search, keyset paging), a user
(every field, presence, channels, bindings), its edit and its deletion with a confirmation step.
The rules are the use cases' (tokensvc/usecases/users.py), the same the API calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..api.common import Form, ctx
from ..formats import iso8601
from ..paging import PageRequest
from ..store.users import NO_FILTERS, page_key
from ..usecases import members as members_uc
from ..usecases import push as push_uc
from ..usecases import services as services_uc
from ..usecases import users as users_uc
from ..usecases.effects import apply
from .pages import service_and_roles
from .web import PREFIX, Admin, action, html, listing, page, redirect

FIRST_50 = PageRequest(50, 0, None)  # a user's channels and bindings: the first 50 of each


def user_rows(users: list[Mapping[str, Any]], base: str, role_names: Mapping[str, str]) -> Markup:
    """The users table's rows as HTML, every value escaped. The console's hot loop (50 rows a
    page, ~350 values): built here rather than in users.html, whose loop took half the page's
    time (bench/admin_console.py); the same markup at about half the cost."""
    rows, base = [], escape(base)
    for u in users:
        rows.append(f'<tr><td><a href="{base}{escape(u["sid"])}">{escape(u["identity"])}</a></td>'
                    f'<td>{escape(u["friendly_name"] or "—")}</td>'
                    f'<td>{escape(role_names.get(u["role_sid"], u["role_sid"]))}</td>'
                    f'<td>{int(u["joined_channels_count"])}</td><td>{iso8601(u["date_created"])}</td></tr>')
    return Markup("\n".join(rows))


@page
async def users(request: Request, admin: Admin) -> Response:
    """GET /console/services/{IS}/users[?prefix=…]: 50 a page by keyset, searched by identity
    prefix with the API's IdentityPrefix filter (one index range, in identity order)."""
    c = ctx(request)
    sid = request.path_params["service_sid"]
    prefix = request.query_params.get("prefix", "")
    svc, roles = await service_and_roles(request, admin, sid)
    values: dict[str, Any] = {"title": f"Users · {svc['friendly_name'] or sid}", "nav": "services", "service": svc,
                              "search": prefix, "notice": "The user was deleted." if request.query_params.get(
                                  "deleted") else None}
    try:
        filters = users_uc.user_filters(identity_prefix=prefix) if prefix else NO_FILTERS
    except errors.TwilioError as exc:
        return html(request, "users.html", exc.status, rows=Markup(""), links={}, **values,
                    error=f"{exc.message} (error {exc.code})")
    order = filters.order
    asked = listing(request, f"{PREFIX}/services/{sid}/users", keep=(("prefix", prefix),) if prefix else (),
                    kind=order, row_key=lambda row: page_key(row, order))
    found = await users_uc.list_users(c, principal=admin.principal, service_sid=sid, req=asked.req, filters=filters)
    names = {role_sid: role["friendly_name"] for role_sid, role in roles.items()}
    rows = user_rows([row._mapping for row in found.rows], f"{PREFIX}/services/{sid}/users/", names)
    return html(request, "users.html", rows=rows, links=asked.links(found), error=None, **values)


async def _user_page(request: Request, admin: Admin, *, status: int = 200, error: str | None = None,
                     form: Mapping[str, str] | None = None, notice: str | None = None) -> Response:
    c = ctx(request)
    sid, key = request.path_params["service_sid"], request.path_params["user_sid"]
    svc, roles = await service_and_roles(request, admin, sid)
    user, online, notifiable = await users_uc.fetch_user(c, account_sid=admin.account_sid, service_sid=sid, key=key)
    _, channels = await members_uc.list_user_channels(c, account_sid=admin.account_sid, service_sid=sid,
                                                      user_key=user["sid"], caller=None,
                                                      page_request=lambda _: FIRST_50)
    _, bindings = await push_uc.list_user_bindings(c, account_sid=admin.account_sid, service_sid=sid,
                                                   user_key=user["sid"], owner_sid=None, types=(),
                                                   page_request=lambda _: FIRST_50)
    shown = form or {"friendly_name": user["friendly_name"] or "", "attributes": user["attributes"] or "{}",
                     "role_sid": user["role_sid"]}
    return html(request, "user.html", status, title=f"{user['identity']} · {svc['friendly_name'] or sid}",
                nav="services", service=svc, user=user, online=online, notifiable=notifiable, roles=roles,
                form=shown, error=error, notice=notice, channels=[r._mapping for r in channels.rows],
                more_channels=channels.has_next, bindings=[r._mapping for r in bindings.rows],
                more_bindings=bindings.has_next)


@page
async def user(request: Request, admin: Admin) -> Response:
    saved = request.query_params.get("saved")
    notice = {"1": "Changes saved.", "0": "Nothing to save: no field changed."}.get(saved or "")
    return await _user_page(request, admin, notice=notice)


def _changes(user: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The fields the admin changed, validated as the API validates them (50003, 50304, 50303)."""
    changes: dict[str, Any] = {}
    if form["friendly_name"] != (user["friendly_name"] or ""):
        changes["friendly_name"] = validation.friendly_name(form["friendly_name"])
    if form["attributes"] != (user["attributes"] or "{}"):
        changes["attributes"] = validation.attributes(form["attributes"])
    if form["role_sid"] != user["role_sid"]:
        changes["role_sid"] = form["role_sid"]  # a deployment role of this service, or 50102
    return changes


@action
async def edit_user(request: Request, admin: Admin, form: Form) -> Response:
    """POST …/users/{US}/edit: friendly name, attributes, role through users.update_user."""
    c = ctx(request)
    sid, key = request.path_params["service_sid"], request.path_params["user_sid"]
    given = {"friendly_name": form.get("friendly_name") or "",
             # a browser sends a textarea's line breaks as CRLF; in JSON they are only whitespace
             "attributes": (form.get("attributes") or "").replace("\r\n", "\n"),
             "role_sid": form.get("role_sid") or ""}
    user, _, _ = await users_uc.fetch_user(c, account_sid=admin.account_sid, service_sid=sid, key=key)
    try:
        changes = _changes(user, given)
        if not changes:
            return redirect(f"{PREFIX}/services/{sid}/users/{user['sid']}?saved=0")
        _, events = await users_uc.update_user(c, principal=admin.principal, caller=None, service_sid=sid,
                                               key=user["sid"], changes=changes)
    except errors.TwilioError as exc:
        if exc.status == 404:
            raise
        return await _user_page(request, admin, status=exc.status, error=f"{exc.message} (error {exc.code})",
                                form=given)
    await apply(c, events)
    return redirect(f"{PREFIX}/services/{sid}/users/{user['sid']}?saved=1")


@page
async def confirm_delete(request: Request, admin: Admin) -> Response:
    c = ctx(request)
    sid, key = request.path_params["service_sid"], request.path_params["user_sid"]
    svc = await services_uc.get_service(c, account_sid=admin.account_sid, sid=sid)
    user, _, _ = await users_uc.fetch_user(c, account_sid=admin.account_sid, service_sid=sid, key=key)
    return html(request, "user_delete.html", title=f"Delete {user['identity']}", nav="services", service=svc,
                user=user)


@action
async def delete_user(request: Request, admin: Admin, form: Form) -> Response:
    """POST …/users/{US}/delete, from the confirmation page: users.delete_user (tombstone, kicks,
    onUserRemoved), then the list."""
    c = ctx(request)
    sid, key = request.path_params["service_sid"], request.path_params["user_sid"]
    _, events = await users_uc.delete_user(c, account_sid=admin.account_sid, service_sid=sid, key=key)
    await apply(c, events)
    return redirect(f"{PREFIX}/services/{sid}/users?deleted=1")
