"""On a terminal (a real pseudo-terminal of 60 columns): tables in colour cut to its width, and the
import's progress bar; the same commands off a terminal print neither (tests/cli/test_services_roles.py)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

from cli_helpers import Cli, cli  # noqa: F401

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(cli: Cli, *argv: str, columns: int = 60, timeout: float = 120) -> tuple[int, str]:
    """(exit status, everything written to the terminal) of the command on a pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSVC_") and k not in ("COLUMNS", "NO_COLOR")}
    env.update(cli.env, TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "tokensvc", *argv, "--account", cli.account], env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout), b"".join(chunks).decode("utf-8", "replace")


def test_a_table_on_a_terminal_is_in_colour_and_cut_to_its_width(cli: Cli) -> None:
    cli.service("a service with a much longer friendly name than sixty columns allow")
    status, shown = on_a_terminal(cli, "services", "list")
    assert status == 0, shown
    assert ANSI.search(shown)  # the bold header
    lines = [line for line in ANSI.sub("", shown).replace("\r", "").split("\n") if line.strip()]
    assert lines and all(len(line) <= 60 for line in lines), lines
    assert "…" in shown and "sixty columns allow" not in shown


def test_an_import_on_a_terminal_shows_its_progress(cli: Cli, tmp_path) -> None:
    svc = cli.service()
    source = tmp_path / "many.jsonl"
    source.write_text("".join(json.dumps({"identity": f"p-{i}"}) + "\n" for i in range(3000)))
    status, shown = on_a_terminal(cli, "users", "import", svc["sid"], str(source))
    assert status == 0, shown
    assert "importing" in shown  # the bar (rich, on stderr, erased at the end)
    assert "3000 lines: 3000 created" in ANSI.sub("", shown)
