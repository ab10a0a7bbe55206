"""The CLI's JSON: orjson's text is the stdlib encoder's (compact, non-ASCII as is), and what
orjson refuses still prints."""

from __future__ import annotations

import json
import random

from tokensvc.cli.output import dump_lines, dumps

STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _text(rng: random.Random) -> str:
    ranges = [(0, 0x7F), (0x80, 0xD7FF), (0xE000, 0x10FFFF)]
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 12)))


def test_dumps_is_the_stdlib_text_for_what_the_cli_prints() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        doc = {"identity": _text(rng), "attributes": _text(rng), "friendly_name": None, "is_online": False,
               "joined_channels_count": rng.randint(0, 2**40), "links": {"url": _text(rng)}, "list": [1, "x", None],
               "quote": '"\\\n\t\x00\x1f\x7f\u2028'}
        assert dumps(doc) == STDLIB.encode(doc)
        assert json.loads(dumps(doc)) == doc


def test_what_orjson_refuses_still_prints_as_ascii_json() -> None:
    doc = {"identity": "bad\udc80bytes", "big": 2**70, 3: "int key", "name": "é"}
    line = dumps(doc)
    assert line == json.dumps(doc, separators=(",", ":")) and line.isascii()
    assert json.loads(line) == {"identity": "bad\udc80bytes", "big": 2**70, "3": "int key", "name": "é"}
    assert dump_lines([{"a": 1}, doc, {"b": 2}]) == '{"a":1}\n' + line + '\n{"b":2}\n'
    assert dump_lines([]) == ""
