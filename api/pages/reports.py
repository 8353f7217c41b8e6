"""The monthly reports: `/reports`, `/reports/{yyyy-mm}`, its document."""

from __future__ import annotations

import asyncio
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlmodel import Session

from activities import report as reports
from api import watch
from api.pages import i18n
from api.pages.common import (
    actor_of,
    back,
    current_user,
    error_page,
    language_of,
    login_redirect,
    manager_or_error,
    render,
    settings_of,
    staff_names,
    timezone_of,
)
from api.pages.manager_words import WORDS
from api.reports import report_for
from domain.access import (
    may_read_reports,
    report_scope,
)
from models.tables import StaffRow
from models.tables_reporting import MonthlyReportRow

router = APIRouter(include_in_schema=False)


def _refused(request: Request, user: StaffRow, status: int, title: str, text: str) -> Response:
    lang = language_of(request, user)
    return error_page(request, user, status, i18n.translate(lang, title), i18n.translate(lang, text))


def _month_or_none(text: str) -> str | None:
    try:
        return reports.parse_month(text)
    except ValueError:
        return None


def _shift(month: str, by: int) -> str:
    year, mon = (int(x) for x in month.split("-"))
    index = year * 12 + (mon - 1) + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@router.get("/reports")
def reports_index(request: Request) -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        if not may_read_reports(actor_of(user)):
            return _refused(request, user, 403, "dash.error.managers_only", "reports.managers_only")
        t = MonthlyReportRow.__table__
        rows = session.execute(select(t.c.month, t.c.generated_at, t.c.generated_by,
                                      t.c.pdf.is_not(None).label("has_pdf")).order_by(t.c.month.desc())).all()
        now = watch.utcnow()
        default = reports.previous_month(now.astimezone(ZoneInfo(timezone_of(request))))
        return render(request, "reports.html.j2", user=user, nav="reports", reports=rows,
                      default_month=default, staff=staff_names(session), **WORDS)


@router.get("/reports/go")
def reports_go(month: str = "") -> Response:
    return RedirectResponse(f"/reports/{quote(month[:7])}", status_code=303)


async def _report(request: Request, month: str, user: StaffRow,
                  force: bool = False) -> MonthlyReportRow | dict:
    """What this reader may read (api/reports.py `report_for`, shared with the JSON): the
    stored municipality report, the running month's figures, or their unit's figures."""
    return await report_for(request.app.state.engine, month, settings_of(request).country,
                            actor_of(user), force=force)


def _report_reader(request: Request, month: str) -> tuple[object, Response | None]:
    """The signed-in manager who may read a month's report, or the page that says why not."""
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return None, login_redirect(request)
    if _month_or_none(month) is None:
        return user, _refused(request, user, 404, "reports.no_month", "reports.month_format")
    if not may_read_reports(actor_of(user)):
        return user, _refused(request, user, 403, "dash.error.managers_only", "reports.managers_only")
    return user, None


@router.get("/reports/{month}")
async def report_page(request: Request, month: str) -> Response:
    user, refused = _report_reader(request, month)
    if refused is not None:
        return refused
    found = await _report(request, month, user)
    stored = isinstance(found, MonthlyReportRow)
    data = found.data if stored else found
    with Session(request.app.state.engine) as session:
        staff = staff_names(session)
    return render(request, "report_page.html.j2", user=user, nav="reports", r=data, staff=staff, **WORDS,
                  prev=_shift(month, -1), next=_shift(month, 1), has_pdf=stored and found.pdf is not None,
                  stored_at=found.generated_at if stored else None,
                  stored_by=found.generated_by if stored else None,
                  manager=report_scope(actor_of(user)).everything)


@router.post("/reports/{month}")
async def recompute_report(request: Request, month: str) -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    refused = manager_or_error(request, user)
    if refused is not None:
        return refused
    if _month_or_none(month) is None:
        return _refused(request, user, 404, "reports.no_month", "reports.month_format")
    await _report(request, month, user, force=True)
    return back(f"/reports/{month}", ok=i18n.translate(language_of(request, user), "reports.recomputed"))


@router.get("/reports/{month}/document")
async def report_document(request: Request, month: str, format: str = "html") -> Response:
    user, refused = _report_reader(request, month)
    if refused is not None:
        return refused
    found = await _report(request, month, user)
    if isinstance(found, MonthlyReportRow):
        html, pdf = found.html, found.pdf
    else:
        html = reports.render_report_html(found)
        pdf = await asyncio.to_thread(reports.html_to_pdf, html) if format == "pdf" else None
    if format == "pdf":
        if pdf is None:
            return _refused(request, user, 404, "reports.no_pdf", "reports.no_pdf_text")
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="onefamily-report-{month}.pdf"'})
    return HTMLResponse(html)
