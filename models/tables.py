"""The SQL read model (SQLModel tables). Imported by activities and the API, never by workflows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel


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


class CaseRow(SQLModel, table=True):
    """One row per case, overwritten by newer versions only (projection is idempotent)."""

    __tablename__ = "cases"

    id: str = Field(primary_key=True)
    version: int
    stage: str = Field(index=True)
    coordinator_id: str | None = Field(default=None, index=True)
    # The coordinator's unit, or the referral's before assignment (DESIGN §9).
    unit: str = Field(default="children_disability", index=True)
    family_name: str
    search_text: str  # lower-cased names for `q`; the read model is allowed to hold them
    team_text: str = ""  # ",id1,id2," for need-to-know filtering
    received_at: datetime
    created_at: datetime
    stage_since: datetime = Field(index=True)
    next_due_at: datetime | None = Field(default=None, index=True)
    blocked_what: str | None = None
    blocked_owner: str | None = None
    blocked_since: datetime | None = None
    closed_at: datetime | None = None
    last_contact_at: datetime | None = None
    document: dict = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime


class CasePersonRow(SQLModel, table=True):
    """Family members of cases, to flag a referral naming someone already on an open case."""

    __tablename__ = "case_persons"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    person_key: str = Field(index=True)


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


class AuditRow(SQLModel, table=True):
    """Who read or changed which case through the API (no bodies: they hold health data)."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str
    method: str
    path: str = Field(sa_column=Column(Text, nullable=False))
    case_id: str | None = Field(default=None, index=True)
    status: int


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
