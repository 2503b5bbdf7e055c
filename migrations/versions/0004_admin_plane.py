"""The management plane: service accounts, archived orgs, custom roles, rule origin, audit request ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a column's nullability or add a foreign key in place.
    with op.batch_alter_table("users") as batch:
        batch.alter_column("email", existing_type=sa.String(320), nullable=True)
        batch.alter_column("password_hash", existing_type=sa.String(255), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="human"))
        batch.add_column(sa.Column("name", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("org_id", sa.String(36), nullable=True))
        batch.create_foreign_key(
            "fk_users_org_id_organizations", "organizations", ["org_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_users_org_id", ["org_id"])
    with op.batch_alter_table("users") as batch:
        batch.alter_column("kind", server_default=None)
        batch.alter_column("name", server_default=None)
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("archived_at", TS, nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("organizations") as batch:
        batch.alter_column("version", server_default=None)
    with op.batch_alter_table("policy_rules") as batch:
        batch.add_column(sa.Column("origin", sa.String(8), nullable=False, server_default="file"))
    with op.batch_alter_table("policy_rules") as batch:
        batch.alter_column("origin", server_default=None)
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("request_id", sa.String(128), nullable=True))
        batch.create_index("ix_audit_events_org_id", ["org", "id"])
    op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_roles"),
        sa.UniqueConstraint("org_id", "name", name="uq_roles_org_id_name"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_roles_org_id_organizations", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_roles_org_id", "roles", ["org_id"])


def downgrade() -> None:
    op.drop_table("roles")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_org_id")
        batch.drop_column("request_id")
    with op.batch_alter_table("policy_rules") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("version")
        batch.drop_column("archived_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_org_id")
        batch.drop_constraint("fk_users_org_id_organizations", type_="foreignkey")
        batch.drop_column("org_id")
        batch.drop_column("name")
        batch.drop_column("kind")
