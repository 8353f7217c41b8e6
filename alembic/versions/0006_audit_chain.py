"""audit chain: append-only, hash-chained audit rows (DESIGN §9)

A branch of its own from 0001 (migrate() upgrades "heads").

- `status` becomes `outcome`; new `action`, `prev_hash`, `hash`; a unique index on
  `prev_hash` (two rows can never follow the same row: no fork).
- Existing rows are chained here, in id order, from the genesis value: their action is
  derived from method and path by the table of api/audit.py (their query strings were never
  stored, so a search before this migration reads "list cases"), and their actor, which was
  the unverified X-User header, is kept as `unverified:<header>`.
- UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) of audit rows are refused by triggers.

Revision ID: 0006
Revises: 0001
"""
import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None

REFUSAL = "audit rows are append-only"
UNVERIFIED = "unverified:"  # the actor of rows written before identities were proven


def _chain_existing(bind) -> None:
    from api.audit import describe
    from models.tables import AUDIT_GENESIS, audit_hash

    audit = sa.table("audit", sa.column("id", sa.Integer), sa.column("at", sa.DateTime),
                     sa.column("actor", sa.String), sa.column("action", sa.String),
                     sa.column("method", sa.String), sa.column("path", sa.Text),
                     sa.column("case_id", sa.String), sa.column("outcome", sa.Integer),
                     sa.column("prev_hash", sa.String), sa.column("hash", sa.String))
    rows = bind.execute(sa.select(audit.c.id, audit.c.at, audit.c.actor, audit.c.method, audit.c.path,
                                  audit.c.case_id, audit.c.outcome).order_by(audit.c.id)).all()
    prev, updates = AUDIT_GENESIS, []
    for row in rows:
        at = row.at  # SQLite: naive UTC; canonical either way (models.tables.audit_hash)
        actor = row.actor if row.actor == "-" or row.actor.startswith(UNVERIFIED) else UNVERIFIED + row.actor
        fields = dict(id=row.id, at=at, actor=actor,
                      action=describe(row.method, row.path).action, method=row.method, path=row.path,
                      case_id=row.case_id, outcome=row.outcome)
        digest = audit_hash(prev, **fields)
        updates.append({"b_id": row.id, "b_actor": fields["actor"], "b_action": fields["action"],
                        "b_prev": prev, "b_hash": digest})
        prev = digest
    if not updates:
        return
    bind.execute(
        audit.update().where(audit.c.id == sa.bindparam("b_id")).values(
            actor=sa.bindparam("b_actor"), action=sa.bindparam("b_action"),
            prev_hash=sa.bindparam("b_prev"), hash=sa.bindparam("b_hash")),
        updates)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("status", new_column_name="outcome", existing_type=sa.Integer(),
                           existing_nullable=False)
        batch.add_column(sa.Column("action", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    _chain_existing(bind)
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("action", server_default=None, existing_type=sa.String(),
                           existing_nullable=False)
        batch.alter_column("prev_hash", nullable=False, existing_type=sa.String(64))
        batch.alter_column("hash", nullable=False, existing_type=sa.String(64))
        batch.create_index("uq_audit_prev_hash", ["prev_hash"], unique=True)
    if bind.dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_no_{event.lower()} BEFORE {event} ON audit "
                       f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
    elif bind.dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege'; "
                   "END $$")
        op.execute("CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        op.execute("CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
    else:  # no append-only guarantee without triggers: refuse rather than pretend
        raise NotImplementedError(f"audit triggers for {bind.dialect.name}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_no_change ON audit")
        op.execute("DROP TRIGGER IF EXISTS audit_no_truncate ON audit")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    with op.batch_alter_table("audit") as batch:
        batch.drop_index("uq_audit_prev_hash")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("action")
        batch.alter_column("outcome", new_column_name="status", existing_type=sa.Integer(),
                           existing_nullable=False)
