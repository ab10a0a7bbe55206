"""The OpenAPI description's version is pyproject.toml's, written once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from conftest import Api

ROOT = Path(__file__).resolve().parent.parent


def test_openapi_version_is_the_package_version(api: Api) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    r = api.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    assert doc["info"]["version"] == declared
