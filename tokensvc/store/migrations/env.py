"""Alembic environment: run with the connection tokensvc hands over (schema.py)."""

from __future__ import annotations

from alembic import context

from tokensvc.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - tokensvc always passes one
    raise RuntimeError("run migrations through `tokensvc db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
