"""Read-model tables for managers: stuck detection, manager actions, funding, monthly reports.

All of them are derived from `cases` (the projection of every case workflow) or written by
the dashboard; none is ever read by a workflow.

- `case_index`: which case version the dashboard has indexed, and when its workflow was
  last checked by the technical sweep.
- `case_watch`: every business reason a case version may produce, with the instant it fires
  (`domain.stuck.watch_points`) and whether it has fired;
- `stuck_cases`: one summary row per case that is stuck now, for sorting and paging;
  `stuck_kind_counts`: how many cases per reason kind;
- `technical_issues`: technical reasons found by the background sweep (describe()).
- `case_funding`: per plan version and department the monthly amount in force from/until.
- `stuck_acks`, `stuck_nudges`: what managers did about a reason (who, when).
- `monthly_reports`: the rendered monthly report per month.

Free text is stored sealed (models/sealed.py, DESIGN §9 "Files at rest"): a technical issue's
`detail` (it quotes an activity's failure message), a manager's acknowledgement `note` and
nudge `message`. `case_watch.detail` is built by domain.stuck from process facts only
(deadline kinds, stages, dates, legal bases) and stays plaintext; monthly reports hold counts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, LargeBinary, Text
from sqlmodel import Field, SQLModel

from models.sealed import SealedText
from models.tables import CaseRow

# Indexes on the lead's `cases` table that the dashboard needs (created by migration 0003;
# declared here so autogenerate knows they belong): catching up with new projections by
# `updated_at`, and caseload per coordinator of open cases without reading the documents.
CASES_UPDATED_AT = Index("ix_cases_updated_at", CaseRow.__table__.c.updated_at)
CASES_COORDINATOR_STAGE = Index("ix_cases_coordinator_stage", CaseRow.__table__.c.coordinator_id,
                                CaseRow.__table__.c.stage)


class CaseIndexRow(SQLModel, table=True):
    __tablename__ = "case_index"

    case_id: str = Field(primary_key=True)
    version: int
    source_updated_at: datetime = Field(index=True)
    is_open: bool = Field(index=True)
    indexed_at: datetime
    tech_checked_at: datetime | None = Field(default=None, index=True)


class CaseWatchRow(SQLModel, table=True):
    """`fired` is `fires_at <= now` as of the last refresh (api.watch.advance() flips it when
    time passes); `acked` mirrors stuck_acks for this occurrence."""

    __tablename__ = "case_watch"
    __table_args__ = (
        Index("ix_case_watch_pending", "fired", "fires_at"),
        Index("ix_case_watch_fired_kind", "fired", "kind", "since"),
    )

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    kind: str
    fires_at: datetime
    since: datetime
    owner: str
    detail: str = Field(sa_column=Column(Text, nullable=False))
    stage: str
    coordinator_id: str | None = None
    fired: bool = False
    acked: bool = False


class StuckCaseRow(SQLModel, table=True):
    """One row per case that is stuck now (business reasons fired, or technical issues):
    the stuck list sorts and pages over this table with indexes."""

    __tablename__ = "stuck_cases"
    __table_args__ = (
        Index("ix_stuck_cases_stage_oldest", "stage", "oldest"),
        Index("ix_stuck_cases_coordinator_oldest", "coordinator_id", "oldest"),
    )

    case_id: str = Field(primary_key=True)
    stage: str
    coordinator_id: str | None = None
    oldest: datetime = Field(index=True)  # the oldest reason's `since`
    reasons: int
    kinds: str  # ",overdue:assessment,stage_too_long," for filtering by reason
    # The same, leaving out acknowledged reasons (`open_reasons` 0: all acknowledged).
    open_oldest: datetime | None = Field(default=None, index=True)
    open_reasons: int = 0
    open_kinds: str = ""


class StuckKindCountRow(SQLModel, table=True):
    """How many cases are stuck for each reason kind now, kept up to date with `stuck_cases`
    (and recounted from it now and then), so the overview never aggregates all reasons."""

    __tablename__ = "stuck_kind_counts"

    kind: str = Field(primary_key=True)
    cases: int = 0


class TechnicalIssueRow(SQLModel, table=True):
    __tablename__ = "technical_issues"

    case_id: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    since: datetime
    owner: str
    detail: str = Field(sa_column=Column(SealedText("technical_issues.detail"), nullable=False))
    first_seen_at: datetime
    checked_at: datetime
    acked: bool = False


class CaseFundingRow(SQLModel, table=True):
    __tablename__ = "case_funding"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    plan_version: int
    department: str = Field(index=True)
    monthly_amount: float
    joint: bool  # the service is funded by more than one department
    valid_from: datetime = Field(index=True)
    valid_until: datetime | None = Field(default=None, index=True)


class StuckAckRow(SQLModel, table=True):
    """A manager has seen a reason and takes responsibility; it stays listed, marked."""

    __tablename__ = "stuck_acks"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    kind: str
    since: datetime  # with (case_id, kind) identifies the reason occurrence
    acked_by: str
    acked_at: datetime
    note: str = Field(default="", sa_column=Column(SealedText("stuck_acks.note"), nullable=False))


class StuckNudgeRow(SQLModel, table=True):
    __tablename__ = "stuck_nudges"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    kind: str | None = None
    recipient_id: str
    sent_by: str
    sent_at: datetime
    message: str = Field(default="", sa_column=Column(SealedText("stuck_nudges.message"), nullable=False))
    notification_id: str | None = None  # the in-app outbox row, when that table exists


class MonthlyReportRow(SQLModel, table=True):
    __tablename__ = "monthly_reports"

    month: str = Field(primary_key=True)  # yyyy-mm
    generated_at: datetime
    generated_by: str
    data: dict = Field(sa_column=Column(JSON, nullable=False))
    html: str = Field(sa_column=Column(Text, nullable=False))
    pdf: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
