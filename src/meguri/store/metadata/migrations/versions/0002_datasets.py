"""The data catalog: datasets, their numbered versions, version parents (lineage) and tags.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)
_KEY = sa.String(length=250)


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


def _datasets() -> None:
    op.create_table(
        "datasets",
        _ref("id"),
        _ref("project_id"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        *_created(),
        _fk("datasets", "project_id", "projects"),
        _pk("datasets", "id"),
        _uq("datasets", "project_id", "name"),
    )


def _version_columns() -> list[sa.Column[Any]]:
    digest = sa.String(length=64)
    return [
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", digest, nullable=False),
        sa.Column("schema_json", sa.Text(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=40), nullable=True),
        sa.Column("read_options_json", sa.Text(), nullable=False),
        sa.Column("data_digest", digest, nullable=False),
        sa.Column("profile_digest", digest, nullable=True),
        sa.Column("quality_digest", digest, nullable=True),
        sa.Column("operation", sa.String(length=40), nullable=False),
        sa.Column("lineage_json", sa.Text(), nullable=False),
    ]


def _dataset_versions() -> None:
    op.create_table(
        "dataset_versions",
        _ref("id"),
        _ref("dataset_id"),
        *_version_columns(),
        *_created(),
        _fk("dataset_versions", "dataset_id", "datasets"),
        _pk("dataset_versions", "id"),
        _uq("dataset_versions", "dataset_id", "version"),
        _uq("dataset_versions", "dataset_id", "content_hash"),
    )


def _links() -> None:
    op.create_table(
        "dataset_version_parents",
        _ref("child_id"),
        _ref("parent_id"),
        sa.Column("position", sa.Integer(), nullable=False),
        _fk("dataset_version_parents", "child_id", "dataset_versions"),
        _fk("dataset_version_parents", "parent_id", "dataset_versions"),
        _pk("dataset_version_parents", "child_id", "parent_id"),
    )
    op.create_index(
        op.f("ix_dataset_version_parents_parent_id"), "dataset_version_parents", ["parent_id"]
    )
    op.create_table(
        "dataset_tags",
        _ref("dataset_id"),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _fk("dataset_tags", "dataset_id", "datasets"),
        _pk("dataset_tags", "dataset_id", "key"),
    )


def upgrade() -> None:
    _datasets()
    _dataset_versions()
    _links()


def downgrade() -> None:
    for table in ("dataset_tags", "dataset_version_parents", "dataset_versions", "datasets"):
        op.drop_table(table)  # indexes go with their table
