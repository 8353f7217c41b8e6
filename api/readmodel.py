"""Reads from the SQL read model: lists, filters, caseload. Never asks every workflow."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, select

from api.scope import scope_clause, scoped_case_ids
from domain.access import CaseScope
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
    scope: CaseScope,
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
    if q:  # exact, on keyed hashes of the names (DESIGN §9): never a LIKE pattern
        from models.sealed import name_match
        query = query.where(name_match(CaseRow.search_text, q))
    if not scope.everything:
        query = query.where(scope_clause(scope))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(CaseRow.received_at.desc(), CaseRow.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def open_caseloads(session: Session, scope: CaseScope | None = None) -> dict[str, int]:
    """Open cases per coordinator; `scope` (default: every case) limits the cases counted."""
    query = (select(CaseRow.coordinator_id, func.count())
             .where(CaseRow.stage != Stage.closed.value, CaseRow.coordinator_id.is_not(None)))
    if scope is not None and not scope.everything:
        query = query.where(scope_clause(scope))
    rows = session.exec(query.group_by(CaseRow.coordinator_id)).all()
    return {cid: n for cid, n in rows}


def coordinators(session: Session, units: frozenset[str] | None = None) -> list[StaffRow]:
    """Active coordinators, of these units only when `units` is given."""
    query = select(StaffRow).where(StaffRow.active)
    if units is not None:
        query = query.where(StaffRow.unit.in_(sorted(units)))
    return [s for s in session.exec(query).all() if "coordinator" in s.roles]


def least_loaded(session: Session, cap: int, exclude: str | None = None,
                 unit: str | None = None) -> str | None:
    """The coordinator (of `unit`, when given) with the fewest open cases under the cap."""
    loads = open_caseloads(session)
    staff = coordinators(session, frozenset({unit}) if unit is not None else None)
    candidates = [(loads.get(s.id, 0), s.id) for s in staff if s.id != exclude]
    candidates = [c for c in candidates if c[0] < cap]
    return min(candidates)[1] if candidates else None


def committee_items(session: Session, status: str | None,
                    scope: CaseScope | None = None) -> list[CommitteeItemRow]:
    """Committee items, of the cases in `scope` only (default: all)."""
    query = select(CommitteeItemRow)
    if status:
        query = query.where(CommitteeItemRow.status == status)
    if scope is not None and not scope.everything:
        query = query.where(CommitteeItemRow.case_id.in_(scoped_case_ids(scope)))
    return list(session.exec(query.order_by(CommitteeItemRow.escalated_at)).all())
