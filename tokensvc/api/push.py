"""/v2/Credentials and /v2/Services/{IS}/Bindings, /Users/{US}/Bindings (SPEC §9).

Credential secrets and binding addresses are write-only: read from the form, handed to the use
case, never serialized, and never part of an error message (errors name the parameter only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..auth import Principal
from ..context import Context
from ..paging import page_meta, parse_page_request
from ..store import push as push_store
from ..tokens import Verified
from ..usecases import push as push_uc
from ..usecases.effects import apply
from .common import (
    OwnedPage,
    authenticate,
    base_url,
    ctx,
    empty_response,
    json_response,
    page_cursors,
    query_values,
    read_form,
)
from .render import binding_to_json, credential_to_json

MAX_CREDENTIAL_NAME = 64
_SECRET_PARAMS = {"Certificate": "certificate", "PrivateKey": "private_key", "ApiKey": "api_key",
                  "Secret": "secret"}


async def _paged(request: Request, path: str, key: str, reader: Any, to_json: Any, *, max_size: int,
                 filters: list[tuple[str, str]]) -> Response:
    """`await reader(req)` (a use case) as one page of the list at `path`; its page URLs keep the filters."""
    params = {name: values[-1] for name, values in query_values(request).items()}
    cursors = page_cursors(request, path)
    req = parse_page_request(params, cursors, max_size=max_size)
    base = base_url(request)
    page = await reader(req)
    meta = _with_filters(page_meta(f"{base}{path}", key, cursors, req, page), filters)
    return json_response({key: [to_json(row._mapping, base) for row in page.rows], "meta": meta})


def _with_filters(meta: dict[str, Any], filters: list[tuple[str, str]]) -> dict[str, Any]:
    """The page URLs of `meta` keep the list's filters."""
    if filters:
        extra = "&" + urlencode(filters)
        for name in ("first_page_url", "previous_page_url", "url", "next_page_url"):
            if meta[name] is not None:
                meta[name] += extra
    return meta


def _types(request: Request) -> list[str]:
    return [push_uc.binding_type(value) for value in query_values(request).get("BindingType", [])]


# ---------------------------------------------------------------- credentials


async def _account(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.kind != "account":
        raise errors.forbidden("Credentials are managed with account credentials only")
    return principal


def _credential_fields(form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(changes, secrets) from a credential form: FriendlyName, Sandbox and the given secrets."""
    changes: dict[str, Any] = {}
    if "FriendlyName" in form:
        name = form.require("FriendlyName")
        if len(name) > MAX_CREDENTIAL_NAME:
            raise errors.invalid_param("FriendlyName", f"must be at most {MAX_CREDENTIAL_NAME} characters")
        changes["friendly_name"] = name
    if "Sandbox" in form:
        changes["sandbox"] = validation.boolean("Sandbox", form.require("Sandbox"))
    secrets = {field: form.require(param) for param, field in _SECRET_PARAMS.items() if param in form}
    return changes, secrets


async def list_credentials(request: Request) -> Response:
    principal = await _account(request)
    return await _paged(request, "/v2/Credentials", "credentials",
                        lambda req: push_uc.list_credentials(ctx(request), account_sid=principal.account_sid, req=req),
                        credential_to_json, max_size=100, filters=[])


async def create_credential(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    form = await read_form(request)
    kind = form.require("Type")
    if kind not in push_store.PUSH_TYPES:
        raise errors.invalid_param("Type", "must be apn, gcm or fcm")
    changes, secrets = _credential_fields(form)
    secrets = {k: v for k, v in secrets.items() if k in push_store.SECRET_FIELDS[kind]}
    cred, events = await push_uc.create_credential(c, account_sid=principal.account_sid, type=kind,
                                                   friendly_name=changes.get("friendly_name"),
                                                   sandbox=changes.get("sandbox"), secrets=secrets)
    await apply(c, events)
    return json_response(credential_to_json(cred, base_url(request)), 201)


async def fetch_credential(request: Request) -> Response:
    principal = await _account(request)
    sid = request.path_params["sid"]
    cred = await push_uc.get_credential(ctx(request), account_sid=principal.account_sid, sid=sid)
    return json_response(credential_to_json(cred, base_url(request)))


async def update_credential(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    form = await read_form(request)
    changes, secrets = _credential_fields(form)
    cred, events = await push_uc.update_credential(c, account_sid=principal.account_sid,
                                                   sid=request.path_params["sid"], changes=changes, secrets=secrets)
    await apply(c, events)
    return json_response(credential_to_json(cred, base_url(request)))


async def delete_credential(request: Request) -> Response:
    principal = await _account(request)
    c = ctx(request)
    _, events = await push_uc.delete_credential(c, account_sid=principal.account_sid, sid=request.path_params["sid"])
    await apply(c, events)
    return empty_response()


# ---------------------------------------------------------------- a service's bindings


def _own_sid(request: Request, principal: Principal) -> str | None:
    """A client's own user SID (it sees and deletes only its bindings); None for Basic callers."""
    return request.state.user["sid"] if principal.is_client else None


async def list_bindings(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    types = _types(request)
    identities = query_values(request).get("Identity", [])
    owner = request.state.user if principal.is_client else None

    def reader(req: Any) -> Any:
        return push_uc.list_bindings(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                                     owner=owner, types=types, identities=identities, req=req)

    filters = [("BindingType", t) for t in types] + [("Identity", i) for i in identities]
    return await _paged(request, f"/v2/Services/{service_sid}/Bindings", "bindings", reader, binding_to_json,
                        max_size=100, filters=filters)


async def register(request: Request) -> Response:
    """POST /Bindings (a tokensvc extension): 201 for a new binding, 200 for the same key again."""
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    form = await read_form(request)
    if principal.is_client:
        user = request.state.user
        if "Identity" in form and form.get("Identity") != user["identity"]:
            raise errors.forbidden("A client may register only its own devices")
        user_key = user["sid"]
    else:
        user_key = validation.identity(form.get("Identity"))
    registration = push_uc.Registration.parse(form.get, principal.token)
    (binding, created), events = await push_uc.register_binding(
        c, account_sid=principal.account_sid, service_sid=service_sid, user_key=user_key, registration=registration)
    await apply(c, events)
    return json_response(binding_to_json(binding, base_url(request)), 201 if created else 200)


async def register_frame(c: Context, *, service_sid: str, user_sid: str, token: Verified,
                         data: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A connection's `registerPush` frame (same fields as the form) → the `pushRegistered` payload."""
    svc = await c.auth.service(service_sid)
    if svc is None:
        raise errors.not_found()
    registration = push_uc.Registration.parse(data.get, token)
    (binding, _), events = await push_uc.register_binding(
        c, account_sid=svc["account_sid"], service_sid=service_sid, user_key=user_sid, registration=registration)
    await apply(c, events)
    return {"binding": binding_to_json(binding, base)}


async def fetch_binding(request: Request) -> Response:
    service_sid, sid = request.path_params["service_sid"], request.path_params["sid"]
    principal = await authenticate(request, service_sid=service_sid)
    binding = await push_uc.get_binding(ctx(request), account_sid=principal.account_sid, service_sid=service_sid,
                                        sid=sid, owner_sid=_own_sid(request, principal))
    return json_response(binding_to_json(binding, base_url(request)))


async def delete_binding(request: Request) -> Response:
    service_sid, sid = request.path_params["service_sid"], request.path_params["sid"]
    principal = await authenticate(request, service_sid=service_sid)
    c = ctx(request)
    _, events = await push_uc.delete_binding(c, account_sid=principal.account_sid, service_sid=service_sid, sid=sid,
                                             owner_sid=_own_sid(request, principal))
    await apply(c, events)
    return empty_response()


# ---------------------------------------------------------------- /Users/{US}/Bindings[/{BS}]
# Reached through the users route (api/users.py), which parses the user key from the raw path.


async def _user_caller(request: Request) -> tuple[Principal, str, str | None]:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    return principal, service_sid, _own_sid(request, principal)


async def list_user_bindings(request: Request) -> Response:
    principal, service_sid, own = await _user_caller(request)
    types = _types(request)
    asked = OwnedPage(request, lambda user_sid: f"/v2/Services/{service_sid}/Users/{user_sid}/Bindings", max_size=50)
    _, page = await push_uc.list_user_bindings(ctx(request), account_sid=principal.account_sid,
                                               service_sid=service_sid, user_key=request.state.user_key,
                                               owner_sid=own, types=types, page_request=asked)
    base = base_url(request)
    return json_response({"bindings": [binding_to_json(row._mapping, base, of_user=True) for row in page.rows],
                          "meta": _with_filters(asked.meta(base, "bindings", page),
                                                [("BindingType", t) for t in types])})


async def fetch_user_binding(request: Request) -> Response:
    principal, service_sid, own = await _user_caller(request)
    binding = await push_uc.get_user_binding(ctx(request), account_sid=principal.account_sid,
                                             service_sid=service_sid, user_key=request.state.user_key,
                                             sid=request.state.binding_sid, owner_sid=own)
    return json_response(binding_to_json(binding, base_url(request), of_user=True))


async def delete_user_binding(request: Request) -> Response:
    principal, service_sid, own = await _user_caller(request)
    c = ctx(request)
    _, events = await push_uc.delete_binding(c, account_sid=principal.account_sid, service_sid=service_sid,
                                             sid=request.state.binding_sid, user_key=request.state.user_key,
                                             owner_sid=own)
    await apply(c, events)
    return empty_response()
