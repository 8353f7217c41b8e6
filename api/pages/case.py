"""One case: the case page, its documents, and the manager actions (reassign, nudge,
acknowledge) as POST forms that redirect back."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session

from activities import report as reports
from api import dashboard, watch
from api.deps import Caller
from api.pages.common import (
    actor_of,
    back,
    case_facts,
    catch_up,
    current_user,
    error_page,
    load_case,
    login_redirect,
    manager_or_error,
    render,
    settings_of,
    staff_names,
    table_exists,
    valid_case_id,
)
from api.policy import latest_policy
from domain.access import (
    facts_from_state,
    may_manage_case,
    may_see_duplicates,
    read_refusal,
    report_scope,
)
from models.case import AssignCoordinator, CaseState
from models.tables import CaseRow, StaffRow
from models.tables_reporting import StuckAckRow, StuckNudgeRow

router = APIRouter(include_in_schema=False)


def _temporal_url(request: Request, case_id: str) -> str:
    settings = settings_of(request)
    base = os.environ.get("ONEFAMILY_TEMPORAL_UI_URL") or f"http://127.0.0.1:{settings.temporal_ui_port}"
    return (f"{base.rstrip('/')}/namespaces/{quote(settings.temporal_namespace)}"
            f"/workflows/case-{case_id}")


def _documents(request: Request, session: Session, case_id: str) -> list | None:
    try:
        from models.tables_outbox import DocumentRow
    except ImportError:
        return None
    if not hasattr(DocumentRow, "__table__") or not table_exists(request, "documents"):
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
    if not hasattr(NotificationRow, "__table__") or not table_exists(request, "notifications"):
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
        return login_redirect(request)
    if not valid_case_id(case_id):
        return error_page(request, user, 404, "No such case", "Case ids are UUIDs.")
    actor = actor_of(user)
    facts = await asyncio.to_thread(case_facts, request, case_id)
    state = live = None
    if facts is None:  # not in the read model (yet): the workflow knows, or nobody does
        state, live = await load_case(request, case_id)
        if state is None:
            return error_page(request, user, 404, "No such case", f"There is no case {case_id}.")
        facts = facts_from_state(state)
    refusal = read_refusal(actor, facts)
    if refusal:
        return error_page(request, user, 403, "Not your case", refusal)
    if state is None:
        state, live = await load_case(request, case_id)
        if state is None:
            return error_page(request, user, 404, "No such case", f"There is no case {case_id}.")
    await catch_up(request)
    from api.views import case_view

    now = watch.utcnow()
    c = case_view(state, now, may_see_duplicates(actor, facts))
    manager = may_manage_case(actor, facts)
    with Session(request.app.state.engine) as session:
        staff = staff_names(session)
        reasons = dashboard.case_reasons(session, now, case_id)
        recipients, default = _nudge_recipients(session, state, staff, reasons)
        cap = latest_policy(session, settings_of(request).country).caseload_cap
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
        return login_redirect(request)
    if not valid_case_id(case_id):
        return error_page(request, user, 404, "No such document", "Case ids are UUIDs.")
    facts = await asyncio.to_thread(case_facts, request, case_id)
    if facts is None:
        state, _ = await load_case(request, case_id)
        facts = case_facts(request, case_id, state) if state is not None else None
    if facts is None or read_refusal(actor_of(user), facts):
        return error_page(request, user, 404 if facts is None else 403, "No such document",
                      "There is no such document, or you do not work on this case.")
    try:
        from models.tables_outbox import DocumentRow
    except ImportError:
        return error_page(request, user, 404, "No such document", "No document store here.")
    with Session(request.app.state.engine) as session:
        row = session.get(DocumentRow, doc_id)
        if row is None or row.case_id != case_id:
            return error_page(request, user, 404, "No such document", "There is no such document.")
        if format == "pdf":
            filename = f"{row.kind}-v{row.version}.pdf"
            return Response(row.pdf, media_type="application/pdf",
                            headers={"Content-Disposition": f'inline; filename="{filename}"'})
        return HTMLResponse(row.html)



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
        refused = manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        page = f"/cases/{case_id}"
        client = getattr(request.app.state, "temporal", None)
        if client is None:
            return back(page, error="The case engine (Temporal) is not reachable; try again shortly.")
        try:
            body = AssignCoordinator(coordinator_id=coordinator_id, override=override)
        except ValidationError:
            return back(page, error="Choose a coordinator.")
        cmd = await get_commands(caller=Caller(request=request, session=session), session=session,
                                 client=client, engine=request.app.state.engine,
                                 settings=settings_of(request), idempotency_key=None)
        try:
            result = await assign_coordinator(case_id, body, cmd)
        except HTTPException as error:
            request.state.audit_outcome = error.status_code  # the command's, not the redirect's
            return back(page, error=str(error.detail))
        name = staff_names(Session(request.app.state.engine)).get(result["coordinator_id"], coordinator_id)
        return back(page, ok=f"{name} is now the coordinator.")
    finally:
        session.close()


@router.post("/cases/{case_id}/nudge")
async def nudge(request: Request, case_id: str,
                recipient_id: Annotated[str, Form(max_length=64)],
                message: Annotated[str, Form(max_length=1000)] = "",
                kind: Annotated[str, Form(max_length=64)] = "") -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        refused = manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        if not valid_case_id(case_id) or session.get(CaseRow, case_id) is None:
            return error_page(request, user, 404, "No such case", f"There is no case {case_id}.")
        if session.get(StaffRow, recipient_id) is None:
            return back(f"/cases/{case_id}", error=f"Unknown staff id '{recipient_id}'.")
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
    return back(f"/cases/{case_id}", ok=f"Nudge to {recipient_id} {where}.")


@router.post("/cases/{case_id}/acknowledge")
async def acknowledge(request: Request, case_id: str,
                      kind: Annotated[str, Form(max_length=64)],
                      since: Annotated[str, Form(max_length=64)],
                      note: Annotated[str, Form(max_length=500)] = "") -> Response:
    await catch_up(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        refused = manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        if not valid_case_id(case_id):
            return error_page(request, user, 404, "No such case", "Case ids are UUIDs.")
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            return back(f"/cases/{case_id}", error="That reason is not valid.")
        reasons = dashboard.case_reasons(session, watch.utcnow(), case_id)
        match = next((r for r in reasons if r["kind"] == kind and r["since"] == when), None)
        if match is None:
            return back(f"/cases/{case_id}", error=f"'{kind}' no longer holds for this case.")
        if match["acknowledged"]:
            return back(f"/cases/{case_id}", ok=f"'{kind}' was already acknowledged.")
    await asyncio.to_thread(watch.acknowledge, request.app.state.engine, case_id, kind, match["since"],
                            user.id, note.strip())
    return back(f"/cases/{case_id}", ok=f"'{kind}' acknowledged.")


# ---------------------------------------------------------------- monthly reports
