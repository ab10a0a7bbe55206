"""Empty databases of either kind, for tests that must not share the session's database
(migrations from nothing, from an older revision, a first start).

SQLite: a new file. PostgreSQL: a new database created next to TOKENSVC_TEST_DATABASE_URL's and
dropped afterwards (the role needs CREATEDB; scripts/with-postgres's role is a superuser).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

PG_URL = os.environ.get("TOKENSVC_TEST_DATABASE_URL") or None
KINDS = ("sqlite", "postgresql")
needs_postgres = pytest.mark.skipif(
    PG_URL is None, reason="needs PostgreSQL: run under scripts/with-postgres (sets TOKENSVC_TEST_DATABASE_URL)")


@contextlib.contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database of that kind; PostgreSQL ones are dropped on exit."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / ('fresh-' + uuid.uuid4().hex[:8] + '.db')}"
        return
    if PG_URL is None:
        pytest.skip("needs PostgreSQL: run under scripts/with-postgres (sets TOKENSVC_TEST_DATABASE_URL)")
    name = "tokensvc_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            try:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            except ProgrammingError as exc:
                pytest.skip(f"cannot create a scratch PostgreSQL database: {exc.orig}")
        try:
            yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
