"""Session latency: what a session's ``[pcc-observability]`` lines said.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_latency",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("pipeline_startup_seconds", sa.Double(), nullable=True),
        sa.Column("transport_connected_seconds", sa.Double(), nullable=True),
        sa.Column("first_bot_speech_seconds", sa.Double(), nullable=True),
        sa.Column("user_bot_latencies", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_latency_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_session_latency")),
    )


def downgrade() -> None:
    op.drop_table("session_latency")
