"""Alembic environment of the metadata store, driven by ``_migrate.migrate``.

``migrate`` hands over an open connection (``config.attributes["connection"]``), already inside
the transaction and under the migration lock, so that the whole upgrade commits or rolls back
as one. SQLite alters tables in batch mode (copy and move), the only way it can change columns.
"""

from __future__ import annotations

from alembic import context

from meguri.store.metadata._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "meguri's migrations run through meguri.store.metadata._migrate.migrate(engine), "
        "which passes the connection; there is no alembic.ini."
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
