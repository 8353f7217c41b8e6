"""Rules generations (issue 13, speed; docs/decisions.md): a case started with CASE_RULES has
every patch in force without asking Temporal, and its search attributes follow the projection.
A case started without a generation (0) behaves as before: its patches are markers in its
history. Both kinds of history are replayed by tests/test_replay.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.testing import WorkflowEnvironment

from domain.lifecycle import Ctx, new_case
from domain.policy import DK
from models import search
from models.case import CaseCreate
from models.commands import CASE_RULES
from models.db import get_engine
from models.tables import CaseRow
from tests.conftest import running_worker, save_history
from tests.factories import case_create_body
from tests.test_workflow_clocks import eventually
from tests.test_workflow_lifecycle import ADMIN, ANNA, cmd, start_case
from workflows.case import (
    CONSENT_RULES,
    FAMILY_SMS_REMINDER,
    MEETING_CANCEL,
    NOTICE_BY_EVENT,
    OUTCOME_INSTRUMENTS,
    PROJECTION_QUIET,
    SEALED_INPUT,
)


def _first_task(events) -> list:
    """The events up to and including the first completed workflow task and what it decided."""
    out, done = [], False
    for event in events:
        if done and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            break
        out.append(event)
        done = done or event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    return out


def _upserts_after_the_update(history) -> int:
    events = list(history.events)
    at = next(i for i, e in enumerate(events)
              if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    return _count(events[at:], EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES)


async def _coordinator(handle) -> str | None:
    return (await handle.describe()).typed_search_attributes.get(search.COORDINATOR) or None


def _most_activities_in_one_task(history) -> int:
    most = run = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            run += 1
            most = max(most, run)
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            run = 0
    return most


async def _assigned_case(env: WorkflowEnvironment, settings, started: list, rules: int):
    """A case of this rules generation, received an hour ago, with its coordinator."""
    now = await env.get_current_time()
    handle = await start_case(env, settings, (now - timedelta(hours=1)).isoformat(), rules=rules)
    started.append(handle)
    await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
    return handle, now


def _count(events, kind: int) -> int:
    return sum(1 for e in events if e.event_type == kind)


@pytest.mark.parametrize("rules", [1, CASE_RULES])
async def test_a_new_case_starts_without_patch_markers_and_writes_its_search_attributes_once(
    ts_env: WorkflowEnvironment, settings, started, rules: int
) -> None:
    async with running_worker(ts_env.client, settings):
        handle, now = await _assigned_case(ts_env, settings, started, rules)
        first = _first_task((await handle.fetch_history()).events)
        assert _count(first, EventType.EVENT_TYPE_MARKER_RECORDED) == 0
        # One upsert: ours ("started", api/backlog.py), no TemporalChangeVersion per patch.
        assert _count(first, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 1
        # The API wrote the first state itself: no projection before the quiet spell.
        assert _count(first, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 0
        # The command's change waits for the quiet spell (the API answered with it, and
        # wrote the read model)...
        assert _upserts_after_the_update(await handle.fetch_history()) == 0

        await ts_env.sleep(PROJECTION_QUIET + timedelta(seconds=2))
        # ...then the projection and the search attributes follow, in one go.
        assert _upserts_after_the_update(await handle.fetch_history()) == 1
        assert await eventually(lambda: _coordinator(handle), "the coordinator attribute") == "anna"
        with Session(get_engine(settings.db_url)) as session:
            row = session.get(CaseRow, handle.id.removeprefix("case-"))
            assert row is not None and row.coordinator_id == "anna"

        # A meeting: the invitations are handed over side by side, scheduled in the one
        # workflow task that answered the command (generation 0: one workflow task each).
        await cmd(handle, "form_team", ANNA, {"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        await cmd(handle, "schedule_assessment_meeting", ANNA, {
            "at": (now + timedelta(days=3)).isoformat(), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        assert _most_activities_in_one_task(await handle.fetch_history()) >= 2

        state = await cmd(handle, "close", ANNA, {"reason": "duplicate"})
        assert (await handle.result()).version == state.version
        events = (await handle.fetch_history()).events
        assert _count(events, EventType.EVENT_TYPE_MARKER_RECORDED) == 0
        # Closing is the workflow's own end: projected and written at once, before it returns.
        # Raw: the time-skipping server gives the unset next deadline back untyped, which
        # `describe()` cannot decode.
        raw = await ts_env.client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(namespace=ts_env.client.namespace,
                                             execution=WorkflowExecution(workflow_id=handle.id)))
        fields = raw.workflow_execution_info.search_attributes.indexed_fields
        assert fields[search.STAGE.name].data == b'"closed"'
        # One history per generation for the replay test (an existing file is kept).
        await save_history(handle, f"case_rules_generation_{rules}")


async def test_a_case_without_a_generation_still_asks_for_each_patch(
    ts_env: WorkflowEnvironment, settings, started
) -> None:
    async with running_worker(ts_env.client, settings):
        handle, _ = await _assigned_case(ts_env, settings, started, 0)
        events = (await handle.fetch_history()).events
        markers = {json.loads(e.marker_recorded_event_attributes.details["patch-data"]
                              .payloads[0].data)["id"]
                   for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED}
        assert markers == {SEALED_INPUT, CONSENT_RULES, NOTICE_BY_EVENT, MEETING_CANCEL,
                           FAMILY_SMS_REMINDER, OUTCOME_INSTRUMENTS}
        # Generation 0 writes its search attributes with every change, as it always did (once
        # its first projection, still running when the command came, is done).
        assert await eventually(lambda: _coordinator(handle), "the coordinator attribute") == "anna"


@pytest.mark.parametrize("rules", [1, CASE_RULES])
async def test_a_run_given_changes_not_yet_projected_projects_them_in_its_first_task(
    ts_env: WorkflowEnvironment, settings, started, rules: int
) -> None:
    """A state handed over (continue-as-new) newer than its projection is the workflow's own
    change: projected at once, not after the quiet spell (the input's state is dropped after
    the run took it, so this decision must be taken before)."""
    now = await ts_env.get_current_time()
    body = CaseCreate.model_validate(case_create_body(received_at=(now - timedelta(hours=1)).isoformat()))
    state = new_case(str(uuid.uuid4()), body, Ctx(actor=ADMIN, now=now, policy=DK), [])
    state.version = 3
    async with running_worker(ts_env.client, settings):
        handle = await start_case(ts_env, settings, (now - timedelta(hours=1)).isoformat(),
                                  rules=rules, state=state, projected_version=1)
        started.append(handle)
        decided: list[int] = []
        for _ in range(50):  # the first workflow task's commands, once it completed
            events = list((await handle.fetch_history()).events)
            done = [i for i, e in enumerate(events)
                    if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
            if done:
                decided = [e.event_type for e in events[done[0] + 1:]]
                break
            await asyncio.sleep(0.1)
        # The projection is scheduled by the first task, before any timer.
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED in decided, decided
        assert EventType.EVENT_TYPE_TIMER_STARTED not in decided[
            :decided.index(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)]
