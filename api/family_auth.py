"""How a family gets in (DESIGN §11, docs/family.md): invitations with a one-time sign-in link,
one-time codes to the contact on file, national eID through an OpenID Connect broker, and the
family session they start (DESIGN §9's rules: api/sessions.py).

Staff (JSON, `/api/v1/cases/{id}/family/invitations`): the case's coordinator, the unit's
manager or admin (`domain.access.invite_refusal`) invites a member by SMS or e-mail; the
message goes out through the notification service (the outbox, then SMTP or the SMS gateway)
by a small workflow of its own (workflows/family_messages.py): the API never sends mail.

The family (`/family/...`, outside /api/ because nobody is signed in yet):
- `GET /family/welcome?token=…` only SHOWS a page with a button; `POST /family/welcome`
  (form field or JSON `token`) spends the link and starts the session. A GET never spends it,
  so the link scanners of mail clients and the previews of chat apps cannot burn it.
- `GET /family/login` asks for the phone number or e-mail address on file; `POST /family/login`
  (`contact`) sends a 6-digit code (10 minutes, 5 tries) and answers the same whether or not the
  contact is known; `POST /family/login/code` (`contact`, `code`) signs in. Staff login's
  throttling (api/credentials.py) guards both: 5 per 15 minutes per contact (a keyed hash of
  what was typed), 20 per address, then 429 with Retry-After.
- `GET /family/oidc/login` (or POST from the welcome page, with the link's token) sends the
  browser to the eID broker (code + PKCE + state + nonce, like the staff's OIDC); the callback
  matches the verified identifier (ONEFAMILY_FAMILY_OIDC_IDENTIFIER_CLAIM) by its keyed hash.
  It is linked to the member at the first eID sign-in that starts from an invitation link, or
  from a family session (`POST /family/oidc/login` while signed in).
- `POST /family/logout`.
Every one of them answers JSON (`{"principal", "csrf_token"}` or `{"detail"}`) to a JSON body
or `Accept: application/json`, and for a browser form a redirect to `/family` (or a minimal
page: the portal's pages are api/pages').

Functions for the pages and for the consent rules: `consume_invitation`, `request_code` +
`send_code` (after the answer), `verify_code`, `begin_family_session`, `cancel_invitations`,
`revoke_family_access`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, Literal

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import update
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.cases import Cmd
from api.credentials import clear_failures, record_failure, sha256, throttled, utcnow
from api.gateway import live_state
from api.sessions import COOKIE, end_family_sessions, end_session, live_session, start_session
from domain import access
from models.case import CaseState, FamilyMember, MemberRole, Stage
from models.family_messages import FamilyMessageInput
from models.messaging import Channel, NotificationRequest, Recipient, RecipientRole, notification_key
from models.tables import CaseRow, StaffRow
from models.tables_family import (
    FamilyIdentityRow,
    FamilyInvitationRow,
    FamilySignInCodeRow,
    code_hash,
    code_hashes,
    contact_hashes,
    eid_hashes,
    normalise_contact,
    normalise_email,
    normalise_phone,
    withdraw_invitations,
)
from models.tables_outbox import NotificationRow
from settings import Settings
from workflows.family_messages import workflow_id as message_workflow_id

log = logging.getLogger("onefamily.family")

PORTAL = "/family"
INVITATION_PURPOSE = "family_invitation"
CODE_PURPOSE = "family_sign_in_code"
INVITABLE_ROLES = (MemberRole.parent, MemberRole.other)
MESSAGE_WORKFLOW = "FamilySignInMessage"

LINK_UNKNOWN = "This sign-in link is not valid. Open the link from your message exactly as it came."
LINK_USED = ("This sign-in link has already been used: each link works once. Sign in with a code "
             "sent to your phone or e-mail instead, or ask your family coordinator for a new link.")
LINK_EXPIRED = ("This sign-in link has expired. Sign in with a code sent to your phone or e-mail, "
                "or ask your family coordinator for a new link.")
LINK_CANCELLED = "This sign-in link was withdrawn. Ask your family coordinator for a new link."
CODE_SENT = ("If this phone number or e-mail address is on file with your family's case, a "
             "sign-in code is on its way to it. The code is valid for {minutes} minutes.")
WRONG_CODE = ("This code is wrong or no longer valid (a code lasts {minutes} minutes and allows "
              "{tries} tries). Check it, or ask for a new code.")
NOT_A_CONTACT = "Type the mobile phone number or the e-mail address your family coordinator has on file."
TOO_MANY = "Too many attempts. Wait a few minutes and try again."


class FamilySignInError(Exception):
    """A refused sign-in: `status` and a sentence for the family."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _public_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return (settings.public_url or str(request.base_url)).rstrip("/")


def _language(state: CaseState) -> str:
    return state.family.language or state.policy.default_language


def member_contact(member: FamilyMember, channel: str, country: str) -> str | None:
    """The member's contact on file for `channel`, normalised; None when there is none."""
    if channel == "email":
        return normalise_email(member.email) if member.email else None
    return normalise_phone(member.phone, country) if member.phone else None


# ---------------------------------------------------------------- invitations (tables)


def create_invitation(session: Session, case_id: str, member_id: str, channel: str, created_by: str,
                      hours: int) -> tuple[FamilyInvitationRow, str]:
    """A new invitation (earlier pending ones of the member are cancelled: one live link per
    person). Returns the row and the token for the link; only the token's hash is stored."""
    now = utcnow()
    cancel_invitations(session, case_id, member_id, commit=False)
    token = secrets.token_urlsafe(32)
    row = FamilyInvitationRow(id=secrets.token_hex(8), case_id=case_id, member_id=member_id,
                              channel=channel, secret_hash=sha256(token), created_at=now,
                              created_by=created_by, expires_at=now + timedelta(hours=hours))
    row.message_key = notification_key(case_id, INVITATION_PURPOSE, f"family:{member_id}", row.id)
    session.add(row)
    return row, token


def cancel_invitations(session: Session, case_id: str, member_id: str | None = None, *,
                       commit: bool = True) -> int:
    """Withdraw a case's pending invitations (of one member, or all) and spend its unused
    sign-in codes (models/tables_family.py; the consent rules may call that one directly)."""
    count = withdraw_invitations(session, case_id, member_id, utcnow())
    if commit:
        session.commit()
    return count


def revoke_family_access(session: Session, case_id: str, member_id: str | None = None) -> None:
    """A member (or the whole family) loses the portal at once: invitations withdrawn, codes
    spent, linked contacts and eIDs forgotten, sessions ended. Commits."""
    cancel_invitations(session, case_id, member_id, commit=False)
    query = update(FamilyIdentityRow).where(FamilyIdentityRow.case_id == case_id,
                                            FamilyIdentityRow.revoked_at.is_(None))
    if member_id is not None:
        query = query.where(FamilyIdentityRow.member_id == member_id)
    session.execute(query.values(revoked_at=utcnow()))
    end_family_sessions(session, case_id, member_id)
    session.commit()


def invitation_status(row: FamilyInvitationRow, now: datetime | None = None) -> str:
    now = now or utcnow()
    if row.used_at is not None:
        return "used"
    if row.cancelled_at is not None:
        return "cancelled"
    if _aware(row.expires_at) <= now:
        return "expired"
    return "pending"


def invitation_out(row: FamilyInvitationRow, delivery: NotificationRow | None = None) -> dict:
    return {
        "id": row.id, "case_id": row.case_id, "member_id": row.member_id, "channel": row.channel,
        "status": invitation_status(row), "created_at": row.created_at, "created_by": row.created_by,
        "expires_at": row.expires_at, "used_at": row.used_at, "cancelled_at": row.cancelled_at,
        "message": {"key": row.message_key, "purpose": INVITATION_PURPOSE,
                    "status": delivery.status if delivery else "queued",
                    "channel": delivery.channel if delivery else row.channel,
                    "sent_at": delivery.sent_at if delivery else None},
    }


def remember_contact(session: Session, kind: str, identifier_hash: str, case_id: str,
                     member_id: str) -> None:
    """Link an identifier (a contact's or an eID's keyed hash) to a member; idempotent."""
    row = session.exec(select(FamilyIdentityRow).where(
        FamilyIdentityRow.kind == kind, FamilyIdentityRow.identifier_hash == identifier_hash,
        FamilyIdentityRow.case_id == case_id, FamilyIdentityRow.member_id == member_id)).first()
    if row is None:
        session.add(FamilyIdentityRow(kind=kind, identifier_hash=identifier_hash, case_id=case_id,
                                      member_id=member_id, created_at=utcnow()))
    elif row.revoked_at is not None:
        row.revoked_at, row.created_at = None, utcnow()
        session.add(row)


def find_invitation(session: Session, token: str, *, hashed: bool = False) -> FamilyInvitationRow | None:
    """The invitation of a link's token (or of its hash), whatever its state."""
    if not token or len(token) > 200:
        return None
    return session.exec(select(FamilyInvitationRow).where(
        FamilyInvitationRow.secret_hash == (token if hashed else sha256(token)))).first()


def link_refusal(row: FamilyInvitationRow | None) -> FamilySignInError | None:
    """Why this link signs nobody in (400 unknown, 410 used / expired / withdrawn), or None."""
    if row is None:
        return FamilySignInError(400, LINK_UNKNOWN)
    status = invitation_status(row)
    if status == "pending":
        return None
    return FamilySignInError(410, {"used": LINK_USED, "expired": LINK_EXPIRED,
                                   "cancelled": LINK_CANCELLED}[status])


def spend_invitation(session: Session, row: FamilyInvitationRow | None) -> FamilyInvitationRow:
    """Spend a pending link once: a conditional UPDATE, so two clicks cannot both win. Commits.
    Raises FamilySignInError."""
    refusal = link_refusal(row)
    if refusal is not None:
        raise refusal
    now = utcnow()
    won = session.execute(update(FamilyInvitationRow).where(
        FamilyInvitationRow.id == row.id, FamilyInvitationRow.used_at.is_(None),
        FamilyInvitationRow.cancelled_at.is_(None), FamilyInvitationRow.expires_at > now)
        .values(used_at=now)).rowcount
    session.commit()
    if won != 1:
        session.refresh(row)
        raise link_refusal(row) or FamilySignInError(410, LINK_USED)
    session.refresh(row)
    return row


def consume_invitation(session: Session, token: str) -> FamilyInvitationRow:
    """Spend the sign-in link of `token`; the row tells whose session to start."""
    return spend_invitation(session, find_invitation(session, token))


# ---------------------------------------------------------------- codes (tables)


@dataclass
class CodeToSend:
    """A code made for a known contact: the API hands it to the message workflow."""

    row: FamilySignInCodeRow
    code: str
    member: FamilyMember
    contact: str
    state_language: str
    contact_preference: str


NEWEST_LINK_FIRST = (FamilyIdentityRow.last_used_at.desc().nulls_last(), FamilyIdentityRow.created_at.desc())


def _throttle_key(kind: str, contact_hash: str) -> str:
    # Staff ids never contain ':' (api/staff.py), so no key here is a staff account's.
    return f"family-{kind}:{contact_hash}"


def _member_on_file(session: Session, case_id: str, member_id: str, channel: str, contact: str,
                    country: str) -> tuple[FamilyMember, dict] | None:
    """The member if their contact on file (the read model's case) is still `contact`."""
    row = session.get(CaseRow, case_id)
    if row is None:
        return None
    doc = row.document
    for raw in (doc.get("family") or {}).get("members") or []:
        if raw.get("id") != member_id:
            continue
        member = FamilyMember.model_validate(raw)
        return (member, doc) if member_contact(member, channel, country) == contact else None
    return None


@dataclass(frozen=True)
class CodeRequest:
    """A request for a code that passed the throttle: the contact, normalised."""

    channel: str
    contact: str
    hashes: tuple[str, ...]


def request_code(session: Session, settings: Settings, typed: str, peer: str) -> CodeRequest:
    """Step 1 of a sign-in by code, done before the answer and the same for every contact:
    normalise what was typed and count it against the throttle. Raises FamilySignInError 422 for
    something that is no phone number or e-mail address, 429 when throttled. Step 2,
    `make_code`, runs after the answer (so neither its answer nor its time tells whether the
    contact is known)."""
    found = normalise_contact(typed or "", settings.country)
    if found is None:
        raise FamilySignInError(422, NOT_A_CONTACT)
    channel, contact = found
    hashes = contact_hashes(channel, contact)
    key = _throttle_key("send", hashes[0])
    wait = throttled(session, key, peer)
    if wait is not None:
        raise FamilySignInError(429, TOO_MANY, wait.retry_after)
    record_failure(session, key, peer)  # every request counts: a code costs an SMS
    return CodeRequest(channel, contact, tuple(hashes))


def make_code(session: Session, settings: Settings, asked: CodeRequest) -> CodeToSend | None:
    """A new sign-in code for the contact, if it is on file for a member who was invited on
    that channel (older unused codes of the contact die); None otherwise."""
    channel, contact, hashes = asked.channel, asked.contact, list(asked.hashes)
    links = session.exec(select(FamilyIdentityRow).where(
        FamilyIdentityRow.kind == channel, FamilyIdentityRow.identifier_hash.in_(hashes),
        FamilyIdentityRow.revoked_at.is_(None))
        .order_by(*NEWEST_LINK_FIRST)).all()
    for link in links:
        on_file = _member_on_file(session, link.case_id, link.member_id, channel, contact, settings.country)
        if on_file is None:
            continue
        member, doc = on_file
        now = utcnow()
        session.execute(update(FamilySignInCodeRow).where(
            FamilySignInCodeRow.contact_hash.in_(hashes), FamilySignInCodeRow.spent_at.is_(None))
            .values(spent_at=now))  # one live code per contact: the newest
        code = f"{secrets.randbelow(1_000_000):06d}"
        row = FamilySignInCodeRow(id=secrets.token_hex(8), contact_hash=hashes[0], code_hash="",
                                  case_id=link.case_id, member_id=link.member_id, channel=channel,
                                  created_at=now,
                                  expires_at=now + timedelta(minutes=settings.family_code_minutes))
        row.code_hash = code_hash(row.id, code)
        row.message_key = notification_key(link.case_id, CODE_PURPOSE, f"family:{link.member_id}", row.id)
        session.add(row)
        session.commit()
        session.refresh(row)
        session.expunge(row)  # a plain value for the message sent after the answer
        family = doc.get("family") or {}
        policy = doc.get("policy") or {}
        return CodeToSend(row=row, code=code, member=member, contact=contact,
                          state_language=family.get("language") or policy.get("default_language") or "da",
                          contact_preference=str(doc.get("contact_preference") or "normal"))
    return None


def verify_code(session: Session, settings: Settings, typed: str, code: str,
                peer: str) -> FamilySignInCodeRow:
    """The code row this right code signs in with (spent now). Raises FamilySignInError: 401
    wrong, expired or used up (one sentence for all), 429 throttled, 422 not a contact."""
    found = normalise_contact(typed or "", settings.country)
    if found is None:
        raise FamilySignInError(422, NOT_A_CONTACT)
    hashes = contact_hashes(*found)
    key = _throttle_key("code", hashes[0])
    wait = throttled(session, key, peer)
    if wait is not None:
        raise FamilySignInError(429, TOO_MANY, wait.retry_after)
    wrong = FamilySignInError(401, WRONG_CODE.format(minutes=settings.family_code_minutes,
                                                     tries=settings.family_code_tries))
    code = (code or "").strip().replace(" ", "")
    now = utcnow()
    row = session.exec(select(FamilySignInCodeRow).where(
        FamilySignInCodeRow.contact_hash.in_(hashes), FamilySignInCodeRow.spent_at.is_(None))
        .order_by(FamilySignInCodeRow.created_at.desc())).first()
    good = (row is not None and _aware(row.expires_at) > now and code.isdigit() and len(code) == 6
            and any(hmac.compare_digest(row.code_hash, h) for h in code_hashes(row.id, code)))
    if not good:
        record_failure(session, key, peer)
        if row is not None:
            row.attempts += 1
            if row.attempts >= settings.family_code_tries or _aware(row.expires_at) <= now:
                row.spent_at = now
            session.add(row)
            session.commit()
        raise wrong
    won = session.execute(update(FamilySignInCodeRow).where(
        FamilySignInCodeRow.id == row.id, FamilySignInCodeRow.spent_at.is_(None))
        .values(spent_at=now)).rowcount
    session.commit()
    if won != 1:
        raise wrong
    clear_failures(session, key)
    _touch_identity(session, found[0], hashes, row.case_id, row.member_id)
    return row


def _touch_identity(session: Session, kind: str, hashes: list[str], case_id: str, member_id: str) -> None:
    session.execute(update(FamilyIdentityRow).where(
        FamilyIdentityRow.kind == kind, FamilyIdentityRow.identifier_hash.in_(hashes),
        FamilyIdentityRow.case_id == case_id, FamilyIdentityRow.member_id == member_id)
        .values(last_used_at=utcnow()))
    session.commit()


# ---------------------------------------------------------------- the session


def begin_family_session(request: Request, response: Response, case_id: str, member_id: str) -> str:
    """Start a family session on `response` (a new session id: any earlier session of this
    browser ends first, no fixation). Returns the CSRF token."""
    end_session(request, response)
    return start_session(request, response, "family", member_id, case_id=case_id)


def principal_out(case_id: str, member_id: str) -> dict:
    return {"kind": "family", "id": f"family:{member_id}", "case_id": case_id, "member_id": member_id}


# ---------------------------------------------------------------- messages


def _recipient(member: FamilyMember, channel: str, contact: str, language: str,
               contact_preference: str) -> Recipient:
    """Only the contact of the channel asked for: a link or code never goes elsewhere."""
    return Recipient(role=RecipientRole.family, id=f"family:{member.id}", name=member.name,
                     email=contact if channel == "email" else None,
                     phone=contact if channel == "sms" else None,
                     language=language if language in ("da", "sv", "en") else None,
                     channel_preference=Channel(channel), contact_preference=contact_preference)


async def send_sign_in_message(client: Client, settings: Settings, request: NotificationRequest,
                               valid_seconds: int) -> None:
    """Hand one sign-in message to the message workflow (once per key)."""
    try:
        await client.start_workflow(
            MESSAGE_WORKFLOW, FamilyMessageInput(request=request, valid_seconds=valid_seconds),
            id=message_workflow_id(request.key), task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass  # this very message is on its way


async def send_code(client: Client | None, engine, settings: Settings, asked: CodeRequest) -> None:
    """Step 2, after the answer (a background task): make the code if the contact is known and
    hand it to the message service."""
    if client is None:
        log.warning("sign-in code not sent: the case engine is not reachable")
        return

    def make() -> CodeToSend | None:
        with Session(engine) as session:
            return make_code(session, settings, asked)

    made = await asyncio.to_thread(make)
    if made is None:
        return
    request = NotificationRequest(
        key=made.row.message_key, case_id=made.row.case_id, purpose=CODE_PURPOSE,
        recipient=_recipient(made.member, made.row.channel, made.contact, made.state_language,
                             made.contact_preference),
        template="family_sign_in_code", language=made.state_language,
        context={"code": made.code, "minutes": settings.family_code_minutes}, asked_for=True,
    )
    try:
        await send_sign_in_message(client, settings, request, settings.family_code_minutes * 60)
    except RPCError:
        log.warning("sign-in code not sent: the case engine refused the message")


# ---------------------------------------------------------------- staff: invitations

api_router = APIRouter(prefix="/api/v1/cases", tags=["family"])
ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"detail": d}}}}
          for s, d in ((403, "Not the case's coordinator, the unit's manager or an admin."),
                       (404, "No such case."), (409, "The case is closed."),
                       (422, "No such member, or no phone / e-mail on file for the channel."))}


class InvitationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"member_id": "m2", "channel": "email"}]})

    member_id: str = Field(pattern=r"^m[0-9]{1,4}$", description="The member's stable id (m1, m2, …).")
    channel: Literal["sms", "email"]


async def _invitable(cmd, case_id: str, request: Request) -> tuple[Any, CaseState | None]:
    actor = cmd.caller.require()
    facts, state = await cmd.facts(case_id)  # 404 for an unknown case
    refusal = access.read_refusal(actor, facts) or access.invite_refusal(actor, facts)
    if refusal:
        raise HTTPException(403, refusal)
    request.state.audit_case_ids.append(case_id)
    return actor, state


@api_router.post("/{case_id}/family/invitations", status_code=201, responses=ERRORS)
async def invite_family_member(case_id: str, body: InvitationIn, request: Request, cmd: Cmd) -> dict:
    """Invite a family member to the portal: a one-time sign-in link (72 h) by SMS or e-mail to
    the contact on file. The link is never shown to staff."""
    actor, state = await _invitable(cmd, case_id, request)
    settings: Settings = cmd.settings
    if state is None:
        cmd.session.close()
        state = await live_state(cmd.client, cmd.engine, case_id)
    if state.stage is Stage.closed:
        raise HTTPException(409, "The case is closed; a closed case gets no new invitations.")
    member = next((m for m in state.family.members if m.id == body.member_id), None)
    if member is None:
        ids = ", ".join(m.id or "?" for m in state.family.members)
        raise HTTPException(422, f"This case has no family member '{body.member_id}' (its members: {ids}).")
    if member.role not in INVITABLE_ROLES:
        raise HTTPException(422, f"{member.name} is registered as {member.role.value}: only parents (and "
                                 "other adults of the family) are invited to the portal.")
    contact = member_contact(member, body.channel, settings.country)
    if contact is None:
        what = "e-mail address" if body.channel == "email" else "mobile phone number"
        raise HTTPException(422, f"{member.name} has no usable {what} on file; add it to the case, or "
                                 f"invite by {'SMS' if body.channel == 'email' else 'e-mail'}.")
    with Session(cmd.engine) as session:
        row, token = create_invitation(session, case_id, member.id, body.channel, actor.id,
                                       settings.family_link_hours)
        remember_contact(session, body.channel, contact_hashes(body.channel, contact)[0], case_id, member.id)
        coordinator = session.get(StaffRow, state.coordinator_id) if state.coordinator_id else None
        coordinator_name = coordinator.name if coordinator is not None else ""
        session.commit()
        session.refresh(row)
        session.expunge(row)
    lang = _language(state)
    message = NotificationRequest(
        key=row.message_key, case_id=case_id, purpose=INVITATION_PURPOSE,
        recipient=_recipient(member, body.channel, contact, lang, state.contact_preference.value),
        template="family_invitation", language=lang,
        context={"link": f"{_public_url(request)}/family/welcome?token={token}",
                 "expires_at": _aware(row.expires_at).isoformat(), "channel": body.channel,
                 "coordinator_name": coordinator_name,
                 "eid": settings.family_oidc_enabled},
    )
    try:
        await send_sign_in_message(cmd.client, settings, message, settings.family_link_hours * 3600)
    except RPCError:
        with Session(cmd.engine) as session:  # nothing half-applied: no message, no link
            session.execute(update(FamilyInvitationRow).where(FamilyInvitationRow.id == row.id)
                            .values(cancelled_at=utcnow()))
            session.commit()
        raise HTTPException(503, "The message service is not reachable; nothing was sent. Try again "
                                 "shortly.") from None
    return invitation_out(row)


@api_router.get("/{case_id}/family/invitations", responses=ERRORS)
async def list_invitations(case_id: str, request: Request, cmd: Cmd) -> dict:
    await _invitable(cmd, case_id, request)
    rows = cmd.session.exec(select(FamilyInvitationRow).where(FamilyInvitationRow.case_id == case_id)
                            .order_by(FamilyInvitationRow.created_at.desc())).all()
    keys = [r.message_key for r in rows]
    sent = {n.key: n for n in cmd.session.exec(select(NotificationRow).where(NotificationRow.key.in_(keys)))}
    return {"items": [invitation_out(r, sent.get(r.message_key)) for r in rows], "total": len(rows)}


@api_router.post("/{case_id}/family/invitations/{invitation_id}/cancel", responses=ERRORS)
async def cancel_invitation(case_id: str, invitation_id: str, request: Request, cmd: Cmd) -> dict:
    """Withdraw a link not used yet (e.g. sent to a wrong address)."""
    await _invitable(cmd, case_id, request)
    row = cmd.session.get(FamilyInvitationRow, invitation_id) if len(invitation_id) <= 64 else None
    if row is None or row.case_id != case_id:
        raise HTTPException(404, "This case has no invitation with this id.")
    status = invitation_status(row)
    if status != "pending":
        raise HTTPException(409, f"This invitation is {status} already; there is nothing to withdraw.")
    row.cancelled_at = utcnow()
    cmd.session.add(row)
    cmd.session.commit()
    cmd.session.refresh(row)
    return invitation_out(row)


# ---------------------------------------------------------------- the family's forms

router = APIRouter(include_in_schema=False)

WORDS = {
    "en": {"welcome": "Welcome to your family's page", "continue": "Continue",
           "welcome_text": "Press the button to sign in. The link works once.",
           "eid": "Sign in with MitID and remember me", "login": "Sign in to your family's page",
           "contact": "Your mobile phone number or e-mail address", "send": "Send me a code",
           "code": "The 6-digit code", "sign_in": "Sign in", "code_text": "We sent a code.",
           "refused": "Could not sign you in", "back": "Back to sign-in", "eid_login": "Sign in with MitID"},
    "da": {"welcome": "Velkommen til jeres families side", "continue": "Fortsæt",
           "welcome_text": "Tryk på knappen for at logge ind. Linket virker én gang.",
           "eid": "Log ind med MitID og husk mig", "login": "Log ind på jeres families side",
           "contact": "Dit mobilnummer eller din e-mailadresse", "send": "Send mig en kode",
           "code": "Koden på 6 cifre", "sign_in": "Log ind", "code_text": "Vi har sendt en kode.",
           "refused": "Du kunne ikke logges ind", "back": "Tilbage til login",
           "eid_login": "Log ind med MitID"},
    "sv": {"welcome": "Välkommen till er familjs sida", "continue": "Fortsätt",
           "welcome_text": "Tryck på knappen för att logga in. Länken fungerar en gång.",
           "eid": "Logga in med BankID och kom ihåg mig", "login": "Logga in på er familjs sida",
           "contact": "Ditt mobilnummer eller din e-postadress", "send": "Skicka en kod",
           "code": "Koden med 6 siffror", "sign_in": "Logga in", "code_text": "Vi har skickat en kod.",
           "refused": "Du kunde inte loggas in", "back": "Tillbaka till inloggningen",
           "eid_login": "Logga in med BankID"},
}


def _words(request: Request) -> tuple[str, dict[str, str]]:
    from api.pages.i18n import COOKIE as LANG_COOKIE
    from api.pages.i18n import choose

    lang = choose(None, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"),
                  request.app.state.settings.country)
    return lang, WORDS.get(lang, WORDS["en"])


def _page(request: Request, status: int, title: str, inner: str) -> HTMLResponse:
    """A minimal page of our own (no script, the design system's stylesheet); the portal's
    real pages are the pages package's."""
    lang, _ = _words(request)
    html = (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)} · OneFamily</title>'
            f'<link rel="stylesheet" href="/static/vendor/dkfds/css/dkfds.min.css"></head>'
            f'<body><main class="container page-container"><h1>{escape(title)}</h1>{inner}</main>'
            f'</body></html>')
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store",
                                                           "Referrer-Policy": "same-origin"})


def _form(action: str, fields: str, button: str) -> str:
    return (f'<form method="post" action="{escape(action)}">{fields}'
            f'<button class="button button-primary" type="submit">{escape(button)}</button></form>')


def _input(name: str, label: str, kind: str = "text", value: str = "", autocomplete: str = "") -> str:
    ac = f' autocomplete="{autocomplete}"' if autocomplete else ""
    return (f'<div class="form-group"><label class="form-label" for="{name}">{escape(label)}</label>'
            f'<input class="form-input" id="{name}" name="{name}" type="{kind}" value="{escape(value)}"'
            f' required{ac}></div>')


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


async def _fields(request: Request) -> tuple[dict[str, str], bool]:
    """The submitted fields (a form or a JSON object) and whether the caller speaks JSON."""
    ctype = request.headers.get("content-type", "")
    wants_json = "application/json" in request.headers.get("accept", "")
    if ctype.startswith("application/json"):
        try:
            data = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise FamilySignInError(422, "The request body is not JSON.") from None
        if not isinstance(data, dict):
            raise FamilySignInError(422, "The request body must be a JSON object.")
        return {k: v[:1000] for k, v in data.items() if isinstance(v, str)}, True
    try:
        form = await request.form(max_fields=20, max_files=0)
    except Exception:  # noqa: BLE001 - a malformed form is the sender's problem: 422, not 500
        raise FamilySignInError(422, "The form could not be read.") from None
    return {k: v[:1000] for k, v in form.items() if isinstance(v, str)}, wants_json


def _refused(request: Request, error: FamilySignInError, as_json: bool,
             back: str = "/family/login") -> Response:
    headers = {"Cache-Control": "no-store"}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if as_json:
        return JSONResponse({"detail": error.message}, status_code=error.status, headers=headers)
    _, w = _words(request)
    response = _page(request, error.status, w["refused"],
                     f'<div class="alert alert-error" role="alert"><p class="alert-text">'
                     f'{escape(error.message)}</p></div><p><a href="{back}">{escape(w["back"])}</a></p>')
    response.headers.update(headers)
    return response


def _signed_in(request: Request, case_id: str, member_id: str, as_json: bool) -> Response:
    """The family session starts: JSON `{principal, csrf_token}`, or a redirect to the portal."""
    if not as_json:
        response = RedirectResponse(PORTAL, status_code=303, headers={"Cache-Control": "no-store"})
        begin_family_session(request, response, case_id, member_id)
        return response
    response = Response(media_type="application/json", headers={"Cache-Control": "no-store"})
    csrf = begin_family_session(request, response, case_id, member_id)
    response.body = json.dumps({"principal": principal_out(case_id, member_id), "csrf_token": csrf}).encode()
    response.headers["content-length"] = str(len(response.body))
    return response


def _cross_site(request: Request) -> bool:
    from api.pages.common import cross_site

    return cross_site(request)


CROSS_SITE = FamilySignInError(403, "This form was sent from another site; open the page on this "
                                    "site and try again.")


@router.post("/family/welcome")
async def welcome(request: Request) -> Response:
    """Spend the link (form field or JSON `token`) and start the family session."""
    as_json = False
    try:
        fields, as_json = await _fields(request)
        if _cross_site(request):
            raise CROSS_SITE
        with Session(request.app.state.engine) as session:
            row = consume_invitation(session, fields.get("token", ""))
            case_id, member_id = row.case_id, row.member_id
    except FamilySignInError as error:
        return _refused(request, error, as_json)
    return _signed_in(request, case_id, member_id, as_json)


@router.post("/family/login")
async def ask_for_code(request: Request, background: BackgroundTasks) -> Response:
    """Send a sign-in code to the contact typed, if it is on file; the same answer either way."""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else "-"
    as_json = False
    try:
        fields, as_json = await _fields(request)
        if _cross_site(request):
            raise CROSS_SITE
        if request.app.state.temporal is None:
            raise FamilySignInError(503, "Sign-in codes cannot be sent right now; try again shortly.")
        contact = fields.get("contact", "")
        with Session(request.app.state.engine) as session:
            asked = request_code(session, settings, contact, peer)
    except FamilySignInError as error:
        return _refused(request, error, as_json)
    # After the answer: it neither waits for, nor (by its time) reveals, a code being made.
    background.add_task(send_code, request.app.state.temporal, request.app.state.engine, settings, asked)
    sentence = CODE_SENT.format(minutes=settings.family_code_minutes)
    if as_json:
        return JSONResponse({"detail": sentence, "expires_in_seconds": settings.family_code_minutes * 60},
                            status_code=202)
    _, w = _words(request)
    inner = (f'<p>{escape(sentence)}</p>'
             + _form("/family/login/code", _hidden("contact", contact)
                     + _input("code", w["code"], autocomplete="one-time-code"), w["sign_in"]))
    return _page(request, 200, w["login"], inner)


@router.post("/family/login/code")
async def sign_in_with_code(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else "-"
    as_json = False
    try:
        fields, as_json = await _fields(request)
        if _cross_site(request):
            raise CROSS_SITE
        with Session(request.app.state.engine) as session:
            row = verify_code(session, settings, fields.get("contact", ""), fields.get("code", ""), peer)
            case_id, member_id = row.case_id, row.member_id
    except FamilySignInError as error:
        return _refused(request, error, as_json)
    return _signed_in(request, case_id, member_id, as_json)


@router.post("/family/logout")
def family_logout(request: Request) -> Response:
    """Ends the session server-side (the middleware checked its CSRF token)."""
    if "application/json" in request.headers.get("accept", ""):
        response: Response = Response(status_code=204)
    else:
        response = RedirectResponse("/family/login", status_code=303)
    end_session(request, response)
    return response


# ---------------------------------------------------------------- national eID (OIDC)

OIDC_COOKIE = "onefamily_family_oidc"
OIDC_COOKIE_PATH = "/family/oidc"


def family_oidc_settings(settings: Settings) -> Settings:
    """The staff's OIDC machinery (api/oidc.py) pointed at the family's eID broker."""
    return settings.model_copy(update={
        "oidc_issuer": settings.family_oidc_issuer, "oidc_client_id": settings.family_oidc_client_id,
        "oidc_client_secret": settings.family_oidc_client_secret, "oidc_audience": None,
        "oidc_staff_claim": settings.family_oidc_identifier_claim, "oidc_scopes": settings.family_oidc_scopes,
    })


def _oidc_redirect_uri(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/family/oidc/callback"
    return str(request.url_for("family_oidc_callback"))


def _oidc_refused(request: Request, status: int, message: str) -> Response:
    response = _refused(request, FamilySignInError(status, message), False)
    settings: Settings = request.app.state.settings
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH, httponly=True, samesite="lax",
                           secure=settings.secure_cookies)
    return response


def _start_oidc(request: Request, link: dict[str, str]) -> Response:
    from api.oidc import LOGIN_SECONDS, OidcError, get_verifier, seal_login

    settings: Settings = request.app.state.settings
    if not settings.family_oidc_enabled:
        return _oidc_refused(request, 404, "Sign-in with national eID is not set up here; sign in with a "
                                           "code instead.")
    state, nonce, verifier = (secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                              secrets.token_urlsafe(48))
    redirect_uri = _oidc_redirect_uri(request, settings)
    try:
        url = get_verifier(family_oidc_settings(settings)).authorization_url(redirect_uri, state, nonce,
                                                                            verifier)
    except OidcError as error:
        log.warning("family eID login: %s", error.message)
        return _oidc_refused(request, 503, "The national eID service could not be reached; try again "
                                           "in a moment.")
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    sealed = seal_login(settings, {"family": True, "state": state, "nonce": nonce, "verifier": verifier,
                                   "redirect_uri": redirect_uri, **link})
    response.set_cookie(OIDC_COOKIE, sealed, max_age=LOGIN_SECONDS, path=OIDC_COOKIE_PATH, httponly=True,
                        samesite="lax", secure=settings.secure_cookies)
    return response


@router.get("/family/oidc/login")
def family_oidc_login(request: Request) -> Response:
    """Sign in with national eID already linked to a family member."""
    return _start_oidc(request, {})


@router.post("/family/oidc/login")
async def family_oidc_link(request: Request) -> Response:
    """Sign in with national eID and link it: from the welcome page (the link's `token`, spent at
    the callback) or from a family session (the session's member; CSRF checked)."""
    try:
        fields, _ = await _fields(request)
        if _cross_site(request):
            raise CROSS_SITE
    except FamilySignInError as error:
        return _refused(request, error, False)
    token = fields.get("token", "")
    if token:
        with Session(request.app.state.engine) as session:
            refusal = link_refusal(find_invitation(session, token))
        if refusal is not None:
            return _oidc_refused(request, refusal.status, refusal.message)
        return _start_oidc(request, {"invitation": sha256(token)})
    actor = getattr(request.state, "principal", None)
    if actor is not None and access.is_family(actor) and actor.case_id and actor.member_id:
        return _start_oidc(request, {"link_case": actor.case_id, "link_member": actor.member_id})
    return _start_oidc(request, {})


@router.get("/family/oidc/callback", name="family_oidc_callback")
def family_oidc_callback(request: Request) -> Response:
    from api.oidc import OidcError, OidcUnavailable, get_verifier, open_login

    settings: Settings = request.app.state.settings
    restart = "Start again from the sign-in page."
    if not settings.family_oidc_enabled:
        return _oidc_refused(request, 404, "Sign-in with national eID is not set up here.")
    login = open_login(settings, request.cookies.get(OIDC_COOKIE))
    if login is None or login.get("family") is not True:
        return _oidc_refused(request, 400, "This sign-in took too long or was started in another "
                                           "browser. " + restart)
    params = request.query_params
    if not hmac.compare_digest(params.get("state", "").encode()[:200], str(login.get("state", "")).encode()):
        return _oidc_refused(request, 400, "This answer from the eID service does not belong to the "
                                           "sign-in started here. " + restart)
    if params.get("error"):
        return _oidc_refused(request, 401, "The eID service did not sign you in. " + restart)
    verifier = get_verifier(family_oidc_settings(settings))
    try:
        if "iss" in params and params["iss"] != verifier.issuer:
            return _oidc_refused(request, 400, "The answer names another eID service. " + restart)
        code = params.get("code")
        if not code or len(code) > 2048:
            return _oidc_refused(request, 400, "The eID service sent no code. " + restart)
        tokens = verifier.exchange_code(code, login["redirect_uri"], login["verifier"])
        claims = verifier.verify_id_token(tokens["id_token"], login["nonce"])
        identifier = verifier.staff_id_from_id_token(claims)  # the configured claim, checked
    except OidcUnavailable as error:
        log.warning("family eID callback: %s", error.message)
        return _oidc_refused(request, 502, "The national eID service could not be reached. " + restart)
    except OidcError as error:
        log.warning("family eID callback refused: %s", error.message)
        return _oidc_refused(request, 401, "The eID sign-in could not be verified. " + restart)
    hashes = eid_hashes(verifier.issuer, identifier)
    with Session(request.app.state.engine) as session:
        target: tuple[str, str] | None = None
        if login.get("invitation"):
            try:  # spent here, once the eID proved who this is
                row = spend_invitation(session, find_invitation(session, str(login["invitation"]),
                                                                hashed=True))
            except FamilySignInError as error:
                return _oidc_refused(request, error.status, error.message)
            target = (row.case_id, row.member_id)
        elif login.get("link_case") and login.get("link_member"):
            current = live_session(session, request.cookies.get(COOKIE, ""), settings)
            if (current is None or current.kind != "family" or current.case_id != login["link_case"]
                    or current.principal_id != login["link_member"]):
                return _oidc_refused(request, 400, "Your family session ended meanwhile. " + restart)
            target = (login["link_case"], login["link_member"])
        if target is not None:
            remember_contact(session, "eid", hashes[0], *target)
            session.commit()
        else:
            link = session.exec(select(FamilyIdentityRow).where(
                FamilyIdentityRow.kind == "eid", FamilyIdentityRow.identifier_hash.in_(hashes),
                FamilyIdentityRow.revoked_at.is_(None))
                .order_by(*NEWEST_LINK_FIRST)).first()
            if link is None:
                return _oidc_refused(request, 403, "Your eID is not linked to a family's case here yet. "
                                                   "Sign in once from the link in your invitation, or with a "
                                                   "code, and link your eID there.")
            target = (link.case_id, link.member_id)
        _touch_identity(session, "eid", hashes, *target)
    response = _signed_in(request, target[0], target[1], False)
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH, httponly=True, samesite="lax",
                           secure=settings.secure_cookies)
    return response

