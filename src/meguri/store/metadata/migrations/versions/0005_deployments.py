"""Deployments: one per project environment, and their numbered revisions (targets, weights,
strategy, state and the reason of each change).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)


def _times() -> list[sa.Column[Any]]:
    return [
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
    ]


def _deployments() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("current_revision_id", _ID, nullable=True),
        sa.Column("current_number", sa.Integer(), nullable=False),
        *_times(),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_deployments_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint(
            "project_id", "environment", name=op.f("uq_deployments_project_id_environment")
        ),
    )


def _revisions() -> None:
    op.create_table(
        "deployment_revisions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("deployment_id", _ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("targets_json", sa.Text(), nullable=False),
        sa.Column("strategy", sa.String(length=20), nullable=False),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        *_times(),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_revisions_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_revisions")),
        sa.UniqueConstraint(
            "deployment_id", "number", name=op.f("uq_deployment_revisions_deployment_id_number")
        ),
    )


def upgrade() -> None:
    _deployments()
    _revisions()


def downgrade() -> None:
    op.drop_table("deployment_revisions")
    op.drop_table("deployments")
