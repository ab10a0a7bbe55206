"""POST /v2/Services/{IS}/Tokens — the heart of the product (SPEC §4).

The hot path: a cached credential check, a cached service, one indexed read of the user (an
insert only on first encounter) and one ES256 signature.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import errors, validation
from ..tokens import issued_json, mint
from ..usecases.effects import apply
from ..usecases.events import TokenIssued
from ..usecases.users import provision_user
from .common import authenticate, ctx, json_response, read_form


async def create_token(request: Request) -> Response:
    service_sid = request.path_params["service_sid"]
    principal = await authenticate(request, service_sid=service_sid)
    if principal.is_client:
        raise errors.forbidden("Access tokens cannot mint tokens")
    c = ctx(request)
    form = await read_form(request)
    identity = validation.identity(form.get("Identity"))
    ttl = validation.ttl(form.get("Ttl"), default=c.settings.default_ttl, maximum=c.settings.max_ttl)
    svc = await c.auth.service(service_sid)
    if svc is None or svc["account_sid"] != principal.account_sid:
        raise errors.not_found()
    c.token_limiter.check(principal.account_sid)
    (user, created), events = await provision_user(c, service=svc, identity=identity)
    minted = mint(c.keyring.current(), issuer=c.settings.issuer, account_sid=principal.account_sid,
                  service_sid=service_sid, identity=identity, ttl=ttl)
    events.append(TokenIssued(service_sid))
    await apply(c, events)
    return json_response(issued_json(minted, identity=identity, user_sid=user["sid"], service_sid=service_sid,
                                     account_sid=principal.account_sid, ttl=ttl, user_created=created), 201)
