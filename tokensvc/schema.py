"""The database schema through Alembic migrations (`tokensvc db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .config import Settings
from .db import make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    pass


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def _current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def current_revision(settings: Settings) -> str | None:
    engine = make_engine(settings)
    try:
        return _current(engine)
    finally:
        engine.dispose()


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(settings: Settings, *, migrate: bool = True) -> None:
    """Upgrade the schema to head, or refuse (SchemaOutOfDate) when `migrate` is False."""
    engine = make_engine(settings)
    try:
        current, head = _current(engine), head_revision()
        if current == head:
            return
        if not migrate:
            raise SchemaOutOfDate(
                f"the database schema is at revision {current or '(empty)'} but this tokensvc needs {head}: "
                "run `tokensvc db upgrade` (or `tokensvc serve --migrate`)")
        upgrade(engine)
    finally:
        engine.dispose()
