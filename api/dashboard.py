"""What a manager must see (DESIGN §1, §6): stuck cases with their reasons, overdue deadlines,
the committee queue, caseload against the cap, joint funding. Queries over the read model
(and the index `api.watch` keeps), shared by the JSON endpoints below and the HTML pages
(`api.pages`). Nothing here asks a workflow.

JSON: `GET /api/v1/dashboard/stuck` (filters `stage`, `coordinator_id`, `reason` — a kind such
as `overdue:assessment`, or `overdue` for any overdue deadline —, `sort` = age / newest /
stage / coordinator / reasons, `include_acknowledged`, `limit`, `offset`) and
`GET /api/v1/dashboard/caseload`. Every list and count is filtered by the one access policy
(`domain.access.case_scope`, as SQL by `api.scope`): a manager sees their unit, a coordinator
their cases, nobody counts what they may not read. A `scope` of None means every case.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import and_, case, false, func, or_, select, true
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities.report import month_bounds
from api import watch
from api.deps import Caller, get_caller, get_engine_dep, get_session, get_settings_dep
from api.policy import latest_policy
from api.readmodel import coordinators, open_caseloads
from api.scope import contains_exactly, scoped_case_ids
from domain.access import (
    CaseScope,
    case_scope,
    committee_scope,
    may_read_caseload,
    may_read_committee,
    report_scope,
)
from domain.stuck import OVERDUE_PREFIX
from models.case import Actor, Stage
from models.tables import CaseRow, CommitteeItemRow
from models.tables_reporting import (
    CaseFundingRow,
    CaseWatchRow,
    StuckAckRow,
    StuckCaseRow,
    StuckKindCountRow,
    TechnicalIssueRow,
)
from settings import Settings

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])

CASES = CaseRow.__table__
WATCH = CaseWatchRow.__table__
TECH = TechnicalIssueRow.__table__
ACKS = StuckAckRow.__table__
STUCK = StuckCaseRow.__table__
KIND_COUNTS = StuckKindCountRow.__table__
FUNDING = CaseFundingRow.__table__
ITEMS = CommitteeItemRow.__table__

STAGE_ORDER = [s.value for s in Stage]
Sort = Literal["age", "newest", "stage", "coordinator", "reasons"]
CaseSort = Literal["age", "received", "newest", "stage", "coordinator", "due"]


def _scoped(scope: CaseScope | None):
    """None for every case (no filter), else the SELECT of the ids in scope."""
    if scope is None or scope.everything:
        return None
    return scoped_case_ids(scope)


def _stage_rank(column):
    return case({s: i for i, s in enumerate(STAGE_ORDER)}, value=column, else_=len(STAGE_ORDER))


# ---------------------------------------------------------------- stuck list


def _kind_matches(column, reason: str):
    if reason == "overdue":
        return column.like(f"{OVERDUE_PREFIX}%")
    return column == reason


def stuck_list(session: Session, now: datetime, *, stage: str | None = None,
               coordinator_id: str | None = None, reason: str | None = None, sort: Sort = "age",
               include_acknowledged: bool = True, scope: CaseScope | None = None,
               me: str | None = None, limit: int = 50, offset: int = 0) -> dict:
    """Stuck cases, a page at a time, from the `stuck_cases` summary (kept by api.watch), of
    the cases in `scope`; `me`: only the cases this staff member coordinates or is on."""
    if me is not None:
        scope = CaseScope(staff_id=me)
    oldest = STUCK.c.oldest if include_acknowledged else STUCK.c.open_oldest
    kinds = STUCK.c.kinds if include_acknowledged else STUCK.c.open_kinds
    count = STUCK.c.reasons if include_acknowledged else STUCK.c.open_reasons
    query = select(STUCK.c.case_id, STUCK.c.stage, STUCK.c.coordinator_id, oldest.label("oldest"))
    conditions = [count > 0]
    if stage:
        conditions.append(STUCK.c.stage == stage)
    if coordinator_id:
        conditions.append(STUCK.c.coordinator_id == coordinator_id)
    if reason == "overdue":
        conditions.append(kinds.like(f"%,{OVERDUE_PREFIX}%"))
    elif reason:  # a kind, matched exactly (never as a LIKE pattern)
        conditions.append(contains_exactly(kinds, f",{reason},"))
    if (ids := _scoped(scope)) is not None:
        conditions.append(STUCK.c.case_id.in_(ids))
    total = session.execute(select(func.count()).select_from(STUCK).where(*conditions)).scalar_one()
    order = {
        "age": [oldest, STUCK.c.case_id],
        "newest": [oldest.desc(), STUCK.c.case_id],
        "stage": [_stage_rank(STUCK.c.stage), oldest, STUCK.c.case_id],
        "coordinator": [STUCK.c.coordinator_id.is_(None).desc(), STUCK.c.coordinator_id, oldest,
                        STUCK.c.case_id],
        "reasons": [count.desc(), oldest, STUCK.c.case_id],
    }[sort]
    page = session.execute(query.where(*conditions).order_by(*order).limit(limit).offset(offset)).all()
    ids = [p.case_id for p in page]
    items = []
    if ids:
        details = _reason_details(session, ids, include_acknowledged)
        names = dict(session.execute(
            select(CASES.c.id, CASES.c.family_name).where(CASES.c.id.in_(ids))).all())
        for p in page:
            items.append({
                "case_id": p.case_id, "stage": p.stage, "coordinator_id": p.coordinator_id,
                "family_name": names.get(p.case_id, ""), "oldest": p.oldest,
                "reasons": details.get(p.case_id, []),
            })
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def _reason_details(session: Session, ids: list[str],
                    include_acknowledged: bool = True) -> dict[str, list[dict]]:
    """The reasons of these cases that hold now (fired business reasons, technical issues)."""
    # Filter `fired` here, not in SQL: with it in the WHERE clause SQLite may pick the
    # `fired` index over `case_id` and read every fired row.
    business = [r for r in session.execute(
        select(WATCH.c.case_id, WATCH.c.kind, WATCH.c.since, WATCH.c.owner, WATCH.c.detail,
               false().label("technical"), WATCH.c.acked, WATCH.c.fired)
        .where(WATCH.c.case_id.in_(ids))).all() if r.fired]
    technical = session.execute(
        select(TECH.c.case_id, TECH.c.kind, TECH.c.since, TECH.c.owner, TECH.c.detail,
               true().label("technical"), TECH.c.acked).where(TECH.c.case_id.in_(ids))).all()
    rows = sorted([*business, *technical], key=lambda r: (r.case_id, r.technical, r.since, r.kind))
    acks = {}
    if any(row.acked for row in rows):
        for a in session.execute(select(ACKS).where(ACKS.c.case_id.in_(ids)).order_by(ACKS.c.acked_at)).all():
            acks[(a.case_id, a.kind, a.since)] = {"by": a.acked_by, "at": a.acked_at, "note": a.note}
    out: dict[str, list[dict]] = {}
    seen = set()
    for row in rows:
        key = (row.case_id, row.kind, row.since)
        if key in seen:
            continue
        seen.add(key)
        ack = acks.get(key) if row.acked else None
        if ack and not include_acknowledged:
            continue
        out.setdefault(row.case_id, []).append({
            "kind": row.kind, "since": row.since, "owner": row.owner, "detail": row.detail,
            "technical": bool(row.technical), "acknowledged": ack,
        })
    return out


def case_reasons(session: Session, now: datetime, case_id: str) -> list[dict]:
    return _reason_details(session, [case_id]).get(case_id, [])


def stuck_counts(session: Session, scope: CaseScope | None = None) -> dict[str, int]:
    """Stuck cases per reason kind (a case counts once per kind), of the cases in `scope`."""
    ids = _scoped(scope)
    if ids is None:
        rows = session.execute(select(KIND_COUNTS.c.kind, KIND_COUNTS.c.cases)
                               .where(KIND_COUNTS.c.cases > 0).order_by(KIND_COUNTS.c.kind)).all()
        return dict(rows)
    counts: dict[str, int] = {}
    visible = select(STUCK.c.kinds).where(STUCK.c.case_id.in_(ids))
    for kinds in session.execute(visible).scalars():
        for kind in filter(None, kinds.split(",")):
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def overdue_by_kind(session: Session, counts: dict[str, int],
                    scope: CaseScope | None = None) -> list[dict]:
    """Overdue deadlines per kind: on how many cases, and since when (the oldest)."""
    out = []
    ids = _scoped(scope)
    for kind, cases in counts.items():
        if not kind.startswith(OVERDUE_PREFIX):
            continue
        query = select(func.min(WATCH.c.since)).where(WATCH.c.fired == true(), WATCH.c.kind == kind)
        if ids is not None:
            query = query.where(WATCH.c.case_id.in_(ids))
        out.append({"kind": kind, "deadline": kind.removeprefix(OVERDUE_PREFIX), "cases": cases,
                    "oldest": session.execute(query).scalar()})
    return sorted(out, key=lambda d: (-d["cases"], d["kind"]))


def cases_with_overdue(session: Session, scope: CaseScope | None = None) -> int:
    query = select(func.count()).select_from(STUCK).where(STUCK.c.kinds.like(f"%,{OVERDUE_PREFIX}%"))
    if (ids := _scoped(scope)) is not None:
        query = query.where(STUCK.c.case_id.in_(ids))
    return session.execute(query).scalar_one()


# ---------------------------------------------------------------- overview figures


def open_by_stage(session: Session, scope: CaseScope | None = None) -> list[dict]:
    query = select(CASES.c.stage, func.count()).where(CASES.c.stage != Stage.closed.value)
    if (ids := _scoped(scope)) is not None:
        query = query.where(CASES.c.id.in_(ids))
    counts = dict(session.execute(query.group_by(CASES.c.stage)).all())
    return [{"stage": s, "count": counts.get(s, 0)} for s in STAGE_ORDER if s != Stage.closed.value]


def committee_queue(session: Session, now: datetime, limit: int = 20,
                    scope: CaseScope | None = None) -> dict:
    query = select(ITEMS.c.id, ITEMS.c.case_id, ITEMS.c.plan_version, ITEMS.c.reasons,
                   ITEMS.c.escalated_at, ITEMS.c.meeting_at).where(ITEMS.c.status == "waiting")
    count = select(func.count()).select_from(ITEMS).where(ITEMS.c.status == "waiting")
    if (ids := _scoped(scope)) is not None:
        query = query.where(ITEMS.c.case_id.in_(ids))
        count = count.where(ITEMS.c.case_id.in_(ids))
    rows = session.execute(query.order_by(ITEMS.c.escalated_at).limit(limit)).all()
    names = dict(session.execute(select(CASES.c.id, CASES.c.family_name)
                                 .where(CASES.c.id.in_([r.case_id for r in rows]))).all())
    items = [{"id": r.id, "case_id": r.case_id, "family_name": names.get(r.case_id, ""),
              "plan_version": r.plan_version, "reasons": r.reasons, "escalated_at": r.escalated_at,
              "meeting_at": r.meeting_at} for r in rows]
    return {"items": items, "total": session.execute(count).scalar_one()}


def caseload(session: Session, cap: int, scope: CaseScope | None = None) -> list[dict]:
    """Open cases per coordinator against the cap: the coordinators of the units in `scope`
    (`domain.access.report_scope`: a manager's unit; None or everything: all)."""
    units = None if scope is None or scope.everything else scope.units
    loads = open_caseloads(session, scope)
    out = [{"coordinator_id": s.id, "name": s.name, "open_cases": loads.get(s.id, 0), "cap": cap,
            "at_cap": loads.get(s.id, 0) >= cap} for s in coordinators(session, units)]
    known = {o["coordinator_id"] for o in out}
    for cid, n in loads.items():  # a coordinator who left keeps cases until reassigned
        if cid not in known:
            out.append({"coordinator_id": cid, "name": f"{cid} (not an active coordinator)",
                        "open_cases": n, "cap": cap, "at_cap": n >= cap})
    return sorted(out, key=lambda o: (-o["open_cases"], o["coordinator_id"]))


def current_month(now: datetime, timezone: str) -> str:
    return now.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def funding_by_department(session: Session, start: datetime, end: datetime,
                          scope: CaseScope | None = None) -> dict:
    """Monthly amounts of the plans in force at any time in [start, end), per department."""
    in_force = and_(FUNDING.c.valid_from < end,
                    or_(FUNDING.c.valid_until.is_(None), FUNDING.c.valid_until > start))
    query = select(
        FUNDING.c.department,
        func.sum(FUNDING.c.monthly_amount),
        func.sum(case((FUNDING.c.joint, FUNDING.c.monthly_amount), else_=0)),
        func.count(func.distinct(FUNDING.c.case_id)),
    ).where(in_force)
    if (ids := _scoped(scope)) is not None:
        query = query.where(FUNDING.c.case_id.in_(ids))
    rows = session.execute(query.group_by(FUNDING.c.department).order_by(FUNDING.c.department)).all()
    items = [{"department": d, "total": round(t or 0, 2), "joint": round(j or 0, 2), "cases": n}
             for d, t, j, n in rows]
    return {"items": items, "total": round(sum(i["total"] for i in items), 2),
            "joint": round(sum(i["joint"] for i in items), 2)}


def overview(session: Session, now: datetime, settings: Settings, actor: Actor) -> dict:
    """The overview as `actor` may see it: every figure over the cases in their scope; the
    committee queue and the caseload only for those the policy lets read them."""
    scope = case_scope(actor)
    policy = latest_policy(session, settings.country)
    month = current_month(now, policy.timezone)
    start, end = month_bounds(month, policy.timezone)
    stages = open_by_stage(session, scope)
    counts = stuck_counts(session, scope)
    committee = (committee_queue(session, now, scope=committee_scope(actor))
                 if may_read_committee(actor) else {"items": [], "total": 0})
    return {
        "now": now,
        "open_total": sum(s["count"] for s in stages),
        "stages": stages,
        "overdue": overdue_by_kind(session, counts, scope),
        "overdue_cases": cases_with_overdue(session, scope),
        "stuck": stuck_list(session, now, scope=scope, limit=15),
        "stuck_counts": counts,
        "committee": committee,
        "caseload": (caseload(session, policy.caseload_cap, report_scope(actor))
                     if may_read_caseload(actor) else []),
        "cap": policy.caseload_cap,
        "month": month,
        "funding": funding_by_department(session, start, end, scope),
    }


# ---------------------------------------------------------------- case list


def case_list(session: Session, now: datetime, *, stage: str | None = None,
              coordinator_id: str | None = None, overdue: bool | None = None, q: str | None = None,
              sort: CaseSort = "age", include_closed: bool = False,
              scope: CaseScope | None = None, limit: int = 50, offset: int = 0) -> dict:
    cols = [CASES.c.id, CASES.c.stage, CASES.c.coordinator_id, CASES.c.family_name,
            CASES.c.received_at, CASES.c.stage_since, CASES.c.next_due_at, CASES.c.blocked_what,
            CASES.c.blocked_owner, CASES.c.blocked_since, CASES.c.last_contact_at]
    query = select(*cols)
    if stage:
        query = query.where(CASES.c.stage == stage)
    elif not include_closed:
        query = query.where(CASES.c.stage != Stage.closed.value)
    if coordinator_id:
        query = query.where(CASES.c.coordinator_id == coordinator_id)
    if overdue is True:
        query = query.where(CASES.c.next_due_at.is_not(None), CASES.c.next_due_at <= now)
    elif overdue is False:
        query = query.where(or_(CASES.c.next_due_at.is_(None), CASES.c.next_due_at > now))
    if q:  # exact, on keyed hashes of the names (DESIGN §9): never a LIKE pattern
        from models.sealed import name_match
        query = query.where(name_match(CASES.c.search_text, q))
    if (ids := _scoped(scope)) is not None:
        query = query.where(CASES.c.id.in_(ids))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    order = {
        "age": [CASES.c.stage_since, CASES.c.id],
        "received": [CASES.c.received_at, CASES.c.id],
        "newest": [CASES.c.received_at.desc(), CASES.c.id],
        "stage": [_stage_rank(CASES.c.stage), CASES.c.stage_since, CASES.c.id],
        "coordinator": [CASES.c.coordinator_id.is_(None).desc(), CASES.c.coordinator_id,
                        CASES.c.stage_since, CASES.c.id],
        "due": [CASES.c.next_due_at.is_(None), CASES.c.next_due_at, CASES.c.id],
    }[sort]
    rows = session.execute(query.order_by(*order).limit(limit).offset(offset)).all()
    items = [dict(r._mapping) | {"overdue": r.next_due_at is not None and r.next_due_at <= now}
             for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


# ---------------------------------------------------------------- JSON endpoints


def _json_reason(r: dict) -> dict:
    out = {"kind": r["kind"], "since": r["since"], "owner": r["owner"], "detail": r["detail"],
           "technical": r["technical"]}
    if r.get("acknowledged"):
        out["acknowledged"] = r["acknowledged"]
    return out


@router.get("/stuck")
async def stuck(
    caller: Caller = Depends(get_caller),
    session: Session = Depends(get_session),
    engine: Engine = Depends(get_engine_dep),
    stage: Stage | None = None,
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    sort: Sort = "age",
    include_acknowledged: bool = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict:
    actor = caller.require()
    now = watch.utcnow()
    await asyncio.to_thread(watch.catch_up, engine)
    result = await asyncio.to_thread(
        stuck_list, session, now, stage=stage.value if stage else None, coordinator_id=coordinator_id,
        reason=reason, sort=sort, include_acknowledged=include_acknowledged,
        scope=case_scope(actor), limit=limit, offset=offset,
    )
    items = [{"case_id": i["case_id"], "stage": i["stage"], "coordinator_id": i["coordinator_id"],
              "reasons": [_json_reason(r) for r in i["reasons"]]} for i in result["items"]]
    return {"items": items, "total": result["total"]}


@router.get("/caseload")
def caseload_endpoint(
    caller: Caller = Depends(get_caller),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> dict:
    actor = caller.require()
    if not may_read_caseload(actor):
        raise HTTPException(403, "The caseload is for managers and administrators.")
    items = caseload(session, latest_policy(session, settings.country).caseload_cap,
                     report_scope(actor))
    return {"items": items, "total": len(items)}

