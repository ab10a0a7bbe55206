"""webhooks/params.py: the form encoding is urllib's, byte for byte (the signature covers the
parameters, the receiver decodes the body)."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from tokensvc.webhooks.params import form


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=8))
def test_form_is_urlencode(params: dict[str, str]) -> None:
    assert form(params) == urlencode(params)


def test_form_escapes_what_a_post_event_carries() -> None:
    params = {"DateCreated": "2026-12-01T16:00:00Z", "Attributes": '{"a": [1]}', "Identity": "a+b@c d"}
    assert form(params) == ("DateCreated=2026-12-01T16%3A00%3A00Z&Attributes=%7B%22a%22%3A+%5B1%5D%7D"
                            "&Identity=a%2Bb%40c+d")
