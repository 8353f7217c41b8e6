"""committee meetings, decided funding, policy versions

Revision ID: 0004
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "committee_meetings",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("committee_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("item_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("committee_meetings") as batch_op:
        batch_op.create_index("ix_committee_meetings_committee_id", ["committee_id"])
        batch_op.create_index("ix_committee_meetings_at", ["at"])
    op.create_table(
        "policy_versions",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("policy_versions") as batch_op:
        batch_op.create_index("ix_policy_versions_country", ["country"])
    with op.batch_alter_table("committee_items") as batch_op:
        batch_op.add_column(sa.Column("funding", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("monthly_total", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("committee_items") as batch_op:
        batch_op.drop_column("monthly_total")
        batch_op.drop_column("funding")
    op.drop_table("committee_meetings")
    op.drop_table("policy_versions")
