"""Organization metadata and limits: description, billing email, most members, most live keys, longest key life.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("description", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("billing_email", sa.String(320), nullable=True))
        batch.add_column(sa.Column("max_members", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_keys", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_key_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        for column in ("max_key_days", "max_keys", "max_members", "billing_email", "description"):
            batch.drop_column(column)
