"""The family's own JSON API (DESIGN §11): `/api/v1/family/...`, for the portal and for a
municipal app. Only a family session (api/family_auth.py) opens it: the case is always the
session's own (`Actor.case_id`), never one named in the address, and `domain.access
.family_refusal` is asked before anything is read or sent.

Reads: `GET /case` (the family view, domain/family_view.py), `/messages`, `/consents`,
`/documents`, `/documents/{id}` (HTML, or PDF with ?format=pdf), `/meetings/{ref}.ics`.
Commands (each the case workflow's Update, sent by `api.gateway.send` as every command of
api/cases.py, the family member as the actor, so the workflow's validators decide; each answers
the family view): `POST /plan/response`, `POST /focus-points`, `PUT /contact-preference`,
`POST /pause-request`, `POST /consents`, `POST /consents/{id}`, `POST /consents/{id}/revoke`.

For the pages (/family): `load_family_view(request)` and `family_command(request, name, body)`
are what these endpoints use; they raise HTTPException with the same sentences.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from email.utils import formataddr
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.gateway import live_state, send, utcnow
from api.scope import load_facts
from domain.access import family_refusal, is_family
from domain.family_view import (
    FAMILY_DOCUMENT_KINDS,
    DocumentInfo,
    MessageInfo,
    ReaderTotal,
    ReadInfo,
    StaffInfo,
    consents_view,
    family_messages,
    family_view,
    meeting_invite,
    staff_ids_of,
)
from domain.ics import build_ics
from models.case import (
    Actor,
    CaseState,
    ConsentChanges,
    FamilyResponse,
    FocusPoints,
    GiveConsent,
    LongText,
    NonBlankLabel,
    PauseRequest,
    SetContactPreference,
    Strict,
)
from models.commands import BODY_MODELS, CommandInput
from models.messaging import Recipient, RecipientRole
from models.projection import case_from_document
from models.tables import AuditRow, CaseRow, StaffRow
from models.tables_outbox import DocumentRow, NotificationRow

router = APIRouter(prefix="/api/v1/family", tags=["family"])

NOT_FAMILY = ("These are the family's own addresses: sign in as a family member at /family/login "
              "(staff read the case at /api/v1/cases/{id}).")
RECENT_READS = 50
MESSAGES = 200
# The ICS ORGANIZER: the address invitations come from (the notification service's setting).
ORGANIZER = os.environ.get("ONEFAMILY_SMTP_FROM", "OneFamily <noreply@onefamily.invalid>")
READ_ACTIONS = ("list documents", "list notifications", "decrypt")

ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"detail": d}}}}
          for s, d in ((401, "Not signed in."), (403, NOT_FAMILY),
                       (404, "Not found among your family's things."),
                       (409, "Not possible in the case's current stage."),
                       (422, "The request is not valid."))}


def family_actor(request: Request) -> Actor:
    """The signed-in family member (401 nobody, 403 staff or anyone else)."""
    actor = getattr(request.state, "principal", None)
    if actor is None:
        raise HTTPException(401, getattr(request.state, "auth_error", None)
                            or "Sign in at /family/login.")
    if not is_family(actor) or not actor.case_id or not actor.member_id:
        raise HTTPException(403, NOT_FAMILY)
    return actor


def _check(engine: Engine, actor: Actor) -> None:
    with Session(engine) as session:
        facts = load_facts(session, actor.case_id)
    if facts is None:
        raise HTTPException(404, "Your family's case cannot be found.")
    refusal = family_refusal(actor, facts)
    if refusal:
        raise HTTPException(403, refusal)


def _stored(engine: Engine, case_id: str) -> CaseState | None:
    with Session(engine) as session:
        row = session.get(CaseRow, case_id)
        return case_from_document(row.document) if row is not None else None


async def family_state(request: Request, actor: Actor) -> CaseState:
    """The family's own case, live from its workflow (the read model while the engine is
    unreachable). Audited as a read of the case."""
    engine = request.app.state.engine
    await asyncio.to_thread(_check, engine, actor)
    request.state.audit_case_ids.append(actor.case_id)
    client = request.app.state.temporal
    if client is not None:
        return await live_state(client, engine, actor.case_id)
    state = await asyncio.to_thread(_stored, engine, actor.case_id)
    if state is None:
        raise HTTPException(404, "Your family's case cannot be found.")
    return state


def _records(engine: Engine, state: CaseState) -> dict:
    """The rows the family view needs, as domain.family_view's records (one query each)."""
    case_id = state.id
    with Session(engine) as session:
        docs = session.execute(
            select(DocumentRow.id, DocumentRow.kind, DocumentRow.version, DocumentRow.language,
                   DocumentRow.created_at)
            .where(DocumentRow.case_id == case_id, DocumentRow.kind.in_(FAMILY_DOCUMENT_KINDS))).all()
        notes = session.execute(
            select(NotificationRow).where(NotificationRow.case_id == case_id,
                                          NotificationRow.recipient_role == RecipientRole.family.value)
            .order_by(NotificationRow.created_at.desc()).limit(MESSAGES)).scalars().all()
        staff_read = (AuditRow.case_id == case_id, AuditRow.outcome < 400, AuditRow.actor != "-",
                      ~AuditRow.actor.startswith("family:", autoescape=True),
                      or_(AuditRow.action.startswith("read ", autoescape=True),
                          AuditRow.action.in_(READ_ACTIONS)))
        recent = session.execute(select(AuditRow.actor, AuditRow.at, AuditRow.action).where(*staff_read)
                                 .order_by(AuditRow.id.desc()).limit(RECENT_READS)).all()
        totals = session.execute(select(AuditRow.actor, func.max(AuditRow.at), func.count())
                                 .where(*staff_read).group_by(AuditRow.actor)).all()
        ids = staff_ids_of(state) | {a for a, _, _ in totals}
        staff = {r.id: StaffInfo(r.id, r.name, r.discipline)
                 for r in session.execute(select(StaffRow).where(StaffRow.id.in_(sorted(ids)))).scalars()}
        return {
            "staff": staff,
            "documents": [DocumentInfo(*d) for d in docs],
            "messages": [MessageInfo(n.id, n.recipient_id, n.purpose, n.channel, n.status, n.created_at,
                                     n.sent_at, n.subject, n.body) for n in notes],
            "reads": [ReadInfo(a, at, action) for a, at, action in recent],
            "readers": [ReaderTotal(a, at, count) for a, at, count in totals],
        }


def build_view(engine: Engine, state: CaseState, member_id: str, now: datetime | None = None) -> dict:
    """The family view of `state` for `member_id`, with the database's rows (blocking)."""
    return family_view(state, member_id, now or utcnow(), **_records(engine, state))


async def load_family_view(request: Request, actor: Actor | None = None) -> dict:
    """What `GET /api/v1/family/case` answers (the pages render the same dict)."""
    actor = actor or family_actor(request)
    state = await family_state(request, actor)
    return await asyncio.to_thread(build_view, request.app.state.engine, state, actor.member_id)


async def family_command(request: Request, name: str, body: dict | None,
                         idempotency_key: str | None = None, actor: Actor | None = None,
                         expected_version: int | None = None) -> dict:
    """Send one of the family's commands to its case (the workflow decides: 403 / 409 / 422
    with its sentence) and answer the family view of the new state."""
    actor = actor or family_actor(request)
    client = request.app.state.temporal
    if client is None:
        raise HTTPException(503, "The case engine (Temporal) is not reachable yet; try again shortly.")
    if name not in BODY_MODELS:
        raise HTTPException(501, "This is not possible on this server yet.")
    engine = request.app.state.engine
    await asyncio.to_thread(_check, engine, actor)
    request.state.audit_case_ids.append(actor.case_id)
    update_id = f"{actor.id}:{idempotency_key}" if idempotency_key else None  # the caller's key
    if name in ("give_consent", "change_consent"):  # a department of the directory is known
        from api.consents import consent_input

        def with_departments() -> CommandInput:
            with Session(engine) as session:
                return consent_input(session, actor, body or {})

        inp = await asyncio.to_thread(with_departments)
    else:
        inp = CommandInput(actor=actor, body=body)
    inp.expected_version = expected_version  # the page's case version: a stale page applies nothing
    state = await send(client, engine, actor.case_id, name, inp, update_id)
    return await asyncio.to_thread(build_view, engine, state, actor.member_id)


# The header is `Idempotency-Key` (DESIGN §5); a parameter named `key` alone would read a
# header called "key", and every key a client sent would be ignored.
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


def _dump(model) -> dict:
    return model.model_dump(mode="json", exclude_none=True)


# ---------------------------------------------------------------- reads


@router.get("/case", responses=ERRORS)
async def get_family_case(request: Request) -> dict:
    """The family view: who has the ball and what happens next, the plan, the coming meetings,
    the documents and messages meant for the family, its consents, contact preference, focus
    points, requests for a pause, and who of the staff read the case and when."""
    return await load_family_view(request)


@router.get("/messages", responses=ERRORS)
async def get_family_messages(request: Request) -> dict:
    actor = family_actor(request)
    state = await family_state(request, actor)
    records = await asyncio.to_thread(_records, request.app.state.engine, state)
    items = family_messages(state, actor.member_id, records["messages"])
    return {"items": items, "total": len(items)}


@router.get("/consents", responses=ERRORS)
async def get_family_consents(request: Request) -> dict:
    actor = family_actor(request)
    state = await family_state(request, actor)
    records = await asyncio.to_thread(_records, request.app.state.engine, state)
    items = consents_view(state, actor.member_id, records["staff"])
    return {"items": items, "total": len(items)}


@router.get("/documents", responses=ERRORS)
async def get_family_documents(request: Request) -> dict:
    view = await load_family_view(request)
    return {"items": view["documents"], "total": len(view["documents"])}


@router.get(
    "/documents/{doc_id}", response_class=HTMLResponse,
    responses={**ERRORS, 200: {"content": {"text/html": {}, "application/pdf": {}},
                               "description": "The document: HTML, or PDF with ?format=pdf."}},
)
def get_family_document(doc_id: str, request: Request, format: Literal["html", "pdf"] | None = None,  # noqa: A002
                        accept: Annotated[str | None, Header(max_length=1000)] = None) -> Response:
    """One of the family's documents (plan decisions, minutes, the closing summary); the
    team's internal documents are not among them."""
    actor = family_actor(request)
    _check(request.app.state.engine, actor)
    request.state.audit_case_ids.append(actor.case_id)
    with Session(request.app.state.engine) as session:
        row = session.get(DocumentRow, doc_id) if 0 < len(doc_id) <= 200 and doc_id.isprintable() else None
        if row is None or row.case_id != actor.case_id or row.kind not in FAMILY_DOCUMENT_KINDS:
            raise HTTPException(404, "Your family has no document with this id.")
        headers = {"ETag": f'"{row.content_hash}"', "Cache-Control": "private, no-store"}
        if format == "pdf" or (format is None and "application/pdf" in (accept or "").lower()):
            name = f"{row.kind}-v{row.version}-{row.language}.pdf"
            headers["Content-Disposition"] = f'inline; filename="{name}"'
            return Response(row.pdf, media_type="application/pdf", headers=headers)
        return HTMLResponse(row.html, headers=headers)


def _organizer(engine: Engine, staff_id: str | None) -> str:
    """The ORGANIZER of the calendar file: the case's coordinator, as in the invitation."""
    if staff_id:
        with Session(engine) as session:
            row = session.get(StaffRow, staff_id)
        if row is not None and row.email:
            return formataddr((row.name or "", row.email))
    return ORGANIZER


@router.get("/meetings/{ref}.ics", responses={**ERRORS, 200: {"content": {"text/calendar": {}}}})
async def get_meeting_calendar(ref: str, request: Request) -> Response:
    """A coming meeting (`assessment`, or a status meeting's number) as a calendar file: the
    same UID and SEQUENCE as the invitation, so calendars keep one entry."""
    actor = family_actor(request)
    state = await family_state(request, actor)
    invite = meeting_invite(state, ref[:20])
    if invite is None:
        raise HTTPException(404, "Your family has no coming meeting with this number.")
    me = next((m for m in state.family.members if m.id == actor.member_id), None)
    attendee = (Recipient(role=RecipientRole.family, id=actor.id, name=me.name, email=me.email)
                if me is not None and me.email else None)
    organizer = await asyncio.to_thread(_organizer, request.app.state.engine, invite.organizer_id)
    text = build_ics(invite, organizer, attendee, utcnow())
    return Response(text, media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="meeting-{ref[:20]}.ics"',
                             "Cache-Control": "private, no-store"})


# ---------------------------------------------------------------- commands


class FamilyConsentIn(GiveConsent):
    """A consent the family gives in the portal; it is given by the signed-in member."""

    member_id: NonBlankLabel | None = None


class RevokeIn(Strict):
    reason: LongText = ""


@router.post("/plan/response", responses=ERRORS)
async def respond_to_plan(body: FamilyResponse, request: Request, key: IdempotencyKey = None) -> dict:
    """Approve or reject the plan version waiting for the family, with a comment: the same
    command as the coordinator's `plan/family-response`, the family member as the actor."""
    return await family_command(request, "family_response", _dump(body), key)


@router.post("/focus-points", responses=ERRORS)
async def write_focus_points(body: FocusPoints, request: Request, key: IdempotencyKey = None) -> dict:
    """What the family wants to talk about at the next meeting (the coordinator is told)."""
    return await family_command(request, "family_focus_points", _dump(body), key)


@router.put("/contact-preference", responses=ERRORS)
async def set_contact_preference(body: SetContactPreference, request: Request,
                                 key: IdempotencyKey = None) -> dict:
    return await family_command(request, "set_contact_preference", _dump(body), key)


@router.post("/pause-request", responses=ERRORS)
async def request_pause(body: PauseRequest, request: Request, key: IdempotencyKey = None) -> dict:
    """Ask for a break (the coordinator is told and decides)."""
    return await family_command(request, "request_pause", _dump(body), key)


@router.post("/consents", status_code=201, responses=ERRORS)
async def give_consent(body: FamilyConsentIn, request: Request, key: IdempotencyKey = None) -> dict:
    """Give a consent: which professionals (`staff_ids`) or departments may see the case (and
    its documents), until `expires_at`."""
    actor = family_actor(request)
    if body.member_id not in (None, actor.member_id):
        raise HTTPException(422, f"You give consent as yourself ({actor.member_id}); leave member_id out.")
    data = _dump(body) | {"member_id": actor.member_id}
    return await family_command(request, "give_consent", data, key, actor)


@router.post("/consents/{consent_id}", responses=ERRORS)
async def change_consent(consent_id: str, body: ConsentChanges, request: Request,
                         key: IdempotencyKey = None) -> dict:
    """Narrow or extend a consent: each field given replaces the consent's."""
    return await family_command(request, "change_consent", {"consent_id": consent_id[:200], **_dump(body)},
                                key)


@router.post("/consents/{consent_id}/revoke", responses=ERRORS)
async def revoke_consent(consent_id: str, request: Request, key: IdempotencyKey = None,
                         body: Annotated[RevokeIn | None, Body()] = None) -> dict:
    """Withdraw a consent at once: whom it covered sees nothing of the case from the next read."""
    data = {"consent_id": consent_id[:200], **(_dump(body) if body else {})}
    return await family_command(request, "revoke_consent", data, key)
