"""consent: who the family's consent leaves out, per case (DESIGN §11)

A branch of its own from 0001 (migrate() upgrades "heads").

- `cases.uncovered_text` / `cases.uncovered_documents_text`: ",id1,id2," of the team members
  no active consent covers for the case / for its documents (lists leave the case out for
  them; a direct read answers 403);
- `cases.consent_until`: when the next active consent ends (past it, reads compute the facts
  from the case's document and lists leave the case out for its team until re-projected).

Existing rows are filled from their (sealed) documents with the consent derived from the
referral (models.case.referral_consent). A row whose document this process cannot open (the
read model's keys are not bound here) gets `consent_until` = the epoch: its reads then work
from the document, and lists keep it from its team members until the case is projected again
— closed by default, never open by default.

Revision ID: 0008
Revises: 0001
"""
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision = "0008"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _fill(bind) -> None:
    from domain import consent
    from models.case import CaseState
    from models.sealed import SealedJSON

    cases = sa.table("cases", sa.column("id", sa.String),
                     sa.column("document", SealedJSON("cases.document")),
                     sa.column("uncovered_text", sa.String),
                     sa.column("uncovered_documents_text", sa.String),
                     sa.column("consent_until", sqlmodel.sql.sqltypes.UTCDateTime()))
    ids = [r.id for r in bind.execute(sa.select(cases.c.id)).all()]
    now = datetime.now(UTC)

    def text(ids: frozenset[str]) -> str:
        return "," + ",".join(sorted(ids)) + "," if ids else ""

    closed = 0
    for case_id in ids:
        try:
            doc = bind.execute(sa.select(cases.c.document).where(cases.c.id == case_id)).scalar_one()
            state = CaseState.model_validate(doc)
            values = dict(uncovered_text=text(consent.uncovered(state, consent.CASE, now)),
                          uncovered_documents_text=text(consent.uncovered(state, consent.DOCUMENTS, now)),
                          consent_until=consent.next_expiry(state, now))
        except Exception:  # noqa: BLE001 - sealed with keys not bound here, or unreadable
            values = dict(consent_until=EPOCH)
            closed += 1
        bind.execute(cases.update().where(cases.c.id == case_id).values(**values))
    if closed:
        log.warning("%d case(s) left closed to their team until projected again", closed)


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("uncovered_text", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("uncovered_documents_text", sa.String(), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("consent_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    _fill(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("consent_until")
        batch.drop_column("uncovered_documents_text")
        batch.drop_column("uncovered_text")
