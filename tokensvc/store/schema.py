"""The database schema through Alembic migrations (`tokensvc db upgrade`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ..config import Settings
from ..db import make_engine

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


# Names "tokensvc schema migration" among PostgreSQL advisory locks (any fixed number would do).
MIGRATION_LOCK = 0x746F6B656E737663


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade in one transaction. On PostgreSQL, processes that start together with `--migrate`
    take turns on an advisory lock; the later ones find the schema current and do nothing."""
    cfg = alembic_config()
    if engine.dialect.name == "sqlite":
        _migrate_sqlite(engine, cfg, lambda: command.upgrade(cfg, revision))
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade in one transaction (for operators rolling a release back, and the tests)."""
    cfg = alembic_config()
    if engine.dialect.name == "sqlite":
        _migrate_sqlite(engine, cfg, lambda: command.downgrade(cfg, revision))
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _migrate_sqlite(engine: Engine, cfg: Config, step: Callable[[], None]) -> None:
    """SQLite adds a constraint by rebuilding the table (Alembic batch mode), and dropping the old
    table would cascade to every row referencing it: foreign keys are off while migrating (the
    pragma only takes effect outside a transaction), and every one is checked before commit."""
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step()
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    tables = sorted({row[0] for row in broken})
                    raise RuntimeError(f"migration left rows whose references are missing in {', '.join(tables)}")
        finally:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


def _known(revision: str) -> bool:
    return any(s.revision == revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def ensure_schema(settings: Settings, *, migrate: bool = True) -> None:
    """Upgrade the schema to head, or refuse (SchemaOutOfDate) when `migrate` is False."""
    engine = make_engine(settings)
    try:
        current, head = _current(engine), head_revision()
        if current == head:
            return
        if current is not None and not _known(current):
            raise SchemaOutOfDate(
                f"the database schema is at revision {current}, which this tokensvc does not know: "
                "a newer tokensvc has migrated it; run that version")
        if not migrate:
            raise SchemaOutOfDate(
                f"the database schema is at revision {current or '(empty)'} but this tokensvc needs {head}: "
                "run `tokensvc db upgrade` (or `tokensvc serve --migrate`)")
        upgrade(engine)
    finally:
        engine.dispose()
