"""The staff directory (DESIGN §5): who exists, with which roles."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from api.credentials import (
    MAX_PASSWORD,
    check_password,
    create_password_link,
    password_problem,
    revoke_everything,
    set_password,
)
from api.deps import Caller, forget_staff, get_caller, get_session
from domain import access
from domain.access import DEFAULT_UNIT
from models.case import Actor
from models.tables import StaffRow

router = APIRouter(prefix="/api/v1/staff", tags=["staff"])

Role = Literal["coordinator", "team_member", "manager", "committee", "admin"]
DISCIPLINES = {
    "social_worker", "family_therapist", "school_psychologist", "health_visitor",
    "adult_services", "job_centre", "school_coordinator", "psychiatry", "manager", "other",
}


class StaffIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "id": "anna", "name": "Anna Berg", "discipline": "social_worker",
            "department": "children_disability", "roles": ["coordinator"],
            "email": "anna@example.org", "phone": "+4520000000", "password": "a long passphrase"}]},
    )

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    name: str = Field(min_length=1, max_length=200)
    discipline: str = Field(max_length=64)
    department: str = Field(min_length=1, max_length=100)
    unit: str = Field(DEFAULT_UNIT, min_length=1, max_length=64)
    roles: list[Role] = Field(min_length=1, max_length=5)
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=40)
    # Local mode: the first password (at least 12 characters); without one, a one-time
    # set-password link is made (answered as `invitation_url`, and e-mailed when possible).
    password: str | None = Field(None, max_length=MAX_PASSWORD)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_password: str = Field(max_length=MAX_PASSWORD)
    # Required when you change your own password; an administrator (or the unit's manager)
    # resetting someone else's leaves it out.
    current_password: str | None = Field(None, max_length=MAX_PASSWORD)


def staff_out(row: StaffRow, viewer: Actor | None = None) -> dict:
    out = row.model_dump(exclude={"created_at"})
    if viewer is not None and not access.may_see_contact_details(viewer, row.unit, row.id):
        out.pop("email", None)
        out.pop("phone", None)
    return out


def bootstrap_admin(session: Session) -> None:
    if session.get(StaffRow, "admin") is None:
        session.add(StaffRow(id="admin", name="Administrator", discipline="other",
                             department="administration", roles=["admin"],
                             created_at=datetime.now(UTC)))
        try:
            session.commit()
        except IntegrityError:  # another API process created it first
            session.rollback()


def _public_url(request: Request) -> str:
    settings = request.app.state.settings
    return (settings.public_url or str(request.base_url)).rstrip("/")


@router.post("", status_code=201)
def register_staff(body: StaffIn, request: Request, caller: Caller = Depends(get_caller),
                   session: Session = Depends(get_session)) -> dict:
    actor = caller.require()
    refusal = access.grant_refusal(actor, body.roles, body.unit)
    if refusal:
        raise HTTPException(403, refusal)
    if body.discipline not in DISCIPLINES:
        raise HTTPException(422, f"Unknown discipline '{body.discipline}'; use one of "
                                 f"{', '.join(sorted(DISCIPLINES))}.")
    if body.password is not None:
        problem = password_problem(body.password)
        if problem:
            raise HTTPException(422, problem)
    if session.get(StaffRow, body.id) is not None:
        raise HTTPException(409, f"Staff id '{body.id}' is already registered.")
    row = StaffRow(**body.model_dump(exclude={"password"}), created_at=datetime.now(UTC))
    session.add(row)
    link = None
    if body.password is not None:
        set_password(session, body.id, body.password)
    else:
        link = create_password_link(session, body.id)
    session.commit()
    session.refresh(row)
    forget_staff()
    out = staff_out(row)
    if link is not None:
        out["invitation_url"] = f"{_public_url(request)}/set-password?token={link}"
    return out


@router.get("")
def list_staff(caller: Caller = Depends(get_caller),
               session: Session = Depends(get_session)) -> dict:
    """Everyone may see who works here (to form a team); phone and e-mail only the admin, the
    unit's manager and the person themselves."""
    actor = caller.require()
    rows = session.exec(select(StaffRow).order_by(StaffRow.id)).all()
    return {"items": [staff_out(r, actor) for r in rows], "total": len(rows)}


def _target(session: Session, staff_id: str) -> StaffRow:
    row = session.get(StaffRow, staff_id) if len(staff_id) <= 64 else None
    if row is None:
        raise HTTPException(404, "No such staff member.")
    return row


@router.post("/{staff_id}/password", status_code=204)
def change_password(staff_id: str, body: PasswordChange, caller: Caller = Depends(get_caller),
                    session: Session = Depends(get_session)) -> Response:
    actor = caller.require()
    row = _target(session, staff_id)
    if actor.id == staff_id:
        if body.current_password is None or check_password(session, staff_id, body.current_password) is None:
            raise HTTPException(403, "Your current password is not right.")
    elif not access.may_manage_staff(actor, row.unit, row.roles):
        raise HTTPException(403, "Only an administrator or the unit's manager sets someone else's password.")
    problem = password_problem(body.new_password)
    if problem:
        raise HTTPException(422, problem)
    set_password(session, staff_id, body.new_password)
    if actor.id != staff_id:
        revoke_everything(session, staff_id)  # a reset ends what the old password opened
    session.commit()
    return Response(status_code=204)


@router.post("/{staff_id}/deactivate")
def deactivate(staff_id: str, caller: Caller = Depends(get_caller),
               session: Session = Depends(get_session)) -> dict:
    """Leaves the directory's history intact; every session and token of the person ends now."""
    actor = caller.require()
    row = _target(session, staff_id)
    if not access.may_manage_staff(actor, row.unit, row.roles):
        raise HTTPException(403, "Only an administrator or the unit's manager deactivates staff.")
    if row.id == actor.id:
        raise HTTPException(409, "You cannot deactivate yourself.")
    row.active = False
    session.add(row)
    revoke_everything(session, staff_id)
    session.commit()
    session.refresh(row)
    forget_staff()
    return staff_out(row, actor)
