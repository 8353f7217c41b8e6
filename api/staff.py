"""The staff directory (DESIGN §5): who exists, with which roles."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, select

from api.deps import Caller, forget_staff, get_caller, get_session
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
            "email": "anna@example.org", "phone": "+4520000000"}]},
    )

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    name: str = Field(min_length=1)
    discipline: str
    department: str = Field(min_length=1)
    unit: str = "children_disability"
    roles: list[Role] = Field(min_length=1)
    email: str | None = None
    phone: str | None = None


def staff_out(row: StaffRow) -> dict:
    return row.model_dump(exclude={"created_at"})


def bootstrap_admin(session: Session) -> None:
    if session.get(StaffRow, "admin") is None:
        session.add(StaffRow(id="admin", name="Administrator", discipline="other",
                             department="administration", roles=["admin"],
                             created_at=datetime.now(UTC)))
        session.commit()


@router.post("", status_code=201)
def register_staff(body: StaffIn, caller: Caller = Depends(get_caller),
                   session: Session = Depends(get_session)) -> dict:
    actor = caller.require()
    if not ({"admin", "manager"} & set(actor.roles)):
        raise HTTPException(403, "Only an administrator or a manager registers staff.")
    if body.discipline not in DISCIPLINES:
        raise HTTPException(422, f"Unknown discipline '{body.discipline}'; use one of "
                                 f"{', '.join(sorted(DISCIPLINES))}.")
    if session.get(StaffRow, body.id) is not None:
        raise HTTPException(409, f"Staff id '{body.id}' is already registered.")
    row = StaffRow(**body.model_dump(), created_at=datetime.now(UTC))
    session.add(row)
    session.commit()
    session.refresh(row)
    forget_staff()
    return staff_out(row)


@router.get("")
def list_staff(caller: Caller = Depends(get_caller),
               session: Session = Depends(get_session)) -> dict:
    caller.require()
    rows = session.exec(select(StaffRow).order_by(StaffRow.id)).all()
    return {"items": [staff_out(r) for r in rows], "total": len(rows)}
