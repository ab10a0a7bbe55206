"""An import's outcomes: counted, written per line to the --results file (JSON Lines, or CSV when
its name ends in .csv), and the failed lines reported on stderr (the first MAX_SHOWN of them, by
line number and Twilio code; identities go to the results file only)."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from .. import errors
from ..usecases.imports import CREATED, UNCHANGED, UPDATED

MAX_SHOWN = 20
RESULT_COLUMNS = ("line", "identity", "outcome", "user_sid", "code", "message")


@dataclass
class Tally:
    lines: int = 0
    failed: int = 0
    counts: Counter[str] = field(default_factory=lambda: Counter({CREATED: 0, UPDATED: 0, UNCHANGED: 0}))


class Results:
    def __init__(self, path: str | None, *, as_json: bool):
        self.path = path
        self.as_json = as_json
        self.tally = Tally()
        self._file: IO[str] | None = None
        self._csv: Any = None

    def __enter__(self) -> Results:
        if self.path is not None:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
            if self.path.lower().endswith(".csv"):
                self._csv = csv.writer(self._file)
                self._csv.writerow(RESULT_COLUMNS)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        hidden = self.tally.failed - MAX_SHOWN
        if hidden > 0:
            print(f"tokensvc: {hidden} more failed lines" + (f" (see {self.path})" if self.path else ""),
                  file=sys.stderr, flush=True)

    def add(self, line: int, identity: str | None, outcome: str | errors.TwilioError,
            user_sid: str | None = None) -> None:
        self.tally.lines += 1
        code = message = None
        if isinstance(outcome, errors.TwilioError):
            code, message = outcome.code, outcome.message
            self.tally.failed += 1
            if self.tally.failed <= MAX_SHOWN:
                self._show(line, code, message)
            label = "error"
        else:
            self.tally.counts[outcome] += 1
            label = outcome
        if self._csv is not None:
            self._csv.writerow((line, identity or "", label, user_sid or "", code or "", message or ""))
        elif self._file is not None:
            self._file.write(json.dumps({"line": line, "identity": identity, "outcome": label, "user_sid": user_sid,
                                         "code": code, "message": message}, ensure_ascii=False) + "\n")

    def _show(self, line: int, code: int, message: str) -> None:
        if self.as_json:
            print(json.dumps({"line": line, "code": code, "message": message}), file=sys.stderr, flush=True)
        else:
            print(f"tokensvc: line {line}: {message} (Twilio error {code})", file=sys.stderr, flush=True)
