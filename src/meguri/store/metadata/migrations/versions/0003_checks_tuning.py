"""Check results (success criteria measured on a run, model version or deployment) and the
journal behind Optuna studies (one append-only log per project).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _check_results() -> None:
    op.create_table(
        "check_results",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("spec_version_id", _ID, nullable=True),
        sa.Column("criterion_id", sa.String(length=200), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("metric", sa.String(length=200), nullable=False),
        sa.Column("comparison", sa.String(length=4), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("subject_kind", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("evidence_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _fk("check_results", "project_id", "projects"),
        _fk("check_results", "spec_version_id", "spec_versions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_results")),
    )
    op.create_index(
        op.f("ix_check_results_project_id_criterion_id_created_at"),
        "check_results",
        ["project_id", "criterion_id", "created_at"],
    )
    op.create_index(
        op.f("ix_check_results_subject_kind_subject_id"),
        "check_results",
        ["subject_kind", "subject_id"],
    )


def _optuna_journal() -> None:
    op.create_table(
        "optuna_journal",
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("log_json", sa.Text(), nullable=False),
        _fk("optuna_journal", "project_id", "projects"),
        sa.PrimaryKeyConstraint("project_id", "seq", name=op.f("pk_optuna_journal")),
    )


def upgrade() -> None:
    _check_results()
    _optuna_journal()


def downgrade() -> None:
    op.drop_table("optuna_journal")
    op.drop_index(op.f("ix_check_results_subject_kind_subject_id"), table_name="check_results")
    op.drop_index(
        op.f("ix_check_results_project_id_criterion_id_created_at"), table_name="check_results"
    )
    op.drop_table("check_results")
