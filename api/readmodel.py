"""Reads from the SQL read model: lists, filters, caseload. Never asks every workflow."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, select

from models.case import Stage
from models.tables import CaseRow, CommitteeItemRow, StaffRow


def case_summary(row: CaseRow, now: datetime) -> dict:
    return {
        "id": row.id,
        "stage": row.stage,
        "coordinator_id": row.coordinator_id,
        "family_name": row.family_name,
        "received_at": row.received_at,
        "stage_since": row.stage_since,
        "next_due_at": row.next_due_at,
        "overdue": row.next_due_at is not None and row.next_due_at <= now,
        "blocked_on": {"what": row.blocked_what, "owner": row.blocked_owner,
                       "since": row.blocked_since} if row.blocked_what else None,
        "version": row.version,
    }


def list_cases(
    session: Session,
    now: datetime,
    *,
    stage: Stage | None,
    coordinator_id: str | None,
    overdue: bool | None,
    q: str | None,
    visible_to: str | None,
    limit: int,
    offset: int,
) -> tuple[list[CaseRow], int]:
    query = select(CaseRow)
    if stage is not None:
        query = query.where(CaseRow.stage == stage.value)
    if coordinator_id is not None:
        query = query.where(CaseRow.coordinator_id == coordinator_id)
    if overdue is True:
        query = query.where(CaseRow.next_due_at.is_not(None), CaseRow.next_due_at <= now)
    elif overdue is False:
        query = query.where(or_(CaseRow.next_due_at.is_(None), CaseRow.next_due_at > now))
    if q:
        query = query.where(CaseRow.search_text.contains(q.lower().strip()))
    if visible_to is not None:
        query = query.where(
            or_(CaseRow.coordinator_id == visible_to, CaseRow.team_text.contains(f",{visible_to},"))
        )
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(CaseRow.received_at.desc(), CaseRow.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def open_caseloads(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(CaseRow.coordinator_id, func.count())
        .where(CaseRow.stage != Stage.closed.value, CaseRow.coordinator_id.is_not(None))
        .group_by(CaseRow.coordinator_id)
    ).all()
    return {cid: n for cid, n in rows}


def coordinators(session: Session) -> list[StaffRow]:
    return [s for s in session.exec(select(StaffRow).where(StaffRow.active)).all()
            if "coordinator" in s.roles]


def least_loaded(session: Session, cap: int, exclude: str | None = None) -> str | None:
    loads = open_caseloads(session)
    candidates = [(loads.get(s.id, 0), s.id) for s in coordinators(session) if s.id != exclude]
    candidates = [c for c in candidates if c[0] < cap]
    return min(candidates)[1] if candidates else None


def committee_items(session: Session, status: str | None) -> list[CommitteeItemRow]:
    query = select(CommitteeItemRow)
    if status:
        query = query.where(CommitteeItemRow.status == status)
    return list(session.exec(query.order_by(CommitteeItemRow.escalated_at)).all())
