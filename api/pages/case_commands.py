"""The case page's command forms before the plan (DESIGN §10): take / assign the coordinator,
the core team, a contact, the concern triage, the assessment meeting, the ICS assessment and
its completion, the provisional assessment, the extension (Sweden), pause and resume.

Each route is one form → one command through the JSON endpoint's own function in
`api.cases` (`common.send_form`): the same access gate, the same workflow validators. A
refusal shows the case page again with what was typed and the API's sentence; success is a
303 back to the case page with a sentence in the user's language.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationInfo, field_validator
from sqlalchemy import select
from sqlmodel import Session

from api import cases
from api.gateway import utcnow
from api.pages import i18n
from api.pages.common import (
    FormState,
    back,
    current_user,
    error_page,
    language_of,
    read_form,
    send_form,
    timezone_of,
    valid_case_id,
)
from models.case import (
    AssessmentContent,
    AssignCoordinator,
    CompleteAssessment,
    ExtendAssessment,
    FormTeam,
    PauseCase,
    ProvisionalAssessmentIn,
    RecordContact,
    ScheduleAssessmentMeeting,
    Triage,
)
from models.tables import StaffRow

router = APIRouter(include_in_schema=False)

ICS_TEXTS = ("strengths", "concerns", "family_view")
# A field whose label's text key is not its own name.
ALIASES = {"coordinator_id": "coordinator", "waiting_for_family": "waiting"}


async def case_form(
    request: Request,
    case_id: str,
    form_name: str,
    send: Callable,
    model: type[BaseModel] | None,
    done: Callable[[str, dict], str],
    build: Callable[[dict, str, dict[str, str]], BaseModel] | None = None,
    anchor: str = "",
    label: Callable[[str, str, str], str] | None = None,
) -> Response:
    """The common path of a case page's form (here and api/pages/family_staff.py): who is
    asking, the form's fields, the command through `send_form`; `done(lang, result)` is the
    sentence shown after success, on the page's `#anchor`; `build(data, lang, values)`."""
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    page = f"/cases/{case_id}"
    if user is None:
        return back(f"/login?next={page}") if valid_case_id(case_id) else back("/login")
    lang = language_of(request, user)
    if not valid_case_id(case_id):
        return error_page(request, user, 404, i18n.translate(lang, "forms.no_case"),
                          i18n.translate(lang, "forms.no_case_text"))
    values = await read_form(request)

    async def show_again(form_state: FormState) -> Response:
        from api.pages.case import case_page_response

        for name in form_state.errors:
            form_state.labels.setdefault(name, (label or field_label)(form_name, name, lang))
        return await case_page_response(request, case_id, form_state)

    def success(result: dict) -> Response:
        response = back(page, ok=done(lang, result))
        if anchor:  # the redirect lands on the section the form is about
            response.headers["location"] += f"#{anchor}"
        return response

    return await send_form(
        request, form_name, values, send, model, show_again, done=success,
        build=(lambda data: build(data, lang, values)) if build is not None else None,
    )


def field_label(form_name: str, name: str, lang: str) -> str:
    """A refused field's label for the error summary, in the page's language (the form's
    own label; a list row's with its number)."""
    parts = name.split(".")

    def known(key: str, **values: object) -> str | None:
        text = i18n.translate(lang, f"forms.{key}", **values)
        return None if text == f"forms.{key}" else text

    if len(parts) == 3 and parts[0] == "members" and parts[1].isdigit():
        row = known("form_team.member", n=int(parts[1]) + 1)
        return f"{row}: {known(f'form_team.{parts[2]}') or parts[2]}"
    if len(parts) == 2 and parts[0] == "investigations" and parts[1].isdigit():
        return known("put_assessment.investigation", n=int(parts[1]) + 1) or name
    if parts[0] == "participants":
        return known(f"{form_name}.participants") or name
    if parts[0] == "ics" and len(parts) >= 2:
        side = known(f"ics.side.{parts[1]}") or parts[1]
        part = known(f"put_assessment.{parts[-1]}") if len(parts) == 4 else None
        return f"{side}: {part}" if part else side
    if parts[0] == "measurements" and len(parts) == 4:  # api/pages/outcomes.py
        return i18n.translate(lang, f"outcomes.scale.{parts[3]}")
    if name == "_form":
        return known(f"{form_name}.heading") or name
    return known(f"{form_name}.{ALIASES.get(name, name)}") or name


def _names(request: Request) -> dict[str, StaffRow]:
    with Session(request.app.state.engine) as session:
        rows = list(session.execute(select(StaffRow)).scalars())
        for row in rows:
            session.expunge(row)
    return {row.id: row for row in rows}


def _t(lang: str, key: str, **values: object) -> str:
    return i18n.translate(lang, f"forms.{key}", **values)


# ---------------------------------------------------------------- coordinator and team


@router.post("/cases/{case_id}/coordinator")
async def assign_coordinator(request: Request, case_id: str) -> Response:
    """Take this case (a coordinator, an unassigned case) or assign / reassign (a manager):
    the API's caseload cap, override rule and suggestion decide."""
    staff = _names(request)
    me = getattr(getattr(request.state, "principal", None), "id", None)

    def done(lang: str, result: dict) -> str:
        who = result.get("coordinator_id")
        if who == me:
            return _t(lang, "assign_coordinator.done_self")
        name = staff[who].name if who in staff else who
        return _t(lang, "assign_coordinator.done", name=name)

    return await case_form(request, case_id, "assign_coordinator",
                          lambda cmd, body: cases.assign_coordinator(case_id, body, cmd),
                          AssignCoordinator, done)


@router.post("/cases/{case_id}/team")
async def form_team(request: Request, case_id: str) -> Response:
    """The core team, picked from the directory: a member's discipline and department are
    the directory's unless typed."""
    staff = _names(request)

    def build(data: dict, lang: str, values: dict[str, str]) -> FormTeam:
        for member in data.get("members", []) if isinstance(data.get("members"), list) else []:
            row = staff.get(str(member.get("staff_id", ""))) if isinstance(member, dict) else None
            if row is not None:
                member.setdefault("discipline", row.discipline)
                member.setdefault("department", row.department)
        return FormTeam.model_validate(data)

    return await case_form(request, case_id, "form_team",
                          lambda cmd, body: cases.form_team(case_id, body, cmd), FormTeam,
                          lambda lang, result: _t(lang, "form_team.done", n=len(result.get("team", []))),
                          build)


# ---------------------------------------------------------------- contact and triage


@router.post("/cases/{case_id}/contacts")
async def record_contact(request: Request, case_id: str) -> Response:
    return await case_form(request, case_id, "record_contact",
                          lambda cmd, body: cases.record_contact(case_id, body, cmd), RecordContact,
                          lambda lang, result: _t(lang, "record_contact.done"))


@router.post("/cases/{case_id}/triage")
async def triage(request: Request, case_id: str) -> Response:
    return await case_form(request, case_id, "triage",
                          lambda cmd, body: cases.triage(case_id, body, cmd), Triage,
                          lambda lang, result: _t(lang, "triage.done"))


# ---------------------------------------------------------------- the assessment


@router.post("/cases/{case_id}/assessment/meeting")
async def schedule_assessment_meeting(request: Request, case_id: str) -> Response:
    """The workflow refuses a meeting in the past (and fewer than two of the core team)."""
    timezone = timezone_of(request)

    def done(lang: str, result: dict) -> str:
        when = (result.get("assessment_meeting") or {}).get("at")
        return _t(lang, "schedule_assessment_meeting.done",
                  when=i18n.format_datetime(lang, when, timezone))

    return await case_form(request, case_id, "schedule_assessment_meeting",
                          lambda cmd, body: cases.schedule_assessment_meeting(case_id, body, cmd),
                          ScheduleAssessmentMeeting, done)


def _assessment(data: dict, lang: str, values: dict[str, str]) -> AssessmentContent:
    """The ICS form sends every dimension of the policy (its name in a hidden field); a
    dimension with nothing written is left out, so "complete" means something."""
    ics = data.get("ics")
    if isinstance(ics, dict):
        data["ics"] = {
            side: [e for e in entries if not isinstance(e, dict)
                   or any(str(e.get(k) or "").strip() for k in ICS_TEXTS)]
            if isinstance(entries, list) else entries
            for side, entries in ics.items()
        }
    return AssessmentContent.model_validate(data)


@router.post("/cases/{case_id}/assessment")
async def put_assessment(request: Request, case_id: str) -> Response:
    """Save the ICS assessment; it stays in progress until it is completed."""
    return await case_form(request, case_id, "put_assessment",
                          lambda cmd, body: cases.put_assessment(case_id, body, cmd),
                          AssessmentContent, lambda lang, result: _t(lang, "put_assessment.done"),
                          _assessment)


def _complete(data: dict, lang: str, values: dict[str, str]) -> CompleteAssessment:
    """The questionnaires filled in for the assessment, if any (api/pages/outcomes.py)."""
    from api.pages.outcomes import measurements_of
    from api.pages.plan import field_errors

    measurements, typos = measurements_of(values, lang)
    if typos:
        raise field_errors(typos)
    return CompleteAssessment.model_validate({"measurements": measurements})


@router.post("/cases/{case_id}/assessment/complete")
async def complete_assessment(request: Request, case_id: str) -> Response:
    return await case_form(request, case_id, "complete_assessment",
                          lambda cmd, body: cases.complete_assessment(case_id, cmd, body),
                          CompleteAssessment,
                          lambda lang, result: _t(lang, "complete_assessment.done"), _complete)


@router.post("/cases/{case_id}/assessment/provisional")
async def provisional_assessment(request: Request, case_id: str) -> Response:
    return await case_form(request, case_id, "provisional_assessment",
                          lambda cmd, body: cases.provisional_assessment(case_id, body, cmd),
                          ProvisionalAssessmentIn,
                          lambda lang, result: _t(lang, "provisional_assessment.done"))


class _FutureExtension(ExtendAssessment):
    """The page's own rule on top of the workflow's (later than the current deadline): a
    new deadline is in the future."""

    @field_validator("new_due_at")
    @classmethod
    def _in_the_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        if "now" in context and value <= context["now"]:
            raise ValueError(context["message"])
        return value


def _extension(data: dict, lang: str, values: dict[str, str]) -> ExtendAssessment:
    checked = _FutureExtension.model_validate(
        data, context={"now": utcnow(), "message": _t(lang, "extend_assessment.past")})
    return ExtendAssessment.model_validate(checked.model_dump())


@router.post("/cases/{case_id}/assessment/extension")
async def extend_assessment(request: Request, case_id: str) -> Response:
    """Sweden: the committee's recorded decision moves the assessment deadline."""
    timezone = timezone_of(request)

    def done(lang: str, result: dict) -> str:
        extensions = result.get("assessment_extensions") or [{}]
        return _t(lang, "extend_assessment.done",
                  when=i18n.format_datetime(lang, extensions[-1].get("new_due_at"), timezone))

    return await case_form(request, case_id, "extend_assessment",
                          lambda cmd, body: cases.extend_assessment(case_id, body, cmd),
                          ExtendAssessment, done, _extension)


# ---------------------------------------------------------------- pause and resume


@router.post("/cases/{case_id}/pause")
async def pause(request: Request, case_id: str) -> Response:
    def done(lang: str, result: dict) -> str:
        pauses = result.get("pauses") or [{}]
        waiting = pauses[-1].get("waiting_for_family", True)
        return _t(lang, "pause.done_family" if waiting else "pause.done")

    return await case_form(request, case_id, "pause",
                          lambda cmd, body: cases.pause(case_id, body, cmd), PauseCase, done)


@router.post("/cases/{case_id}/resume")
async def resume(request: Request, case_id: str) -> Response:
    return await case_form(request, case_id, "resume",
                          lambda cmd: cases.resume(case_id, cmd), None,
                          lambda lang, result: _t(lang, "resume.done"))
