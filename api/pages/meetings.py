"""After the plan (DESIGN §3.7, §3.8, §10): planning and recording status meetings (progress
per goal, plan changes as a new version, the follow-up cadence, a move to a newer policy
version) and closing the case with its outcome measures. Each form sends the JSON endpoint's
own function (api/cases.py)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session

from api.pages import i18n
from api.pages.common import timezone_of
from api.pages.outcomes import measurements_of
from api.pages.plan import (
    IndexMap,
    command_form,
    field_errors,
    number,
    plan_body,
    remap,
    rows,
    subtree,
)
from models.case import CaseState, CloseCase, RecordStatusMeeting, ScheduleStatusMeeting
from models.tables import PolicyRow

router = APIRouter(include_in_schema=False)

SDQ_INFORMANTS = ("child", "mother", "father", "teacher")
SDQ_RANGE = (0, 40)  # total difficulties
GAS_RANGE = (-2, 2)  # goal attainment scaling
ATTAINMENT = ("achieved", "partly_achieved", "not_achieved")


def _t(lang: str, key: str, **kw: object) -> str:
    return i18n.translate(lang, key, **kw)


def newer_policy_versions(session: Session, state: CaseState) -> list[dict]:
    """The policy versions a status meeting may move the case to (`policy_versions` of the
    case page's context): the country's versions newer than the case's, oldest first."""
    rows = session.execute(
        select(PolicyRow.version, PolicyRow.note, PolicyRow.created_at)
        .where(PolicyRow.country == state.policy.country, PolicyRow.version > state.policy.version)
        .order_by(PolicyRow.version)).all()
    return [{"version": r.version, "note": r.note, "created_at": r.created_at} for r in rows]


# ---------------------------------------------------------------- bodies


def build_status_meeting(values: dict[str, str], lang: str,
                         _user=None) -> Callable[[dict], RecordStatusMeeting]:
    """Progress rows without a status or a note are dropped (the goal was not discussed);
    the plan editor's fields count only when "the plan changes" is ticked."""

    def build(data: dict) -> RecordStatusMeeting:
        body = {k: v for k, v in data.items()
                if k not in ("goal_progress", "plan_changes", "measurements")}
        # The questionnaires filled in at the meeting (api/pages/outcomes.py).
        measurements, typos = measurements_of(values, lang)
        if typos:
            raise field_errors(typos)
        if measurements:
            body["measurements"] = measurements
        maps: IndexMap = {}
        progress, progress_rows = [], []
        for i, g in rows(subtree(values, "goal_progress.")):
            if isinstance(g, dict) and (g.get("status") or g.get("note")):
                progress.append({k: g[k] for k in ("goal_id", "status", "note") if k in g})
                progress_rows.append(i)
        body["goal_progress"] = progress
        maps[("goal_progress",)] = progress_rows
        if values.get("_change_plan"):
            plan, plan_maps = plan_body(values, "plan_changes.", lang, root=("plan_changes",))
            body["plan_changes"] = plan
            maps.update(plan_maps)
        try:
            return RecordStatusMeeting.model_validate(body)
        except ValidationError as error:
            raise remap(error, maps) from None

    return build


def outcomes_of(values: dict[str, str], lang: str) -> tuple[dict | None, list[tuple[tuple, str]]]:
    """`closure.outcomes` as activities/report.py reads it — `sdq`: [{child, informant,
    before, after}] (total difficulties 0–40), `goal_attainment`: {goal id: status, or
    {score (−2…+2), status}} — and the field errors of what is out of range."""
    errors: list[tuple[tuple, str]] = []
    sdq = []
    for i, r in rows(subtree(values, "outcomes.sdq.")):
        if not isinstance(r, dict) or not (r.get("before") or r.get("after")):
            continue  # a child or informant chosen, no score: nothing measured
        entry: dict = {k: r[k] for k in ("child", "informant") if r.get(k)}
        if r.get("informant") not in SDQ_INFORMANTS:
            errors.append((("outcomes", "sdq", i, "informant"), _t(lang, "plan.error.informant")))
        for key in ("before", "after"):
            if not r.get(key):
                continue
            n = number(r[key])
            if n is None or n != int(n) or not SDQ_RANGE[0] <= n <= SDQ_RANGE[1]:
                errors.append((("outcomes", "sdq", i, key), _t(lang, "plan.error.sdq_range")))
            else:
                entry[key] = int(n)
        sdq.append(entry)
    attainment: dict = {}
    for i, r in rows(subtree(values, "outcomes.goal_attainment.")):
        if not isinstance(r, dict) or not r.get("goal_id") or not (r.get("status") or r.get("score")):
            continue
        status = r.get("status")
        if status and status not in ATTAINMENT:
            errors.append((("outcomes", "goal_attainment", i, "status"), _t(lang, "error.choice")))
        if r.get("score"):
            n = number(r["score"])
            if n is None or not GAS_RANGE[0] <= n <= GAS_RANGE[1]:
                errors.append((("outcomes", "goal_attainment", i, "score"), _t(lang, "plan.error.gas_range")))
                continue
            attainment[r["goal_id"]] = {"score": int(n) if n == int(n) else n,
                                        **({"status": status} if status else {})}
        else:
            attainment[r["goal_id"]] = status
    outcomes = {k: v for k, v in (("sdq", sdq), ("goal_attainment", attainment)) if v}
    return outcomes or None, errors


def build_close(values: dict[str, str], lang: str, _user=None) -> Callable[[dict], CloseCase]:
    def build(data: dict) -> CloseCase:
        body = {k: v for k, v in data.items() if k not in ("outcomes", "measurements")}
        outcomes, own = outcomes_of(values, lang)
        if outcomes is not None:
            body["outcomes"] = outcomes
        # The questionnaires' scales (api/pages/outcomes.py): measurements at closing.
        measurements, typos = measurements_of(values, lang)
        own += typos
        if measurements:
            body["measurements"] = measurements
        try:
            close = CloseCase.model_validate(body)
        except ValidationError as error:
            raise field_errors(own, error) from None
        if own:
            raise field_errors(own)
        return close

    return build


# ---------------------------------------------------------------- the routes


@router.post("/cases/{case_id}/status-meetings/schedule")
async def schedule_status_meeting(request: Request, case_id: str) -> Response:
    from api import cases

    def done(result: dict, lang: str) -> str:
        planned = result.get("planned_meeting") or {}
        when = i18n.format_datetime(lang, planned.get("at"), timezone_of(request))
        return _t(lang, "plan.done.meeting_planned", when=when)

    return await command_form(
        request, case_id, "schedule_status_meeting",
        lambda cmd, body: cases.schedule_status_meeting(case_id, body, cmd),
        ScheduleStatusMeeting, done)


@router.post("/cases/{case_id}/status-meetings")
async def status_meeting(request: Request, case_id: str) -> Response:
    from api import cases

    def done(result: dict, lang: str) -> str:
        meetings = result.get("status_meetings") or []
        last = meetings[-1] if meetings else {}
        text = _t(lang, "plan.done.meeting_recorded", number=last.get("number", "?"))
        if last.get("new_plan_version"):
            text += " " + _t(lang, "plan.done.meeting_new_version", version=last["new_plan_version"])
        if any(h.get("event") == "policy_changed" for h in (result.get("history") or [])[-3:]):
            moved_to = (result.get("policy") or {}).get("version", "?")
            text += " " + _t(lang, "plan.done.policy_moved", version=moved_to)
        return text

    return await command_form(
        request, case_id, "status_meeting",
        lambda cmd, body: cases.status_meeting(case_id, body, cmd),
        RecordStatusMeeting, done, build_status_meeting)


@router.post("/cases/{case_id}/close")
async def close(request: Request, case_id: str) -> Response:
    from api import cases

    return await command_form(
        request, case_id, "close", lambda cmd, body: cases.close(case_id, body, cmd),
        CloseCase, lambda result, lang: _t(lang, "plan.done.closed"), build_close)
