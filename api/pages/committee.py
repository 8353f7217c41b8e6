"""The visitation committee's page (`/committee`, DESIGN §10): the agenda per meeting, each
item with the plan, the team's votes and reasons, why it was escalated and the funding asked,
and the decision form (decision, notes, funding per department in percent that must add up
to 100 %) — sent through the API's own `api.committee.decide`, the workflow decides."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import Session, select

from api import committee as committee_api
from api import watch
from api.pages import i18n
from api.pages.common import (
    FormState,
    actor_of,
    back,
    catch_up,
    current_user,
    error_page,
    language_of,
    login_redirect,
    read_form,
    render,
    send_form,
    staff_names,
    timezone_of,
)
from api.pages.manager_words import WORDS
from api.readmodel import committee_items
from api.scope import facts_from_row, scoped_case_ids
from domain.access import committee_scope, may_read_committee, read_refusal
from domain.lifecycle import is_manager
from models.case import CommitteeDecision, CommitteeDecisionKind
from models.projection import case_from_document
from models.tables import CaseRow, CommitteeItemRow, CommitteeMeetingRow, StaffRow

router = APIRouter(include_in_schema=False)

FUNDING_ROWS = 2  # empty rows under the departments the plan asks funding from
MAX_FUNDING_ROWS = 20
DECIDED_SHOWN = 20


def form_name(item_id: str) -> str:
    return f"form-committee_decision-{item_id}"


def may_decide(actor) -> bool:
    """The workflow's rule (domain.lifecycle.apply_committee_decision): the committee, or a
    manager (and admin) on its behalf."""
    return is_manager(actor) or "committee" in actor.roles


def asked_funding(plan) -> list[dict]:
    """The split the plan asks for, per department in percent of its monthly cost: each
    service's funding shares (a service without any: its own department pays)."""
    amounts: OrderedDict[str, float] = OrderedDict()
    for service in plan.services:
        parts = [(f.department, f.share) for f in service.funding] or [(service.department, 1.0)]
        for department, share in parts:
            amounts[department] = amounts.get(department, 0) + service.monthly_cost * share
    total = sum(amounts.values())
    if total <= 0:
        return [{"department": d, "percent": ""} for d in amounts]
    rows = [{"department": d, "percent": round(100 * v / total, 1)} for d, v in amounts.items()]
    if rows:  # rounding: the rows add up to exactly 100
        rows[-1]["percent"] = round(100 - sum(r["percent"] for r in rows[:-1]), 1)
    for row in rows:
        row["percent"] = f"{row['percent']:g}"
    return rows


def _number(text: str) -> float | None:
    try:
        value = float(text.replace(",", ".").replace("%", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_funding(values: dict[str, str], lang: str) -> tuple[dict[str, str], str, list[dict]]:
    """The funding rows of the form: (field errors, the sentence for a split that does not add
    up to 100 %, the shares as the API takes them). Rows left wholly empty are dropped."""
    errors: dict[str, str] = {}
    shares: list[dict] = []
    indices = sorted({int(k.split(".")[1]) for k in values
                      if k.startswith("funding.") and k.count(".") == 2 and k.split(".")[1].isdigit()})
    for i in indices:
        department = (values.get(f"funding.{i}.department") or "").strip()
        raw = (values.get(f"funding.{i}.percent") or "").strip()
        if not department and not raw:
            continue
        if not department:
            errors[f"funding.{i}.department"] = i18n.translate(lang, "error.missing")
        percent = _number(raw) if raw else None
        if not raw:
            errors[f"funding.{i}.percent"] = i18n.translate(lang, "error.missing")
        elif percent is None:
            errors[f"funding.{i}.percent"] = i18n.translate(lang, "error.number")
        elif not 0 < percent <= 100:
            errors[f"funding.{i}.percent"] = i18n.translate(lang, "committee.error.percent_range")
        if department and percent is not None and 0 < percent <= 100:
            shares.append({"department": department, "share": round(percent / 100, 6), "percent": percent})
    message = ""
    if not errors and shares:
        total = sum(s["percent"] for s in shares)
        if abs(total - 100) > 0.05:
            message = i18n.translate(lang, "committee.error.total", total=f"{total:g}")
    return errors, message, [{"department": s["department"], "share": s["share"]} for s in shares]


def _labels(lang: str, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        parts = name.split(".")
        if parts[0] == "funding" and len(parts) == 3:
            out[name] = i18n.translate(lang, "committee.funding_row", n=int(parts[1]) + 1) + ": " + \
                i18n.translate(lang, f"committee.label.{parts[2]}")
        else:
            key = f"committee.label.{name}"
            text = i18n.translate(lang, key)
            out[name] = text if text != key else i18n.translate(lang, "committee.label.decision_form")
    return out


def _item_view(session: Session, row: CommitteeItemRow, actor, names: dict[str, str]) -> dict:
    """One item as the page shows it: the plan, votes and family's answer when `actor` may read
    the case (domain.access.read_refusal), else only that it exists."""
    case = session.get(CaseRow, row.case_id)
    view: dict = {"row": row, "id": row.id, "case_id": row.case_id, "readable": False,
                  "family_name": "", "plan": None, "version": None, "funding_rows": []}
    if case is None:
        return view
    refusal = read_refusal(actor, facts_from_row(case, session))
    if refusal is not None:
        view["refusal"] = refusal
        return view
    state = case_from_document(case.document)
    plan = next((p for p in state.plans if p.version == row.plan_version), None)
    item = next((i for i in state.escalations if i.id == row.id), None)
    view.update(readable=True, family_name=case.family_name, version=state.version, stage=state.stage.value,
                plan=plan, item=item, coordinator=names.get(state.coordinator_id or "", state.coordinator_id),
                open=state.stage.value != "closed")
    if plan is not None:
        view["monthly_total"] = sum(s.monthly_cost for s in plan.services)
        view["funding_rows"] = asked_funding(plan)
    view["rows"] = min(MAX_FUNDING_ROWS, len(view["funding_rows"]) + FUNDING_ROWS)
    return view


def _agenda(request: Request, actor) -> dict:
    tz = ZoneInfo(timezone_of(request))
    with Session(request.app.state.engine) as session:
        names = staff_names(session)
        scope = committee_scope(actor)
        waiting = [_item_view(session, r, actor, names) for r in committee_items(session, "waiting", scope)]
        decided_rows = committee_items(session, "decided", scope)
        decided_rows = sorted(decided_rows, key=lambda r: r.decided_at or r.escalated_at, reverse=True)
        decided = []
        for r in decided_rows[:DECIDED_SHOWN]:
            case = session.get(CaseRow, r.case_id)
            readable = case is not None and read_refusal(actor, facts_from_row(case, session)) is None
            decided.append({"row": r, "readable": readable,
                            "family_name": case.family_name if readable else ""})
        meetings_q = select(CommitteeMeetingRow).order_by(CommitteeMeetingRow.at.desc()).limit(10)
        held = list(session.exec(meetings_q).all())
        if not scope.everything:
            mine = set(session.exec(select(CommitteeItemRow.id).where(
                CommitteeItemRow.case_id.in_(scoped_case_ids(scope)))).all())
        else:
            mine = None
        meetings = [{"row": m, "count": len([i for i in m.item_ids if mine is None or i in mine])}
                    for m in held]
    groups: OrderedDict[str, dict] = OrderedDict()
    for view in sorted(waiting, key=lambda v: (v["row"].meeting_at is None,
                                               v["row"].meeting_at or v["row"].escalated_at)):
        at = view["row"].meeting_at
        key = at.astimezone(tz).strftime("%Y-%m-%dT%H:%M") if at else ""
        groups.setdefault(key, {"at": at, "items": []})["items"].append(view)
    return {"groups": list(groups.values()), "waiting": len(waiting), "decided": decided,
            "meetings": meetings, "staff": names}


async def committee_page_response(request: Request, user: StaffRow,
                                  form_state: FormState | None = None) -> Response:
    actor = actor_of(user)
    await catch_up(request)
    data = await asyncio.to_thread(_agenda, request, actor)
    status = form_state.status if form_state else 200
    return render(request, "committee.html.j2", status=status, user=user, nav="committee",
                  form_state=form_state, may_decide=may_decide(actor), now=watch.utcnow(),
                  decisions=[d.value for d in CommitteeDecisionKind], **data, **WORDS)


def _reader(request: Request) -> tuple[StaffRow | None, Response | None]:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return None, login_redirect(request)
    if not may_read_committee(actor_of(user)):
        lang = language_of(request, user)
        return user, error_page(request, user, 403, i18n.translate(lang, "error.forbidden"),
                                i18n.translate(lang, "committee.who"))
    return user, None


@router.get("/committee")
async def committee_page(request: Request) -> Response:
    user, refused = _reader(request)
    if refused is not None:
        return refused
    return await committee_page_response(request, user)


@router.post("/committee/items/{item_id}/decision")
async def committee_decision_form(request: Request, item_id: str) -> Response:
    user, refused = _reader(request)
    if refused is not None:
        return refused
    lang = language_of(request, user)
    values = await read_form(request)
    fname = form_name(item_id[:120])

    async def show_again(fs: FormState) -> Response:
        fs.labels = _labels(lang, list(fs.errors))
        return await committee_page_response(request, user, fs)

    errors, message, shares = check_funding(values, lang)
    rejected = values.get("decision") == CommitteeDecisionKind.rejected.value
    if rejected:  # a rejection grants nothing: no split to check
        errors = {k: v for k, v in errors.items() if not k.startswith("funding.")}
        message, shares = "", []
    if errors or message:
        return await show_again(FormState(fname, values, errors=errors, message=message))

    def build(data: dict) -> CommitteeDecision:
        data.pop("funding", None)  # percent rows, checked above: the API takes shares
        return CommitteeDecision.model_validate({**data, "funding": shares})

    def done(result: object) -> Response:
        return back("/committee", ok=i18n.translate(lang, "committee.decided"))

    return await send_form(request, fname, values,
                           lambda cmd, body: committee_api.decide(item_id, body, cmd),
                           CommitteeDecision, show_again, done, build=build)
