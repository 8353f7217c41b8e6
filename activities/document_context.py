"""What each document shows, built from the real case state. Pure: no I/O, no clock.

The case workflow may call `document_context(state, kind, version)` itself (this module
imports only `models`, the pure `domain.outcomes` and the standard library, so it is safe
through pass-through) and put the result into a `DocumentRequest`. Every value is JSON-safe
(instants as ISO 8601 strings) so the same state always gives the same context and so the
same content hash.

Version numbers per kind: the assessment report is version 1 (2, 3… for a re-assessment);
the joint plan and the decision letter use the plan's version; status minutes use the
meeting's number; the closing summary is version 1; the committee agenda the meeting's number
(`agenda_context`); the monthly report one version per month (`monthly_report_context`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from domain import outcomes as oc
from models.case import CaseState, PlanVersion
from models.messaging import DocumentKind

TIMEZONES = {"DK": "Europe/Copenhagen", "SE": "Europe/Stockholm"}
CURRENCIES = {"DK": "kr.", "SE": "kr"}
# Where a family appeals a decision, and within how many weeks (country data, not language).
APPEAL = {
    "DK": {"body": "Ankestyrelsen", "weeks": 4},
    "SE": {"body": "förvaltningsrätten", "weeks": 3},
}
ICS_SIDES = ("child_development", "parenting_capacity", "family_and_network")


class NoSuchContent(ValueError):
    """The case has nothing to put in this document (yet): e.g. no plan version 3."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _timezone(state: CaseState) -> str:
    policy = getattr(state, "policy", None)
    return getattr(policy, "timezone", None) or TIMEZONES.get(state.country, "Europe/Copenhagen")


def base_context(state: CaseState) -> dict[str, Any]:
    fam = state.family
    return {
        "case_id": state.id,
        "case_ref": state.id[:8],
        "country": state.country,
        "timezone": _timezone(state),
        "currency": CURRENCIES.get(state.country, ""),
        "family_name": fam.name,
        "family_language": fam.language,
        "members": [
            {"index": i, "name": m.name, "role": m.role.value,
             "birth_date": m.birth_date.isoformat() if m.birth_date else None,
             "diagnoses": list(m.diagnoses), "needs": list(m.needs)}
            for i, m in enumerate(fam.members)
        ],
        "children": [m.name for m in fam.members if m.role.value == "child"],
        "parents": [m.name for m in fam.members if m.role.value == "parent"],
        "coordinator_id": state.coordinator_id,
        "team": [{"staff_id": t.staff_id, "discipline": t.discipline, "department": t.department}
                 for t in state.team],
        "stage": state.stage.value,
        "referral": {
            "source": state.referral.source.value,
            "kind": state.referral.kind.value,
            "received_at": _iso(state.referral.received_at),
            "reason": state.referral.reason,
        },
        "existing_contacts": [c.model_dump(mode="json") for c in state.existing_contacts],
        "contact_preference": state.contact_preference.value,
    }


def _plan(state: CaseState, version: int) -> PlanVersion:
    plan = next((p for p in state.plans if p.version == version), None)
    if plan is None:
        raise NoSuchContent(f"The case has no plan version {version}.")
    return plan


def _funding_by_department(services: list[dict]) -> list[dict]:
    totals: dict[str, float] = defaultdict(float)
    for s in services:
        shares = s["funding"] or [{"department": s["department"], "share": 1.0}]
        for f in shares:
            totals[f["department"]] += s["monthly_cost"] * f["share"]
    return [{"department": d, "monthly": round(v, 2)} for d, v in sorted(totals.items())]


def _reason(text: str) -> dict[str, str]:
    kind, _, detail = text.partition(":")
    return {"kind": kind.strip(), "detail": detail.strip()}


def plan_context(plan: PlanVersion, members: list[str]) -> dict[str, Any]:
    services = [s.model_dump(mode="json") for s in plan.services]
    goals = {g.id: g.text for g in plan.goals}
    by_member: dict[str, list[dict]] = defaultdict(list)
    for a in plan.actions:
        by_member[a.member or ""].append(
            {**a.model_dump(mode="json"), "goal_text": goals.get(a.goal_id or "", "")})
    joint = [s for s in services if len({f["department"] for f in s["funding"]}) > 1]
    return {
        "version": plan.version,
        "status": plan.status,
        "family_goals": list(plan.family_goals),
        "goals": [g.model_dump(mode="json") for g in plan.goals],
        "actions_by_member": [
            {"member": m, "actions": by_member[m]}
            for m in sorted(by_member, key=lambda k: (k == "", members.index(k) if k in members else 99, k))
        ],
        "services": services,
        "total_monthly": round(sum(s["monthly_cost"] for s in services), 2),
        "joint_monthly": round(sum(s["monthly_cost"] for s in joint), 2),
        "funding_by_department": _funding_by_department(services),
        "votes": [v.model_dump(mode="json") for v in plan.votes],
        "decision": plan.decision,
        "decided_at": _iso(plan.decided_at),
        "escalation_reasons": [_reason(r) for r in plan.escalation_reasons],
        "family_approved": plan.family_approved,
        "family_comment": plan.family_comment,
        "committee_funding": [f.model_dump(mode="json") for f in plan.committee_funding],
        "created_at": _iso(plan.created_at),
        "created_by": plan.created_by,
    }


def _assessment(state: CaseState, version: int) -> dict[str, Any]:
    a = state.assessment
    if a is None:
        raise NoSuchContent("The case has no assessment recorded yet.")
    meeting = state.assessment_meeting
    deadline = next((d for d in state.deadlines if d.kind.value == "assessment"), None)
    return {
        "meeting": {"at": _iso(meeting.at), "location": meeting.location,
                    "participants": list(meeting.participants)} if meeting else None,
        "ics": [
            {"side": side, "entries": [e.model_dump(mode="json") for e in a.ics.get(side, [])]}
            for side in ICS_SIDES if a.ics.get(side)
        ],
        "child_views": a.child_views or "",
        "child_views_waiver": a.child_views_waiver or "",
        "investigations": list(a.investigations),
        "completed_at": _iso(state.assessment_completed_at),
        "deadline": {"due_at": _iso(deadline.due_at), "legal_basis": deadline.legal_basis,
                     "status": deadline.status.value} if deadline else None,
        "provisional": [{"at": _iso(p.at), "text": p.text}
                        for p in getattr(state, "provisional_assessments", [])],
        # The instruments filled in at the assessment (up to its completion).
        "outcomes": oc.snapshot(state.policy.outcome_instruments, [
            m for m in state.outcome_measurements if m.occasion == "assessment"
            and (state.assessment_completed_at is None or m.recorded_at <= state.assessment_completed_at)]),
        "date": _iso(state.assessment_completed_at or (state.history[-1].at if state.history else None)),
    }


def _minutes(state: CaseState, number: int) -> dict[str, Any]:
    meeting = next((m for m in state.status_meetings if m.number == number), None)
    if meeting is None:
        raise NoSuchContent(f"The case has no status meeting number {number}.")
    texts: dict[str, str] = {}
    for plan in state.plans:  # the newest text of each goal id wins
        texts.update({g.id: g.text for g in plan.goals})
    nxt = next((d for d in state.deadlines if d.kind.value == "status_meeting" and d.due_at > meeting.at),
               None)
    follow = next((d for d in state.deadlines
                   if d.kind.value in ("first_followup", "followup") and d.due_at > meeting.at), None)
    return {
        "number": meeting.number,
        "at": _iso(meeting.at),
        "participants": list(meeting.participants),
        "minutes": meeting.minutes,
        "goal_progress": [{**g.model_dump(mode="json"), "goal_text": texts.get(g.goal_id, g.goal_id)}
                          for g in meeting.goal_progress],
        "new_plan_version": meeting.new_plan_version,
        "recorded_by": meeting.recorded_by,
        "next_meeting_due": _iso(nxt.due_at) if nxt else None,
        "next_followup_due": _iso(follow.due_at) if follow else None,
        "followup_months": state.followup_months,
        "concern_level": state.concern_level,
        "outcomes": _meeting_outcomes(state, number),
        "date": _iso(meeting.at),
    }


def _meeting_outcomes(state: CaseState, number: int) -> list[dict]:
    """The instruments filled in with status meeting `number`: recorded by the same command
    (the instant of its history entry)."""
    recorded = next((h.at for h in state.history if h.event == "status_meeting_recorded"
                     and h.detail.get("number") == number), None)
    if recorded is None:
        return []
    return oc.snapshot(state.policy.outcome_instruments, [
        m for m in state.outcome_measurements
        if m.occasion == "status_meeting" and m.recorded_at == recorded])


def _legacy_outcomes(outcomes: dict) -> dict[str, list[dict]]:
    """The close body's free-form object, as far as a document can name it in its language:
    SDQ total difficulties before/after per informant, goal attainment per goal. Scales given
    there are measurements (domain.outcomes.legacy_outcomes) and shown with them."""
    sdq = outcomes.get("sdq") or outcomes.get("SDQ") or []
    entries = ([{"informant": k, **v} for k, v in sdq.items() if isinstance(v, dict)]
               if isinstance(sdq, dict) else [e for e in sdq if isinstance(e, dict)]
               if isinstance(sdq, list) else [])
    totals = []
    for e in entries:
        before = e.get("before", e.get("at_assessment"))
        after = e.get("after", e.get("at_closing"))
        if isinstance(before, int | float) or isinstance(after, int | float):
            totals.append({"informant": str(e.get("informant") or ""), "child": e.get("child") or "",
                           "before": before if isinstance(before, int | float) else None,
                           "after": after if isinstance(after, int | float) else None})
    goals = []
    raw = outcomes.get("goal_attainment")
    for goal_id, value in (raw.items() if isinstance(raw, dict) else []):
        status = value.get("status") if isinstance(value, dict) else value
        if isinstance(status, str):
            goals.append({"goal_id": str(goal_id), "status": status})
    return {"totals": totals, "goals": goals}


def _agenda_item(state: CaseState, version: int) -> dict[str, Any]:
    item = next((i for i in reversed(state.escalations) if i.plan_version == version), None)
    if item is None:
        raise NoSuchContent(f"Plan version {version} of the case was never escalated.")
    names = [m.name for m in state.family.members]
    return {
        "item_id": item.id,
        "case_id": state.id,
        "case_ref": state.id[:8],
        "family_name": state.family.name,
        "children": [m.name for m in state.family.members if m.role.value == "child"],
        "coordinator_id": state.coordinator_id,
        "reasons": [_reason(r) for r in item.reasons],
        "escalated_at": _iso(item.escalated_at),
        "meeting_at": _iso(item.meeting_at),
        "status": item.status,
        "child_views": (state.assessment.child_views or "") if state.assessment else "",
        "plan": plan_context(_plan(state, item.plan_version), names),
    }


def _decision(state: CaseState, version: int) -> dict[str, Any]:
    item = next((i for i in reversed(state.escalations)
                 if i.plan_version == version and i.status == "decided"), None)
    if item is None or item.decision is None:
        raise NoSuchContent(f"The committee has not decided plan version {version}.")
    names = [m.name for m in state.family.members]
    return {
        "item_id": item.id,
        "decision": item.decision.value,
        "notes": item.notes,
        "funding": [f.model_dump(mode="json") for f in item.funding],
        "decided_at": _iso(item.decided_at),
        "reasons": [_reason(r) for r in item.reasons],
        "plan": plan_context(_plan(state, version), names),
        "appeal": APPEAL.get(state.country, APPEAL["DK"]),
        "needs_family_approval": item.decision.value == "approved_with_changes",
        "date": _iso(item.decided_at),
    }


def _closing(state: CaseState, version: int) -> dict[str, Any]:
    closure = state.closure
    if closure is None:
        raise NoSuchContent("The case is not closed.")
    plan = state.active_plan or (state.plans[-1] if state.plans else None)
    last_progress: dict[str, dict] = {}
    for meeting in state.status_meetings:
        for g in meeting.goal_progress:
            last_progress[g.goal_id] = {"status": g.status.value, "note": g.note,
                                        "at": _iso(meeting.at)}
    stages = [{"at": _iso(h.at), "from": h.detail.get("from"), "to": h.detail.get("to")}
              for h in state.history if h.event == "stage_changed"]
    return {
        "reason": closure.reason.value,
        "note": closure.note,
        "closed_at": _iso(closure.at),
        "closed_by": closure.by,
        "opened_at": _iso(state.referral.received_at),
        "days_open": (closure.at - state.referral.received_at).days,
        "stages": stages,
        "status_meetings": len(state.status_meetings),
        "contacts": len(state.contacts),
        "plan_versions": len(state.plans),
        "family_goals": list(plan.family_goals) if plan else [],
        "goals": [{**g.model_dump(mode="json"), "progress": last_progress.get(g.id)}
                  for g in (plan.goals if plan else [])],
        # Keys only (instrument, informant, scale, band): the template names them in the
        # document's language.
        "outcomes": oc.summary(state.policy.outcome_instruments, state.outcome_measurements),
        "outcomes_given": _legacy_outcomes(closure.outcomes or {}),
        "date": _iso(closure.at),
    }


def document_context(state: CaseState, kind: DocumentKind | str, version: int = 1) -> dict[str, Any]:
    """The context of one document of one case. Raises NoSuchContent when the case has
    nothing for it (e.g. a decision letter for a plan the committee never decided)."""
    kind = DocumentKind(kind)
    ctx = base_context(state)
    ctx["version"] = version
    match kind:
        case DocumentKind.assessment_report:
            ctx["assessment"] = _assessment(state, version)
            ctx["date"] = ctx["assessment"]["date"]
        case DocumentKind.joint_plan:
            ctx["plan"] = plan_context(_plan(state, version), [m.name for m in state.family.members])
            ctx["date"] = ctx["plan"]["decided_at"] or ctx["plan"]["created_at"]
        case DocumentKind.status_minutes:
            ctx["meeting"] = _minutes(state, version)
            ctx["date"] = ctx["meeting"]["date"]
        case DocumentKind.committee_agenda:
            item = _agenda_item(state, version)
            ctx.update(items=[item], meeting_at=item["meeting_at"], committee_id=None,
                       date=item["meeting_at"] or item["escalated_at"])
        case DocumentKind.decision_letter:
            ctx["letter"] = _decision(state, version)
            ctx["date"] = ctx["letter"]["date"]
        case DocumentKind.closing_summary:
            ctx["closing"] = _closing(state, version)
            ctx["date"] = ctx["closing"]["date"]
        case DocumentKind.monthly_report:
            raise NoSuchContent("The monthly report covers all cases: use monthly_report_context().")
    ctx["staff_ids"] = staff_ids(ctx)
    return ctx


def agenda_context(
    committee_id: str, meeting_at: datetime, cases: list[tuple[CaseState, str]], country: str = "DK"
) -> dict[str, Any]:
    """The committee's agenda for one meeting: every (case, item id) frozen on it."""
    items = []
    for state, item_id in cases:
        item = next((i for i in state.escalations if i.id == item_id), None)
        if item is None:
            raise NoSuchContent(f"No committee item {item_id} on case {state.id}.")
        items.append(_agenda_item(state, item.plan_version))
    tz = _timezone(cases[0][0]) if cases else TIMEZONES.get(country, "Europe/Copenhagen")
    ctx = {"committee_id": committee_id, "meeting_at": _iso(meeting_at), "items": items,
           "timezone": tz, "currency": CURRENCIES.get(country, ""), "country": country,
           "date": _iso(meeting_at), "case_ref": committee_id}
    ctx["staff_ids"] = staff_ids(ctx)
    return ctx


def monthly_report_context(
    month: str, states: list[CaseState], as_of: datetime, country: str = "DK"
) -> dict[str, Any]:
    """The coordination group's monthly report over `states` (every case, open or closed)
    for `month` ("YYYY-MM"): caseload, flow, overdue deadlines, committee, joint funding,
    cooperation between the adult and the child units, goal attainment of closed cases."""
    in_month = lambda dt: dt is not None and dt.strftime("%Y-%m") == month  # noqa: E731
    open_states = [s for s in states if s.stage.value != "closed"]
    by_stage: dict[str, int] = defaultdict(int)
    caseload: dict[str, int] = defaultdict(int)
    for s in open_states:
        by_stage[s.stage.value] += 1
        if s.coordinator_id:
            caseload[s.coordinator_id] += 1
    closed = [s for s in states if s.closure is not None and in_month(s.closure.at)]
    reasons: dict[str, int] = defaultdict(int)
    for s in closed:
        reasons[s.closure.reason.value] += 1
    overdue: dict[str, int] = defaultdict(int)
    for s in open_states:
        for d in s.deadlines:
            if d.is_open() and d.due_at <= as_of:
                overdue[d.kind.value] += 1
    waiting = sum(1 for s in open_states for i in s.escalations if i.status == "waiting")
    funding: dict[str, float] = defaultdict(float)
    for s in open_states:
        plan = s.active_plan
        if plan is None:
            continue
        for row in _funding_by_department([x.model_dump(mode="json") for x in plan.services]):
            funding[row["department"]] += row["monthly"]

    def cooperates(s: CaseState) -> bool:
        departments = {t.department for t in s.team} | {c.department for c in s.existing_contacts}
        plan = s.active_plan
        if plan is not None:
            departments |= {f.department for x in plan.services for f in x.funding}
        adult = any("adult" in d for d in departments)
        child = any(("child" in d) or ("school" in d) for d in departments)
        return adult and child

    achieved = total_goals = 0
    for s in closed:
        last: dict[str, str] = {}
        for m in s.status_meetings:
            last.update({g.goal_id: g.status.value for g in m.goal_progress})
        total_goals += len(last)
        achieved += sum(1 for v in last.values() if v == "achieved")
    active_states = [s for s in open_states if s.stage.value == "active"]
    ctx = {
        "month": month,
        "as_of": _iso(as_of),
        "date": _iso(as_of),
        "country": country,
        "timezone": TIMEZONES.get(country, "Europe/Copenhagen"),
        "currency": CURRENCIES.get(country, ""),
        "case_ref": f"report-{month}",
        "open_cases": len(open_states),
        "by_stage": dict(sorted(by_stage.items())),
        "new_referrals": sum(1 for s in states if in_month(s.referral.received_at)),
        "closed_cases": len(closed),
        "close_reasons": dict(sorted(reasons.items())),
        "overdue": dict(sorted(overdue.items())),
        "committee_waiting": waiting,
        "caseload": [{"coordinator_id": k, "open": v} for k, v in sorted(caseload.items())],
        "joint_funding": [{"department": d, "monthly": round(v, 2)} for d, v in sorted(funding.items())],
        "cooperation_share": (sum(1 for s in active_states if cooperates(s)) / len(active_states))
        if active_states else None,
        "goals_achieved": achieved,
        "goals_total": total_goals,
    }
    ctx["staff_ids"] = sorted(caseload)
    return ctx


def staff_ids(ctx: dict[str, Any]) -> list[str]:
    """Every staff id a document names, so the activity can print names instead of ids."""
    found: set[str] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            if key == "participants":
                found.update(x for x in value if isinstance(x, str))
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in (
            "coordinator_id", "staff_id", "created_by", "recorded_by", "closed_by", "owner"
        ):
            found.add(value)

    walk(ctx)
    return sorted(found)
