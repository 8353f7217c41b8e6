"""domain/stuck.py: when a case is stuck and why (DESIGN §6). Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.dashboard import build_case
from domain import stuck
from domain.lifecycle import Ctx, execute
from domain.policy import DK
from models.case import Actor, DeadlineStatus, Stage
from models.commands import CommandInput

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)


def kinds(reasons) -> set[str]:
    return {r.kind for r in reasons}


def test_a_fresh_referral_is_not_stuck() -> None:
    state = build_case(Stage.referred, T0)
    assert stuck.business_reasons(state, T0 + timedelta(hours=2)) == []


def test_an_overdue_deadline_names_its_kind_age_and_owner() -> None:
    state = build_case(Stage.referred, T0)
    first_contact = next(d for d in state.deadlines if d.kind.value == "first_contact")
    before = stuck.business_reasons(state, first_contact.due_at - timedelta(minutes=1))
    assert "overdue:first_contact" not in kinds(before)
    reasons = stuck.business_reasons(state, first_contact.due_at + DAY)
    overdue = next(r for r in reasons if r.kind == "overdue:first_contact")
    assert overdue.since == first_contact.due_at  # the age counts from the missed due time
    assert overdue.owner == stuck.UNASSIGNED_OWNER  # nobody assigned yet: the manager
    assert "first contact" in overdue.detail


def test_overdue_owner_is_the_coordinator_once_assigned() -> None:
    state = build_case(Stage.coordinator_assigned, T0, coordinator="anna", contact=False)
    due = next(d.due_at for d in state.deadlines if d.kind.value == "first_contact")
    reason = next(r for r in stuck.business_reasons(state, due + DAY) if r.kind == "overdue:first_contact")
    assert reason.owner == "anna"


def test_a_met_deadline_is_never_overdue() -> None:
    state = build_case(Stage.coordinator_assigned, T0, coordinator="anna", contact=True)
    first_contact = next(d for d in state.deadlines if d.kind.value == "first_contact")
    assert first_contact.status is DeadlineStatus.met
    assert "overdue:first_contact" not in kinds(stuck.business_reasons(state, T0 + 100 * DAY))


def test_a_paused_clock_is_not_overdue_while_paused() -> None:
    state = build_case(Stage.referred, T0)
    d = next(d for d in state.deadlines if d.kind.value == "assessment")
    d.paused_since = d.due_at - 10 * DAY
    assert "overdue:assessment" not in kinds(stuck.business_reasons(state, d.due_at + 30 * DAY))
    d.paused_since = d.due_at + DAY  # paused only after it was already overdue: still overdue
    assert "overdue:assessment" in kinds(stuck.business_reasons(state, d.due_at + 30 * DAY))


def test_stage_too_long_uses_the_expected_days_per_stage() -> None:
    state = build_case(Stage.referred, T0)
    limit = stuck.DEFAULT_POLICY.stage_expected_days["referred"]
    assert "stage_too_long" not in kinds(stuck.business_reasons(state, state.stage_since + (limit - 1) * DAY))
    reason = next(r for r in stuck.business_reasons(state, state.stage_since + (limit + 1) * DAY)
                  if r.kind == "stage_too_long")
    assert reason.since == state.stage_since
    assert reason.owner == "manager"  # blocked on coordinator assignment: the manager's ball
    assert "coordinator assignment" in reason.detail


def test_stage_days_are_policy_data() -> None:
    state = build_case(Stage.referred, T0)
    strict = stuck.StuckPolicy(stage_expected_days={"referred": 1})
    assert "stage_too_long" in kinds(stuck.business_reasons(state, T0 + 2 * DAY, strict))
    lenient = stuck.StuckPolicy(stage_expected_days={})
    assert "stage_too_long" not in kinds(stuck.business_reasons(state, T0 + 400 * DAY, lenient))


def test_an_active_case_is_never_too_long_in_its_stage() -> None:
    state = build_case(Stage.active, T0, coordinator="anna")
    assert state.stage is Stage.active
    assert "stage_too_long" not in kinds(stuck.business_reasons(state, T0 + 3 * 365 * DAY))


@pytest.mark.parametrize("preference, days", [("close", 14), ("normal", 30), ("space", 60)])
def test_no_family_contact_follows_the_familys_cadence(preference: str, days: int) -> None:
    state = build_case(Stage.coordinator_assigned, T0, coordinator="anna", preference=preference)
    last = stuck.last_family_contact(state)
    assert last is not None
    quiet = stuck.StuckPolicy()  # the defaults: close 14, normal 30, space 60
    assert "no_family_contact" not in kinds(stuck.business_reasons(state, last + (days - 1) * DAY, quiet))
    reason = next(r for r in stuck.business_reasons(state, last + (days + 1) * DAY, quiet)
                  if r.kind == "no_family_contact")
    assert reason.since == last and reason.owner == "anna"
    assert preference in reason.detail


def test_the_case_policy_checkin_cadence_wins_when_it_has_one() -> None:
    state = build_case(Stage.coordinator_assigned, T0, coordinator="anna", preference="normal")
    last = stuck.last_family_contact(state)

    class CasePolicy:
        family_checkin_days = {"normal": 7}

    reasons = stuck.business_reasons(state, last + 8 * DAY, case_policy=CasePolicy())
    assert "no_family_contact" in kinds(reasons)


def test_a_new_contact_resets_the_clock_and_a_pause_silences_it() -> None:
    state = build_case(Stage.coordinator_assigned, T0, coordinator="anna")
    later = T0 + 40 * DAY
    anna = Actor(id="anna", roles=["coordinator"])
    state = execute(state, "record_contact",
                    CommandInput(actor=anna, body={"kind": "home_visit", "at": later.isoformat()}),
                    Ctx(actor=anna, now=later, policy=DK))
    assert stuck.last_family_contact(state) == later
    assert "no_family_contact" not in kinds(stuck.business_reasons(state, later + 20 * DAY))
    state.paused = True  # the family asked for a break
    assert "no_family_contact" not in kinds(stuck.business_reasons(state, later + 200 * DAY))


def test_committee_waiting_fires_after_the_decision_days_or_the_meeting() -> None:
    state = build_case(Stage.escalated, T0, coordinator="anna")
    assert state.stage is Stage.escalated
    item = state.escalations[-1]
    assert item.status == "waiting"
    item.meeting_at = None
    points = [r for r in stuck.watch_points(state) if r.kind == "committee_waiting"]
    assert [p.fires_at for p in points] == [item.escalated_at + 21 * DAY]
    assert points[0].owner == "committee" and points[0].since == item.escalated_at
    item.meeting_at = item.escalated_at + 5 * DAY  # on an agenda, the meeting passed undecided
    points = [r for r in stuck.watch_points(state) if r.kind == "committee_waiting"]
    assert points[0].fires_at == item.meeting_at + 2 * DAY
    item.status = "decided"
    assert not [r for r in stuck.watch_points(state) if r.kind == "committee_waiting"]


def test_a_closed_case_is_never_stuck() -> None:
    state = build_case(Stage.referred, T0)
    admin = Actor(id="admin", roles=["admin"])
    state = execute(state, "close", CommandInput(actor=admin, body={"reason": "duplicate"}),
                    Ctx(actor=admin, now=T0 + DAY, policy=DK))
    assert state.stage is Stage.closed
    assert stuck.watch_points(state) == []
    assert stuck.business_reasons(state, T0 + 1000 * DAY) == []


def test_reasons_come_oldest_first() -> None:
    state = build_case(Stage.referred, T0)
    reasons = stuck.business_reasons(state, T0 + 300 * DAY)
    assert [r.since for r in reasons] == sorted(r.since for r in reasons)
    expected = {"overdue:first_contact", "overdue:assessment", "stage_too_long", "no_family_contact"}
    assert expected <= kinds(reasons)


# ---------------------------------------------------------------- technical reasons


def test_a_workflow_that_is_not_running_is_stuck() -> None:
    seen = T0 + DAY
    for status in ("completed", "terminated", "failed", "not_found"):
        reasons = stuck.technical_reasons(stuck.WorkflowFacts(status=status, close_time=T0), seen)
        assert kinds(reasons) == {"workflow_not_running"}
        assert reasons[0].owner == stuck.TECHNICAL_OWNER
        assert reasons[0].technical
    gone = stuck.technical_reasons(stuck.WorkflowFacts(status="not_found"), seen)[0]
    assert gone.since == seen and "does not exist" in gone.detail


def test_an_activity_failing_repeatedly_is_stuck_with_its_last_failure() -> None:
    flaky = stuck.PendingActivity(activity_type="send_sms", attempt=2, last_failure="gateway 503")
    failing = stuck.PendingActivity(activity_type="send_sms", attempt=5, last_failure="gateway 503",
                                    scheduled_at=T0)
    running = stuck.WorkflowFacts(status="running", pending_activities=[flaky])
    assert stuck.technical_reasons(running, T0) == []
    reasons = stuck.technical_reasons(stuck.WorkflowFacts(status="running", pending_activities=[failing]),
                                      T0 + DAY)
    assert kinds(reasons) == {"activity_failing"}
    assert reasons[0].since == T0
    assert "send_sms" in reasons[0].detail and "attempt 5" in reasons[0].detail
    assert "gateway 503" in reasons[0].detail


def test_a_failing_workflow_task_is_stuck() -> None:
    facts = stuck.WorkflowFacts(status="running", workflow_task_attempt=4, workflow_task_since=T0,
                                workflow_task_failure="Nondeterminism error: ...")
    reasons = stuck.technical_reasons(facts, T0 + DAY)
    assert kinds(reasons) == {"workflow_task_failing"}
    assert "Nondeterminism" in reasons[0].detail and reasons[0].since == T0
    first_try = stuck.WorkflowFacts(status="running", workflow_task_attempt=1)
    assert stuck.technical_reasons(first_try, T0) == []


def test_technical_thresholds_are_policy_data() -> None:
    policy = stuck.StuckPolicy(activity_failing_attempts=10)
    facts = stuck.WorkflowFacts(status="running", pending_activities=[
        stuck.PendingActivity(activity_type="project_case", attempt=5)])
    assert stuck.technical_reasons(facts, T0, policy) == []
    assert stuck.technical_reasons(facts, T0) != []


# ---------------------------------------------------------------- presentation


@pytest.mark.parametrize("delta, text", [
    (timedelta(minutes=5), "5 min"), (timedelta(hours=3), "3 h"), (timedelta(days=1), "1 day"),
    (timedelta(days=12), "12 days"), (timedelta(days=200), "6 months"), (-DAY, "not yet"),
])
def test_age_text(delta: timedelta, text: str) -> None:
    assert stuck.age_text(T0, T0 + delta) == text


def test_reason_family() -> None:
    assert stuck.reason_family("overdue:assessment") == "overdue"
    assert stuck.reason_family("stage_too_long") == "stage_too_long"
