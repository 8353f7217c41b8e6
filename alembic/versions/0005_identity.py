"""identity: passwords, sessions, API tokens, login throttling; units on cases, who decided items

A branch of its own from 0001 (migrate() upgrades "heads").

Revision ID: 0005
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("unit", sa.String(), nullable=False, server_default="children_disability"))
        batch.create_index("ix_cases_unit", ["unit"])
    with op.batch_alter_table("committee_items") as batch:
        batch.add_column(sa.Column("decided_by", sa.String(), nullable=True))
    op.create_table(
        "staff_credentials",
        sa.Column("staff_id", sa.String(), primary_key=True),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id_hash", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("principal_id", sa.String(), nullable=False, index=True),
        sa.Column("case_id", sa.String(), nullable=True),
        sa.Column("csrf_token", sa.String(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("staff_id", sa.String(), nullable=False, index=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False, index=True),
        sa.Column("account_hash", sa.String(), nullable=False, index=True),
        sa.Column("address", sa.String(), nullable=False, index=True),
    )
    op.create_table(
        "password_links",
        sa.Column("token_hash", sa.String(), primary_key=True),
        sa.Column("staff_id", sa.String(), nullable=False, index=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    for table in ("password_links", "login_failures", "api_tokens", "auth_sessions", "staff_credentials"):
        op.drop_table(table)
    with op.batch_alter_table("committee_items") as batch:
        batch.drop_column("decided_by")
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_unit")
        batch.drop_column("unit")
