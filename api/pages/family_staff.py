"""The family's part of the case page, for the staff (DESIGN §11; issue 10): invite a family
member to the portal, the case's consents (record one given on paper, narrow or extend one,
revoke one), the family's focus points before a meeting (confirmed as the pre-meeting
contact), the family's contact preference — and what the case page shows about them
(`page_context`: the consents in words, who waits for the family's consent, the family's
focus points and pause requests, the portal invitations).

Each route is one form → one command through the JSON endpoint's own function
(`api.consents`, `api.family_auth.invite_family_member`) by `common.send_form`: the same access
gate, the same workflow validators, the same sentences. A refusal shows the case page again
with what was typed and the API's sentence; success is a 303 back to the case page with a
sentence in the user's language. Who may use them now: `domain.workbench.available_commands`
(the case's coordinator, a manager of its unit, admin; the case open).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlmodel import Session, select

from api import consents, family_auth
from api.pages import i18n
from api.pages.common import (
    load_case,
    staff_names,
    timezone_of,
    valid_case_id,
)
from domain import consent as cs
from domain.workbench import INVITE_FAMILY
from models.case import (
    CaseState,
    ChangeConsent,
    ConfirmFocusPoints,
    ConsentRecord,
    ConsentStatus,
    GiveConsent,
    MemberRole,
    RevokeConsent,
    SetContactPreference,
)
from models.projection import case_from_document
from models.tables import StaffRow

router = APIRouter(include_in_schema=False)

CONSENT_FORMS = frozenset({"give_consent", "change_consent", "revoke_consent"})


def t(lang: str, key: str, **values: object) -> str:
    return i18n.translate(lang, f"consent.{key}", **values)


def _department(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------- what the case page shows


def _staff(session: Session) -> dict[str, StaffRow]:
    rows = list(session.exec(select(StaffRow)).all())
    for row in rows:
        session.expunge(row)
    return {row.id: row for row in rows}


def consent_status(consent: ConsentRecord, state: CaseState, now: datetime) -> str:
    """active / ended (its day is over, the workflow's timer not yet run) / expired / revoked."""
    if consent.status is ConsentStatus.active and not cs.is_active(consent, state.policy.timezone, now):
        return "ended"
    return consent.status.value


def consent_rows(state: CaseState, staff: dict[str, StaffRow], lang: str, now: datetime) -> list[dict]:
    """The case's consents in words, newest first: who gave it, whom it covers, what, until
    when, its status, and whom of the team it lets see the case now."""
    members = {m.id: m for m in state.family.members}
    rows = []
    for c in reversed(state.consents):
        giver = members.get(c.member_id)
        if c.core_team:
            whom = [t(lang, "whom.core_team")]
        else:
            whom = [t(lang, "whom.person", name=staff[s].name if s in staff else s,
                      department=_department(staff[s].department) if s in staff else "?")
                    for s in c.staff_ids]
            whom += [t(lang, "whom.department", name=_department(d)) for d in c.departments]
            whom = whom or [t(lang, "whom.coordinator_only")]
        status = consent_status(c, state, now)
        covered = cs.covered_team(state, c, now)
        rows.append({
            "id": c.id, "record": c, "status": status, "status_text": t(lang, f"status.{status}"),
            "giver": (f"{giver.name} ({i18n.translate(lang, 'case.member.' + giver.role.value)})"
                      if giver else t(lang, "giver.unknown")),
            "source_text": t(lang, f"source.{c.source}"),
            "given_by": staff[c.given_by].name if c.given_by in staff else "",
            "whom": whom, "covers_text": [t(lang, f"covers.{x}") for x in c.covers],
            "covered_now": [staff[s].name if s in staff else s for s in covered],
            "active": status == "active",
        })
    return rows


def pending_rows(state: CaseState, staff: dict[str, StaffRow], lang: str, now: datetime) -> list[str]:
    """"Ole Dam (school) waits for the family's consent" — the team members no active consent
    covers now (those the workflow marked pending, and anyone whose consent just ended)."""
    missing = cs.uncovered(state, now=now)
    out = []
    for m in state.team:
        if m.staff_id in missing or m.status == cs.PENDING:
            name = staff[m.staff_id].name if m.staff_id in staff else m.staff_id
            since = (i18n.format_date(lang, m.pending_since, state.policy.timezone)
                     if m.pending_since else None)
            key = "pending.line_since" if since else "pending.line"
            out.append(t(lang, key, name=name, department=_department(m.department), since=since))
    return out


def invitable(state: CaseState) -> list[dict]:
    """The family members who may be invited to the portal, each with the channels for which
    a phone number / e-mail address is on file."""
    out = []
    for m in state.family.members:
        if m.role not in family_auth.INVITABLE_ROLES:
            continue
        channels = [(ch, contact) for ch, contact in (("sms", m.phone), ("email", m.email)) if contact]
        out.append({"id": m.id, "name": m.name, "role": m.role.value, "channels": channels})
    return out


def _invitations(request: Request, case_id: str, lang: str) -> list[dict] | None:
    """The case's portal invitations (H7's table) in words, newest first; None when the
    store does not have them."""
    try:
        from models.tables_family import FamilyInvitationRow
        from models.tables_outbox import NotificationRow
    except ImportError:
        return None
    with Session(request.app.state.engine) as session:
        rows = session.exec(select(FamilyInvitationRow).where(FamilyInvitationRow.case_id == case_id)
                            .order_by(FamilyInvitationRow.created_at.desc()).limit(50)).all()
        keys = [r.message_key for r in rows if r.message_key]
        sent = {n.key: n for n in session.exec(select(NotificationRow)
                                               .where(NotificationRow.key.in_(keys)))} if keys else {}
        out = []
        for r in rows:
            note = sent.get(r.message_key)
            status = family_auth.invitation_status(r)
            out.append({"id": r.id, "member_id": r.member_id, "channel": r.channel,
                        "channel_text": t(lang, f"channel.{r.channel}"),
                        "status": status, "status_text": t(lang, f"invitation.status.{status}"),
                        "created_at": r.created_at, "expires_at": r.expires_at, "used_at": r.used_at,
                        "created_by": r.created_by,
                        "message": i18n.translate(lang, f"timeline.message_status.{note.status}")
                        if note is not None else t(lang, "invitation.queued")})
    return out


def page_context(request: Request, case_id: str, state: CaseState, allowed: set[str],
                 lang: str, now: datetime) -> dict:
    """What templates/pages/case/_consents.html.j2 and this module's forms read as `fs`."""
    with Session(request.app.state.engine) as session:
        staff = _staff(session)
    chosen = request.query_params.get("consent", "")
    rows = consent_rows(state, staff, lang, now)
    active = [r for r in rows if r["active"]]
    focus = next((r for r in active if r["id"] == chosen), None) or (active[0] if active else None)
    team_departments = [m.department for m in state.team]
    departments = sorted({s.department for s in staff.values() if s.active} | set(team_departments))
    coordinator = state.coordinator_id
    team_ids = [m.staff_id for m in state.team if m.staff_id != coordinator]
    people = [staff[s] for s in team_ids if s in staff] + sorted(
        (s for s in staff.values() if s.active and s.id != coordinator and s.id not in team_ids
         and not ({"admin", "committee"} & set(s.roles))), key=lambda s: s.name)
    members = {m.id: m.name for m in state.family.members}
    names = {sid: s.name for sid, s in staff.items()}
    return {
        "consents": rows, "active": active, "chosen": chosen, "focus": focus,
        "pending": pending_rows(state, staff, lang, now),
        "departments": departments, "team_ids": team_ids, "people": people,
        "today": cs.local_today(now, state.policy.timezone),
        "invitable": invitable(state),
        "invitations": _invitations(request, case_id, lang) if INVITE_FAMILY in allowed else None,
        "members": members, "names": names,
        "focus_points": list(reversed(state.focus_points)),
        "unconfirmed": [f for f in state.focus_points if f.confirmed_at is None],
        "pause_requests": list(reversed(state.pause_requests)),
        "parents": [m for m in state.family.members if m.role in (MemberRole.parent, MemberRole.other)]
        or list(state.family.members),
    }


# ---------------------------------------------------------------- the forms


async def _command(request: Request, case_id: str, form_name: str, send: Callable,
                   model: type[BaseModel], done: Callable[[str, object], str],
                   build: Callable[[dict, str, dict[str, str]], BaseModel] | None = None,
                   anchor: str = "consents") -> Response:
    """One form of this module → its command, by the case page's one form path."""
    from api.pages.case_commands import case_form

    return await case_form(request, case_id, form_name, send, model, done, build, anchor=anchor,
                           label=field_label)


def field_label(form_name: str, name: str, lang: str) -> str:
    base = name.split(".")[0]
    text = t(lang, f"{form_name}.{base}")
    return name if text == f"consent.{form_name}.{base}" else text


def _staff_name(request: Request, staff_id: str) -> str:
    with Session(request.app.state.engine) as session:
        return staff_names(session).get(staff_id, staff_id)


def _covers(data: dict) -> list[str]:
    """The case is always covered (a hidden field); the documents when ticked."""
    raw = data.pop("covers", None)
    items = raw if isinstance(raw, list) else [raw] if raw else []
    return [c for c in ("case", "documents") if c in items or c == "case"]


def _ids(raw: object) -> list[str]:
    return [str(x) for x in raw] if isinstance(raw, list) else ([str(raw)] if raw else [])


def _give(data: dict, lang: str, values: dict[str, str]) -> GiveConsent:
    data["covers"] = _covers(data)
    data["staff_ids"] = _ids(data.get("staff_ids"))
    data["departments"] = _ids(data.get("departments"))
    return GiveConsent.model_validate(data)


def _done_given(request: Request, lang: str, result: dict) -> str:
    newest = (result.get("consents") or [{}])[-1]
    names = staff_names_of(request)
    whom = [names.get(s, s) for s in newest.get("staff_ids", [])]
    whom += [t(lang, "whom.department", name=_department(d)) for d in newest.get("departments", [])]
    if newest.get("core_team"):
        whom = [t(lang, "whom.core_team")]
    return t(lang, "give_consent.done", id=newest.get("id", ""), whom=", ".join(whom),
             until=i18n.format_date(lang, newest.get("expires_at"), timezone_of(request)))


def staff_names_of(request: Request) -> dict[str, str]:
    with Session(request.app.state.engine) as session:
        return staff_names(session)


def _lost_sentence(request: Request, lang: str, result: dict, event: str) -> str:
    entry = next((h for h in reversed(result.get("history") or []) if h.get("event") == event), {})
    lost = (entry.get("detail") or {}).get("no_longer_covered") or []
    if not lost:
        return ""
    names = staff_names_of(request)
    return " " + t(lang, "lost", names=", ".join(names.get(s, s) for s in lost))


@router.post("/cases/{case_id}/consents")
async def give_consent(request: Request, case_id: str) -> Response:
    """A consent the family gave on paper: which professionals and departments may see the
    case (and its documents), until when."""
    return await _command(
        request, case_id, "give_consent",
        lambda cmd, body: consents.give_consent(case_id, body, cmd, Response()), GiveConsent,
        lambda lang, result: _done_given(request, lang, result), _give)


@router.post("/cases/{case_id}/consents/change")
async def change_consent(request: Request, case_id: str) -> Response:
    """Narrow or extend one consent. The form shows the consent's whole scope, so what it
    sends is the new scope; only what differs from the consent is sent as a change."""
    state, _ = await load_case(request, case_id) if valid_case_id(case_id) else (None, False)

    def build(data: dict, lang: str, values: dict[str, str]) -> ChangeConsent:
        consent_id = str(data.pop("consent_id", "") or "")
        if not consent_id:
            raise ValueError(t(lang, "change_consent.which"))
        current = next((c for c in state.consents if c.id == consent_id), None) if state else None
        changes: dict[str, object] = {}
        staff_ids, departments = _ids(data.get("staff_ids")), _ids(data.get("departments"))
        if current is None or not current.core_team or staff_ids or departments:
            # A core-team consent keeps the whole team unless people or departments are ticked.
            if current is None or staff_ids != current.staff_ids:
                changes["staff_ids"] = staff_ids
            if current is None or departments != current.departments:
                changes["departments"] = departments
        covers = _covers(data)
        if current is None or covers != current.covers:
            changes["covers"] = covers
        if "expires_at" in data:
            expires = consents.ConsentChanges.model_validate({"expires_at": data["expires_at"]}).expires_at
            if current is None or expires != current.expires_at:
                changes["expires_at"] = expires
        if not changes:
            raise ValueError(t(lang, "change_consent.nothing"))
        return ChangeConsent.model_validate({"consent_id": consent_id, **changes})

    async def send(cmd, body: ChangeConsent) -> dict:
        changes = consents.ConsentChanges.model_validate(
            body.model_dump(exclude={"consent_id"}, exclude_none=True))
        return await consents.change_consent(case_id, body.consent_id, changes, cmd)

    def done(lang: str, result: dict) -> str:
        return t(lang, "change_consent.done") + _lost_sentence(request, lang, result, "consent_changed")

    return await _command(request, case_id, "change_consent", send, ChangeConsent, done, build)


@router.post("/cases/{case_id}/consents/revoke")
async def revoke_consent(request: Request, case_id: str) -> Response:
    """Revoke one consent: whom it covered sees nothing of the case from the very next read."""

    def build(data: dict, lang: str, values: dict[str, str]) -> RevokeConsent:
        if data.pop("confirm", None) != "true":
            raise ValueError(t(lang, "revoke_consent.confirm_needed"))
        return RevokeConsent.model_validate(data)

    async def send(cmd, body: RevokeConsent) -> dict:
        return await consents.revoke_consent(case_id, body.consent_id, cmd,
                                             consents.RevokeIn(reason=body.reason))

    def done(lang: str, result: dict) -> str:
        return t(lang, "revoke_consent.done") + _lost_sentence(request, lang, result, "consent_revoked")

    return await _command(request, case_id, "revoke_consent", send, RevokeConsent, done, build)


@router.post("/cases/{case_id}/contact-preference")
async def set_contact_preference(request: Request, case_id: str) -> Response:
    def done(lang: str, result: dict) -> str:
        pref = i18n.translate(lang, f"timeline.preference.{result.get('contact_preference')}")
        return t(lang, "set_contact_preference.done", preference=pref)

    return await _command(request, case_id, "set_contact_preference",
                          lambda cmd, body: consents.set_contact_preference(case_id, body, cmd),
                          SetContactPreference, done, anchor="family")


@router.post("/cases/{case_id}/focus-points/confirm")
async def confirm_focus_points(request: Request, case_id: str) -> Response:
    """The family's focus points read: counts as the pre-meeting contact of the meeting ahead."""

    async def send(cmd, body: ConfirmFocusPoints) -> dict:
        return await consents.confirm_focus_points(case_id, body.number, cmd,
                                                   consents.ConfirmIn(notes=body.notes))

    return await _command(request, case_id, "confirm_focus_points", send, ConfirmFocusPoints,
                          lambda lang, result: t(lang, "confirm_focus_points.done"),
                          anchor="family-wishes")


# A double submit of the invitation form (the same form shown once) sends one link: the
# invitation is no Update of the case (whose update id makes a command idempotent), so the
# page remembers the form keys it has answered (this process; the newest few thousand).
_INVITED: OrderedDict[str, dict] = OrderedDict()
_INVITED_LOCK = threading.Lock()


@router.post("/cases/{case_id}/family/invitations")
async def invite_family(request: Request, case_id: str) -> Response:
    """A one-time sign-in link (72 h) to a family member's phone or e-mail on file, through
    the notification service (`api.family_auth.invite_family_member`)."""

    def build(data: dict, lang: str, values: dict[str, str]) -> family_auth.InvitationIn:
        member_id, _, channel = str(data.pop("invitee", "") or "").partition(":")
        if not member_id or not channel:
            raise ValueError(t(lang, "invite_family.whom_needed"))
        return family_auth.InvitationIn.model_validate({"member_id": member_id, "channel": channel,
                                                         **data})

    async def send(cmd, body: family_auth.InvitationIn) -> dict:
        key = f"{cmd.caller.require().id}:{case_id}:{cmd.idempotency_key}" if cmd.idempotency_key else None
        with _INVITED_LOCK:
            if key and key in _INVITED:
                return _INVITED[key]
        result = await family_auth.invite_family_member(case_id, body, request, cmd)
        if key:
            with _INVITED_LOCK:
                _INVITED[key] = result
                while len(_INVITED) > 5000:
                    _INVITED.popitem(last=False)
        return result

    def done(lang: str, result: dict) -> str:
        state_members = result.get("member_id", "")
        expires = result.get("expires_at")
        if isinstance(expires, datetime | date):
            expires = expires.isoformat()
        return t(lang, "invite_family.done", member=_member_name(request, case_id, state_members),
                 channel=t(lang, f"channel.{result.get('channel')}"),
                 until=i18n.format_datetime(lang, expires, timezone_of(request)))

    return await _command(request, case_id, INVITE_FAMILY, send, family_auth.InvitationIn, done, build,
                          anchor="section-invite_family")


def _member_name(request: Request, case_id: str, member_id: str) -> str:
    from models.tables import CaseRow

    with Session(request.app.state.engine) as session:
        row = session.get(CaseRow, case_id)
        if row is None:
            return member_id
        try:
            members = case_from_document(row.document).family.members
        except Exception:  # noqa: BLE001 - only a name for the sentence
            return member_id
    return next((m.name for m in members if m.id == member_id), member_id)
