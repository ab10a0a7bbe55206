"""The layering STYLE.md asks for, checked: the error catalogue and the token layer are pure."""

from __future__ import annotations

import subprocess
import sys


def test_errors_and_tokens_import_no_web_framework_or_database() -> None:
    # A fresh interpreter: the test process has Starlette loaded already.
    code = ("import sys, tokensvc.errors, tokensvc.tokens; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn', 'sqlalchemy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
