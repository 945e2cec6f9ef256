"""Lifecycle of runs and experiments (deleted, restorable) and experiment tags.

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-04

A deleted run or experiment keeps every record (params, metrics, artifacts, audit events) and
is only hidden from searches and listings: ``deleted_at`` is the time it was deleted, NULL
while it is active, so that existing rows are active without a data migration. A partial
index over the active runs (by experiment, newest first) keeps the runs table's pages and
counts as cheap as before the filter existed. An
experiment's runs deleted with it share its ``deleted_at``, which is how restoring the
experiment knows which runs to bring back (and leaves alone the runs deleted on their own).

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)
_ACTIVE_INDEX = "ix_runs_active_experiment_id_created_at"
_ACTIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.add_column("experiments", sa.Column("deleted_at", sa.Double(), nullable=True))
    op.add_column("runs", sa.Column("deleted_at", sa.Double(), nullable=True))
    op.create_index(
        _ACTIVE_INDEX,
        "runs",
        ["experiment_id", "created_at"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_table(
        "experiment_tags",
        sa.Column("experiment_id", _ID, nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_tags_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("experiment_id", "key", name=op.f("pk_experiment_tags")),
    )


def downgrade() -> None:
    op.drop_table("experiment_tags")
    op.drop_index(_ACTIVE_INDEX, table_name="runs")
    # A plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it): batch mode would copy the
    # runs table, which other tables reference.
    op.drop_column("runs", "deleted_at")
    op.drop_column("experiments", "deleted_at")
