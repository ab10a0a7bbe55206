"""The console's routes under /console, each with exactly the methods it serves (SPEC §7): GET
(and HEAD) for pages, POST for forms; anything else is 405 with Allow."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..api.routing import DeclaredRoute
from . import assets, pages, signin, users
from .web import page_route


async def _static(request: Request) -> Response:
    return assets.serve(request, request.path_params["name"])


def routes() -> list[DeclaredRoute]:
    """Every console route (page_route prefixes /console)."""
    return [
        page_route("", GET=signin.home),
        page_route("/", GET=signin.home),
        page_route("/static/{name}", GET=_static),
        page_route("/sign-in", GET=signin.sign_in_form, POST=signin.sign_in),
        page_route("/sign-out", POST=signin.sign_out),
        page_route("/services", GET=pages.services),
        page_route("/services/{service_sid}", GET=pages.service),
        page_route("/services/{service_sid}/online", GET=pages.online),
        page_route("/services/{service_sid}/roles", GET=pages.roles),
        page_route("/services/{service_sid}/users", GET=users.users),
        page_route("/services/{service_sid}/users/{user_sid}", GET=users.user),
        page_route("/services/{service_sid}/users/{user_sid}/edit", POST=users.edit_user),
        page_route("/services/{service_sid}/users/{user_sid}/delete", GET=users.confirm_delete,
                   POST=users.delete_user),
        page_route("/keys", GET=pages.keys, POST=pages.create_key),
        page_route("/keys/{sid}/delete", GET=pages.confirm_delete_key, POST=pages.delete_key),
        page_route("/signing-keys", GET=pages.signing_keys),
        page_route("/signing-keys/rotate", POST=pages.rotate_signing_key),
    ]
