"""domain/clocks.py: the one mechanism behind every deadline (DESIGN §3.9), without Temporal.

Reminders to the owner before the due time, the overdue mark at the due time, the escalation
ladder after it; nothing twice, nothing for a satisfied deadline; backdated referrals; pause and
resume; the SE extension; the provisional assessment; policy pinning; holidays and month ends
through the real deadlines a case gets.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from domain import clocks
from domain import deadlines as dl
from domain.lifecycle import Ctx, Refusal, execute, new_case
from domain.policy import DK, SE
from models.case import CaseState, Deadline, DeadlineKind, DeadlineStatus, Stage
from models.commands import CommandInput
from models.policy import ClockRule, Policy
from tests.factories import actor, admin, case_create, coordinator, manager

ADMIN = admin()
ANNA = coordinator("anna")
OLE = actor("ole", "team_member")
MARIA = manager("maria")
BOARD = actor("board", "committee")
CPH = ZoneInfo("Europe/Copenhagen")
STO = ZoneInfo("Europe/Stockholm")

# Monday 1 February 2027, 10:00 in Copenhagen.
RECEIVED = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
TEAM = {"members": [{"staff_id": "ole", "discipline": "school_psychologist", "department": "school"}]}
ASSESSMENT = {
    "ics": {"child_development": [{"dimension": "health", "concerns": "Stomach aches"}]},
    "child_views": "Emil wants to go to school without stomach aches.",
}
PLAN = {
    "family_goals": ["Emil goes to school every day"],
    "goals": [{"id": "g1", "text": "Emil attends school 5 days a week", "owner": "anna"}],
    "services": [{"name": "Family therapy", "paragraph": "BL § 32", "department": "children_disability",
                  "monthly_cost": 5000,
                  "funding": [{"department": "children_disability", "share": 1.0}]}],
}


# ---------------------------------------------------------------- helpers


def new(received: datetime = RECEIVED, policy: Policy = DK, now: datetime | None = None,
        concern_level: str | None = None, contact_preference: str = "normal",
        **referral: Any) -> CaseState:
    body = case_create(received_at=received.isoformat(), **referral).model_copy(
        update={"concern_level": concern_level, "contact_preference": contact_preference})
    ctx = Ctx(actor=ADMIN, now=now or received + timedelta(hours=1), policy=policy)
    return new_case("case-c", body, ctx)


def run(state: CaseState, name: str, who, body: dict | None = None, *, now: datetime,
        item_id: str | None = None, policy: Policy | None = None) -> CaseState:
    """Apply a command the way the workflow does: with the policy the case carries."""
    inp = CommandInput(actor=who, body=body, item_id=item_id, policy=policy)
    return execute(state, name, inp, Ctx(actor=who, now=now, policy=state.policy))


def refuse(state: CaseState, name: str, who, body: dict | None = None, *, now: datetime, kind: str,
           match: str, policy: Policy | None = None) -> None:
    candidate = state.model_copy(deep=True)
    with pytest.raises(Refusal) as caught:
        run(candidate, name, who, body, now=now, policy=policy)
    assert caught.value.kind == kind, caught.value.message
    assert re.search(match, caught.value.message), caught.value.message


def deadline(state: CaseState, kind: DeadlineKind, occurrence: int = 1) -> Deadline:
    return next(d for d in state.deadlines if d.kind is kind and d.occurrence == occurrence)


def steps(d: Deadline) -> list[tuple[str, int, str, bool]]:
    return [(r["kind"], r["step"], r["to_role"], r["skipped"]) for r in d.reminders_sent]


def events_of(fired: list[tuple[clocks.ClockEvent, bool]], kind: DeadlineKind) -> list[tuple]:
    return [(e.kind, e.step, e.to_role, skipped) for e, skipped in fired if e.deadline.kind is kind]


def pending_of(state: CaseState, kind: DeadlineKind) -> list[clocks.ClockEvent]:
    return [e for e in clocks.pending(state) if e.deadline.kind is kind]


def team_formed(now: datetime = RECEIVED + timedelta(hours=1), **case: Any) -> CaseState:
    state = new(now=now, **case)
    run(state, "assign_coordinator", MARIA, {"coordinator_id": "anna"}, now=now)
    return run(state, "form_team", ANNA, TEAM, now=now)


def in_planning(now: datetime) -> CaseState:
    state = team_formed(now)
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": now.isoformat(), "location": "Family home", "participants": ["anna", "ole"]}, now=now)
    run(state, "put_assessment", ANNA, ASSESSMENT, now=now)
    return run(state, "complete_assessment", ANNA, now=now)


def active(now: datetime, *, concern_level: str | None = None,
           contact_preference: str = "normal") -> CaseState:
    state = team_formed(now, concern_level=concern_level, contact_preference=contact_preference)
    run(state, "record_contact", ANNA, {"kind": "phone", "at": now.isoformat()}, now=now)
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": now.isoformat(), "location": "Family home", "participants": ["anna", "ole"]}, now=now)
    run(state, "put_assessment", ANNA, ASSESSMENT, now=now)
    run(state, "complete_assessment", ANNA, now=now)
    run(state, "put_plan", ANNA, PLAN, now=now)
    run(state, "vote", ANNA, {"staff_id": "anna", "vote": "agree"}, now=now)
    run(state, "vote", OLE, {"staff_id": "ole", "vote": "agree"}, now=now)
    run(state, "family_response", ANNA, {"approved": True}, now=now)
    assert state.stage is Stage.active
    return state


# ================================================================ the mechanism, per clock


def test_every_deadline_kind_has_its_own_clock_rule() -> None:
    for policy in (DK, SE):
        assert set(policy.clocks) == {k.value for k in DeadlineKind}
        for rule in policy.clocks.values():
            assert rule.ladder, "a clock without a ladder would tell nobody it is overdue"
            assert rule.ladder_interval_days >= 1


@pytest.mark.parametrize("kind", list(DeadlineKind), ids=lambda k: k.value)
def test_clock_reminds_the_owner_then_goes_overdue_and_climbs_the_ladder(kind: DeadlineKind) -> None:
    state = new()
    state.deadlines = []
    rule = DK.clock(kind.value)
    due = datetime(2027, 9, 15, 12, 0, tzinfo=CPH)
    d = dl.add_deadline(state, DK, kind, due, owner="anna")
    assert d.ladder == rule.ladder and d.legal_basis == DK.legal_basis[kind.value]

    expected = [("reminder", i, due - timedelta(days=days), "owner")
                for i, days in enumerate(sorted(rule.remind_before_days, reverse=True))]
    expected.append(("overdue", 0, due, rule.ladder[0]))
    expected += [("escalation", k, due + timedelta(days=k * rule.ladder_interval_days), role)
                 for k, role in enumerate(rule.ladder[1:], start=1)]
    assert [(e.kind, e.step, e.at, e.to_role) for e in clocks.pending(state)] == expected
    assert clocks.next_instant(state) == expected[0][2]

    for i, (kind_, step, at, role) in enumerate(expected):
        # Not a second early ...
        assert clocks.fire(state, at - timedelta(seconds=1)) == []
        assert d.status is (DeadlineStatus.overdue if kind_ == "escalation" else DeadlineStatus.open)
        # ... and exactly this one at its instant.
        fired = clocks.fire(state, at)
        assert [(e.kind, e.step, e.to_role, skipped) for e, skipped in fired] == [(kind_, step, role, False)]
        assert d.reminders_sent[-1] == {"kind": kind_, "step": step, "at": at.isoformat(),
                                        "to_role": role, "skipped": False}
        if kind_ != "reminder":
            assert d.status is DeadlineStatus.overdue
        nxt = expected[i + 1][2] if i + 1 < len(expected) else None
        assert clocks.next_instant(state) == nxt
        assert clocks.fire(state, at) == []  # the same instant again: nothing new

    # Long after the top of the ladder: nothing more, the deadline stays overdue (visible).
    assert clocks.fire(state, due + timedelta(days=400)) == []
    assert len(d.reminders_sent) == len(expected)
    assert d.status is DeadlineStatus.overdue and d.is_open()
    recorded = [(h.event, h.detail["step"], h.detail["to_role"]) for h in state.history
                if h.event.startswith("deadline_")]
    assert recorded == [(f"deadline_{k}", s, r) for k, s, _, r in expected]


def test_everything_due_at_once_is_recorded_once_in_order() -> None:
    state = new()
    first = deadline(state, DeadlineKind.first_contact)
    late = first.due_at + timedelta(days=30)
    fired = clocks.fire(state, late)
    # The reminder's deadline has passed: recorded as skipped, never sent late.
    assert events_of(fired, DeadlineKind.first_contact) == [
        ("reminder", 0, "owner", True), ("overdue", 0, "coordinator", False),
        ("escalation", 1, "manager", False)]
    assert clocks.fire(state, late) == []
    assert clocks.fire(state, late + timedelta(days=1)) == []
    # A copy through JSON (what continue-as-new and replay see) has nothing left to fire either.
    again = CaseState.model_validate_json(state.model_dump_json())
    assert pending_of(again, DeadlineKind.first_contact) == []
    assert clocks.fire(again, late + timedelta(days=2)) == []


def test_stepwise_and_all_at_once_record_the_same_steps() -> None:
    a, b = new(), new()
    end = deadline(a, DeadlineKind.assessment).due_at + timedelta(days=60)
    t = RECEIVED
    while t < end:
        clocks.fire(a, t)
        t += timedelta(hours=7)
    clocks.fire(a, end)
    clocks.fire(b, end)
    for kind in (DeadlineKind.first_contact, DeadlineKind.assessment):
        sa = {(k, s) for k, s, _, _ in steps(deadline(a, kind))}
        sb = {(k, s) for k, s, _, _ in steps(deadline(b, kind))}
        assert sa == sb
        assert len(sa) == len(deadline(a, kind).reminders_sent)  # no (kind, step) twice


# ================================================================ satisfied deadlines


def test_first_contact_reminder_then_a_contact_leaves_nothing_pending() -> None:
    state = team_formed()
    first = deadline(state, DeadlineKind.first_contact)
    assert first.due_at.isoformat() == "2027-02-08T23:59:59+01:00"  # 5 working days
    assert first.remind_at == [datetime(2027, 2, 6, 23, 59, 59, tzinfo=CPH)]
    clocks.fire(state, datetime(2027, 2, 7, 12, 0, tzinfo=UTC))
    assert steps(first) == [("reminder", 0, "owner", False)]

    at = datetime(2027, 2, 8, 9, 0, tzinfo=UTC)
    run(state, "record_contact", OLE, {"kind": "home_visit", "at": at.isoformat()}, now=at)
    assert (first.status, first.met_at, first.satisfied_by) == (DeadlineStatus.met, at, "contact")
    assert pending_of(state, DeadlineKind.first_contact) == []
    fired = clocks.fire(state, first.due_at + timedelta(days=60))
    assert events_of(fired, DeadlineKind.first_contact) == []
    assert steps(first) == [("reminder", 0, "owner", False)]
    assert first.status is DeadlineStatus.met


def test_satisfying_an_overdue_deadline_stops_the_ladder() -> None:
    state = team_formed()
    first = deadline(state, DeadlineKind.first_contact)
    clocks.fire(state, first.remind_at[0])
    clocks.fire(state, first.due_at + timedelta(hours=1))
    assert first.status is DeadlineStatus.overdue
    at = first.due_at + timedelta(days=1)
    run(state, "record_contact", ANNA, {"kind": "phone", "at": at.isoformat()}, now=at)
    assert first.status is DeadlineStatus.met
    clocks.fire(state, first.due_at + timedelta(days=30))
    assert steps(first) == [("reminder", 0, "owner", False), ("overdue", 0, "coordinator", False)]


def test_triage_stops_the_triage_clock_and_the_receipt_clock_runs_on() -> None:
    received = datetime(2027, 3, 27, 9, 0, tzinfo=UTC)  # the night before summer time
    state = new(received=received, kind="concern_report", source="school")
    triage = deadline(state, DeadlineKind.concern_triage)
    receipt = deadline(state, DeadlineKind.reporter_receipt)
    # 24 clock hours (not 24 wall-clock hours): 10:00 CET becomes 11:00 CEST.
    assert triage.due_at == datetime(2027, 3, 28, 11, 0, tzinfo=CPH)
    assert triage.remind_at == []
    # 6 days, the last day counted whole (DK Forældelsesloven § 27 stk. 1).
    assert receipt.due_at == datetime(2027, 4, 2, 23, 59, 59, tzinfo=CPH)
    assert receipt.remind_at == [datetime(2027, 3, 31, 23, 59, 59, tzinfo=CPH)]
    now = received + timedelta(hours=2)
    run(state, "assign_coordinator", MARIA, {"coordinator_id": "anna"}, now=now)
    run(state, "triage", ANNA, {"child_in_danger": False}, now=now)
    assert pending_of(state, DeadlineKind.concern_triage) == []
    fired = clocks.fire(state, receipt.due_at + timedelta(days=30))
    assert events_of(fired, DeadlineKind.concern_triage) == []
    assert events_of(fired, DeadlineKind.reporter_receipt) == [
        ("reminder", 0, "owner", True), ("overdue", 0, "coordinator", False),
        ("escalation", 1, "manager", False)]


# ================================================================ backdated referrals


def test_backdated_referral_skips_reminders_and_is_overdue_at_once() -> None:
    now = datetime(2027, 8, 20, 8, 0, tzinfo=UTC)
    state = new(received=now - timedelta(days=200), now=now)
    fired = clocks.fire(state, now)
    assert events_of(fired, DeadlineKind.first_contact) == [
        ("reminder", 0, "owner", True), ("overdue", 0, "coordinator", False),
        ("escalation", 1, "manager", False)]
    assert events_of(fired, DeadlineKind.assessment) == [
        ("reminder", 0, "owner", True), ("reminder", 1, "owner", True),
        ("overdue", 0, "coordinator", False), ("escalation", 1, "manager", False),
        ("escalation", 2, "committee", False)]
    for kind in (DeadlineKind.first_contact, DeadlineKind.assessment):
        d = deadline(state, kind)
        assert d.status is DeadlineStatus.overdue
        assert {r["at"] for r in d.reminders_sent} == {now.isoformat()}  # recorded when noticed
    skipped = [h.detail["skipped"] for h in state.history if h.event == "deadline_reminder"]
    assert skipped == [True, True, True]
    assert clocks.next_instant(state) is None
    assert clocks.fire(state, now + timedelta(days=1)) == []


def test_a_late_reminder_is_sent_not_skipped_while_the_deadline_has_not_passed() -> None:
    # Received 3.5 months ago: the 3-month reminder is late, the 4-month deadline still ahead.
    now = datetime(2027, 5, 15, 8, 0, tzinfo=UTC)
    state = new(received=RECEIVED, now=now)
    fired = clocks.fire(state, now)
    assert events_of(fired, DeadlineKind.assessment) == [("reminder", 0, "owner", False)]
    assert deadline(state, DeadlineKind.assessment).status is DeadlineStatus.open


# ================================================================ the assessment's reminders


@pytest.mark.parametrize(
    ("received", "three_months", "due"),
    [
        # The 3-month reminder keeps the referral's clock time; the deadline's last day counts
        # whole (Forældelsesloven § 27 stk. 1: due at its end, local time).
        # 31 January: the reminder is clamped to 30 April, the deadline is 31 May.
        ("2027-01-31T09:00:00Z", "2027-04-30T10:00:00+02:00", "2027-05-31T23:59:59+02:00"),
        # 30 November: February is clamped; the deadline itself is after the spring DST change.
        ("2026-11-30T09:00:00Z", "2027-02-28T10:00:00+01:00", "2027-03-30T23:59:59+02:00"),
        # 31 October 2027: leap February 2028.
        ("2027-10-31T09:00:00Z", "2028-01-31T10:00:00+01:00", "2028-02-29T23:59:59+01:00"),
        # Late evening UTC is already the next day in Copenhagen.
        ("2027-01-31T23:30:00Z", "2027-05-01T00:30:00+02:00", "2027-06-01T23:59:59+02:00"),
    ],
)
def test_assessment_reminds_at_three_calendar_months_and_two_weeks_before(
    received: str, three_months: str, due: str
) -> None:
    state = new(received=datetime.fromisoformat(received))
    a = deadline(state, DeadlineKind.assessment)
    assert a.due_at == datetime.fromisoformat(due)
    assert a.due_at.utcoffset() == datetime.fromisoformat(due).utcoffset()
    assert a.remind_at == [datetime.fromisoformat(three_months), a.due_at - timedelta(days=14)]
    first = a.remind_at[0]
    assert events_of(clocks.fire(state, first - timedelta(seconds=1)), DeadlineKind.assessment) == []
    assert events_of(clocks.fire(state, first), DeadlineKind.assessment) == [("reminder", 0, "owner", False)]
    assert a.reminders_sent[0]["at"] == first.isoformat()


# ================================================================ pause and resume


def test_pause_stops_only_the_family_clocks_and_resume_shifts_them() -> None:
    t0 = RECEIVED + timedelta(hours=1)
    state = team_formed(t0)
    meeting = datetime(2027, 2, 21, 10, 0, tzinfo=CPH)
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": meeting.isoformat(), "location": "Family home", "participants": ["anna", "ole"]}, now=t0)
    pre = deadline(state, DeadlineKind.pre_meeting_contact)
    first = deadline(state, DeadlineKind.first_contact)
    assessment = deadline(state, DeadlineKind.assessment)
    assert pre.due_at == meeting and pre.remind_at == [meeting - timedelta(days=3)]
    before = {d.kind: (d.due_at, list(d.remind_at)) for d in state.deadlines}

    paused_at = t0 + timedelta(days=1)
    run(state, "pause", ANNA, {"reason": "Family on holiday"}, now=paused_at)
    assert state.paused and pre.paused_since == paused_at
    assert first.paused_since is None and assessment.paused_since is None
    assert state.history[-1].event == "case_paused"
    assert state.history[-1].detail["clocks_paused"] == ["pre_meeting_contact"]
    assert pending_of(state, DeadlineKind.pre_meeting_contact) == []

    # Long past the meeting: the paused clock fires nothing; the statutory one runs on.
    during = meeting + timedelta(days=1)
    fired = clocks.fire(state, during)
    assert events_of(fired, DeadlineKind.pre_meeting_contact) == []
    assert [e[0] for e in events_of(fired, DeadlineKind.first_contact)] == [
        "reminder", "overdue", "escalation"]
    assert first.status is DeadlineStatus.overdue and pre.status is DeadlineStatus.open

    resumed_at = paused_at + timedelta(days=24)
    run(state, "resume", ANNA, now=resumed_at)
    shift = timedelta(days=24)
    assert pre.due_at == meeting + shift
    assert pre.remind_at == [meeting - timedelta(days=3) + shift]
    assert (pre.paused_since, pre.paused_seconds) == (None, shift.total_seconds())
    assert state.pauses[-1].since == paused_at and state.pauses[-1].until == resumed_at
    assert state.history[-1].detail["clocks_resumed"] == ["pre_meeting_contact"]
    for d in (first, assessment):  # statutory clocks never move
        assert (d.due_at, d.remind_at) == before[d.kind]

    # The shifted reminder fires at its new instant, not at the old one.
    assert events_of(clocks.fire(state, pre.remind_at[0] - timedelta(seconds=1)),
                     DeadlineKind.pre_meeting_contact) == []
    assert events_of(clocks.fire(state, pre.remind_at[0]), DeadlineKind.pre_meeting_contact) == [
        ("reminder", 0, "owner", False)]
    assert events_of(clocks.fire(state, pre.due_at), DeadlineKind.pre_meeting_contact) == [
        ("overdue", 0, "coordinator", False)]


def test_a_reminder_sent_before_the_pause_is_not_sent_again_after_it() -> None:
    now = RECEIVED + timedelta(hours=1)
    state = in_planning(now)
    plan = deadline(state, DeadlineKind.plan)
    # 3 months: Saturday 1 May moves to Monday 3 May, due at its end (Forældelsesloven § 27).
    assert plan.due_at == datetime(2027, 5, 3, 23, 59, 59, tzinfo=CPH)
    clocks.fire(state, plan.remind_at[0] + timedelta(hours=1))
    assert steps(plan) == [("reminder", 0, "owner", False)]
    paused_at = plan.remind_at[0] + timedelta(days=2)
    run(state, "pause", ANNA, {"reason": "Waiting for the family's consent"}, now=paused_at)
    run(state, "resume", ANNA, now=paused_at + timedelta(days=10))
    assert [e.kind for e in pending_of(state, DeadlineKind.plan)] == ["overdue", "escalation"]
    clocks.fire(state, plan.due_at + timedelta(days=30))
    assert [s[0] for s in steps(plan)] == ["reminder", "overdue", "escalation"]


def test_a_pause_not_waiting_for_the_family_stops_no_clock() -> None:
    now = RECEIVED + timedelta(hours=1)
    state = in_planning(now)
    run(state, "pause", ANNA, {"reason": "Coordinator on sick leave", "waiting_for_family": False},
        now=now)
    assert state.paused
    assert all(d.paused_since is None for d in state.deadlines)
    assert state.history[-1].detail["clocks_paused"] == []
    due = deadline(state, DeadlineKind.plan).due_at
    run(state, "resume", ANNA, now=now + timedelta(days=5))
    assert deadline(state, DeadlineKind.plan).due_at == due


def test_a_clock_met_during_a_pause_keeps_the_due_date_it_was_met_against() -> None:
    """Resume shifts the clocks that are still waiting; a deadline met while paused is history."""
    now = RECEIVED + timedelta(hours=1)
    state = in_planning(now)
    run(state, "put_plan", ANNA, PLAN, now=now)
    approval = deadline(state, DeadlineKind.family_approval)
    due = approval.due_at
    run(state, "pause", ANNA, {"reason": "Family thinks it over"}, now=now + timedelta(hours=1))
    assert approval.paused_since is not None
    run(state, "family_response", ANNA, {"approved": False, "comment": "Not yet"},
        now=now + timedelta(days=2))
    assert approval.status is DeadlineStatus.met
    run(state, "resume", ANNA, now=now + timedelta(days=20))
    assert approval.due_at == due, "a met deadline's due date moved on resume"
    assert approval.paused_since is None


def test_a_paused_clock_is_not_shown_overdue_while_it_is_paused() -> None:
    """The engine fires nothing for a paused clock; the status a reader sees must agree."""
    t0 = RECEIVED + timedelta(hours=1)
    state = team_formed(t0)
    meeting = t0 + timedelta(days=5)
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": meeting.isoformat(), "location": "Family home", "participants": ["anna", "ole"]}, now=t0)
    run(state, "pause", ANNA, {"reason": "Family asked for a break"}, now=t0 + timedelta(hours=1))
    pre = deadline(state, DeadlineKind.pre_meeting_contact)
    during = meeting + timedelta(days=3)
    assert events_of(clocks.fire(state, during), DeadlineKind.pre_meeting_contact) == []
    assert pre.status is DeadlineStatus.open
    assert pre.status_at(during) is DeadlineStatus.open, "a paused clock is reported overdue"


def test_a_family_clock_started_during_a_family_pause_starts_paused() -> None:
    """While the case waits for the family, a new clock the policy pauses for the family (the
    family's approval of a plan drafted meanwhile) must not run either."""
    now = RECEIVED + timedelta(hours=1)
    state = in_planning(now)
    run(state, "pause", ANNA, {"reason": "Waiting for the family's consent"}, now=now + timedelta(hours=1))
    assert deadline(state, DeadlineKind.plan).paused_since is not None
    run(state, "put_plan", ANNA, PLAN, now=now + timedelta(days=2))
    approval = deadline(state, DeadlineKind.family_approval)
    fired = clocks.fire(state, approval.due_at + timedelta(days=1))
    assert events_of(fired, DeadlineKind.family_approval) == [], "the approval clock ran during the pause"
    assert approval.paused_since is not None


# ================================================================ the statutory assessment


def test_provisional_assessment_only_once_the_deadline_has_passed() -> None:
    state = team_formed()
    a = deadline(state, DeadlineKind.assessment)
    refuse(state, "provisional_assessment", ANNA, {"text": "Early"}, now=a.due_at - timedelta(minutes=1),
           kind="conflict", match="has not passed")
    clocks.fire(state, a.due_at)
    assert a.status is DeadlineStatus.overdue
    later = a.due_at + timedelta(days=2)
    refuse(state, "provisional_assessment", OLE, {"text": "x"}, now=later, kind="forbidden",
           match="coordinator or a manager")
    run(state, "provisional_assessment", ANNA, {"text": "Emil is safe; school support needed"}, now=later)
    assert [p.at for p in state.provisional_assessments] == [later]
    assert state.history[-1].event == "provisional_assessment_recorded"
    # The case stays overdue until the assessment is complete, and the ladder climbs on.
    assert a.status is DeadlineStatus.overdue
    assert [e.kind for e in pending_of(state, DeadlineKind.assessment)] == ["escalation", "escalation"]
    done = a.due_at + timedelta(days=3)
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": done.isoformat(), "location": "Town hall", "participants": ["anna", "ole"]}, now=done)
    run(state, "put_assessment", ANNA, ASSESSMENT, now=done)
    run(state, "complete_assessment", ANNA, now=done)
    assert (a.status, a.met_at) == (DeadlineStatus.met, done)
    assert pending_of(state, DeadlineKind.assessment) == []
    refuse(state, "provisional_assessment", ANNA, {"text": "again"}, now=done, kind="conflict",
           match="has not passed")


def test_se_extension_moves_the_due_date_and_restarts_the_reminders() -> None:
    received = datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    state = new(received=received, policy=SE)
    a = deadline(state, DeadlineKind.assessment)
    # 4 months: Saturday 15 May moves to Monday 17 May, due at its end (lag 1930:173 1-2 §§).
    assert a.due_at == datetime(2027, 5, 17, 23, 59, 59, tzinfo=STO)
    clocks.fire(state, a.due_at + timedelta(days=1))
    assert [s[0] for s in steps(a)] == ["reminder", "reminder", "overdue"]
    history_before = len(state.history)

    now = a.due_at + timedelta(days=2)
    new_due = datetime(2027, 7, 15, 10, 0, tzinfo=STO)
    body = {"new_due_at": new_due.isoformat(), "decision_ref": "SN 2027/41", "reason": "Specialist report"}
    refuse(state, "extend_assessment", ANNA, body, now=now, kind="forbidden", match="committee")
    refuse(state, "extend_assessment", BOARD, {**body, "new_due_at": a.due_at.isoformat()}, now=now,
           kind="invalid", match="later than")
    run(state, "extend_assessment", BOARD, body, now=now)
    assert (a.due_at, a.status, a.reminders_sent) == (new_due, DeadlineStatus.open, [])
    assert a.remind_at == [new_due - timedelta(days=14)]
    ext = state.assessment_extensions[-1]
    assert (ext.new_due_at, ext.decision_ref, ext.by) == (new_due, "SN 2027/41", "board")
    # What fired before stays in the history.
    assert [h.detail.get("kind") for h in state.history[:history_before]
            if h.event == "deadline_overdue"].count("assessment") == 1
    assert state.history[-1].event == "assessment_extended"
    # No longer late: no provisional assessment; the clock starts over towards the new date.
    refuse(state, "provisional_assessment", MARIA, {"text": "x"}, now=now, kind="conflict",
           match="has not passed")
    assert clocks.fire(state, now + timedelta(hours=1)) == []
    assert events_of(clocks.fire(state, new_due - timedelta(days=14)), DeadlineKind.assessment) == [
        ("reminder", 0, "owner", False)]
    assert events_of(clocks.fire(state, new_due), DeadlineKind.assessment) == [
        ("overdue", 0, "coordinator", False)]
    assert a.status is DeadlineStatus.overdue


def test_dk_has_no_assessment_extension() -> None:
    state = new()
    a = deadline(state, DeadlineKind.assessment)
    body = {"new_due_at": (a.due_at + timedelta(days=30)).isoformat(), "decision_ref": "x",
            "reason": "y"}
    refuse(state, "extend_assessment", BOARD, body, now=RECEIVED + timedelta(days=1), kind="conflict",
           match="no extension")


# ================================================================ the measures' clocks


@pytest.mark.parametrize(("level", "weeks"), [("high", 2), ("medium", 4), ("low", 8)])
def test_status_meetings_by_concern_level(level: str, weeks: int) -> None:
    now = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    state = active(now, concern_level=level)
    meeting = deadline(state, DeadlineKind.status_meeting)
    assert meeting.due_at == datetime(2027, 3, 1, 10, 0, tzinfo=CPH) + timedelta(weeks=weeks)
    assert meeting.remind_at == [meeting.due_at - timedelta(days=5)]
    assert meeting.ladder == ["coordinator", "manager"]
    # A meeting that raises the concern level sets the next one by the new level.
    at = now + timedelta(days=3)
    run(state, "status_meeting", ANNA, {"at": at.isoformat(), "participants": ["anna"],
                                         "concern_level": "high"}, now=at)
    assert meeting.status is DeadlineStatus.met
    nxt = deadline(state, DeadlineKind.status_meeting, 2)
    assert nxt.due_at == at.astimezone(CPH) + timedelta(weeks=2)


@pytest.mark.parametrize(("preference", "days"), [("close", 14), ("normal", 30), ("space", 60)])
def test_family_checkins_follow_the_contact_preference(preference: str, days: int) -> None:
    now = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    state = team_formed(now, contact_preference=preference)
    run(state, "record_contact", ANNA, {"kind": "phone", "at": now.isoformat()}, now=now)
    checkin = deadline(state, DeadlineKind.family_checkin)
    assert checkin.due_at == now.astimezone(CPH) + timedelta(days=days)
    assert (checkin.owner, checkin.remind_at) == ("anna", [checkin.due_at - timedelta(days=2)])
    # The statutory clocks do not depend on the preference.
    assert deadline(state, DeadlineKind.assessment).due_at == datetime(2027, 6, 1, 23, 59, 59, tzinfo=CPH)
    later = now + timedelta(days=5)
    run(state, "record_contact", ANNA, {"kind": "home_visit", "at": later.isoformat()}, now=later)
    assert checkin.status is DeadlineStatus.met
    nxt = deadline(state, DeadlineKind.family_checkin, 2)
    assert nxt.due_at == later.astimezone(CPH) + timedelta(days=days)
    assert [d.occurrence for d in dl.open_deadlines(state, DeadlineKind.family_checkin)] == [2]


def test_first_followup_then_the_cadence_set_at_it() -> None:
    now = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    state = active(now)
    first = deadline(state, DeadlineKind.first_followup)
    # 3 months after measures start, to the end of the last day.
    assert first.due_at == datetime(2027, 6, 1, 23, 59, 59, tzinfo=CPH)
    assert first.legal_basis == DK.legal_basis["first_followup"]
    assert first.remind_at == [datetime(2027, 5, 18, 23, 59, 59, tzinfo=CPH)]
    clocks.fire(state, first.remind_at[0])
    clocks.fire(state, first.due_at)
    assert [s[0] for s in steps(first)] == ["reminder", "overdue"]
    at = first.due_at + timedelta(days=2)
    run(state, "status_meeting", ANNA, {"at": at.isoformat(), "participants": ["anna", "family"],
                                         "followup_months": 2, "followup_reason": "Fragile start"},
        now=at)
    assert (first.status, first.met_at) == (DeadlineStatus.met, at)
    cadence = next(h for h in state.history if h.event == "followup_cadence_set")
    assert cadence.detail == {"months": 2, "reason": "Fragile start"}
    follow = deadline(state, DeadlineKind.followup)
    assert follow.due_at == datetime(2027, 8, 3, 23, 59, 59, tzinfo=CPH)
    clocks.fire(state, first.due_at + timedelta(days=30))
    assert steps(first) == [("reminder", 0, "owner", False), ("overdue", 0, "coordinator", False)]
    at2 = datetime(2027, 7, 30, 8, 0, tzinfo=UTC)
    run(state, "status_meeting", ANNA, {"at": at2.isoformat(), "participants": ["anna"]}, now=at2)
    assert follow.status is DeadlineStatus.met
    assert deadline(state, DeadlineKind.followup, 2).due_at == datetime(2027, 9, 30, 23, 59, 59,
                                                                       tzinfo=CPH)


def test_committee_decision_within_21_days_climbs_to_the_manager() -> None:
    now = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    state = in_planning(now)
    run(state, "put_plan", ANNA, PLAN, now=now)
    run(state, "vote", OLE, {"staff_id": "ole", "vote": "disagree", "reason": "Too little"}, now=now)
    assert state.stage is Stage.escalated
    c = deadline(state, DeadlineKind.committee_decision)
    assert (c.due_at, c.owner) == (datetime(2027, 3, 22, 10, 0, tzinfo=CPH), "committee")
    assert [e.at for e in pending_of(state, DeadlineKind.committee_decision)] == [
        datetime(2027, 3, 15, 10, 0, tzinfo=CPH), c.due_at, c.due_at + timedelta(days=2)]
    fired = clocks.fire(state, c.due_at + timedelta(days=5))
    assert events_of(fired, DeadlineKind.committee_decision) == [
        ("reminder", 0, "owner", True),  # noticed only after the due time: skipped
        ("overdue", 0, "committee", False), ("escalation", 1, "manager", False)]


# ================================================================ policy pinning


def _dk_v2() -> Policy:
    clocks_v2 = dict(DK.clocks)
    clocks_v2["status_meeting"] = ClockRule(remind_before_days=[1], ladder=["coordinator"])
    return DK.model_copy(update={"version": 2, "status_meeting_weeks": {"high": 1, "medium": 1, "low": 1},
                                 "clocks": clocks_v2})


def test_a_case_keeps_its_policy_version_until_a_status_meeting_moves_it() -> None:
    now = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    state = active(now)
    v2 = _dk_v2()
    assert (state.policy_key, state.policy.version) == ("DK-v1", 1)
    # A newer version exists; the case still counts with v1.
    at = now + timedelta(days=10)
    run(state, "status_meeting", ANNA, {"at": at.isoformat(), "participants": ["anna"]}, now=at)
    assert deadline(state, DeadlineKind.status_meeting, 2).due_at == at.astimezone(CPH) + timedelta(weeks=4)
    assert state.policy_key == "DK-v1"

    at = now + timedelta(days=20)
    run(state, "status_meeting", ANNA,
        {"at": at.isoformat(), "participants": ["anna", "family"], "policy_version": 2,
         "policy_reason": "The council adopted the new cadence"}, now=at, policy=v2)
    assert (state.policy_key, state.policy.version) == ("DK-v2", 2)
    changed = [h for h in state.history if h.event == "policy_changed"]
    assert len(changed) == 1
    assert changed[0].detail == {"from": "DK-v1", "to": "DK-v2",
                                 "reason": "The council adopted the new cadence"}
    assert (changed[0].actor, changed[0].at) == ("anna", at)
    # From now on the case counts with v2.
    at = now + timedelta(days=25)
    run(state, "status_meeting", ANNA, {"at": at.isoformat(), "participants": ["anna"]}, now=at)
    latest = max((d for d in state.deadlines if d.kind is DeadlineKind.status_meeting),
                 key=lambda d: d.occurrence)
    assert latest.due_at == at.astimezone(CPH) + timedelta(weeks=1)
    assert (latest.remind_at, latest.ladder) == ([latest.due_at - timedelta(days=1)], ["coordinator"])


def test_moving_the_policy_needs_a_known_version_and_a_reason() -> None:
    now = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    state = active(now)
    v2 = _dk_v2()
    body = {"at": now.isoformat(), "participants": ["anna"], "policy_version": 2,
            "policy_reason": "New rules"}
    refuse(state, "status_meeting", ANNA, {**body, "policy_reason": " "}, now=now, policy=v2,
           kind="invalid", match="reason")
    refuse(state, "status_meeting", ANNA, body, now=now, policy=None, kind="invalid", match="unknown")
    refuse(state, "status_meeting", ANNA, {**body, "policy_version": 3}, now=now, policy=v2,
           kind="invalid", match="unknown")
    se_v2 = SE.model_copy(update={"version": 2})
    refuse(state, "status_meeting", ANNA, body, now=now, policy=se_v2, kind="invalid", match="unknown")
    refuse(state, "status_meeting", ANNA, {**body, "policy_version": 1}, now=now, policy=DK,
           kind="conflict", match="already follows")
    assert state.policy_key == "DK-v1"
    assert not any(h.event == "policy_changed" for h in state.history)


# ================================================================ holidays and month ends


@pytest.mark.parametrize(
    ("policy", "received", "kind", "due"),
    [
        # Wednesday before Easter: Maundy Thursday, Good Friday, Easter Monday are DK holidays.
        (DK, "2027-03-24T09:00:00Z", DeadlineKind.first_contact, "2027-04-05T23:59:59+02:00"),
        # Sweden works on Maundy Thursday; 3 working days.
        (SE, "2027-03-24T09:00:00Z", DeadlineKind.first_contact, "2027-03-31T23:59:59+02:00"),
        # Christmas and the New Year; 24 and 31 Dec are not working days in Denmark either
        # (Forældelsesloven § 27 stk. 2).
        (DK, "2026-12-23T09:00:00Z", DeadlineKind.first_contact, "2027-01-05T23:59:59+01:00"),
        (DK, "2027-12-22T09:00:00Z", DeadlineKind.first_contact, "2027-12-30T23:59:59+01:00"),
        (SE, "2027-12-22T09:00:00Z", DeadlineKind.first_contact, "2027-12-28T23:59:59+01:00"),
        # Ascension Day.
        (DK, "2027-05-04T09:00:00Z", DeadlineKind.first_contact, "2027-05-12T23:59:59+02:00"),
        (SE, "2027-05-04T09:00:00Z", DeadlineKind.first_contact, "2027-05-10T23:59:59+02:00"),
        # Midsummer Eve counts as a holiday for Swedish deadlines.
        (SE, "2027-06-22T09:00:00Z", DeadlineKind.first_contact, "2027-06-28T23:59:59+02:00"),
        # Calendar months, clamped, to the end of the last day (local), off a weekend:
        # Saturday 30 Oct 2027 moves to Monday 1 Nov (after the autumn DST change).
        (DK, "2027-01-31T09:00:00Z", DeadlineKind.assessment, "2027-05-31T23:59:59+02:00"),
        (DK, "2027-10-31T09:00:00Z", DeadlineKind.assessment, "2028-02-29T23:59:59+01:00"),
        (SE, "2027-06-30T09:00:00Z", DeadlineKind.assessment, "2027-11-01T23:59:59+01:00"),
        (DK, "2027-07-31T09:00:00Z", DeadlineKind.assessment, "2027-11-30T23:59:59+01:00"),
    ],
    ids=lambda v: getattr(v, "country", None) or str(v)[:16],
)
def test_real_deadlines_over_holidays_and_month_ends(
    policy: Policy, received: str, kind: DeadlineKind, due: str
) -> None:
    state = new(received=datetime.fromisoformat(received), policy=policy)
    d = deadline(state, kind)
    assert d.due_at.isoformat() == due
    assert d.legal_basis == policy.legal_basis[kind.value]
    # The overdue mark comes exactly at the due time, whatever zone `now` is given in.
    before = events_of(clocks.fire(state, d.due_at.astimezone(UTC) - timedelta(seconds=1)), kind)
    assert [e[0] for e in before] == ["reminder"] * len(d.remind_at)
    at_due = events_of(clocks.fire(state, d.due_at.astimezone(UTC)), kind)
    assert at_due == [("overdue", 0, "coordinator", False)]


# ================================================================ instants through JSON


def test_pending_instants_survive_a_json_round_trip_across_dst() -> None:
    """Continue-as-new, the query and the read model carry the case as JSON (fixed UTC offsets
    instead of Europe/Copenhagen); the instants the clocks fire at must not move with it."""
    state = new(received=datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    a = deadline(state, DeadlineKind.assessment)
    # Saturday 20 Mar moves to Monday 22 Mar; its ladder climbs into summer time.
    assert a.due_at.isoformat() == "2027-03-22T23:59:59+01:00"
    again = CaseState.model_validate_json(state.model_dump_json())
    before = [(e.key, e.at) for e in clocks.pending(state)]
    after = [(e.key, e.at) for e in clocks.pending(again)]
    assert after == before
