"""The console's own stylesheet and script (console/static/), read once from the package and served
by us (no CDN, no web font): ETag and a short cache, 404 for any other name."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from .. import errors

TYPES = {"console.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}


@lru_cache(maxsize=len(TYPES))
def _load(name: str) -> tuple[bytes, str]:
    data = resources.files("tokensvc.console").joinpath("static", name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def serve(request: Request, name: str) -> Response:
    if name not in TYPES:
        raise errors.not_found()
    data, etag = _load(name)
    headers = {"ETag": etag, "Cache-Control": "max-age=300"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=TYPES[name], headers=headers)
