"""Shadow policies: a candidate set of line changes decided beside the live policy, and the differences found.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shadow_policies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("add_lines", sa.Text(), nullable=False),
        sa.Column("remove_lines", sa.Text(), nullable=False),
        sa.Column("files", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ended_at", STAMP, nullable=True),
        sa.Column("compared", sa.BigInteger(), nullable=False, server_default="0"),
    )
    active = sa.text("status = 'active'")
    op.create_index(
        "uq_shadow_policies_active",
        "shadow_policies",
        ["status"],
        unique=True,
        postgresql_where=active,
        sqlite_where=active,
    )
    op.create_table(
        "shadow_differences",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("shadow_id", sa.Integer(), sa.ForeignKey("shadow_policies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("route", sa.String(255), nullable=False),
        sa.Column("org", sa.String(63), nullable=False),
        sa.Column("live_allowed", sa.Boolean(), nullable=False),
        sa.Column("shadow_allowed", sa.Boolean(), nullable=False),
        sa.Column("live_rule", sa.Text(), nullable=False),
        sa.Column("shadow_rule", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sample_subject", sa.String(200), nullable=False),
        sa.Column("sample_path", sa.Text(), nullable=False),
        sa.Column("sample_method", sa.String(16), nullable=False),
        sa.Column("first_seen", STAMP, nullable=False),
        sa.Column("last_seen", STAMP, nullable=False),
        sa.UniqueConstraint("shadow_id", "key_hash", name="uq_shadow_differences_shadow_id_key_hash"),
    )


def downgrade() -> None:
    op.drop_table("shadow_differences")
    op.drop_index("uq_shadow_policies_active", "shadow_policies")
    op.drop_table("shadow_policies")
