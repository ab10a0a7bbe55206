"""What commands print: tables for people, JSON for scripts.

- `--json`: a command that answers with one thing prints one JSON document; a list (and
  `users export`) prints JSON Lines, one object per line, streamed, so any size stays in
  constant memory and `jq -c` / a line reader takes it as it comes.
- Otherwise an aligned table (rich): on a terminal truncated to its width, with a bold header;
  when stdout is not a terminal no colour or other escape code at all, and cells are truncated
  only when COLUMNS says how wide to be. Long lists are printed in chunks of CHUNK rows, their
  column widths taken from the first chunk, so a table of a million users needs no more memory
  than one of a thousand.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.table import Table

CHUNK = 1000
_UNBOUNDED = 100_000  # the width of a table nobody truncates (stdout is a pipe or a file)


# orjson: ~0.7 µs per user where the stdlib's encoder (even one reused) costs ~8, most of an
# export's time: compact, non-ASCII as is. What orjson refuses (a lone surrogate from a CSV
# line's bytes in an import result, an integer past 64 bits) goes through _ENCODER instead,
# escaped to ASCII so a surrogate still makes a line any UTF-8 reader takes.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> str:
    try:
        return orjson.dumps(data, option=_OPTIONS).decode()
    except TypeError:
        return _ENCODER.encode(data)


def dump_lines(items: Iterable[Any]) -> str:
    """JSON Lines: each item on a line of its own, every line ending in a newline."""
    options = _OPTIONS | orjson.OPT_APPEND_NEWLINE
    chunks: list[bytes] = []
    for item in items:
        try:
            chunks.append(orjson.dumps(item, option=options))
        except TypeError:
            chunks.append((_ENCODER.encode(item) + "\n").encode("ascii"))
    return b"".join(chunks).decode()


def console() -> Console:
    """stdout as rich sees it: its width on a terminal (or COLUMNS), unbounded elsewhere."""
    tty = sys.stdout.isatty()
    width: int | None = None
    if not tty:
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else _UNBOUNDED
    return Console(width=width, no_color=not tty, highlight=False, soft_wrap=False,
                   color_system="auto" if tty else None, emoji=False, markup=False)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return dumps(value)
    # one table line per row: a newline or a tab in an identity or a name must not break it
    return str(value).replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


class Output:
    """One command's stdout."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            self._console = console()
        return self._console

    def document(self, data: Mapping[str, Any], fields: Sequence[str] | None = None) -> None:
        """One resource: JSON as is, or a two-column table of `fields` (default: all)."""
        if self.as_json:
            print(dumps(data), flush=True)
            return
        table = self._table(["field", "value"], widths=None)
        for name in fields or list(data):
            table.add_row(name, cell(data.get(name)))
        self._print(table)

    def rows(self, columns: Sequence[str], records: Iterable[Mapping[str, Any]],
             pick: Callable[[Mapping[str, Any]], Sequence[Any]] | None = None) -> int:
        """A list: JSON Lines of each record, or a table of `columns` (pick(record) gives a row's
        cells; default: the record's values of those names). Returns the count."""
        stream = self.stream(columns, pick)
        for record in records:
            stream.add(record)
        return stream.close()

    def stream(self, columns: Sequence[str],
               pick: Callable[[Mapping[str, Any]], Sequence[Any]] | None = None) -> Rows:
        """A list printed as its records come (add each, then close)."""
        return Rows(self, columns, pick)

    def _print_chunk(self, columns: Sequence[str], chunk: list[list[str]], widths: list[int] | None) -> list[int]:
        first = widths is None
        # as wide as the widest cell so far: later chunks line up with the first unless a longer
        # value comes, and nothing is cut where no terminal width asks for it
        widths = [max([len(name) if first else widths[i], *(len(row[i]) for row in chunk)])  # type: ignore[index]
                  for i, name in enumerate(columns)]
        table = self._table(columns, widths=widths, header=first)
        for row in chunk:
            table.add_row(*row)
        self._print(table)
        return widths

    def _print(self, table: Table) -> None:
        console = self.rich
        if console.is_terminal:
            console.print(table)
            return
        with console.capture() as captured:  # no padding left at the ends of lines in a file
            console.print(table)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        sys.stdout.flush()

    def _table(self, columns: Sequence[str], *, widths: list[int] | None, header: bool = True) -> Table:
        table = Table(box=box.SIMPLE_HEAD if header else None, show_header=header, header_style="bold",
                      pad_edge=False, show_edge=False, expand=False)
        for i, name in enumerate(columns):
            table.add_column(name, no_wrap=True, overflow="ellipsis", width=None if widths is None else widths[i])
        return table

    def note(self, message: str) -> None:
        """A line for people that is not the answer (a next-page hint): stderr."""
        print(message, file=sys.stderr, flush=True)


class Rows:
    """One list being printed: JSON Lines as records come, or a table a CHUNK of rows at a time."""

    def __init__(self, out: Output, columns: Sequence[str], pick: Callable[[Mapping[str, Any]], Sequence[Any]] | None):
        self.out = out
        self.columns = columns
        self.pick = pick or (lambda r: [r.get(c) for c in columns])
        self.count = 0
        self._chunk: list[list[str]] = []
        self._widths: list[int] | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        self.count += 1
        if self.out.as_json:
            sys.stdout.write(dumps(record) + "\n")
            return
        self._chunk.append([cell(v) for v in self.pick(record)])
        if len(self._chunk) >= CHUNK:
            self._widths = self.out._print_chunk(self.columns, self._chunk, self._widths)
            self._chunk = []

    def close(self) -> int:
        if not self.out.as_json and (self._chunk or self._widths is None):
            self.out._print_chunk(self.columns, self._chunk, self._widths)
        sys.stdout.flush()
        return self.count
