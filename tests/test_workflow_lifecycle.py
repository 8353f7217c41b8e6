"""A whole case over two simulated years on the time-skipping server (DESIGN §3)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from domain.policy import DK
from models.case import Actor, CaseAnswer, CaseCreate, CaseState, DeadlineStatus, Stage
from models.commands import CASE_RULES, CaseWorkflowInput, CommandInput
from models.db import get_engine
from models.tables import CaseRow, CommitteeItemRow
from tests.conftest import running_worker, save_history
from tests.factories import case_create_body, whole
from workflows.case import FamilyCaseWorkflow

ADMIN = Actor(id="admin", roles=["admin"])
ANNA = Actor(id="anna", roles=["coordinator"])
OLE = Actor(id="ole", roles=["team_member"])
PER = Actor(id="per", roles=["team_member"])
BOARD = Actor(id="board", roles=["committee"])


async def cmd(handle: WorkflowHandle, name: str, actor: Actor, body: dict | None = None,
              **extra) -> CaseState:
    return whole(await handle.execute_update(
        name, CommandInput(actor=actor, body=body, **extra), result_type=CaseAnswer
    ))


async def start_case(env: WorkflowEnvironment, settings, received_at: str, **inp) -> WorkflowHandle:
    """A case started as the API starts one (the current rules generation unless `rules=`)."""
    inp.setdefault("rules", CASE_RULES)
    case_id = str(uuid.uuid4())
    body = CaseCreate.model_validate(case_create_body(received_at=received_at))
    return await env.client.start_workflow(
        FamilyCaseWorkflow.run,
        CaseWorkflowInput(case_id=case_id, policy=inp.pop("policy", DK), actor=ADMIN, create=body, **inp),
        id=f"case-{case_id}",
        task_queue=settings.task_queue,
    )


async def drive_to_planning(env: WorkflowEnvironment, handle: WorkflowHandle) -> CaseState:
    await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
    await cmd(handle, "form_team", ANNA, {"members": [
        {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"},
        {"staff_id": "per", "discipline": "school_psychologist", "department": "school"},
    ]})
    now = await env.get_current_time()
    await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": now.isoformat()})
    await cmd(handle, "schedule_assessment_meeting", ANNA, {
        "at": (now + timedelta(days=10)).isoformat(), "location": "Town hall",
        "participants": ["anna", "ole", "family"]})
    await env.sleep(timedelta(days=11))
    await cmd(handle, "put_assessment", ANNA, {
        "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
        "child_views": "Emil wants to go to school without stomach aches."})
    return await cmd(handle, "complete_assessment", ANNA)


PLAN = {
    "family_goals": ["Emil goes to school every day"],
    "goals": [{"id": "g1", "text": "Emil attends school 5 days a week", "owner": "anna"}],
    "actions": [{"id": "a1", "goal_id": "g1", "text": "Adapt the timetable", "owner": "school"}],
    "services": [{"name": "Family therapy", "paragraph": "BL § 32",
                  "department": "children_disability", "monthly_cost": 8000,
                  "funding": [{"department": "children_disability", "share": 0.5},
                              {"department": "adult_services", "share": 0.5}]}],
}


async def test_two_years_with_escalation_status_meetings_and_continue_as_new(
    ts_env: WorkflowEnvironment, settings
) -> None:
    async with running_worker(ts_env.client, settings):
        # A low threshold of our own makes the case continue as new within the test.
        handle = await start_case(ts_env, settings, "2026-11-20T09:00:00Z",
                                  max_history_events=200)
        first_run = (await handle.describe()).run_id
        state = await drive_to_planning(ts_env, handle)
        assert state.stage is Stage.planning
        assert next(d for d in state.deadlines if d.kind.value == "assessment").status is (
            DeadlineStatus.met
        )

        await cmd(handle, "put_plan", ANNA, PLAN)
        await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
        state = await cmd(handle, "vote", OLE, {"staff_id": "ole", "vote": "disagree",
                                                "reason": "Too little for the parents"})
        assert state.stage is Stage.escalated
        item = state.escalations[-1]
        assert item.reasons == ["disagreement: ole"]

        # A refused command leaves no trace and comes back with a readable message.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await cmd(handle, "vote", PER, {"staff_id": "per", "vote": "agree"})
        assert "with the visitation committee" in str(refused.value.cause)

        await ts_env.sleep(timedelta(days=6))
        state = await cmd(handle, "committee_decision", BOARD,
                          {"decision": "approved", "notes": "ok", "funding": []}, item_id=item.id)
        assert state.stage is Stage.planning  # decided, the family has not approved yet
        state = await cmd(handle, "family_response", ANNA, {"approved": True, "comment": "Ours"})
        assert state.stage is Stage.active
        assert state.active_plan is not None and state.active_plan.decision == "committee"

        for n in range(20):
            await ts_env.sleep(timedelta(days=37))
            at = await ts_env.get_current_time()
            state = await cmd(handle, "status_meeting", ANNA, {
                "at": at.isoformat(), "participants": ["anna", "ole", "family"],
                "minutes": f"meeting {n + 1}",
                "goal_progress": [{"goal_id": "g1", "status": "on_track"}],
                **({"followup_months": 6, "followup_reason": "stable"} if n == 0 else {})})
        assert len(state.status_meetings) == 20
        assert await ts_env.get_current_time() - state.created_at > timedelta(days=700)

        last_run = (await handle.describe()).run_id
        assert last_run != first_run, "a long case must continue as new"
        # The first meeting is the statutory first follow-up; the cadence was set with a reason.
        assert any(e.event == "followup_cadence_set" for e in state.history)

        state = await cmd(handle, "close", ANNA, {"reason": "goals_reached",
                                                   # GAS -2..+2 (models/outcomes.py)
                                                   "outcomes": {"goal_attainment": {"g1": 1}}})
        assert state.stage is Stage.closed
        result: CaseState = await handle.result()
        assert result.stage is Stage.closed and result.version == state.version
        assert all(d.status is not DeadlineStatus.open for d in result.deadlines)

        with Session(get_engine(settings.db_url)) as session:
            row = session.get(CaseRow, result.id)
            assert row is not None and row.version == result.version and row.stage == "closed"
            assert session.get(CommitteeItemRow, item.id).status == "decided"

        await save_history(ts_env.client.get_workflow_handle(handle.id, run_id=first_run),
                           "case_two_years_first_run")
        await save_history(handle, "case_two_years_last_run")
        # The committee workflow runs forever; a leftover would stop time-skipping for others.
        await ts_env.client.get_workflow_handle(f"committee-{settings.committee_id}").terminate()


async def test_backdated_referral_is_overdue_and_refusals_leave_no_trace(
    ts_env: WorkflowEnvironment, settings
) -> None:
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        received = (now - timedelta(days=200)).isoformat()
        handle = await start_case(ts_env, settings, received)
        state = await handle.query(FamilyCaseWorkflow.case)
        assert state.deadlines[0].due_at < now
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await cmd(handle, "form_team", ANNA, {"members": [
                {"staff_id": "ole", "discipline": "x", "department": "y"}]})
        assert refused.value.cause.type == "forbidden"
        history = await handle.fetch_history()
        update_events = [e for e in history.events if "UPDATE" in EventType.Name(e.event_type)]
        assert update_events == [], "a refused command must leave no trace in the history"
        await ts_env.sleep(timedelta(seconds=5))
        state = await handle.query(FamilyCaseWorkflow.case)
        kinds = {d.kind.value for d in state.deadlines if d.status is DeadlineStatus.overdue}
        assert {"first_contact", "assessment"} <= kinds
        assert any(e.event == "deadline_overdue" for e in state.history)
        await save_history(handle, "case_backdated")
        await handle.terminate()
