"""The family's consents and the family's requests, as staff record them (DESIGN §11).

- `GET /api/v1/cases/{id}/consents`: the case's consents (whoever may read the case);
  `GET .../consents/{consent_id}`: one.
- `POST /api/v1/cases/{id}/consents`: the coordinator records a consent given on paper
  (`GiveConsent`) -> 201 with the case; `Location` names the new consent.
- `PATCH .../consents/{consent_id}`: narrow or extend it (`ConsentChanges`: each field given
  replaces the consent's) -> the case.
- `POST .../consents/{consent_id}/revoke` (optional `{"reason"}`) -> the case; again: 409.
- `PUT /api/v1/cases/{id}/contact-preference` `{"preference"}`: the family's choice.
- `POST /api/v1/cases/{id}/focus-points`: the family's focus points, taken down by the
  coordinator; `POST .../focus-points/{number}/confirm`: read, counts as the pre-meeting
  contact.
- `POST /api/v1/cases/{id}/pause-requests`: the family asks for a pause (the coordinator then
  pauses with `POST .../pause`).

Every command goes through the case workflow's Update validators (`give_consent`,
`change_consent`, `revoke_consent`, `set_contact_preference`, `family_focus_points`,
`confirm_focus_points`, `request_pause`), exactly as the family's own portal endpoints do.
The access policy gates them first (404 unknown case, 403 outside need-to-know).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi import APIRouter, Body, HTTPException, Response
from sqlmodel import Session, select

from api.cases import Cmd, _body
from api.gateway import live_state
from domain import consent as cs
from domain.access import read_refusal
from models.case import (
    Actor,
    CaseState,
    ChangeConsent,
    ConfirmFocusPoints,
    ConsentChanges,
    ConsentRecord,
    FocusPoints,
    GiveConsent,
    LongText,
    PauseRequest,
    RevokeConsent,
    SetContactPreference,
    Strict,
)
from models.commands import CommandInput
from models.tables import StaffRow

router = APIRouter(prefix="/api/v1/cases", tags=["consents"])
CONSENT_ID = re.compile(r"c[0-9]{1,6}")


class RevokeIn(Strict):
    reason: LongText = ""


class ConfirmIn(Strict):
    notes: LongText = ""


def directory_departments(session: Session) -> list[str]:
    """The departments of the staff directory: a consent may name these (or the team's)."""
    return sorted(set(session.exec(select(StaffRow.department).where(StaffRow.active)).all()))


def consent_input(session: Session, actor: Actor, body: dict) -> CommandInput:
    """The command of a `give_consent` / `change_consent` Update, with the departments of the
    directory the workflow checks a named department against (the portal uses this too)."""
    return CommandInput(actor=actor, body=body, known_departments=directory_departments(session))


def _consent_id(consent_id: str) -> str:
    if not CONSENT_ID.fullmatch(consent_id):
        raise HTTPException(404, "No such consent (consent ids look like c1, c2, ...).")
    return consent_id


def consent_view(state: CaseState, consent: ConsentRecord, now: datetime) -> dict:
    """A consent as the API shows it: the record, whether it holds now, and whom on the team
    it covers for the case."""
    tz = state.policy.timezone
    end = cs.expiry_instant(consent.expires_at, tz)
    return {**consent.model_dump(mode="json"),
            "active": cs.is_active(consent, tz, now),
            "ends_at": end.isoformat() if end else None,
            "covered_team": cs.covered_team(state, consent, now)}


async def _readable_state(cmd: Cmd, case_id: str) -> CaseState:
    actor = cmd.caller.require()
    facts, state = await cmd.facts(case_id)
    refusal = read_refusal(actor, facts)
    if refusal:
        raise HTTPException(403, refusal)
    cmd.session.close()
    return state if state is not None else await live_state(cmd.client, cmd.engine, case_id)


@router.get("/{case_id}/consents")
async def list_consents(case_id: str, cmd: Cmd) -> dict:
    state = await _readable_state(cmd, case_id)
    now = datetime.now(UTC)
    items = [consent_view(state, c, now) for c in state.consents]
    return {"items": items, "total": len(items)}


@router.get("/{case_id}/consents/{consent_id}")
async def get_consent(case_id: str, consent_id: str, cmd: Cmd) -> dict:
    state = await _readable_state(cmd, case_id)
    consent = next((c for c in state.consents if c.id == consent_id), None)
    if consent is None:
        raise HTTPException(404, f"No consent '{_consent_id(consent_id)}' on this case.")
    return consent_view(state, consent, datetime.now(UTC))


@router.post("/{case_id}/consents", status_code=201)
async def give_consent(case_id: str, body: GiveConsent, cmd: Cmd, response: Response) -> dict:
    """A consent the family gave on paper, recorded by the coordinator (a manager, admin)."""
    actor = cmd.caller.require()
    cmd.staff(body.staff_ids, "the consent")
    inp = consent_input(cmd.session, actor, _body(body))
    view = await cmd.run(case_id, "give_consent", inp)
    newest = view["consents"][-1]["id"] if view.get("consents") else None
    if newest:
        response.headers["Location"] = f"/api/v1/cases/{case_id}/consents/{newest}"
    return view


@router.patch("/{case_id}/consents/{consent_id}")
async def change_consent(case_id: str, consent_id: str, body: ConsentChanges, cmd: Cmd) -> dict:
    """Narrow or extend a consent: every field given replaces the consent's (`staff_ids`,
    `departments`, `covers`, `expires_at`)."""
    actor = cmd.caller.require()
    if body.staff_ids:
        cmd.staff(body.staff_ids, "the consent")
    change = ChangeConsent(consent_id=_consent_id(consent_id), **body.model_dump(exclude_none=True))
    return await cmd.run(case_id, "change_consent", consent_input(cmd.session, actor, _body(change)))


@router.post("/{case_id}/consents/{consent_id}/revoke")
async def revoke_consent(case_id: str, consent_id: str, cmd: Cmd,
                         body: RevokeIn | None = Body(None)) -> dict:
    """Revoke a consent: access narrows at once (the next read answers 403), messages and
    invitations not yet sent to those it covered are cancelled, the coordinator is told."""
    actor = cmd.caller.require()
    revoke = RevokeConsent(consent_id=_consent_id(consent_id), reason=body.reason if body else "")
    return await cmd.run(case_id, "revoke_consent", CommandInput(actor=actor, body=_body(revoke)))


@router.put("/{case_id}/contact-preference")
async def set_contact_preference(case_id: str, body: SetContactPreference, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "set_contact_preference",
                         CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/focus-points")
async def family_focus_points(case_id: str, body: FocusPoints, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "family_focus_points", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/focus-points/{number}/confirm")
async def confirm_focus_points(case_id: str, number: int, cmd: Cmd,
                               body: ConfirmIn | None = Body(None)) -> dict:
    actor = cmd.caller.require()
    if not 1 <= number <= 100_000:
        raise HTTPException(404, f"No focus points number {number} on this case.")
    confirm = ConfirmFocusPoints(number=number, notes=body.notes if body else "")
    return await cmd.run(case_id, "confirm_focus_points",
                         CommandInput(actor=actor, body=_body(confirm)))


@router.post("/{case_id}/pause-requests")
async def request_pause(case_id: str, body: PauseRequest, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "request_pause", CommandInput(actor=actor, body=_body(body)))
