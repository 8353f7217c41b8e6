"""The deadline clocks inside FamilyCaseWorkflow, on the time-skipping server (DESIGN §3.9).

One test per clock: it fires at the right instant (the workflow's own time, recorded in
`reminders_sent[i]["at"]`, against `ts_env.get_current_time()`, never the wall clock), climbs the
ladder, stops when satisfied and never fires twice. Plus: a backdated referral, pause/resume,
a worker restart between a timer and its processing, and continue-as-new.

Every workflow a test starts is terminated at its end: a case left running on a task queue
without a worker would stop the time-skipping server from skipping once its next timer fires.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from domain import clocks
from domain import deadlines as dl
from domain.calendar import add_days, add_months
from domain.lifecycle import Ctx, new_case
from domain.policy import DK
from models import search
from models.case import (
    Actor,
    CaseAnswer,
    CaseCreate,
    CaseState,
    Deadline,
    DeadlineKind,
    DeadlineStatus,
    Stage,
)
from models.commands import CaseWorkflowInput, CommandInput
from models.db import migrate
from models.policy import Policy
from settings import Settings
from tests.conftest import running_worker
from tests.factories import case_create_body, whole
from workflows.case import FamilyCaseWorkflow

ADMIN = Actor(id="admin", roles=["admin"])
ANNA = Actor(id="anna", roles=["coordinator"])
OLE = Actor(id="ole", roles=["team_member"])
BOARD = Actor(id="board", roles=["committee"])

from tests.test_clocks import ASSESSMENT, PLAN, TEAM  # noqa: E402 - the same bodies

# How late after its instant an event may be recorded: the workflow wakes one second after it.
SLACK = timedelta(seconds=3)
MINUTE = timedelta(minutes=1)
CPH = ZoneInfo("Europe/Copenhagen")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Own read model, task queue and committee per test (the committee runs forever)."""
    tag = uuid.uuid4().hex[:12]
    s = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"), ONEFAMILY_TASK_QUEUE=f"clocks-{tag}",
                 ONEFAMILY_COMMITTEE_ID=f"c-{tag}")
    migrate(s.db_url)
    return s




async def start(env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle],
                received_at: datetime | None = None, *, policy: Policy = DK,
                max_history_events: int = 5_000, concern_level: str | None = None,
                contact_preference: str = "normal", **referral: Any) -> WorkflowHandle:
    received_at = received_at or await env.get_current_time()
    body = case_create_body(received_at=received_at.isoformat(), **referral)
    body["concern_level"] = concern_level
    body["contact_preference"] = contact_preference
    case_id = str(uuid.uuid4())
    handle = await env.client.start_workflow(
        FamilyCaseWorkflow.run,
        CaseWorkflowInput(case_id=case_id, policy=policy, actor=ADMIN,
                          create=CaseCreate.model_validate(body),
                          max_history_events=max_history_events),
        id=f"case-{case_id}",
        task_queue=settings.task_queue,
    )
    started.append(handle)
    return handle


async def cmd(handle: WorkflowHandle, name: str, actor: Actor, body: dict | None = None,
              **extra: Any) -> CaseState:
    return whole(await handle.execute_update(name, CommandInput(actor=actor, body=body, **extra),
                                             result_type=CaseAnswer))


async def case(handle: WorkflowHandle) -> CaseState:
    return await handle.query(FamilyCaseWorkflow.case)


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    """Poll (in real time, briefly) until `probe` returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def sleep_until(env: WorkflowEnvironment, instant: datetime) -> None:
    delta = instant - await env.get_current_time()
    if delta > timedelta(0):
        await env.sleep(delta)


def deadline(state: CaseState, kind: DeadlineKind, occurrence: int = 1) -> Deadline:
    return next(d for d in state.deadlines if d.kind is kind and d.occurrence == occurrence)


def steps(d: Deadline) -> list[tuple[str, int, str, bool]]:
    return [(r["kind"], r["step"], r["to_role"], r["skipped"]) for r in d.reminders_sent]


def recorded_at(d: Deadline, i: int = -1) -> datetime:
    return datetime.fromisoformat(d.reminders_sent[i]["at"])


def assert_fired_at(d: Deadline, i: int, instant: datetime) -> None:
    at = recorded_at(d, i)
    assert instant <= at <= instant + SLACK, (d.kind.value, d.reminders_sent[i], instant)


def history_count(state: CaseState, kind: DeadlineKind, occurrence: int = 1) -> int:
    return sum(1 for h in state.history if h.event.startswith("deadline_")
               and h.detail["kind"] == kind.value and h.detail["occurrence"] == occurrence)


def fired_keys(state: CaseState) -> list[tuple[str, int, str, int]]:
    """Every recorded clock event of the case, in the order the history recorded them."""
    return [(h.detail["kind"], h.detail["occurrence"], h.event.removeprefix("deadline_"), h.detail["step"])
            for h in state.history if h.event.startswith("deadline_")]


async def overdue_attribute(handle: WorkflowHandle) -> bool | None:
    return (await handle.describe()).typed_search_attributes.get(search.OVERDUE)


async def to_team(env: WorkflowEnvironment, handle: WorkflowHandle) -> CaseState:
    await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
    return await cmd(handle, "form_team", ANNA, TEAM)


async def to_planning(env: WorkflowEnvironment, handle: WorkflowHandle, *, contact: bool = True) -> CaseState:
    await to_team(env, handle)
    now = await env.get_current_time()
    if contact:
        await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": now.isoformat()})
    await cmd(handle, "schedule_assessment_meeting", ANNA, {
        "at": now.isoformat(), "location": "Town hall", "participants": ["anna", "ole", "family"]})
    await cmd(handle, "put_assessment", ANNA, ASSESSMENT)
    return await cmd(handle, "complete_assessment", ANNA)


async def to_active(env: WorkflowEnvironment, handle: WorkflowHandle) -> CaseState:
    await to_planning(env, handle)
    await cmd(handle, "put_plan", ANNA, PLAN)
    await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
    await cmd(handle, "vote", OLE, {"staff_id": "ole", "vote": "agree"})
    state = await cmd(handle, "family_response", ANNA, {"approved": True})
    assert state.stage is Stage.active
    return state


async def to_escalated(env: WorkflowEnvironment, handle: WorkflowHandle) -> CaseState:
    await to_planning(env, handle)
    await cmd(handle, "put_plan", ANNA, PLAN)
    state = await cmd(handle, "vote", OLE, {"staff_id": "ole", "vote": "disagree",
                                             "reason": "Too little support for the parents"})
    assert state.stage is Stage.escalated
    return state


async def walk(env: WorkflowEnvironment, handle: WorkflowHandle, kind: DeadlineKind,
               expected: list[tuple[str, int, str, datetime]], occurrence: int = 1) -> CaseState:
    """Step through the expected events: nothing a minute before each (unless that moment has
    already passed), exactly it just after; each recorded at its instant."""
    for i, (_, _, _, instant) in enumerate(expected):
        if await env.get_current_time() < instant - MINUTE:
            await sleep_until(env, instant - MINUTE)
            d = deadline(await case(handle), kind, occurrence)
            assert len(d.reminders_sent) == i, (kind.value, d.reminders_sent, instant)
        await sleep_until(env, instant + MINUTE)
        d = deadline(await case(handle), kind, occurrence)
        assert steps(d)[: i + 1] == [(k, s, r, False) for k, s, r, _ in expected[: i + 1]]
        assert_fired_at(d, i, instant)
    return await case(handle)


def ladder(d: Deadline, rule_interval: int, roles: list[str]) -> list[tuple[str, int, str, datetime]]:
    """The expected events of one deadline: reminders to the owner, overdue, then one ladder step
    every `rule_interval` days (calendar days in the municipality's zone)."""
    due = d.due_at.astimezone(CPH)
    out = [("reminder", i, "owner", at) for i, at in enumerate(d.remind_at)]
    out.append(("overdue", 0, roles[0], d.due_at))
    out += [("escalation", k, r, due + timedelta(days=k * rule_interval))
            for k, r in enumerate(roles[1:], start=1)]
    return out


async def dst_free_start(env: WorkflowEnvironment, **referral: Any) -> datetime:
    """Move time on until a referral received now has no DST change inside any of its ladders,
    for tests that compute instants from a queried (JSON, fixed-offset) state; test_clocks.py
    covers the instants across DST on their own."""
    while True:
        t0 = await env.get_current_time()
        body = CaseCreate.model_validate(case_create_body(received_at=t0.isoformat(), **referral))
        if not crosses_dst(new_case("probe", body, Ctx(actor=ADMIN, now=t0, policy=DK))):
            return t0
        await env.sleep(timedelta(days=20))


def local_days(at: datetime, days: int) -> datetime:
    """`days` calendar days from `at` on Copenhagen's wall clock (how the domain counts)."""
    return at.astimezone(CPH) + timedelta(days=days)


def crosses_dst(state: CaseState) -> bool:
    """Whether a DST change falls inside some deadline's reminder-to-top-of-ladder window."""
    for d in state.deadlines:
        span = timedelta(days=state.policy.clock(d.kind.value).ladder_interval_days * len(d.ladder))
        start, end = min([*d.remind_at, d.due_at]), d.due_at + span
        if start.astimezone(CPH).utcoffset() != end.astimezone(CPH).utcoffset():
            return True
    return False


# ================================================================ one test per clock


async def test_first_contact_reminds_goes_overdue_climbs_and_never_fires_twice(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started)
        first = deadline(await case(handle), DeadlineKind.first_contact)
        assert first.due_at.hour == 23 and first.due_at.minute == 59  # end of the 5th working day
        expected = ladder(first, 2, ["coordinator", "manager"])
        assert [e[3] for e in expected] == [local_days(first.due_at, -2), first.due_at,
                                           local_days(first.due_at, 2)]
        state = await walk(ts_env, handle, DeadlineKind.first_contact, expected[:2])
        assert deadline(state, DeadlineKind.first_contact).status is DeadlineStatus.overdue
        assert await overdue_attribute(handle) is True
        state = await walk(ts_env, handle, DeadlineKind.first_contact, expected)

        # Well past the top of the ladder: nothing more, and the history says it once each.
        await ts_env.sleep(timedelta(days=30))
        state = await case(handle)
        first = deadline(state, DeadlineKind.first_contact)
        assert len(first.reminders_sent) == 3 and history_count(state, DeadlineKind.first_contact) == 3
        assert first.status is DeadlineStatus.overdue

        # Met late: it stays met; nothing more fires.
        await to_team(ts_env, handle)
        now = await ts_env.get_current_time()
        await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": now.isoformat()})
        await ts_env.sleep(timedelta(days=20))
        first = deadline(await case(handle), DeadlineKind.first_contact)
        assert first.status is DeadlineStatus.met and len(first.reminders_sent) == 3


async def test_concern_triage_and_reporter_receipt_stop_when_triaged(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        t0 = await ts_env.get_current_time()
        handle = await start(ts_env, settings, started, t0, kind="concern_report", source="school")
        state = await case(handle)
        triage = deadline(state, DeadlineKind.concern_triage)
        receipt = deadline(state, DeadlineKind.reporter_receipt)
        assert triage.due_at == t0 + timedelta(hours=24) and triage.remind_at == []
        assert receipt.remind_at == [local_days(receipt.due_at, -2)]

        # 24 clock hours: overdue to the coordinator; triaged before the manager step.
        await walk(ts_env, handle, DeadlineKind.concern_triage,
                   [("overdue", 0, "coordinator", triage.due_at)])
        await to_team(ts_env, handle)
        await cmd(handle, "triage", ANNA, {"child_in_danger": False, "urgent_action": False})

        # The receipt's reminder fires; the receipt is sent before it is due.
        await walk(ts_env, handle, DeadlineKind.reporter_receipt,
                   [("reminder", 0, "owner", receipt.remind_at[0])])
        await cmd(handle, "triage", ANNA, {"receipt_sent_to_reporter": True})

        await ts_env.sleep(timedelta(days=20))
        state = await case(handle)
        triage = deadline(state, DeadlineKind.concern_triage)
        receipt = deadline(state, DeadlineKind.reporter_receipt)
        assert (triage.status, steps(triage)) == (DeadlineStatus.met, [("overdue", 0, "coordinator", False)])
        assert (receipt.status, steps(receipt)) == (DeadlineStatus.met, [("reminder", 0, "owner", False)])


async def test_pre_meeting_contact_reminds_and_a_contact_stops_it(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started)
        await to_team(ts_env, handle)
        meeting = await ts_env.get_current_time() + timedelta(days=10)
        state = await cmd(handle, "schedule_assessment_meeting", ANNA, {
            "at": meeting.isoformat(), "location": "Family home", "participants": ["anna", "ole"]})
        pre = deadline(state, DeadlineKind.pre_meeting_contact)
        assert (pre.due_at, pre.remind_at, pre.owner) == (meeting, [meeting - timedelta(days=3)], "anna")
        await walk(ts_env, handle, DeadlineKind.pre_meeting_contact,
                   [("reminder", 0, "owner", meeting - timedelta(days=3))])
        now = await ts_env.get_current_time()
        await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": now.isoformat()})
        await sleep_until(ts_env, meeting + timedelta(days=10))
        pre = deadline(await case(handle), DeadlineKind.pre_meeting_contact)
        assert (pre.status, pre.satisfied_by) == (DeadlineStatus.met, "contact")
        assert steps(pre) == [("reminder", 0, "owner", False)]


async def test_assessment_three_month_reminder_ladder_and_provisional_assessment(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        t0 = await ts_env.get_current_time()
        handle = await start(ts_env, settings, started, t0)
        a = deadline(await case(handle), DeadlineKind.assessment)
        three_months = a.remind_at[0]
        assert three_months == add_months(t0, 3, DK.timezone)
        # The last day counts whole, moved off a non-working day (docs/deadlines.md).
        assert a.due_at == dl.due_in_months(DK, DeadlineKind.assessment, t0, 4)
        assert a.due_at.time() == time(23, 59, 59)
        assert a.remind_at == [three_months, local_days(a.due_at, -14)]
        expected = ladder(a, 7, ["coordinator", "manager", "committee"])
        await walk(ts_env, handle, DeadlineKind.assessment, expected[:3])

        # Missed: the law asks for a recorded provisional assessment; the case stays overdue.
        await to_team(ts_env, handle)
        state = await cmd(handle, "provisional_assessment", ANNA, {"text": "Safe at home; school first"})
        assert len(state.provisional_assessments) == 1
        assert deadline(state, DeadlineKind.assessment).status is DeadlineStatus.overdue
        state = await walk(ts_env, handle, DeadlineKind.assessment, expected)
        await ts_env.sleep(timedelta(days=60))
        state = await case(handle)
        a = deadline(state, DeadlineKind.assessment)
        assert len(a.reminders_sent) == 5 and history_count(state, DeadlineKind.assessment) == 5
        assert a.status is DeadlineStatus.overdue


async def test_plan_and_family_approval_clocks(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started)
        state = await to_planning(ts_env, handle)
        plan = deadline(state, DeadlineKind.plan)
        plan_events = ladder(plan, 7, ["coordinator", "manager"])
        # No plan drafted: reminder and overdue.
        await walk(ts_env, handle, DeadlineKind.plan, plan_events[:2])

        state = await cmd(handle, "put_plan", ANNA, PLAN)
        approval = deadline(state, DeadlineKind.family_approval)
        assert approval.due_at == add_days(state.plans[-1].created_at, 14, DK.timezone)
        assert approval.remind_at == [local_days(approval.due_at, -3)]
        # The plan's ladder climbs on (manager, 7 days after its due time) meanwhile.
        await walk(ts_env, handle, DeadlineKind.plan, plan_events)
        approval_events = ladder(approval, 3, ["coordinator"])
        await walk(ts_env, handle, DeadlineKind.family_approval, approval_events)

        await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
        await cmd(handle, "vote", OLE, {"staff_id": "ole", "vote": "agree"})
        state = await cmd(handle, "family_response", ANNA, {"approved": True, "comment": "Our plan"})
        assert state.stage is Stage.active
        await ts_env.sleep(timedelta(days=30))
        state = await case(handle)
        plan, approval = deadline(state, DeadlineKind.plan), deadline(state, DeadlineKind.family_approval)
        assert (plan.status, len(plan.reminders_sent)) == (DeadlineStatus.met, 3)
        assert (approval.status, len(approval.reminders_sent)) == (DeadlineStatus.met, 2)


async def test_first_followup_then_the_followup_cadence(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started)
        state = await to_active(ts_env, handle)
        first = deadline(state, DeadlineKind.first_followup)
        assert first.due_at == dl.due_in_months(DK, DeadlineKind.first_followup,
                                                state.measures_started_at, 3)
        await walk(ts_env, handle, DeadlineKind.first_followup,
                   [("reminder", 0, "owner", local_days(first.due_at, -14))])

        at = await ts_env.get_current_time()
        state = await cmd(handle, "status_meeting", ANNA, {
            "at": at.isoformat(), "participants": ["anna", "family"], "followup_months": 2,
            "followup_reason": "Fragile start"})
        assert deadline(state, DeadlineKind.first_followup).status is DeadlineStatus.met
        follow = deadline(state, DeadlineKind.followup)
        assert state.followup_months == 2
        assert follow.due_at == dl.due_in_months(DK, DeadlineKind.followup, at, 2)
        await walk(ts_env, handle, DeadlineKind.followup, ladder(follow, 7, ["coordinator", "manager"]))
        await ts_env.sleep(timedelta(days=20))
        state = await case(handle)
        assert len(deadline(state, DeadlineKind.first_followup).reminders_sent) == 1
        assert len(deadline(state, DeadlineKind.followup).reminders_sent) == 3


async def test_status_meetings_by_concern_level_and_a_policy_move(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    v2 = DK.model_copy(update={"version": 2, "status_meeting_weeks": {"high": 1, "medium": 3, "low": 5}})
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started, concern_level="high")
        state = await to_active(ts_env, handle)
        meeting = deadline(state, DeadlineKind.status_meeting)
        assert meeting.due_at == add_days(state.measures_started_at, 14, DK.timezone)
        await walk(ts_env, handle, DeadlineKind.status_meeting,
                   ladder(meeting, 7, ["coordinator", "manager"]))

        # At the meeting the concern drops to low and the case moves to policy v2.
        at = await ts_env.get_current_time()
        state = await cmd(handle, "status_meeting", ANNA, {
            "at": at.isoformat(), "participants": ["anna", "family"], "concern_level": "low",
            "policy_version": 2, "policy_reason": "New cadence adopted by the council"}, policy=v2)
        assert (state.policy_key, state.concern_level) == ("DK-v2", "low")
        assert [h.detail for h in state.history if h.event == "policy_changed"] == [
            {"from": "DK-v1", "to": "DK-v2", "reason": "New cadence adopted by the council"}]
        second = deadline(state, DeadlineKind.status_meeting, 2)
        assert second.due_at == add_days(at, 8 * 7, DK.timezone)  # set by the meeting, under v1
        at2 = at + timedelta(days=10)
        await sleep_until(ts_env, at2)
        state = await cmd(handle, "status_meeting", ANNA, {"at": at2.isoformat(), "participants": ["anna"]})
        third = deadline(state, DeadlineKind.status_meeting, 3)
        assert third.due_at == add_days(at2, 5 * 7, DK.timezone)  # v2's cadence for low concern
        await walk(ts_env, handle, DeadlineKind.status_meeting,
                   [("reminder", 0, "owner", local_days(third.due_at, -5))], occurrence=3)
        state = await case(handle)
        assert steps(deadline(state, DeadlineKind.status_meeting)) == [
            ("reminder", 0, "owner", False), ("overdue", 0, "coordinator", False),
            ("escalation", 1, "manager", False)]
        assert deadline(state, DeadlineKind.status_meeting, 2).reminders_sent == []


async def test_family_checkins_follow_the_contact_preference(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started, contact_preference="close")
        await to_team(ts_env, handle)
        at = await ts_env.get_current_time()
        state = await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": at.isoformat()})
        checkin = deadline(state, DeadlineKind.family_checkin)
        assert checkin.due_at == add_days(at, 14, DK.timezone)  # "close": every 2 weeks
        await walk(ts_env, handle, DeadlineKind.family_checkin, ladder(checkin, 3, ["coordinator"]))
        at2 = await ts_env.get_current_time()
        state = await cmd(handle, "record_contact", ANNA, {"kind": "home_visit", "at": at2.isoformat()})
        assert deadline(state, DeadlineKind.family_checkin).status is DeadlineStatus.met
        nxt = deadline(state, DeadlineKind.family_checkin, 2)
        assert nxt.due_at == add_days(at2, 14, DK.timezone)
        await walk(ts_env, handle, DeadlineKind.family_checkin,
                   [("reminder", 0, "owner", local_days(nxt.due_at, -2))], occurrence=2)
        assert len(deadline(await case(handle), DeadlineKind.family_checkin).reminders_sent) == 2


async def test_committee_decision_within_21_days(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started)
        state = await to_escalated(ts_env, handle)
        item = state.escalations[-1]
        c = deadline(state, DeadlineKind.committee_decision)
        assert c.due_at == add_days(item.escalated_at, 21, DK.timezone) and c.owner == "committee"
        expected = ladder(c, 2, ["committee", "manager"])
        assert expected[0][3] == add_days(item.escalated_at, 14, DK.timezone)
        await walk(ts_env, handle, DeadlineKind.committee_decision, expected)
        state = await cmd(handle, "committee_decision", BOARD, {"decision": "approved"}, item_id=item.id)
        assert deadline(state, DeadlineKind.committee_decision).status is DeadlineStatus.met
        await ts_env.sleep(timedelta(days=10))
        state = await case(handle)
        assert len(deadline(state, DeadlineKind.committee_decision).reminders_sent) == 3
        assert history_count(state, DeadlineKind.committee_decision) == 3


# ================================================================ backdated, pause, restart, CAN


async def test_backdated_referral_is_overdue_at_start(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start(ts_env, settings, started, now - timedelta(days=200))

        async def fired() -> CaseState | None:
            state = await case(handle)
            return state if deadline(state, DeadlineKind.assessment).reminders_sent else None

        state = await eventually(fired, "the backdated clocks")
        first, a = deadline(state, DeadlineKind.first_contact), deadline(state, DeadlineKind.assessment)
        assert steps(first) == [("reminder", 0, "owner", True), ("overdue", 0, "coordinator", False),
                                ("escalation", 1, "manager", False)]
        assert steps(a) == [("reminder", 0, "owner", True), ("reminder", 1, "owner", True),
                            ("overdue", 0, "coordinator", False), ("escalation", 1, "manager", False),
                            ("escalation", 2, "committee", False)]
        for d in (first, a):
            assert d.status is DeadlineStatus.overdue
            for i in range(len(d.reminders_sent)):
                assert_fired_at(d, i, now)  # at once, at the start
        assert await eventually(lambda: overdue_attribute(handle), "the Overdue search attribute")
        await ts_env.sleep(timedelta(days=3))
        state = await case(handle)
        assert history_count(state, DeadlineKind.first_contact) == 3
        assert history_count(state, DeadlineKind.assessment) == 5


async def test_pause_and_resume_in_the_workflow(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start(ts_env, settings, started)
        await to_team(ts_env, handle)
        meeting = await ts_env.get_current_time() + timedelta(days=20)
        await cmd(handle, "schedule_assessment_meeting", ANNA, {
            "at": meeting.isoformat(), "location": "Family home", "participants": ["anna", "ole"]})
        state = await cmd(handle, "pause", ANNA, {"reason": "Family asked for a break"})
        assert state.history[-1].detail["clocks_paused"] == ["pre_meeting_contact"]

        # 30 days later: the paused clock fired nothing; the statutory first contact did.
        await ts_env.sleep(timedelta(days=30))
        state = await case(handle)
        assert deadline(state, DeadlineKind.pre_meeting_contact).reminders_sent == []
        assert deadline(state, DeadlineKind.first_contact).status is DeadlineStatus.overdue

        state = await cmd(handle, "resume", ANNA)
        pause = state.pauses[-1]
        shift = pause.until - pause.since
        assert shift >= timedelta(days=30)
        pre = deadline(state, DeadlineKind.pre_meeting_contact)
        assert (pre.due_at, pre.remind_at) == (meeting + shift, [meeting + shift - timedelta(days=3)])
        await walk(ts_env, handle, DeadlineKind.pre_meeting_contact, ladder(pre, 3, ["coordinator"]))
        await ts_env.sleep(timedelta(days=10))
        assert len(deadline(await case(handle), DeadlineKind.pre_meeting_contact).reminders_sent) == 2


async def test_worker_restart_between_the_timer_and_its_processing(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    # Without a cache the first worker keeps no sticky queue, so the server hands the woken
    # task to the new worker at once (the test server does not time out sticky queues quickly).
    first_worker = settings.model_copy(update={"max_cached_workflows": 0})
    async with running_worker(ts_env.client, first_worker):
        t0 = await dst_free_start(ts_env, kind="concern_report", source="school")
        handle = await start(ts_env, settings, started, t0, kind="concern_report", source="school")
        triage = deadline(await case(handle), DeadlineKind.concern_triage)
        await sleep_until(ts_env, triage.due_at + MINUTE)  # fired with the first worker
        state = await case(handle)
        assert steps(deadline(state, DeadlineKind.concern_triage)) == [("overdue", 0, "coordinator", False)]
        before = fired_keys(state)
        event = clocks.pending(state)[0]
        assert event.at > await ts_env.get_current_time()
        await sleep_until(ts_env, event.at - timedelta(seconds=2))

    # No worker: the timer fires on the server (the workflow wakes one second after the
    # instant); time-skipping stops while the woken task waits, so this costs ~2 s of real time.
    await ts_env.sleep(timedelta(seconds=4))
    assert await ts_env.get_current_time() > event.at + timedelta(seconds=1)
    key = (event.deadline.kind.value, event.deadline.occurrence, event.kind, event.step)

    async with running_worker(ts_env.client, settings):
        async def recorded() -> CaseState | None:
            state = await case(handle)
            return state if key in fired_keys(state) else None

        state = await eventually(recorded, "the event after the restart")
        d = deadline(state, event.deadline.kind, event.deadline.occurrence)
        record = next(r for r in d.reminders_sent if (r["kind"], r["step"]) == (event.kind, event.step))
        assert (record["to_role"], record["skipped"]) == (event.to_role, False)  # late, not lost
        assert event.at <= datetime.fromisoformat(record["at"]) <= event.at + timedelta(seconds=30)
        # Exactly once; and nothing that fired before the restart fired again on replay.
        assert fired_keys(state) == [*before, key]

        await ts_env.sleep(timedelta(days=15))
        state = await case(handle)
        keys = fired_keys(state)
        assert len(keys) == len(set(keys)) and keys[: len(before) + 1] == [*before, key]
        for d in state.deadlines:
            assert history_count(state, d.kind, d.occurrence) == len(d.reminders_sent)


async def test_continue_as_new_keeps_the_pending_clocks(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        t0 = await dst_free_start(ts_env, kind="concern_report", source="school")
        handle = await start(ts_env, settings, started, t0, max_history_events=40,
                             kind="concern_report", source="school")
        initial = await case(handle)
        first_run = (await handle.describe()).run_id
        expected = clocks.pending(initial.model_copy(deep=True))
        end = t0 + timedelta(days=150)
        while await ts_env.get_current_time() < end:
            await ts_env.sleep(timedelta(days=10))
        assert (await handle.describe()).run_id != first_run, "the case must have continued as new"
        state = await case(handle)
        assert state.version > initial.version
        for event in expected:  # every event of the initial clocks: once, at its instant
            d = deadline(state, event.deadline.kind, event.deadline.occurrence)
            matches = [r for r in d.reminders_sent if (r["kind"], r["step"]) == (event.kind, event.step)]
            assert len(matches) == 1, (event.key, d.reminders_sent)
            at = datetime.fromisoformat(matches[0]["at"])
            assert event.at <= at <= event.at + SLACK, (event.key, at)
            assert matches[0]["skipped"] is False
        assert sum(len(d.reminders_sent) for d in state.deadlines) == len(expected)
