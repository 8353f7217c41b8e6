"""What a manager must see (DESIGN §6): stuck cases with reasons, caseload against the cap.

This first version reads business reasons from the read model; technical reasons (failing
activities, failing workflow tasks) come with the dashboard issue.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlmodel import select

from api.cases import Cmd
from api.gateway import utcnow
from api.readmodel import coordinators, open_caseloads
from domain.policy import current_policy
from models.case import CaseState, DeadlineStatus, Stage
from models.tables import CaseRow

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])

# How long a stage may take before a manager should look (days).
EXPECTED_STAGE_DAYS = {
    Stage.referred: 5, Stage.coordinator_assigned: 14, Stage.team_formed: 21,
    Stage.assessment: 120, Stage.planning: 60, Stage.escalated: 21,
}


def stuck_reasons(state: CaseState, now) -> list[dict]:
    reasons = []
    for d in state.deadlines:
        if d.status_at(now) is DeadlineStatus.overdue:
            reasons.append({"kind": f"overdue:{d.kind.value}", "since": d.due_at,
                            "owner": d.owner or state.coordinator_id or "manager",
                            "detail": f"{d.kind.value} was due {d.due_at.isoformat()}"})
    limit = EXPECTED_STAGE_DAYS.get(state.stage)
    if limit is not None and now - state.stage_since > timedelta(days=limit):
        reasons.append({"kind": "stage_too_long", "since": state.stage_since,
                        "owner": state.coordinator_id or "manager",
                        "detail": f"in {state.stage.value} for {(now - state.stage_since).days} days "
                                  f"(expected at most {limit})"})
    for item in state.escalations:
        if item.status == "waiting" and now - item.escalated_at > timedelta(days=21):
            reasons.append({"kind": "committee_waiting", "since": item.escalated_at,
                            "owner": "committee", "detail": f"item {item.id} waits for a decision"})
    return reasons


@router.get("/stuck")
def stuck(cmd: Cmd) -> dict:
    cmd.caller.require()
    now = utcnow()
    rows = cmd.session.exec(
        select(CaseRow).where(CaseRow.stage != Stage.closed.value)
        .where((CaseRow.next_due_at <= now)
               | (CaseRow.stage_since <= now - timedelta(days=min(EXPECTED_STAGE_DAYS.values()))))
    ).all()
    items = []
    for row in rows:
        state = CaseState.model_validate(row.document)
        reasons = stuck_reasons(state, now)
        if reasons:
            items.append({"case_id": row.id, "stage": row.stage,
                          "coordinator_id": row.coordinator_id, "reasons": reasons})
    items.sort(key=lambda i: min(r["since"] for r in i["reasons"]))
    return {"items": items, "total": len(items)}


@router.get("/caseload")
def caseload(cmd: Cmd) -> dict:
    cmd.caller.require()
    cap = current_policy(cmd.settings.country).caseload_cap
    loads = open_caseloads(cmd.session)
    items = [{"coordinator_id": s.id, "name": s.name, "open_cases": loads.get(s.id, 0), "cap": cap,
              "at_cap": loads.get(s.id, 0) >= cap} for s in coordinators(cmd.session)]
    return {"items": items, "total": len(items)}
