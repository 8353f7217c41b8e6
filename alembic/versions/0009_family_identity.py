"""family identity: invitations (one-time sign-in links), sign-in codes, linked identifiers

A branch of its own from 0001 (migrate() upgrades "heads"). No plaintext contact data, names
or national ids: hashes and keyed hashes only (models/tables_family.py).

Revision ID: 0009
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_DATETIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "family_invitations",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("case_id", sa.String(), nullable=False, index=True),
        sa.Column("member_id", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False, unique=True),
        sa.Column("created_at", UTC_DATETIME(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("expires_at", UTC_DATETIME(), nullable=False),
        sa.Column("used_at", UTC_DATETIME(), nullable=True),
        sa.Column("cancelled_at", UTC_DATETIME(), nullable=True),
        sa.Column("message_key", sa.String(), nullable=False, server_default=""),
    )
    op.create_table(
        "family_sign_in_codes",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("contact_hash", sa.String(), nullable=False, index=True),
        sa.Column("code_hash", sa.String(), nullable=False),
        sa.Column("case_id", sa.String(), nullable=False),
        sa.Column("member_id", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("created_at", UTC_DATETIME(), nullable=False),
        sa.Column("expires_at", UTC_DATETIME(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("spent_at", UTC_DATETIME(), nullable=True),
        sa.Column("message_key", sa.String(), nullable=False, server_default=""),
    )
    op.create_table(
        "family_identities",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("identifier_hash", sa.String(), nullable=False),
        sa.Column("case_id", sa.String(), nullable=False, index=True),
        sa.Column("member_id", sa.String(), nullable=False),
        sa.Column("created_at", UTC_DATETIME(), nullable=False),
        sa.Column("last_used_at", UTC_DATETIME(), nullable=True),
        sa.Column("revoked_at", UTC_DATETIME(), nullable=True),
        sa.UniqueConstraint("kind", "identifier_hash", "case_id", "member_id", name="uq_family_identity"),
    )
    op.create_index("ix_family_identities_lookup", "family_identities", ["kind", "identifier_hash"])


def downgrade() -> None:
    op.drop_index("ix_family_identities_lookup", table_name="family_identities")
    op.drop_table("family_identities")
    op.drop_table("family_sign_in_codes")
    op.drop_table("family_invitations")
