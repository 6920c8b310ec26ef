"""Regions are stored (registered, shown, deleted), with their one-time enroll tokens.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "regions",
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("supported_architectures", sa.JSON(), nullable=True),
        sa.Column("default_architecture", sa.String(length=16), nullable=True),
        sa.Column("ws_public_endpoint", sa.String(length=2048), nullable=True),
        sa.Column("workloads_namespace", sa.String(length=63), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_regions")),
    )
    op.create_table(
        "enroll_tokens",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("region_key", sa.String(length=63), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["region_key"],
            ["regions.key"],
            name=op.f("fk_enroll_tokens_region_key_regions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enroll_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enroll_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_enroll_tokens_region_key"), "enroll_tokens", ["region_key"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_enroll_tokens_region_key"), table_name="enroll_tokens")
    op.drop_table("enroll_tokens")
    op.drop_table("regions")
