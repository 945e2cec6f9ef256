"""Monitoring: one row per deployment environment and time window (its figures as JSON) and
the alerts those windows fired (at most one firing per project, environment and rule).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)


def _windows() -> None:
    op.create_table(
        "monitor_windows",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("model_versions_json", sa.Text(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_monitor_windows_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_windows")),
        sa.UniqueConstraint(
            "project_id",
            "environment",
            "start",
            "end",
            name=op.f("uq_monitor_windows_project_id_environment_start_end"),
        ),
    )
    op.create_index(
        op.f("ix_monitor_windows_project_id_environment_end"),
        "monitor_windows",
        ["project_id", "environment", "end"],
    )


def _alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("firing_rule", sa.String(length=200), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("resolved_at", sa.Double(), nullable=True),
        sa.Column("window_id", _ID, nullable=False),
        sa.Column("last_window_id", _ID, nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_alerts_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["window_id"], ["monitor_windows.id"], name=op.f("fk_alerts_window_id_monitor_windows")
        ),
        sa.ForeignKeyConstraint(
            ["last_window_id"],
            ["monitor_windows.id"],
            name=op.f("fk_alerts_last_window_id_monitor_windows"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint(
            "project_id",
            "environment",
            "firing_rule",
            name=op.f("uq_alerts_project_id_environment_firing_rule"),
        ),
    )
    op.create_index(op.f("ix_alerts_project_id_created_at"), "alerts", ["project_id", "created_at"])
    op.create_index(op.f("ix_alerts_window_id"), "alerts", ["window_id"])
    op.create_index(op.f("ix_alerts_last_window_id"), "alerts", ["last_window_id"])


def upgrade() -> None:
    _windows()
    _alerts()


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("monitor_windows")
