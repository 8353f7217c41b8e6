"""New referral (`/cases/new`, DESIGN §10): the form of `POST /api/v1/cases`, with the
possible-duplicate warning shown BEFORE saving (link to the existing case, or confirm a new
one). The save is the API's own `api.cases.register_referral`; a double submit makes one case."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlmodel import Session

from api import cases
from api.pages import i18n
from api.pages.common import (
    FormState,
    back,
    current_user,
    error_page,
    language_of,
    login_redirect,
    read_form,
    render,
    send_form,
    timezone_of,
)
from api.scope import load_facts
from domain.access import DEFAULT_UNIT, read_refusal
from models.case import (
    CaseCreate,
    ContactPreference,
    MemberRole,
    ReferralKind,
    Source,
)
from models.projection import open_case_ids_for_person
from models.tables import CaseRow, StaffRow

router = APIRouter(include_in_schema=False)

FORM = "form-register_referral"
MEMBER_ROWS = 4
CONTACT_ROWS = 2
MAX_ROWS = 20  # the CSRF check reads at most 200 form fields
REGISTERS = {"coordinator", "manager", "admin"}
MEMBER_FIELDS = ("name", "role", "birth_date", "diagnoses", "needs", "phone", "email")
CONTACT_FIELDS = ("department", "sector_area", "caseworker")


def may_register(user: StaffRow) -> bool:
    return bool(REGISTERS & set(user.roles))


@dataclass
class Duplicates:
    """The referral was not saved: members already on open cases (what the user may see)."""

    cases: list[dict]


def _lines(value: object) -> object:
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


def build(data: dict) -> CaseCreate:
    """The form's fields as the API's body: every section present (so a missing field is named,
    not its whole section), one diagnosis / need / department per line."""
    data.setdefault("referral", {})
    family = data.setdefault("family", {})
    family.setdefault("members", [])
    for member in family["members"] if isinstance(family["members"], list) else []:
        for key in ("diagnoses", "needs"):
            if key in member:
                member[key] = _lines(member[key])
    consent = data.setdefault("consent", {})
    if "departments" in consent:
        consent["departments"] = _lines(consent["departments"])
    return CaseCreate.model_validate(data)


def _rows(values: dict[str, str], prefix: str, minimum: int) -> int:
    """How many rows a list of the form shows: what was typed, and a few empty ones."""
    used = [int(k[len(prefix):].split(".", 1)[0]) for k, v in values.items()
            if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit() and v.strip()]
    return min(MAX_ROWS, max([minimum, *[u + 2 for u in used]]))


def _labels(lang: str, names: list[str]) -> dict[str, str]:
    """Each field error's label, for the summary above the form."""
    tr = lambda key, **kw: i18n.translate(lang, key, **kw)  # noqa: E731
    out: dict[str, str] = {}
    for name in names:
        parts = name.split(".")
        if parts[:2] == ["family", "members"] and len(parts) >= 3 and parts[2].isdigit():
            row = tr("referral.member_n", n=int(parts[2]) + 1)
            field = parts[3] if len(parts) > 3 else ""
            out[name] = f"{row}: {tr('referral.member.' + field)}" if field else row
        elif parts[0] == "existing_contacts" and len(parts) >= 2 and parts[1].isdigit():
            row = tr("referral.contact_n", n=int(parts[1]) + 1)
            field = parts[2] if len(parts) > 2 else ""
            out[name] = f"{row}: {tr('referral.contact.' + field)}" if field else row
        else:
            key = "referral.label." + name
            text = tr(key)
            out[name] = text if text != key else tr("referral.label._form")
    return out


def _context(request: Request, session: Session, user: StaffRow, values: dict[str, str]) -> dict:
    units = sorted({u for u in session.execute(select(StaffRow.unit)).scalars() if u}
                   | {user.unit or DEFAULT_UNIT})
    tz = ZoneInfo(timezone_of(request))
    return dict(
        user=user, nav="new_referral", fname=FORM,
        member_rows=_rows(values, "family.members.", MEMBER_ROWS),
        contact_rows=_rows(values, "existing_contacts.", CONTACT_ROWS),
        sources=[s.value for s in Source], kinds=[k.value for k in ReferralKind],
        roles=[r.value for r in MemberRole], preferences=[p.value for p in ContactPreference],
        levels=["high", "medium", "low"], units=units, default_unit=user.unit or DEFAULT_UNIT,
        now_local=datetime.now(tz).strftime("%Y-%m-%dT%H:%M"),
    )


def _page(request: Request, user: StaffRow, form_state: FormState | None = None,
          duplicates: list[dict] | None = None, status: int = 200) -> Response:
    values = form_state.values if form_state else {}
    with Session(request.app.state.engine) as session:
        ctx = _context(request, session, user, values)
    return render(request, "new_referral.html.j2", status=status, form_state=form_state,
                  duplicates=duplicates, **ctx)


def _signed_in(request: Request) -> tuple[StaffRow | None, Response | None]:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return None, login_redirect(request)
    if not may_register(user):
        lang = language_of(request, user)
        return user, error_page(request, user, 403, i18n.translate(lang, "error.forbidden"),
                                i18n.translate(lang, "referral.who"))
    return user, None


@router.get("/cases/new")
async def new_referral_page(request: Request) -> Response:
    user, refused = _signed_in(request)
    if refused is not None:
        return refused
    return _page(request, user)


def _duplicates(session: Session, actor, body: CaseCreate, own_case_id: str) -> list[dict]:
    """The open cases naming a member of this referral, each with what `actor` may see of it:
    a link to a case they may read; else only that it exists and whom to ask."""
    found = sorted({cid for m in body.family.members
                    for cid in open_case_ids_for_person(session, m.name, m.birth_date)
                    if cid != own_case_id})
    out: list[dict] = []
    for case_id in found:
        facts = load_facts(session, case_id)
        if facts is None:
            continue
        if read_refusal(actor, facts) is None:
            row = session.get(CaseRow, case_id)
            out.append({"case_id": case_id, "readable": True,
                        "family_name": row.family_name if row else "", "stage": row.stage if row else ""})
        else:
            managers = [s.name for s in session.execute(select(StaffRow).order_by(StaffRow.name)).scalars()
                        if s.active and "manager" in s.roles and s.unit == facts.unit]
            out.append({"case_id": None, "readable": False, "ask": managers})
    return out


@router.post("/cases/new")
async def register_referral_form(request: Request) -> Response:
    user, refused = _signed_in(request)
    if refused is not None:
        return refused
    values = await read_form(request)
    confirmed = values.get("_confirmed") == "1"
    lang = language_of(request, user)

    async def send(cmd: cases.Commands, body: CaseCreate) -> object:
        actor = cmd.caller.require()
        key = cmd.idempotency_key
        own = str(uuid.uuid5(cases.IDEMPOTENCY_NAMESPACE, f"{actor.id}\n{key}")) if key else ""
        # A repeated submit of a form already saved: the API answers with that case.
        if not confirmed and not (own and cmd.session.get(CaseRow, own) is not None):
            found = _duplicates(cmd.session, actor, body, own)
            if found:
                return Duplicates(found)
        return await cases.register_referral(body, cmd)

    async def show_again(fs: FormState) -> Response:
        if "family.members" in fs.errors:
            fs.errors["family.members"] = i18n.translate(lang, "referral.error.no_member")
        fs.labels = _labels(lang, list(fs.errors))
        return _page(request, user, form_state=fs, status=fs.status)

    def done(result: object) -> Response:
        if isinstance(result, Duplicates):
            return _page(request, user, form_state=FormState(FORM, values, status=200),
                         duplicates=result.cases)
        return back(f"/cases/{result['id']}", ok=i18n.translate(lang, "referral.saved"))

    return await send_form(request, FORM, values, send, CaseCreate, show_again, done, build=build)

