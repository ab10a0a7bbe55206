"""The layering STYLE.md asks for, checked: the error catalogue and the token layer are pure, and
no import circles between the hub and presence, and the store and db layers import nothing above them."""

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


def _imports_of(package: Path) -> dict[str, set[str]]:
    """Each module of a tokensvc subpackage and the tokensvc modules it imports (relative ones resolved)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent.parent).with_suffix("").parts)
        mod_package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name.removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod_package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[name] = {n for n in names if n.startswith("tokensvc")}
    return found


def test_the_store_and_db_layers_import_nothing_above_them() -> None:
    # db/ -> store/ -> usecases/ -> api/, connect, presence, app, cli: arrows only point down.
    root = Path(tokensvc.presence.__file__).parent
    above_store = ("tokensvc.api", "tokensvc.usecases", "tokensvc.presence", "tokensvc.connect", "tokensvc.app",
                   "tokensvc.cli", "tokensvc.server", "tokensvc.auth", "tokensvc.context")
    for module, imported in _imports_of(root / "store").items():
        assert not {m for m in imported if m.startswith(above_store)}, module
    for module, imported in _imports_of(root / "db").items():
        assert not {m for m in imported if m.startswith((*above_store, "tokensvc.store"))}, module


def test_the_hub_uses_only_presences_public_interface() -> None:
    import tokensvc.connect

    tree = ast.parse(Path(tokensvc.connect.__file__).read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "presence"}
    assert used and used <= {"start", "stop", "join", "leave", "forget_user", "forget_service"}, used
