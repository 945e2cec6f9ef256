"""The model registry: models, their numbered versions, aliases and the event history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)
_DIGEST = sa.String(length=64)


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


def _models() -> None:
    op.create_table(
        "models",
        _ref("id"),
        _ref("project_id"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags_json", sa.Text(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        *_created(),
        _fk("models", "project_id", "projects"),
        _pk("models", "id"),
        _uq("models", "project_id", "name"),
    )


def _model_versions() -> None:
    op.create_table(
        "model_versions",
        _ref("id"),
        _ref("model_id"),
        sa.Column("version", sa.Integer(), nullable=False),
        _ref("run_id"),
        _ref("spec_version_id", nullable=True),
        sa.Column("package_digest", _DIGEST, nullable=False),
        sa.Column("files_json", sa.Text(), nullable=False),
        sa.Column("task", sa.String(length=40), nullable=False),
        sa.Column("signature_json", sa.Text(), nullable=False),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("runtime", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags_json", sa.Text(), nullable=False),
        sa.Column("card_markdown_digest", _DIGEST, nullable=True),
        sa.Column("card_html_digest", _DIGEST, nullable=True),
        *_created(),
        _fk("model_versions", "model_id", "models"),
        _fk("model_versions", "run_id", "runs"),
        _fk("model_versions", "spec_version_id", "spec_versions"),
        _pk("model_versions", "id"),
        _uq("model_versions", "model_id", "version"),
    )
    _index("model_versions", "run_id")


def _aliases_and_events() -> None:
    op.create_table(
        "model_aliases",
        _ref("model_id"),
        sa.Column("alias", sa.String(length=64), nullable=False),
        _ref("version_id"),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        _fk("model_aliases", "model_id", "models"),
        _fk("model_aliases", "version_id", "model_versions"),
        _pk("model_aliases", "model_id", "alias"),
    )
    _index("model_aliases", "version_id")
    op.create_table(
        "model_events",
        _ref("id"),
        _ref("model_id"),
        _ref("version_id", nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        *_created(),
        _fk("model_events", "model_id", "models"),
        _fk("model_events", "version_id", "model_versions"),
        _pk("model_events", "id"),
    )
    _index("model_events", "model_id", "created_at")
    _index("model_events", "version_id")


def upgrade() -> None:
    _models()
    _model_versions()
    _aliases_and_events()


def downgrade() -> None:
    for table in ("model_events", "model_aliases", "model_versions", "models"):
        op.drop_table(table)  # indexes go with their table
