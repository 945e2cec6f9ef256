"""The one way to find-or-create a named row of a project (a dataset, a document) inside a
write transaction, so that concurrent writers of the same name agree on one row."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from meguri.errors import NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._schema import projects


def ensure_named(
    conn: sa.Connection,
    table: sa.Table,
    *,
    prefix: str,
    project_id: str,
    name: str,
    created_by: str,
    **extra: Any,
) -> str:
    """The id of ``table``'s row named ``name`` in the project, created (with ``extra``) if new.

    FOR UPDATE (PostgreSQL) queues concurrent writers of one name; SQLite's BEGIN IMMEDIATE
    already serialises them.
    """
    found = conn.execute(
        sa.select(table.c.id)
        .where(table.c.project_id == project_id, table.c.name == name)
        .with_for_update()
    ).scalar_one_or_none()
    if found is not None:
        return str(found)
    if conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first() is None:
        raise NotFoundError(
            f"No project with id {project_id!r}; open the workspace (meguri.init()) so that "
            f"the project exists before adding {table.name} to it"
        )
    row_id = new_id(prefix)
    conn.execute(
        table.insert(),
        {
            "id": row_id,
            "project_id": project_id,
            "name": name,
            "created_at": time.time(),
            "created_by": created_by,
            **extra,
        },
    )
    return row_id
