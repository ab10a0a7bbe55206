"""Every third-party module the code and the tests import is declared in pyproject.toml.

A module that arrives only as another package's dependency can vanish with that package's next
release (schemathesis 4 stopped bringing openapi_spec_validator, and the suite no longer
collected on a fresh machine): declared directly, it cannot.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def _imports(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _distributions(modules: set[str], local: set[str]) -> dict[str, set[str]]:
    dists = packages_distributions()
    out: dict[str, set[str]] = {}
    for module in modules - local - set(sys.stdlib_module_names):
        out[module] = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
    return out


def test_runtime_imports_are_runtime_dependencies() -> None:
    runtime, _ = _declared()
    missing = {m: d for m, d in _distributions(_imports(ROOT / "tokensvc"), {"tokensvc"}).items()
               if not d & runtime}
    assert not missing, f"imported by tokensvc/ but not in [project].dependencies: {missing}"


def test_test_imports_are_declared() -> None:
    runtime, test = _declared()
    local = {"tokensvc", "conftest", "blackbox", "fresh_db"} | {p.stem for p in (ROOT / "tests").rglob("*.py")}
    missing = {m: d for m, d in _distributions(_imports(ROOT / "tests"), local).items()
               if not d & (runtime | test)}
    assert not missing, f"imported by tests/ but not declared in pyproject.toml: {missing}"
