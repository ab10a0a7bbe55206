"""Routes that answer exactly the methods they declare (SPEC §7).

A resource is a path plus one handler per method. `HEAD` is the `GET` handler's answer without
its body; any other method is 405 20004 with `Allow`. No handler ever picks its action by
elimination ("not GET and not POST, so DELETE": that is how `HEAD` once deleted services).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import errors

Handler = Callable[[Request], Awaitable[Response]]
KNOWN_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def method_table(**handlers: Handler | None) -> dict[str, Handler]:
    """{method: handler} for the given methods, with HEAD answered by GET."""
    table = {method: handler for method, handler in handlers.items() if handler is not None}
    unknown = set(table) - set(KNOWN_METHODS)
    if unknown:
        raise ValueError(f"not an HTTP method this API declares: {sorted(unknown)}")
    if "GET" in table:
        table["HEAD"] = table["GET"]
    return table


def allow_header(table: Mapping[str, Handler]) -> tuple[str, ...]:
    return tuple(sorted(table))


async def dispatch(request: Request, table: Mapping[str, Handler]) -> Response:
    """Run the handler declared for the request's method; 405 20004 when there is none."""
    method = request.method
    handler = table.get(method)
    if handler is None:
        raise errors.method_not_allowed(allow_header(table))
    if method != "HEAD":
        return await handler(request)
    response = await handler(request)
    # HEAD: the GET answer's status and headers (Content-Length included), no body.
    head = Response(b"", status_code=response.status_code)
    head.raw_headers = list(response.raw_headers)  # repeated headers kept, Content-Length too
    return head


class DeclaredRoute(Route):
    """A Route whose endpoint itself answers every method (dispatch): Starlette's own method
    check would answer 405 with the Allow of the whole route, where one route serves several
    resources (/Users/{key} and its sub-lists). `declared_methods` is what it serves, for the
    OpenAPI document."""

    def __init__(self, path: str, endpoint: Handler, *, declared: tuple[str, ...],
                 allow_for: Callable[[str], tuple[str, ...]] | None = None, include_in_schema: bool = True):
        super().__init__(path, endpoint, name=getattr(endpoint, "__name__", None),
                         include_in_schema=include_in_schema)
        self.methods = None  # Starlette would default a function endpoint to GET only
        self.declared_methods = frozenset(declared)
        self._allow_for = allow_for

    def allow(self, raw_path: str) -> tuple[str, ...]:
        """The Allow of the resource at `raw_path` (which this route matches)."""
        return self._allow_for(raw_path) if self._allow_for else tuple(sorted(self.declared_methods))


def allowed_methods(routes: list[Any], raw_path: str) -> tuple[str, ...] | None:
    """The methods the resource at `raw_path` (still percent-encoded) answers, or None when no
    route serves it: for a request the HTTP parser refused before the app could see it."""
    path = unquote(raw_path)
    for route in routes:
        if isinstance(route, DeclaredRoute) and route.path_regex.match(path):
            return route.allow(raw_path)
    return None


def resource(path: str, **handlers: Handler | None) -> Route:
    """A route serving exactly `handlers` (GET=…, POST=…, DELETE=…); HEAD follows GET."""
    table = method_table(**handlers)

    async def endpoint(request: Request) -> Response:
        # dispatch() inlined for the usual case: one coroutine less per request (the token path)
        handler = table.get(request.method)
        if handler is not None and request.method != "HEAD":
            return await handler(request)
        return await dispatch(request, table)

    endpoint.__name__ = "|".join(f"{m}:{h.__module__.rsplit('.', 1)[-1]}.{h.__name__}"
                                 for m, h in table.items() if m != "HEAD")
    return DeclaredRoute(path, endpoint, declared=allow_header(table))
