"""Builds and their log lines, organizations' agent profiles and properties, and the
deploy fields kept per deployment (resources, architecture, WebSocket auth, Krisp VIVA).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("context_hash", sa.String(length=64), nullable=False),
        sa.Column("dockerfile_path", sa.String(length=1024), nullable=False),
        sa.Column("image", sa.String(length=4096), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("context_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("image_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("build_duration_seconds", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_builds_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builds")),
    )
    op.create_index(
        "ix_builds_organization_id_context_hash",
        "builds",
        ["organization_id", "context_hash"],
        unique=False,
    )
    op.create_table(
        "build_log_lines",
        sa.Column("id", _BIGINT_KEY, autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["builds.id"],
            name=op.f("fk_build_log_lines_build_id_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_log_lines")),
    )
    op.create_index(
        "ix_build_log_lines_build_id_id", "build_log_lines", ["build_id", "id"], unique=False
    )
    op.create_table(
        "agent_profiles",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("cpu", sa.String(length=32), nullable=False),
        sa.Column("memory", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_agent_profiles_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_profiles")),
        sa.UniqueConstraint(
            "organization_id", "name", name=op.f("uq_agent_profiles_organization_id_name")
        ),
    )
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("default_region", sa.String(length=64), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("resources", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("architecture", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("websocket_auth", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("krisp_viva_audio_filter", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("krisp_viva_audio_filter")
        batch.drop_column("websocket_auth")
        batch.drop_column("architecture")
        batch.drop_column("resources")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("default_region")
    op.drop_table("agent_profiles")
    op.drop_index("ix_build_log_lines_build_id_id", table_name="build_log_lines")
    op.drop_table("build_log_lines")
    op.drop_index("ix_builds_organization_id_context_hash", table_name="builds")
    op.drop_table("builds")
