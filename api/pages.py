"""The manager dashboard: server-rendered pages (jinja2), usable without JavaScript.

Pages: `/` overview, `/stuck` the stuck list, `/cases` the case list, `/cases/{id}` one case
(with the manager actions reassign / nudge / acknowledge as POST forms that redirect back),
`/reports` and `/reports/{yyyy-mm}` the monthly report, `/login`.

Identity: a browser cannot send the API's `X-User` header, so in the embedded mode the login
form stores the staff id in a cookie (`onefamily_user`, HttpOnly, SameSite=Lax); a request
that carries `X-User` is taken as that user too. The staff id must be in the directory.
What each page shows, and who may act, is the one access policy's (`domain.access`): lists
and counts over the caller's case scope, a case for whoever may read it, the manager actions
for the manager of the case's unit (or admin), the stuck list and the reports for managers
(their unit's figures) and admins. POST forms are refused when
the browser says they come from another site (Origin header), on top of SameSite.

Everything is read from the read model and the dashboard's index (`api.watch`), never by
asking every workflow; the case page asks its one workflow (a Query) for the live state and
falls back on the read model. The index's background work runs in a case worker, once per
deployment (workflows/sweeper.py), never in the API processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import inspect, select
from sqlmodel import Session
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from activities import report as reports
from api import dashboard, watch
from api.deps import Caller
from api.policy import latest_policy
from api.scope import load_facts, scope_clause
from domain.access import (
    CaseFacts,
    case_scope,
    facts_from_state,
    may_manage_case,
    may_read_reports,
    may_see_duplicates,
    read_refusal,
    report_scope,
)
from domain.policy import current_policy
from domain.stuck import BUSINESS_KINDS, OVERDUE_PREFIX, TECHNICAL_KINDS
from models.case import Actor, AssignCoordinator, CaseState, DeadlineKind, Stage
from models.tables import CaseRow, StaffRow
from models.tables_reporting import MonthlyReportRow, StuckAckRow, StuckNudgeRow

log = logging.getLogger("onefamily.pages")

CSS = Path(__file__).resolve().parent.parent / "templates" / "dashboard" / "dashboard.css"
STUCK_SORTS = [("age", "oldest first"), ("newest", "newest first"), ("stage", "stage"),
               ("coordinator", "coordinator"), ("reasons", "most reasons")]
CASE_SORTS = [("age", "longest in stage"), ("due", "next deadline"), ("newest", "newest referral"),
              ("received", "oldest referral"), ("stage", "stage"), ("coordinator", "coordinator")]
REASON_KINDS = (["overdue"] + [f"{OVERDUE_PREFIX}{k.value}" for k in DeadlineKind]
                + list(BUSINESS_KINDS) + list(TECHNICAL_KINDS))


# No lifespan: the index's background rounds and the technical sweep run once per
# deployment in a case worker (workflows/sweeper.py), not in each API process; the pages
# call watch.catch_up() before reading (read-your-writes).
router = APIRouter(include_in_schema=False)


# ---------------------------------------------------------------- plumbing


def _settings(request: Request):
    return request.app.state.settings


def _timezone(request: Request) -> str:
    return current_policy(_settings(request).country).timezone


def render(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
    env = reports._env(_timezone(request))
    ctx.setdefault("flash_ok", request.query_params.get("ok"))
    ctx.setdefault("flash_error", request.query_params.get("error"))
    ctx.setdefault("technical_kinds", TECHNICAL_KINDS)
    ctx.setdefault("csrf_token", getattr(request.state, "csrf_token", None) or "")
    html = env.get_template(template).render(**ctx)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _error(request: Request, user, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html.j2", status=status, user=user, status_code=status,
                  title=title, message=message, nav="")


def current_user(request: Request, session: Session) -> StaffRow | None:
    """The authenticated staff member (api/auth.py), as a plain row for the templates."""
    actor = getattr(request.state, "principal", None)
    if actor is None:
        return None
    row = session.get(StaffRow, actor.id)
    if row is None or not row.active:
        return None
    session.expunge(row)  # a plain value from here on: commits do not expire it
    return row


def _actor(user: StaffRow) -> Actor:
    return Actor(id=user.id, roles=list(user.roles), unit=user.unit)


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _back(path: str, ok: str | None = None, error: str | None = None) -> RedirectResponse:
    params = {k: v for k, v in (("ok", ok), ("error", error)) if v}
    return RedirectResponse(path + (f"?{urlencode(params)}" if params else ""), status_code=303)


def _cross_site(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return bool(origin)
    return origin.split("://", 1)[-1] != request.url.netloc


def _staff_names(session: Session) -> dict[str, str]:
    return {s.id: s.name for s in session.execute(select(StaffRow)).scalars()}


def _query(request: Request, drop: tuple[str, ...] = ("offset", "ok", "error")) -> str:
    return urlencode([(k, v) for k, v in request.query_params.multi_items() if k not in drop and v])


def _table_exists(request: Request, name: str) -> bool:
    cache = getattr(request.app.state, "_dashboard_tables", None)
    if cache is None:
        cache = request.app.state._dashboard_tables = {}
    if name not in cache:
        cache[name] = inspect(request.app.state.engine).has_table(name)
    return cache[name]


async def _index(request: Request) -> None:
    await asyncio.to_thread(watch.catch_up, request.app.state.engine)


@router.get("/assets/dashboard.css")
def stylesheet() -> FileResponse:
    return FileResponse(CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# ---------------------------------------------------------------- overview and lists


@router.get("/")
async def overview_page(request: Request) -> Response:
    await _index(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return _login_redirect(request)
        data = await asyncio.to_thread(dashboard.overview, session, watch.utcnow(), _settings(request),
                                       _actor(user))
        return render(request, "overview.html.j2", user=user, nav="overview", o=data,
                      staff=_staff_names(session), refresh=60)


@router.get("/stuck")
async def stuck_page(
    request: Request,
    stage: Stage | None = None,
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    sort: dashboard.Sort = "age",
    acknowledged: str = "show",
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    await _index(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return _login_redirect(request)
        if not may_read_reports(_actor(user)):
            return _error(request, user, 403, "Managers only",
                          "The stuck list is for managers; your own cases are on the overview.")
        result = await asyncio.to_thread(
            dashboard.stuck_list, session, watch.utcnow(), stage=stage.value if stage else None,
            coordinator_id=coordinator_id or None, reason=reason or None, sort=sort,
            include_acknowledged=acknowledged != "hide", scope=case_scope(_actor(user)),
            limit=50, offset=offset,
        )
        coordinators = [s for s in session.execute(select(StaffRow).order_by(StaffRow.name)).scalars()
                        if "coordinator" in s.roles]
        return render(
            request, "stuck.html.j2", user=user, nav="stuck", result=result, now=watch.utcnow(),
            staff=_staff_names(session), stages=[s.value for s in Stage if s is not Stage.closed],
            coordinators=coordinators, reason_kinds=REASON_KINDS, sorts=STUCK_SORTS,
            f={"stage": stage.value if stage else "", "coordinator_id": coordinator_id, "reason": reason,
               "sort": sort, "acknowledged": acknowledged},
            query=_query(request),
        )


@router.get("/cases")
async def cases_page(
    request: Request,
    stage: Stage | None = None,
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    overdue: str | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    sort: dashboard.CaseSort = "age",
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return _login_redirect(request)
        flag = {"true": True, "false": False}.get(overdue or "")
        result = await asyncio.to_thread(
            dashboard.case_list, session, watch.utcnow(), stage=stage.value if stage else None,
            coordinator_id=coordinator_id or None, overdue=flag, q=q or None, sort=sort,
            scope=case_scope(_actor(user)), limit=50, offset=offset,
        )
        coordinators = [s for s in session.execute(select(StaffRow).order_by(StaffRow.name)).scalars()
                        if "coordinator" in s.roles]
        return render(
            request, "cases.html.j2", user=user, nav="cases", result=result, now=watch.utcnow(),
            staff=_staff_names(session), all_stages=[s.value for s in Stage], coordinators=coordinators,
            sorts=CASE_SORTS, query=_query(request),
            f={"stage": stage.value if stage else "", "coordinator_id": coordinator_id,
               "overdue": overdue or "", "q": q, "sort": sort},
        )


# ---------------------------------------------------------------- one case


def _valid_case_id(case_id: str) -> bool:
    try:
        uuid.UUID(case_id)
    except ValueError:
        return False
    return True


async def _load_case(request: Request, case_id: str) -> tuple[CaseState | None, bool]:
    """(state, live): the live state from the case's workflow (a Query), else the read
    model's copy (Temporal down, or a case the workflow no longer holds)."""
    client = getattr(request.app.state, "temporal", None)
    if client is not None:
        from api.gateway import workflow_id
        from workflows.case import FamilyCaseWorkflow

        try:
            state = await asyncio.wait_for(
                client.get_workflow_handle(workflow_id(case_id)).query(
                    FamilyCaseWorkflow.case, result_type=CaseState), 5)
            return state, True
        except (RPCError, WorkflowQueryFailedError, TimeoutError, ValidationError):
            pass

    def stored() -> CaseState | None:
        with Session(request.app.state.engine) as session:
            row = session.get(CaseRow, case_id)
            return CaseState.model_validate(row.document) if row else None

    return await asyncio.to_thread(stored), False


def _facts(request: Request, case_id: str, state: CaseState | None = None) -> CaseFacts | None:
    """The case's need-to-know facts from the read model (the policy's one source), or from
    the state when the read model does not have the case yet; None for an unknown case."""
    with Session(request.app.state.engine) as session:
        facts = load_facts(session, case_id)
    if facts is None and state is not None:
        facts = facts_from_state(state)
    return facts


def _temporal_url(request: Request, case_id: str) -> str:
    settings = _settings(request)
    base = os.environ.get("ONEFAMILY_TEMPORAL_UI_URL") or f"http://127.0.0.1:{settings.temporal_ui_port}"
    return (f"{base.rstrip('/')}/namespaces/{quote(settings.temporal_namespace)}"
            f"/workflows/case-{case_id}")


def _documents(request: Request, session: Session, case_id: str) -> list | None:
    try:
        from models.tables_outbox import DocumentRow
    except ImportError:
        return None
    if not hasattr(DocumentRow, "__table__") or not _table_exists(request, "documents"):
        return None
    t = DocumentRow.__table__
    return session.execute(
        select(t.c.id, t.c.kind, t.c.version, t.c.language, t.c.created_at)
        .where(t.c.case_id == case_id).order_by(t.c.created_at.desc())).all()


def _notifications(request: Request, session: Session, case_id: str) -> list | None:
    try:
        from models.tables_outbox import NotificationRow
    except ImportError:
        return None
    if not hasattr(NotificationRow, "__table__") or not _table_exists(request, "notifications"):
        return None
    t = NotificationRow.__table__
    cols = [t.c[name] for name in ("id", "channel", "recipient_id", "recipient_role", "purpose",
                                   "status", "created_at", "sent_at") if name in t.c]
    return session.execute(select(*cols).where(t.c.case_id == case_id)
                           .order_by(t.c.created_at.desc()).limit(200)).all()


def _nudge_recipients(session: Session, state: CaseState, staff: dict[str, str],
                      reasons: list[dict]) -> tuple[list[dict], str | None]:
    people: dict[str, str] = {}
    if state.coordinator_id:
        people[state.coordinator_id] = "coordinator"
    for m in state.team:
        people.setdefault(m.staff_id, "team")
    for s in session.execute(select(StaffRow).where(StaffRow.active)).scalars():
        if "committee" in s.roles:
            people.setdefault(s.id, "committee")
        elif "manager" in s.roles:
            people.setdefault(s.id, "manager")
    options = [{"id": pid, "role": role, "label": f"{staff.get(pid, pid)} ({role})"}
               for pid, role in people.items() if pid in staff]
    default = None
    for r in reasons:
        owners = [o for o in str(r["owner"]).split(",") if o in people]
        if r["owner"] == "committee":
            owners = [pid for pid, role in people.items() if role == "committee"]
        if owners:
            default = owners[0]
            break
    return options, default or state.coordinator_id


@router.get("/cases/{case_id}")
async def case_page(request: Request, case_id: str) -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return _login_redirect(request)
    if not _valid_case_id(case_id):
        return _error(request, user, 404, "No such case", "Case ids are UUIDs.")
    actor = _actor(user)
    facts = await asyncio.to_thread(_facts, request, case_id)
    state = live = None
    if facts is None:  # not in the read model (yet): the workflow knows, or nobody does
        state, live = await _load_case(request, case_id)
        if state is None:
            return _error(request, user, 404, "No such case", f"There is no case {case_id}.")
        facts = facts_from_state(state)
    refusal = read_refusal(actor, facts)
    if refusal:
        return _error(request, user, 403, "Not your case", refusal)
    if state is None:
        state, live = await _load_case(request, case_id)
        if state is None:
            return _error(request, user, 404, "No such case", f"There is no case {case_id}.")
    await _index(request)
    from api.views import case_view

    now = watch.utcnow()
    c = case_view(state, now, may_see_duplicates(actor, facts))
    manager = may_manage_case(actor, facts)
    with Session(request.app.state.engine) as session:
        staff = _staff_names(session)
        reasons = dashboard.case_reasons(session, now, case_id)
        recipients, default = _nudge_recipients(session, state, staff, reasons)
        cap = latest_policy(session, _settings(request).country).caseload_cap
        plan = c.get("plan")
        active = state.active_plan
        ctx = dict(
            user=user, nav="cases", c=c, live=live, now=now, staff=staff, reasons=reasons,
            manager=manager, cap=cap,
            coordinators=dashboard.caseload(session, cap, report_scope(actor)) if manager else [],
            nudge_recipients=recipients, nudge_default=default,
            deadlines=sorted(c["deadlines"],
                             key=lambda d: (d["status"] not in ("overdue", "open"), d["due_at"])),
            plan=plan, active_plan=active.model_dump(mode="json") if active else None,
            goals={g["id"]: g["text"] for g in (plan or {}).get("goals", [])},
            today=date.today().isoformat(),
            history=list(reversed(c["history"])),
            last_contact=max([x["at"] for x in c["contacts"]], default=None),
            documents=_documents(request, session, case_id),
            notifications=_notifications(request, session, case_id),
            nudges=session.execute(select(StuckNudgeRow).where(StuckNudgeRow.case_id == case_id)
                                   .order_by(StuckNudgeRow.sent_at.desc())).scalars().all(),
            acks=session.execute(select(StuckAckRow).where(StuckAckRow.case_id == case_id)
                                 .order_by(StuckAckRow.acked_at.desc())).scalars().all(),
            temporal_url=_temporal_url(request, case_id),
        )
        response = render(request, "case.html.j2", **ctx)
    return response


@router.get("/cases/{case_id}/documents/{doc_id}")
async def case_document(request: Request, case_id: str, doc_id: str, format: str = "html") -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return _login_redirect(request)
    if not _valid_case_id(case_id):
        return _error(request, user, 404, "No such document", "Case ids are UUIDs.")
    facts = await asyncio.to_thread(_facts, request, case_id)
    if facts is None:
        state, _ = await _load_case(request, case_id)
        facts = _facts(request, case_id, state) if state is not None else None
    if facts is None or read_refusal(_actor(user), facts):
        return _error(request, user, 404 if facts is None else 403, "No such document",
                      "There is no such document, or you do not work on this case.")
    try:
        from models.tables_outbox import DocumentRow
    except ImportError:
        return _error(request, user, 404, "No such document", "No document store here.")
    with Session(request.app.state.engine) as session:
        row = session.get(DocumentRow, doc_id)
        if row is None or row.case_id != case_id:
            return _error(request, user, 404, "No such document", "There is no such document.")
        if format == "pdf":
            filename = f"{row.kind}-v{row.version}.pdf"
            return Response(row.pdf, media_type="application/pdf",
                            headers={"Content-Disposition": f'inline; filename="{filename}"'})
        return HTMLResponse(row.html)


# ---------------------------------------------------------------- manager actions (PRG)


def _manager_or_error(request: Request, user: StaffRow | None, case_id: str | None = None):
    """None if `user` may take this manager action (on `case_id`: the manager of the case's
    unit or admin, `domain.access.may_manage_case`; else a reader of reports), or the page
    that says why not (login, another site, 404 unknown case, 403)."""
    if user is None:
        return _login_redirect(request)
    if _cross_site(request):
        return _error(request, user, 403, "Refused", "This form was sent from another site.")
    actor = _actor(user)
    if case_id is None:
        if not may_read_reports(actor):
            return _error(request, user, 403, "Managers only", "Only a manager can do this.")
        return None
    facts = _facts(request, case_id) if _valid_case_id(case_id) else None
    if facts is None:
        return _error(request, user, 404, "No such case", f"There is no case {case_id}.")
    if not may_manage_case(actor, facts):
        return _error(request, user, 403, "Managers only",
                      "Only a manager of the case's unit can do this.")
    return None


@router.post("/cases/{case_id}/coordinator")
async def reassign(request: Request, case_id: str,
                   coordinator_id: Annotated[str, Form(max_length=64)],
                   override: Annotated[bool, Form()] = False) -> Response:
    """Reassign through the API's own command path (api.cases.assign_coordinator): the same
    checks, caseload cap and override rule, and the same Temporal Update."""
    from api.cases import assign_coordinator, get_commands

    session = Session(request.app.state.engine)
    try:
        user = current_user(request, session)
        refused = _manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        page = f"/cases/{case_id}"
        client = getattr(request.app.state, "temporal", None)
        if client is None:
            return _back(page, error="The case engine (Temporal) is not reachable; try again shortly.")
        try:
            body = AssignCoordinator(coordinator_id=coordinator_id, override=override)
        except ValidationError:
            return _back(page, error="Choose a coordinator.")
        cmd = await get_commands(caller=Caller(request=request, session=session), session=session,
                                 client=client, engine=request.app.state.engine,
                                 settings=_settings(request), idempotency_key=None)
        try:
            result = await assign_coordinator(case_id, body, cmd)
        except HTTPException as error:
            request.state.audit_outcome = error.status_code  # the command's, not the redirect's
            return _back(page, error=str(error.detail))
        name = _staff_names(Session(request.app.state.engine)).get(result["coordinator_id"], coordinator_id)
        return _back(page, ok=f"{name} is now the coordinator.")
    finally:
        session.close()


@router.post("/cases/{case_id}/nudge")
async def nudge(request: Request, case_id: str,
                recipient_id: Annotated[str, Form(max_length=64)],
                message: Annotated[str, Form(max_length=1000)] = "",
                kind: Annotated[str, Form(max_length=64)] = "") -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        refused = _manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        if not _valid_case_id(case_id) or session.get(CaseRow, case_id) is None:
            return _error(request, user, 404, "No such case", f"There is no case {case_id}.")
        if session.get(StaffRow, recipient_id) is None:
            return _back(f"/cases/{case_id}", error=f"Unknown staff id '{recipient_id}'.")
        text = message.strip() or "Please look at this case."
        row = StuckNudgeRow(case_id=case_id, kind=kind or None, recipient_id=recipient_id, sent_by=user.id,
                            sent_at=datetime.now(UTC), message=text)
        session.add(row)
        session.commit()
        session.refresh(row)
        case_row = session.get(CaseRow, case_id)
        role = "coordinator" if case_row.coordinator_id == recipient_id else "team"
        nudge_id, sender = row.id, user.name
    notification = await asyncio.to_thread(
        reports.notify_in_app, request.app.state.engine, key=f"nudge:{nudge_id}", case_id=case_id,
        recipient_id=recipient_id, recipient_role=role, purpose="manager_nudge",
        subject=f"{sender} asks you to look at a case",
        body=f"{text}\n\n/cases/{case_id}",
    )
    if notification:
        with Session(request.app.state.engine) as session:
            row = session.get(StuckNudgeRow, nudge_id)
            row.notification_id = notification
            session.commit()
    where = "in-app notification sent" if notification else "recorded"
    return _back(f"/cases/{case_id}", ok=f"Nudge to {recipient_id} {where}.")


@router.post("/cases/{case_id}/acknowledge")
async def acknowledge(request: Request, case_id: str,
                      kind: Annotated[str, Form(max_length=64)],
                      since: Annotated[str, Form(max_length=64)],
                      note: Annotated[str, Form(max_length=500)] = "") -> Response:
    await _index(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        refused = _manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        if not _valid_case_id(case_id):
            return _error(request, user, 404, "No such case", "Case ids are UUIDs.")
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            return _back(f"/cases/{case_id}", error="That reason is not valid.")
        reasons = dashboard.case_reasons(session, watch.utcnow(), case_id)
        match = next((r for r in reasons if r["kind"] == kind and r["since"] == when), None)
        if match is None:
            return _back(f"/cases/{case_id}", error=f"'{kind}' no longer holds for this case.")
        if match["acknowledged"]:
            return _back(f"/cases/{case_id}", ok=f"'{kind}' was already acknowledged.")
    await asyncio.to_thread(watch.acknowledge, request.app.state.engine, case_id, kind, match["since"],
                            user.id, note.strip())
    return _back(f"/cases/{case_id}", ok=f"'{kind}' acknowledged.")


# ---------------------------------------------------------------- monthly reports


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
            return _login_redirect(request)
        if not may_read_reports(_actor(user)):
            return _error(request, user, 403, "Managers only", "The monthly reports are for managers.")
        t = MonthlyReportRow.__table__
        rows = session.execute(select(t.c.month, t.c.generated_at, t.c.generated_by,
                                      t.c.pdf.is_not(None).label("has_pdf")).order_by(t.c.month.desc())).all()
        now = watch.utcnow()
        default = reports.previous_month(now.astimezone(ZoneInfo(_timezone(request))))
        return render(request, "reports.html.j2", user=user, nav="reports", reports=rows,
                      default_month=default)


@router.get("/reports/go")
def reports_go(month: str = "") -> Response:
    return RedirectResponse(f"/reports/{quote(month[:7])}", status_code=303)


def _scoped_report(engine, month: str, country: str, scope) -> dict:
    """The month's figures over the cases in `scope` only (a manager's unit), never stored:
    the stored report is the whole municipality's."""
    timezone = reports.TIMEZONES.get(country.upper(), "Europe/Copenhagen")
    _, end = reports.month_bounds(month, timezone)
    t = CaseRow.__table__
    with Session(engine) as session:
        query = (select(t.c.document).where(t.c.created_at < end, scope_clause(scope))
                 .execution_options(yield_per=200))
        states = (CaseState.model_validate(doc) for doc in session.execute(query).scalars())
        return reports.compute_report(states, month, timezone=timezone, now=datetime.now(UTC),
                                      country=country.upper())


async def _report(request: Request, month: str, user: StaffRow,
                  force: bool = False) -> MonthlyReportRow | dict:
    """The stored report of a finished month (computed and stored if missing), or, for the
    running month, the figures so far (not stored). A reader whose report scope is not the
    whole municipality (a manager) gets their unit's figures, computed now."""
    engine = request.app.state.engine
    country = _settings(request).country
    scope = report_scope(_actor(user))
    if not scope.everything:
        return await asyncio.to_thread(_scoped_report, engine, month, country, scope)
    if not force:
        with Session(engine) as session:
            row = session.get(MonthlyReportRow, month)
            if row is not None:
                session.expunge(row)
                return row
    data = await asyncio.to_thread(reports.build_report, engine, month, country)
    if data["complete"]:
        return await asyncio.to_thread(reports.store_report, engine, data, user.id)
    return data


def _report_reader(request: Request, month: str) -> tuple[object, Response | None]:
    """The signed-in manager who may read a month's report, or the page that says why not."""
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return None, _login_redirect(request)
    if _month_or_none(month) is None:
        return user, _error(request, user, 404, "No such month",
                            "Months are written yyyy-mm, e.g. 2026-11.")
    if not may_read_reports(_actor(user)):
        return user, _error(request, user, 403, "Managers only",
                            "The monthly report is for managers.")
    return user, None


@router.get("/reports/{month}")
async def report_page(request: Request, month: str) -> Response:
    user, refused = _report_reader(request, month)
    if refused is not None:
        return refused
    found = await _report(request, month, user)
    stored = isinstance(found, MonthlyReportRow)
    data = found.data if stored else found
    return render(request, "report_page.html.j2", user=user, nav="reports", r=data,
                  prev=_shift(month, -1), next=_shift(month, 1), has_pdf=stored and found.pdf is not None,
                  stored_at=found.generated_at if stored else None,
                  stored_by=found.generated_by if stored else None,
                  manager=report_scope(_actor(user)).everything)


@router.post("/reports/{month}")
async def recompute_report(request: Request, month: str) -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    refused = _manager_or_error(request, user)
    if refused is not None:
        return refused
    if _month_or_none(month) is None:
        return _error(request, user, 404, "No such month", "Months are written yyyy-mm, e.g. 2026-11.")
    await _report(request, month, user, force=True)
    return _back(f"/reports/{month}", ok="Report recomputed.")


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
            return _error(request, user, 404, "No PDF", "PDF rendering is not available here; use the HTML.")
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="onefamily-report-{month}.pdf"'})
    return HTMLResponse(html)
