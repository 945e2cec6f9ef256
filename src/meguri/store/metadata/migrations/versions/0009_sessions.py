"""Browser sessions that end before their cookie expires.

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-05

``users.sessions_since``: sessions signed in before this time are void (set when the password
changes or the user is disabled), so a password change signs every other browser out.
``ended_sessions``: sessions signed out, kept until their cookie would have expired, so that a
signed-out cookie stays void after the server restarts (it used to be remembered in memory).

Frozen: describes the schema as it was at this revision and never imports ``_schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.String(length=40)


def upgrade() -> None:
    op.add_column("users", sa.Column("sessions_since", sa.Double(), nullable=True))
    op.create_table(
        "ended_sessions",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_ended_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_ended_sessions")),
    )
    op.create_index(
        op.f("ix_ended_sessions_expires_at"), "ended_sessions", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ended_sessions_expires_at"), table_name="ended_sessions")
    op.drop_table("ended_sessions")
    op.drop_column("users", "sessions_since")
