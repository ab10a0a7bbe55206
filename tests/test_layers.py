"""The layering STYLE.md asks for, checked: the error catalogue and the token layer are pure, and
no import circles between the hub and presence."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tokensvc.presence


def test_errors_and_tokens_import_no_web_framework_or_database() -> None:
    # A fresh interpreter: the test process has Starlette loaded already.
    code = ("import sys, tokensvc.errors, tokensvc.tokens; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn', 'sqlalchemy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(tokensvc.presence.__file__).parent.parent).stdout
    assert out.strip() == "[]"


def test_presence_imports_nothing_from_connect() -> None:
    # connect imports presence; presence knows a session only by its connection id.
    tree = ast.parse(Path(tokensvc.presence.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not {m for m in imported if m and m.split(".")[-1] == "connect"}


def test_the_hub_uses_only_presences_public_interface() -> None:
    import tokensvc.connect

    tree = ast.parse(Path(tokensvc.connect.__file__).read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "presence"}
    assert used and used <= {"start", "stop", "join", "leave", "forget_user", "forget_service"}, used
