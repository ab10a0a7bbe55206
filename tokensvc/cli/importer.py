"""`tokensvc users import SERVICE FILE`: JSON Lines or CSV, one use-case call per line
(usecases/imports.import_user: get-or-create by identity with the given fields, the onUserAdd
hook and the post-events included), many lines in flight at once so SQLite's group commit
writes them together. The input is streamed; a bad line is reported and skipped; exit 1 at the
end when any line failed.

Fields (JSON keys, or CSV header names): `identity` (required), `friendly_name`, `attributes`
(a JSON text validated as the API's Attributes; in JSON Lines also an object or array), `role`
(a deployment role's RL SID or its friendly name). A field left out, null or an empty CSV cell
is not given: a new user gets the service's default, an existing one keeps its value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import IO, Any, cast

from .. import errors, validation
from ..context import Context
from ..usecases.effects import apply
from ..usecases.imports import CREATED, UNCHANGED, UPDATED, Line, batchable, import_lines, import_user
from ..webhooks.pre import wants as pre_wants
from .common import USAGE, RoleNames, fail, origin, run_async, service_for, settings
from .import_results import Results, Tally

COLUMNS = ("identity", "friendly_name", "attributes", "role")
MAX_LINE = 256 * 1024  # an attribute of 16 KiB, escaped as JSON inside JSON, fits several times over
Record = tuple[int, Mapping[str, Any] | errors.TwilioError]


def _field_error(name: str, detail: str) -> errors.TwilioError:
    return errors.invalid_param(name, detail)


def validated(record: Mapping[str, Any]) -> dict[str, Any]:
    """A line's fields, checked as the API checks Identity, FriendlyName and Attributes."""
    fields: dict[str, Any] = {}
    for name, value in record.items():
        if name not in COLUMNS:
            raise _field_error(name[:64], "is not a field of an import (identity, friendly_name, attributes, role)")
        if value is None:
            continue
        if name == "attributes" and isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if not isinstance(value, str):
            raise _field_error(name, "must be a string")
        if "\x00" in value or not validation.is_text(value):
            raise _field_error(name, "must be Unicode text without NUL characters")
        fields[name] = value
    if "identity" not in fields:
        raise _field_error("identity", "is required")
    fields["identity"] = validation.identity(fields["identity"])
    if "friendly_name" in fields:
        validation.friendly_name(fields["friendly_name"])
    if "attributes" in fields:
        validation.attributes(fields["attributes"])
    return fields


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line; None for a line over MAX_LINE (skipped unread)."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(MAX_LINE)
            yield number, None
            continue
        yield number, raw


def jsonl_records(stream: IO[bytes]) -> Iterator[Record]:
    for number, raw in _lines(stream):
        if raw is None:
            yield number, _field_error("line", f"is longer than {MAX_LINE} bytes")
            continue
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield number, _field_error("line", "is not UTF-8")
            continue
        except (ValueError, RecursionError):
            yield number, _field_error("line", "is not a JSON object")
            continue
        yield number, doc if isinstance(doc, dict) else _field_error("line", "is not a JSON object")


def csv_records(stream: IO[bytes]) -> Iterator[Record]:
    """Rows of a CSV file with a header row naming its columns (any order, a subset of COLUMNS)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(MAX_LINE)
    reader = csv.reader(text)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise _field_error("header", f"is not CSV ({exc})") from None
    unknown = [name for name in header if name not in COLUMNS]
    if unknown or "identity" not in header or len(set(header)) != len(header):
        raise _field_error("header", f"must name the columns {', '.join(COLUMNS)} (identity required), each once")
    while True:
        number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield number, _field_error("line", f"is not CSV ({exc})")
            continue
        if not row or row == [""]:
            continue
        if len(row) != len(header):
            yield number, _field_error("line", f"has {len(row)} cells for {len(header)} columns")
            continue
        yield number, {name: value or None for name, value in zip(header, row, strict=True)}


def detect(path: str, given: str | None, first: bytes) -> str:
    """The format: --format, else the file's extension, else its first byte ('{' is JSON Lines)."""
    if given:
        return given
    lowered = path.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    return "jsonl" if first.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv"


CHUNK = 256  # lines per import_lines call (one write transaction) when the service has no onUserAdd hook
Entry = tuple[int, str | None, Line | errors.TwilioError]


def _default_concurrency(c: Context, svc: Mapping[str, Any]) -> int:
    if pre_wants(svc, "onUserAdd"):
        return 64  # a question to the hook per new line: as many as its connections
    return 512 if c.db.is_sqlite else 16  # two group commits' worth; PostgreSQL: its pool's connections


async def run_import(c: Context, *, args: argparse.Namespace, stream: IO[bytes], fmt: str, results: Results,
                     progress: Callable[[int], None]) -> Tally:
    account, svc = await service_for(c, args.service, args.account)
    roles = RoleNames(c, svc["sid"])
    records = csv_records(stream) if fmt == "csv" else jsonl_records(stream)

    async def entry(number: int, record: Mapping[str, Any] | errors.TwilioError) -> Entry:
        """A line read: its number, its identity when it has one, its Line or why it is refused."""
        identity = record.get("identity") if isinstance(record, Mapping) else None
        identity = identity if isinstance(identity, str) else None
        if isinstance(record, errors.TwilioError):
            return number, None, record
        try:
            fields = validated(record)
            role_sid = await roles.sid(fields["role"]) if "role" in fields else None
        except errors.TwilioError as exc:
            return number, identity, exc
        return number, fields["identity"], Line(fields["identity"], fields.get("friendly_name"),
                                                fields.get("attributes"), role_sid)

    if args.dry_run or not batchable(c, svc):
        return await _one_at_a_time(c, args, account, svc, records, entry, results, progress)
    return await _in_chunks(c, args, account, svc, records, entry, results, progress)


async def _in_chunks(c: Context, args: argparse.Namespace, account: str, svc: Mapping[str, Any],
                     records: Iterator[Record], entry: Callable[..., Awaitable[Entry]], results: Results,
                     progress: Callable[[int], None]) -> Tally:
    """No hook to ask: CHUNK lines per import_lines call, a few calls in flight (on SQLite they
    share a group commit; on PostgreSQL each is a transaction on a connection of its own)."""
    source = origin(args)
    # SQLite: the writer commits one chunk while the next is read; PostgreSQL: 8 connections.
    in_flight = max(1, args.concurrency // CHUNK) if args.concurrency else 2 if c.db.is_sqlite else 8

    async def write(lines: list[Line]) -> list[Any]:
        if not lines:
            return []
        outcomes, events = await import_lines(c, origin=source, account_sid=account, service_sid=svc["sid"],
                                              lines=lines)
        await apply(c, events)
        return outcomes

    window: deque[tuple[list[Entry], asyncio.Task[list[Any]]]] = deque()

    async def finish() -> None:
        entries, job = window.popleft()
        try:
            outcomes: list[Any] = await job
        except errors.TwilioError as exc:
            outcomes = [exc] * len(entries)
        except Exception as exc:  # a bug must not stop the other chunks: reported, counted, skipped
            outcomes = [errors.TwilioError(500, 20500, f"unexpected {type(exc).__name__}")] * len(entries)
        done = iter(outcomes)
        for number, identity, line in entries:
            outcome = line if isinstance(line, errors.TwilioError) else next(done)
            if isinstance(outcome, errors.TwilioError):
                results.add(number, identity, outcome)
            else:
                user, kind = outcome
                results.add(number, identity, kind, user["sid"] if user is not None else None)

    chunk: list[Entry] = []

    def send() -> None:
        lines = [line for _, _, line in chunk if isinstance(line, Line)]
        window.append((list(chunk), asyncio.ensure_future(write(lines))))
        chunk.clear()

    try:
        for count, (number, record) in enumerate(records, 1):
            chunk.append(await entry(number, record))
            if len(chunk) >= CHUNK:
                send()
                while len(window) >= in_flight:
                    await finish()
            if count % 256 == 0:
                progress(count)
        if chunk:
            send()
        while window:
            await finish()
    finally:
        for _, job in window:
            job.cancel()
    return results.tally


async def _one_at_a_time(c: Context, args: argparse.Namespace, account: str, svc: Mapping[str, Any],
                         records: Iterator[Record], entry: Callable[..., Awaitable[Entry]], results: Results,
                         progress: Callable[[int], None]) -> Tally:
    """An onUserAdd hook to ask about each new line (or a dry run): import_user per line, many
    lines in flight."""
    source = origin(args)
    limit = args.concurrency or _default_concurrency(c, svc)

    async def one(line: Line) -> tuple[Any, str]:
        (user, outcome), events = await import_user(
            c, origin=source, account_sid=account, service_sid=svc["sid"], identity=line.identity,
            friendly_name=line.friendly_name, attributes=line.attributes, role_sid=line.role_sid,
            dry_run=args.dry_run)
        await apply(c, events)
        return user, outcome

    window: deque[tuple[int, str | None, asyncio.Task[Any] | errors.TwilioError]] = deque()

    async def finish() -> None:
        number, identity, job = window.popleft()
        if isinstance(job, errors.TwilioError):
            results.add(number, identity, job)
            return
        try:
            user, outcome = await job
        except errors.TwilioError as exc:
            results.add(number, identity, exc)
        except Exception as exc:  # a bug must not stop the other lines: reported, counted, skipped
            results.add(number, identity, errors.TwilioError(500, 20500, f"unexpected {type(exc).__name__}"))
        else:
            results.add(number, identity, outcome, user["sid"] if user is not None else None)

    try:
        for count, (number, record) in enumerate(records, 1):
            number, identity, line = await entry(number, record)
            window.append((number, identity, line if isinstance(line, errors.TwilioError)
                           else asyncio.ensure_future(one(line))))
            while len(window) >= limit:
                await finish()
            if count % 256 == 0:
                progress(count)
        while window:
            await finish()
    finally:
        for _, _, job in window:
            if isinstance(job, asyncio.Task):
                job.cancel()
    return results.tally


def cmd_import(args: argparse.Namespace) -> int:
    s = settings()
    if args.concurrency is not None and not 1 <= args.concurrency <= 4096:
        fail("--concurrency must be between 1 and 4096", USAGE)
    try:
        buffered = cast(io.BufferedReader, sys.stdin.buffer) if args.file == "-" else open(args.file, "rb")
    except OSError as exc:
        fail(f"cannot read {args.file}: {exc.strerror}", USAGE)
    fmt = detect(args.file, args.format, buffered.peek(64)[:64])
    size = os.fstat(buffered.fileno()).st_size if args.file != "-" and os.path.isfile(args.file) else None
    started = time.monotonic()
    with buffered if buffered is not sys.stdin.buffer else contextlib.nullcontext(), \
            Results(args.results, as_json=args.json) as results, _progress(size) as bar:
        def advance(count: int) -> None:
            bar(buffered.tell() if size else count)

        tally = run_async(s, lambda c: run_import(c, args=args, stream=buffered, fmt=fmt, results=results,
                                                  progress=advance))
    seconds = time.monotonic() - started
    summary = {"lines": tally.lines, CREATED: tally.counts[CREATED], UPDATED: tally.counts[UPDATED],
               UNCHANGED: tally.counts[UNCHANGED], "failed": tally.failed, "dry_run": args.dry_run,
               "seconds": round(seconds, 3)}
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        would = " (dry run: nothing written)" if args.dry_run else ""
        print(f"{tally.lines} lines: {tally.counts[CREATED]} created, {tally.counts[UPDATED]} updated, "
              f"{tally.counts[UNCHANGED]} unchanged, {tally.failed} failed{would}", flush=True)
    return 1 if tally.failed else 0


class _progress:
    """A rich progress bar on stderr while it is a terminal (bytes of a file, else lines)."""

    def __init__(self, total: int | None):
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not sys.stderr.isatty():
            return lambda done: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("importing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("import", total=self.total)
        return lambda done: self._bar.update(task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def register(command: Callable[[str, str], argparse.ArgumentParser]) -> tuple[argparse.ArgumentParser, Any]:
    parser = command("import", "get-or-create users from JSON Lines or CSV, a line at a time")
    parser.add_argument("file", metavar="FILE", help="the input ('-': stdin)")
    parser.add_argument("--format", choices=("jsonl", "csv"), help="default: by extension, else by content")
    parser.add_argument("--results", metavar="FILE",
                        help="a result per line: line, identity, outcome, user_sid, code, message "
                             "(JSON Lines; CSV when FILE ends in .csv)")
    parser.add_argument("--dry-run", action="store_true", help="validate and decide every line, write nothing")
    parser.add_argument("--concurrency", type=int,
                        help="lines in flight. Without an onUserAdd hook lines go in transactions of 256 "
                             "(default: 2 of them on SQLite, 8 on PostgreSQL); with one, or --dry-run, "
                             "a line at a time (default: 64 with a hook, 512 SQLite, 16 PostgreSQL)")
    parser.add_argument("--webhook-enabled", action="store_true",
                        help="post onUserUpdated for updated users (onUserAdded is posted for created ones always)")
    return parser, cmd_import
