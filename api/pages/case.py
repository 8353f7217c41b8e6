"""One case: the case page (`case_page_response`, also the page a refused form is shown
again on), its documents, and the manager's nudge and acknowledge as POST forms that redirect
back. Assigning / reassigning the coordinator is the assign_coordinator form
(api/pages/case_commands.py); the command forms are templates/pages/case/forms/."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from functools import partial
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlmodel import Session

from activities import report as reports
from api import dashboard, watch
from api.pages import family_staff, i18n
from api.pages.common import (
    PAGES,
    FormState,
    actor_of,
    back,
    case_facts,
    catch_up,
    current_user,
    error_page,
    language_of,
    load_case,
    login_redirect,
    manager_or_error,
    render,
    settings_of,
    staff_names,
    table_exists,
    timezone_of,
    valid_case_id,
)
from api.policy import latest_policy
from domain import timeline
from domain.access import (
    facts_from_state,
    may_manage_case,
    may_see_duplicates,
    read_refusal,
    report_scope,
)
from domain.outcomes import summary as outcome_summary
from domain.workbench import available_commands, ordered
from models.case import CaseState
from models.tables import CaseRow, StaffRow
from models.tables_reporting import StuckAckRow, StuckNudgeRow

router = APIRouter(include_in_schema=False)
FORMS = PAGES / "case" / "forms"  # the command forms' partials (one per Update name)


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


def _directory(session: Session) -> list[StaffRow]:
    rows = list(session.execute(select(StaffRow).where(StaffRow.active)
                                .order_by(StaffRow.name)).scalars())
    for row in rows:
        session.expunge(row)
    return rows


def _messages(rows: list | None, say, names: dict[str, str]) -> list[dict] | None:
    """The outbox rows about the case in words: purpose, to whom, channel, status, when."""
    if rows is None:
        return None
    out = []
    for n in rows:
        m = n._mapping
        recipient = m.get("recipient_id") or ""
        role = m.get("recipient_role") or ""
        if recipient.startswith("role:") or not recipient:
            to = say(timeline.owner(recipient.removeprefix("role:") or role, names))
        elif role == "family" or recipient.startswith("family"):
            to = say(timeline.Term("timeline.owner.family"))
        else:
            to = names.get(recipient, recipient)
        status = m.get("status") or ""
        out.append({"id": m.get("id"), "purpose": say(timeline.purpose(m.get("purpose") or "")),
                    "to": to, "role": say(timeline.role(role)) if role else "",
                    "channel": say(timeline.channel(m.get("channel"))),
                    "status": status, "status_text": say(timeline.message_status(status)),
                    "at": m.get("sent_at") or m.get("created_at")})
    return out


def speaker(request: Request, lang: str):
    """`say(term)`: a `domain.timeline.Term` as a sentence in `lang`, dates in the
    municipality's time zone."""
    tz = timezone_of(request)
    return partial(timeline.render, translate=partial(i18n.translate, lang),
                   when=lambda at: i18n.format_datetime(lang, at, tz),
                   day=lambda at: i18n.format_date(lang, at, tz))


@router.get("/cases/{case_id}")
async def case_page(request: Request, case_id: str) -> Response:
    return await case_page_response(request, case_id)


async def case_page_response(request: Request, case_id: str,
                             form_state: FormState | None = None) -> Response:
    """The case page (DESIGN §10): what the case waits for and who has the ball, its
    deadlines, family, team, plan, timeline, documents and messages, then the forms this
    reader may use now (`domain.workbench.available_commands`). A refused form is shown again
    with `form_state` (what was typed, the API's sentence; on a stale page what changed
    since it was loaded) and the refusal's status."""
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return login_redirect(request)
    lang = language_of(request, user)

    def tr(key: str, **values: object) -> str:
        return i18n.translate(lang, key, **values)

    if not valid_case_id(case_id):
        return error_page(request, user, 404, tr("case.error.no_case"), tr("case.error.bad_id"))
    actor = actor_of(user)
    facts = await asyncio.to_thread(case_facts, request, case_id)
    state = live = None
    if facts is None:  # not in the read model (yet): the workflow knows, or nobody does
        state, live = await load_case(request, case_id)
        if state is None:
            return error_page(request, user, 404, tr("case.error.no_case"), tr("case.error.unknown"))
        facts = facts_from_state(state)
    refusal = read_refusal(actor, facts)
    if refusal:
        return error_page(request, user, 403, tr("case.error.not_yours"), refusal)
    if state is None:
        state, live = await load_case(request, case_id)
        if state is None:
            return error_page(request, user, 404, tr("case.error.no_case"), tr("case.error.unknown"))
    await catch_up(request)
    from api.views import case_view

    now = watch.utcnow()
    say = speaker(request, lang)
    c = case_view(state, now, may_see_duplicates(actor, facts))
    allowed = available_commands(state, actor, now=now, facts=facts)
    manager = may_manage_case(actor, facts)
    with Session(request.app.state.engine) as session:
        names = staff_names(session)
        directory = _directory(session)
        reasons = dashboard.case_reasons(session, now, case_id)
        cap = latest_policy(session, settings_of(request).country).caseload_cap
        may_assign = "assign_coordinator" in allowed and (manager or "admin" in actor.roles
                                                          or "manager" in actor.roles)
        coordinators = (dashboard.caseload(session, cap, report_scope(actor))
                        if manager or may_assign else [])
        recipients, default = (_nudge_recipients(session, state, names, reasons) if manager
                               else ([], None))
        documents = _documents(request, session, case_id)
        messages = _messages(_notifications(request, session, case_id), say, names)
        nudges = session.execute(select(StuckNudgeRow).where(StuckNudgeRow.case_id == case_id)
                                 .order_by(StuckNudgeRow.sent_at.desc())).scalars().all() if manager else []
        acks = [{"acked_at": a.acked_at, "acked_by": a.acked_by, "note": a.note,
                 "text": say(timeline.reason(a.kind))}
                for a in session.execute(select(StuckAckRow).where(StuckAckRow.case_id == case_id)
                                         .order_by(StuckAckRow.acked_at.desc())).scalars()
                ] if manager else []
        from api.pages.meetings import newer_policy_versions  # the status meeting's policy move (H3)
        policy_versions = newer_policy_versions(session, state) if "status_meeting" in allowed else []
    if form_state is not None and form_state.stale:
        form_state.changes = [say(t) for t in timeline.changes_since(state, form_state.loaded_at, names)]
    ball = timeline.ball(state, names, now)
    plan = state.plan
    ctx = dict(
        user=user, lang=lang, nav="cases", c=c, state=state, case_id=case_id, version=state.version,
        policy=state.policy, directory=directory, allowed=allowed, allowed_ordered=ordered(allowed),
        form_links=[n for n in ordered(allowed) if (FORMS / f"{n}.html.j2").exists()],
        form_state=form_state, now=now, live=live, names=names, say=say,
        ball=ball and {"what": say(ball.what), "owner": _owner_text(say, ball.owner),
                       "since": say(ball.since),
                       "next": say(ball.next) if ball.next else None, "overdue": ball.overdue},
        deadlines=[{"d": d, "status": status, "text": say(line),
                    "owner": _owner_text(say, timeline.owner(d.owner or state.coordinator_id, names, state))}
                   for d, status, line in timeline.deadlines(state, now)],
        history=[{"at": h.at, "text": say(timeline.entry(h, names, state)), "event": h.event}
                 for h in reversed(state.history)],
        plan=plan, active_plan=state.active_plan,
        # Outcome measures, first -> latest per instrument and informant (DESIGN §3.8).
        outcomes=outcome_summary(state.policy.outcome_instruments, state.outcome_measurements),
        goals={g.id: g.text for g in plan.goals} if plan else {},
        today=now.date(),
        last_contact=max((x.at for x in state.contacts), default=None),
        documents=documents, messages=messages,
        reasons=[{**r, "text": say(timeline.reason(r["kind"])),
                  "owner_text": _owner_text(say, timeline.owner(r["owner"], names, state))}
                 for r in reasons],
        manager=manager, cap=cap, coordinators=coordinators,
        nudge_recipients=recipients, nudge_default=default, nudges=nudges, acks=acks,
        temporal_url=_temporal_url(request, case_id),
        # A refused form no longer offered (the case moved on), or without a partial: its
        # refusal is shown at the top instead of next to the form.
        refused_elsewhere=form_state is not None and (
            form_state.form not in allowed or not (FORMS / f"{form_state.form}.html.j2").exists()),
        policy_versions=policy_versions,
        fs=family_staff.page_context(request, case_id, state, allowed, lang, now),  # consents (H9)
    )
    return render(request, "case.html.j2", status=form_state.status if form_state else 200, **ctx)


def _owner_text(say, owner: object) -> str:
    if isinstance(owner, list):
        return ", ".join(str(say(o)) if isinstance(o, timeline.Term) else str(o) for o in owner)
    return say(owner) if isinstance(owner, timeline.Term) else str(owner)


@router.get("/cases/{case_id}/documents/{doc_id}")
async def case_document(request: Request, case_id: str, doc_id: str, format: str = "html") -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return login_redirect(request)
    lang = language_of(request, user)

    def tr(key: str) -> str:
        return i18n.translate(lang, key)

    if not valid_case_id(case_id):
        return error_page(request, user, 404, tr("case.error.no_document"), tr("case.error.bad_id"))
    facts = await asyncio.to_thread(case_facts, request, case_id)
    if facts is None:
        state, _ = await load_case(request, case_id)
        facts = case_facts(request, case_id, state) if state is not None else None
    if facts is None or read_refusal(actor_of(user), facts):
        return error_page(request, user, 404 if facts is None else 403,
                          tr("case.error.no_document"), tr("case.error.document_refused"))
    try:
        from models.tables_outbox import DocumentRow
    except ImportError:
        return error_page(request, user, 404, tr("case.error.no_document"),
                          tr("case.documents.no_store"))
    with Session(request.app.state.engine) as session:
        row = session.get(DocumentRow, doc_id)
        if row is None or row.case_id != case_id:
            return error_page(request, user, 404, tr("case.error.no_document"),
                              tr("case.error.unknown_document"))
        if format == "pdf":
            filename = f"{row.kind}-v{row.version}.pdf"
            return Response(row.pdf, media_type="application/pdf",
                            headers={"Content-Disposition": f'inline; filename="{filename}"'})
        return HTMLResponse(row.html)



def _nudge_sent(session: Session, key: str) -> bool:
    """Is there an in-app message with this key already (the outbox, when installed)?"""
    try:
        from models.tables_outbox import NotificationRow
    except ImportError:
        return False
    table = NotificationRow.__table__
    try:
        return session.execute(select(table.c.id).where(table.c.key == key)).first() is not None
    except Exception:  # noqa: BLE001 - no outbox table in this installation: nothing was sent
        session.rollback()
        return False


@router.post("/cases/{case_id}/nudge")
async def nudge(request: Request, case_id: str,
                recipient_id: Annotated[str, Form(max_length=64)],
                message: Annotated[str, Form(max_length=1000)] = "",
                kind: Annotated[str, Form(max_length=64)] = "",
                idempotency_key: Annotated[str, Form(max_length=64)] = "") -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        refused = manager_or_error(request, user, case_id)
        if refused is not None:
            return refused
        lang = language_of(request, user)
        if not valid_case_id(case_id) or session.get(CaseRow, case_id) is None:
            return error_page(request, user, 404, i18n.translate(lang, "case.error.no_case"),
                              i18n.translate(lang, "case.error.unknown"))
        recipient = session.get(StaffRow, recipient_id)
        if recipient is None:
            return back(f"/cases/{case_id}", error=i18n.translate(lang, "case.flash.unknown_staff"))
        recipient_name = recipient.name
        # The form's key (one per form shown): a second submit of the same form (a retry after
        # a lost answer, a double click) is the first nudge, not another message.
        if idempotency_key and _nudge_sent(session, f"nudge-form:{user.id}:{idempotency_key}"):
            return back(f"/cases/{case_id}", ok=i18n.translate(lang, "case.flash.nudge_sent",
                                                               name=recipient_name))
        text = message.strip() or i18n.translate(lang, "case.nudge.plain")
        row = StuckNudgeRow(case_id=case_id, kind=kind or None, recipient_id=recipient_id, sent_by=user.id,
                            sent_at=datetime.now(UTC), message=text)
        session.add(row)
        session.commit()
        session.refresh(row)
        case_row = session.get(CaseRow, case_id)
        role = "coordinator" if case_row.coordinator_id == recipient_id else "team"
        nudge_id, sender, sender_id = row.id, user.name, user.id
    notification = await asyncio.to_thread(
        reports.notify_in_app, request.app.state.engine,
        key=f"nudge-form:{sender_id}:{idempotency_key}" if idempotency_key else f"nudge:{nudge_id}",
        case_id=case_id,
        recipient_id=recipient_id, recipient_role=role, purpose="manager_nudge",
        subject=f"{sender} asks you to look at a case",
        body=f"{text}\n\n/cases/{case_id}",
    )
    if notification:
        with Session(request.app.state.engine) as session:
            row = session.get(StuckNudgeRow, nudge_id)
            row.notification_id = notification
            session.commit()
    sent = "case.flash.nudge_sent" if notification else "case.flash.nudge_recorded"
    return back(f"/cases/{case_id}", ok=i18n.translate(lang, sent, name=recipient_name))


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
        lang = language_of(request, user)
        if not valid_case_id(case_id):
            return error_page(request, user, 404, i18n.translate(lang, "case.error.no_case"),
                              i18n.translate(lang, "case.error.bad_id"))
        what = speaker(request, lang)(timeline.reason(kind))
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            return back(f"/cases/{case_id}", error=i18n.translate(lang, "case.flash.bad_reason"))
        reasons = dashboard.case_reasons(session, watch.utcnow(), case_id)
        match = next((r for r in reasons if r["kind"] == kind and r["since"] == when), None)
        if match is None:
            return back(f"/cases/{case_id}",
                        error=i18n.translate(lang, "case.flash.reason_gone", what=what))
        if match["acknowledged"]:
            return back(f"/cases/{case_id}",
                        ok=i18n.translate(lang, "case.flash.already_acknowledged", what=what))
    await asyncio.to_thread(watch.acknowledge, request.app.state.engine, case_id, kind, match["since"],
                            user.id, note.strip())
    return back(f"/cases/{case_id}", ok=i18n.translate(lang, "case.flash.acknowledged", what=what))


# ---------------------------------------------------------------- monthly reports
