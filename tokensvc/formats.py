"""Date formats of SPEC §1."""

from __future__ import annotations

import time
from email.utils import formatdate
from functools import lru_cache


@lru_cache(maxsize=4096)  # a list or an export renders the same few seconds over and over
def iso8601(ts: int) -> str:
    """Chat v2 dates: ISO 8601 UTC, whole seconds, Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def rfc2822(ts: int) -> str:
    """2010-04-01 API dates: `Thu, 24 Mar 2016 21:05:19 +0000`."""
    return formatdate(ts, usegmt=False).replace("-0000", "+0000")
