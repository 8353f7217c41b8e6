"""The SQL read model (SQLModel tables). Imported by activities and the API, never by workflows."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import JSON, Column, Index, String, Text
from sqlmodel import Field, SQLModel

from models.sealed import SealedJSON, SealedText


class StaffRow(SQLModel, table=True):
    __tablename__ = "staff"

    id: str = Field(primary_key=True)
    name: str
    discipline: str
    department: str
    unit: str = "children_disability"
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    email: str | None = None
    phone: str | None = None
    active: bool = True
    created_at: datetime
    # The pages' language this person chose (da / sv / en); None: the browser's, then the
    # municipality's.
    language: str | None = None


class CaseRow(SQLModel, table=True):
    """One row per case, overwritten by newer versions only (projection is idempotent)."""

    __tablename__ = "cases"

    id: str = Field(primary_key=True)
    version: int
    stage: str = Field(index=True)
    coordinator_id: str | None = Field(default=None, index=True)
    # The coordinator's unit, or the referral's before assignment (DESIGN §9).
    unit: str = Field(default="children_disability", index=True)
    # Names and the case state are sealed (models/sealed.py, DESIGN §9 "Files at rest"):
    # neither can be filtered or sorted in SQL.
    family_name: str = Field(sa_column=Column(SealedText("cases.family_name"), nullable=False))
    # ",h1,h2,...,": keyed hashes of each name and each word of it, for `q` (exact match).
    search_text: str
    team_text: str = ""  # ",id1,id2," for need-to-know filtering
    # The family's consent (DESIGN §11, domain/consent.py): ",id1,id2," of the team members no
    # active consent covers for the case / for its documents, and the instant the next active
    # consent ends (past it, the case's facts are computed afresh from the document and lists
    # leave the case out for its team members until the workflow has projected the expiry).
    uncovered_text: str = ""
    uncovered_documents_text: str = ""
    consent_until: datetime | None = None
    received_at: datetime
    created_at: datetime
    stage_since: datetime = Field(index=True)
    next_due_at: datetime | None = Field(default=None, index=True)
    blocked_what: str | None = None
    blocked_owner: str | None = None
    blocked_since: datetime | None = None
    closed_at: datetime | None = None
    last_contact_at: datetime | None = None
    document: dict = Field(sa_column=Column(SealedJSON("cases.document"), nullable=False))
    updated_at: datetime


class CasePersonRow(SQLModel, table=True):
    """Family members of cases, to flag a referral naming someone already on an open case."""

    __tablename__ = "case_persons"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    person_key: str = Field(index=True)  # keyed hash of "name|birthdate" (models/sealed.py)


class CommitteeItemRow(SQLModel, table=True):
    __tablename__ = "committee_items"

    id: str = Field(primary_key=True)
    case_id: str = Field(index=True)
    plan_version: int
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    escalated_at: datetime
    meeting_at: datetime | None = None
    status: str = Field(index=True)
    decision: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    # Decided funding shares per department and the plan's monthly cost they split.
    funding: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    monthly_total: float = 0


class CommitteeMeetingRow(SQLModel, table=True):
    """A committee meeting and its frozen agenda."""

    __tablename__ = "committee_meetings"

    id: str = Field(primary_key=True)
    committee_id: str = Field(index=True)
    number: int
    at: datetime = Field(index=True)
    item_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


# The `prev_hash` of the first audit row (DESIGN §9): 64 zeros.
AUDIT_GENESIS = "0" * 64


class AuditRow(SQLModel, table=True):
    """Who read or changed which case (DESIGN §9), append-only and hash-chained: each row
    carries the hash of the one before (`prev_hash`) and its own `hash` =
    sha256(prev_hash + canonical fields, see `audit_hash`). The database refuses UPDATE and
    DELETE (triggers, migration 0006); a unique `prev_hash` makes a fork impossible. No
    bodies, no query strings: they hold health data and children's names."""

    __tablename__ = "audit"
    __table_args__ = (Index("uq_audit_prev_hash", "prev_hash", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str  # the authenticated principal's id ("family:<id>" for a family), "-" if none
    action: str  # "read case", "search cases", "command close", ... (api/audit.py)
    method: str
    path: str = Field(sa_column=Column(Text, nullable=False))
    case_id: str | None = Field(default=None, index=True)
    outcome: int  # the answer's status code
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


def _canonical_at(at: datetime) -> str:
    """UTC with microseconds; a naive value (SQLite hands those back) is UTC already."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")


def audit_hash(prev_hash: str, *, id: int, at: datetime, actor: str, action: str,  # noqa: A002
               method: str, path: str, case_id: str | None, outcome: int) -> str:
    """The hash of one audit row: sha256 over the previous row's hash and this row's fields
    as canonical JSON (sorted keys, no spaces, UTF-8)."""
    fields = {"id": id, "at": _canonical_at(at), "actor": actor, "action": action,
              "method": method, "path": path, "case_id": case_id, "outcome": outcome}
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


class PolicyRow(SQLModel, table=True):
    """A municipality's policy versions (overrides of the national defaults), immutable."""

    __tablename__ = "policy_versions"

    key: str = Field(primary_key=True)  # "DK-v2"
    country: str = Field(index=True)
    version: int
    body: dict = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime
    created_by: str
    note: str = ""
