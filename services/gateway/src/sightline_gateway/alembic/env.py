"""Alembic environment: run with a connection handed in by :func:`sightline_gateway.db.engine.migrate`."""

from __future__ import annotations

from alembic import context

from sightline_gateway.db.models import Base

connection = context.config.attributes["connection"]
schema = context.config.attributes.get("schema")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table_schema=schema,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
