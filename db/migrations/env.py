"""Alembic's entry point. Sala runs it from code (`db.migrations`) on a connection it gives."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from db import models  # noqa: F401  (fills SQLModel.metadata, for comparing and autogenerate)
from db.migrations import outside_the_models

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError("Sala's migrations run from code on a connection: see db/migrations")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite alters a column by rebuilding its table: batch mode does that.
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=outside_the_models,
)
with context.begin_transaction():
    context.run_migrations()
