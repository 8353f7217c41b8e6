"""The monthly report as JSON: `GET /api/v1/reports/{yyyy-mm}` (issue 11, point 2).

The same figures as the page `/reports/{yyyy-mm}` and its document (HTML/PDF): both ask
`report_for()` below, which asks `activities.report.compute_report()` — one function builds
every form of the report. Who reads which figures is the one access policy
(`domain.access.may_read_reports`, `report_scope`): an administrator reads the whole
municipality's report (the stored one of a finished month, computed and stored when it is
missing), a manager their unit's figures, computed when asked and never stored.

Answers: 200 with the report; 401 not signed in; 403 not a manager or administrator;
404 a month that has not begun (there is nothing to report yet); 422 not a month (`yyyy-mm`).
A finished or running month without any case answers 200 with zeros: "nothing happened" is
a report too. The running month is computed as of now (`complete: false`). A read stores
nothing: a finished month that has no stored report yet (the schedule or the page stores it)
is computed on each read (`stored: null`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities import report as reports
from api.deps import Caller, get_caller
from domain.access import may_read_reports, report_scope
from models.case import Actor
from models.tables_reporting import MonthlyReportRow

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

NOT_A_MONTH = "A month is written yyyy-mm, for example 2026-11."
NOT_BEGUN = "That month has not begun yet, so there is no report for it."
MANAGERS_ONLY = "The monthly reports are for managers and administrators."

ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"detail": d}}}}
          for s, d in ((401, "Sign in first."), (403, MANAGERS_ONLY), (404, NOT_BEGUN),
                       (422, NOT_A_MONTH))}


async def report_for(engine: Engine, month: str, country: str, actor: Actor, *,
                     force: bool = False, store: bool = True) -> MonthlyReportRow | dict:
    """The report `actor` may read: the stored municipality report of a finished month
    (computed — and stored when `store` — if missing, or when `force`), the running month's
    figures so far (not stored), or — for a reader whose report scope is not everything —
    their units' figures, computed now."""
    scope = report_scope(actor)
    if not scope.everything:
        return await asyncio.to_thread(reports.build_report, engine, month, country, None, scope)
    if not force:
        with Session(engine) as session:
            row = session.get(MonthlyReportRow, month)
            if row is not None:
                session.expunge(row)
                return row
    data = await asyncio.to_thread(reports.build_report, engine, month, country)
    if data["complete"] and store:
        return await asyncio.to_thread(reports.store_report, engine, data, actor.id)
    return data


def report_data(found: MonthlyReportRow | dict) -> dict:
    return found.data if isinstance(found, MonthlyReportRow) else found


def has_begun(month: str, country: str, now: datetime | None = None) -> bool:
    start, _ = reports.month_bounds(month, reports.timezone_of(country))
    return start <= (now or datetime.now(UTC))


@router.get("/{month}", responses=ERRORS)
async def monthly_report(month: str, request: Request, caller: Caller = Depends(get_caller)) -> dict:
    """The month's report (`yyyy-mm`, the month in the municipality's time zone) as JSON:
    the same figures as the report page and its PDF."""
    actor = caller.require()
    try:
        reports.parse_month(month)
    except ValueError:
        raise HTTPException(422, NOT_A_MONTH) from None
    if not may_read_reports(actor):
        raise HTTPException(403, MANAGERS_ONLY)
    country = request.app.state.settings.country
    if not has_begun(month, country):
        raise HTTPException(404, NOT_BEGUN)
    # A read stores nothing (no PDF rendered for a month nobody filed): the stored report when
    # there is one, else the same figures computed now.
    found = await report_for(request.app.state.engine, month, country, actor, store=False)
    data = dict(report_data(found))
    data.setdefault("scope", reports.scope_label(report_scope(actor)))  # stored before scopes
    if isinstance(found, MonthlyReportRow):
        data["stored"] = {"at": found.generated_at.isoformat(), "by": found.generated_by,
                          "pdf": found.pdf is not None}
    else:
        data["stored"] = None
    return data
