"""The staff directory for administrators (`/staff`, DESIGN §10): who works here, add a staff
member (the API's own `api.staff.register_staff`; without a password it answers with a
one-time set-password link, shown here once), deactivate (`api.staff.deactivate`), and a new
set-password link. Who may do what: domain.access."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlmodel import Session, select

from api import staff as staff_api
from api.credentials import create_password_link
from api.deps import Caller
from api.pages import i18n
from api.pages.common import (
    FormState,
    actor_of,
    back,
    current_user,
    error_page,
    field_errors,
    language_of,
    login_redirect,
    read_form,
    render,
    timezone_of,
    unflatten,
)
from domain import access
from domain.access import DEFAULT_UNIT
from models.tables import StaffRow

router = APIRouter(include_in_schema=False)

FORM = "form-register_staff"
ROLES = ("coordinator", "team_member", "manager", "committee", "admin")


def _admin(request: Request) -> tuple[StaffRow | None, Response | None]:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return None, login_redirect(request)
    if not access.is_admin(actor_of(user)):
        lang = language_of(request, user)
        return user, error_page(request, user, 403, i18n.translate(lang, "error.forbidden"),
                                i18n.translate(lang, "staff.who"))
    return user, None


def _page(request: Request, user: StaffRow, form_state: FormState | None = None, status: int = 200,
          link: dict | None = None) -> Response:
    with Session(request.app.state.engine) as session:
        rows = list(session.exec(select(StaffRow).order_by(StaffRow.active.desc(), StaffRow.name)).all())
        for row in rows:
            session.expunge(row)
    units = sorted({r.unit for r in rows if r.unit} | {DEFAULT_UNIT})
    actor = actor_of(user)
    people = [{"row": r, "manage": access.may_manage_staff(actor, r.unit, r.roles) and r.id != user.id}
              for r in rows]
    return render(request, "staff.html.j2", status=status, user=user, nav="staff", people=people,
                  fname=FORM, form_state=form_state, link=link, roles=ROLES,
                  disciplines=sorted(staff_api.DISCIPLINES), units=units, default_unit=DEFAULT_UNIT)


def _labels(lang: str, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        key = f"staff.label.{name.split('.')[0]}"
        text = i18n.translate(lang, key)
        out[name] = text if text != key else i18n.translate(lang, "staff.label.form")
    return out


@router.get("/staff")
def staff_page(request: Request) -> Response:
    user, refused = _admin(request)
    if refused is not None:
        return refused
    return _page(request, user)


@router.post("/staff")
async def register_staff_form(request: Request) -> Response:
    user, refused = _admin(request)
    if refused is not None:
        return refused
    lang = language_of(request, user)
    values = await read_form(request)

    def again(fs: FormState) -> Response:
        fs.values = {k: v for k, v in fs.values.items() if k != "password"}  # never echoed back
        fs.labels = _labels(lang, list(fs.errors))
        return _page(request, user, form_state=fs, status=fs.status)

    try:
        body = staff_api.StaffIn.model_validate(unflatten(values, timezone_of(request)))
    except ValidationError as error:
        return again(FormState(FORM, values, errors=field_errors(error, lang)))
    with Session(request.app.state.engine) as session:
        try:
            out = staff_api.register_staff(body, request, Caller(request=request, session=session), session)
        except HTTPException as error:
            request.state.audit_outcome = error.status_code
            return again(FormState(FORM, values, message=str(error.detail), status=error.status_code))
    if out.get("invitation_url"):
        # Shown once, never put in an address (the browser's history, the logs).
        return _page(request, user, link={"name": out["name"], "url": out["invitation_url"], "new": True},
                     status=201)
    return back("/staff", ok=i18n.translate(lang, "staff.added", name=out["name"]))


@router.post("/staff/{staff_id}/deactivate")
def deactivate_form(request: Request, staff_id: str) -> Response:
    user, refused = _admin(request)
    if refused is not None:
        return refused
    lang = language_of(request, user)
    with Session(request.app.state.engine) as session:
        try:
            out = staff_api.deactivate(staff_id, Caller(request=request, session=session), session)
        except HTTPException as error:
            request.state.audit_outcome = error.status_code
            return back("/staff", error=str(error.detail))
    return back("/staff", ok=i18n.translate(lang, "staff.deactivated", name=out["name"]))


@router.post("/staff/{staff_id}/password-link")
def password_link_form(request: Request, staff_id: str) -> Response:
    user, refused = _admin(request)
    if refused is not None:
        return refused
    lang = language_of(request, user)
    with Session(request.app.state.engine) as session:
        row = session.get(StaffRow, staff_id) if len(staff_id) <= 64 else None
        if row is None:
            return back("/staff", error=i18n.translate(lang, "staff.unknown"))
        if not access.may_manage_staff(actor_of(user), row.unit, row.roles) or not row.active:
            return back("/staff", error=i18n.translate(lang, "staff.no_link"))
        token = create_password_link(session, row.id)
        name = row.name
        session.commit()
    base = (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")
    link = {"name": name, "url": f"{base}/set-password?token={token}", "new": False}
    return _page(request, user, link=link)
