"""The one renderer of Twilio errors as HTTP responses (SPEC §2); the catalogue itself
(tokensvc/errors.py) stays free of any web framework."""

from __future__ import annotations

import json

from starlette.responses import Response

from ..errors import TwilioError


def error_response(err: TwilioError) -> Response:
    """Render a TwilioError as the JSON body of SPEC §2."""
    return Response(
        json.dumps(err.body()),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )
