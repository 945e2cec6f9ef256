"""Initial schema: projects, spec versions, documents, experiments, runs and their records.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Frozen: a migration describes the schema as it was at its revision and never imports
``_schema.py``. Later changes go into new revisions (``0002_...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)
_KEY = sa.String(length=250)


def _id() -> sa.Column[str]:
    return sa.Column("id", _ID, nullable=False)


def _ref(name: str, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, _ID, nullable=nullable)


def _created() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
    ]


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=op.f(f"pk_{table}"))


def _uq(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=op.f(f"uq_{table}_{'_'.join(columns)}"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns))


def _project_tables() -> None:
    op.create_table(
        "projects",
        _id(),
        sa.Column("name", sa.String(length=200), nullable=False),
        *_created(),
        _pk("projects", "id"),
        _uq("projects", "name"),
    )
    op.create_table(
        "spec_versions",
        _id(),
        _ref("project_id"),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        *_created(),
        _fk("spec_versions", "project_id", "projects"),
        _pk("spec_versions", "id"),
        _uq("spec_versions", "project_id", "hash"),
    )
    for table in ("documents", "experiments"):
        op.create_table(
            table,
            _id(),
            _ref("project_id"),
            sa.Column("name", sa.String(length=200), nullable=False),
            *_created(),
            _fk(table, "project_id", "projects"),
            _pk(table, "id"),
            _uq(table, "project_id", "name"),
        )
    op.create_table(
        "document_versions",
        _id(),
        _ref("document_id"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        *_created(),
        _fk("document_versions", "document_id", "documents"),
        _pk("document_versions", "id"),
        _uq("document_versions", "document_id", "version"),
    )


def _runs_table() -> None:
    op.create_table(
        "runs",
        _id(),
        _ref("experiment_id"),
        _ref("parent_run_id", nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        *_created(),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("heartbeat_at", sa.Double(), nullable=True),
        sa.Column("status_reason", sa.Text(), nullable=True),
        _ref("spec_version_id", nullable=True),
        sa.Column("code_version", sa.String(length=200), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("wall_seconds", sa.Double(), nullable=True),
        sa.Column("cpu_seconds", sa.Double(), nullable=True),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
        _fk("runs", "experiment_id", "experiments"),
        _fk("runs", "parent_run_id", "runs"),
        _fk("runs", "spec_version_id", "spec_versions"),
        _pk("runs", "id"),
    )
    _index("runs", "experiment_id", "created_at")
    _index("runs", "status", "heartbeat_at")


def _point_columns() -> list[sa.Column[Any]]:
    return [
        _ref("run_id"),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
    ]


def _run_record_tables() -> None:
    op.create_table("metrics", *_point_columns(), _fk("metrics", "run_id", "runs"))
    _index("metrics", "run_id", "key", "step")
    op.create_table(
        "latest_metrics",
        *_point_columns(),
        _fk("latest_metrics", "run_id", "runs"),
        _pk("latest_metrics", "run_id", "key"),
    )
    _index("latest_metrics", "key", "value")
    for table in ("run_params", "run_tags"):
        op.create_table(
            table,
            _ref("run_id"),
            sa.Column("key", _KEY, nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            _fk(table, "run_id", "runs"),
            _pk(table, "run_id", "key"),
        )
    op.create_table(
        "run_inputs",
        _ref("run_id"),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        _fk("run_inputs", "run_id", "runs"),
        _pk("run_inputs", "run_id", "kind", "ref"),
    )
    op.create_table(
        "run_artifacts",
        _ref("run_id"),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        _fk("run_artifacts", "run_id", "runs"),
        _pk("run_artifacts", "run_id", "name"),
    )


def upgrade() -> None:
    _project_tables()
    _runs_table()
    _run_record_tables()


_TABLES = (
    "run_artifacts",
    "run_inputs",
    "run_tags",
    "run_params",
    "latest_metrics",
    "metrics",
    "runs",
    "document_versions",
    "experiments",
    "documents",
    "spec_versions",
    "projects",
)


def downgrade() -> None:
    for table in _TABLES:
        op.drop_table(table)  # indexes go with their table
