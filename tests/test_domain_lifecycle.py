"""domain/lifecycle.py: the stage machine, every refusal, the decision rule, blocked-on and the
deadlines a case carries (DESIGN §3, §5). Plain functions, no Temporal."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.lifecycle import Refusal, execute, new_case, working_copy
from domain.policy import DK
from models.case import CaseState, DeadlineKind, DeadlineStatus, Stage
from models.commands import BODY_MODELS, CommandInput
from tests.factories import NOW, actor, admin, case_create, coordinator, ctx, manager

ANNA = coordinator("anna")
BO = coordinator("bo")
OLE = actor("ole", "team_member")
SIF = actor("sif", "team_member")
EVE = actor("eve", "team_member")  # a colleague who is not on the case
MARIA = manager("maria")
KAREN = actor("karen", "committee")
ADMIN = admin()

TEAM = {
    "members": [
        {"staff_id": "ole", "discipline": "school_psychologist", "department": "school"},
        {"staff_id": "sif", "discipline": "family_therapist", "department": "children_disability"},
    ]
}
MEETING_AT = NOW + timedelta(days=7)
ASSESSMENT: dict[str, Any] = {
    "ics": {
        "child_development": [
            {"dimension": "health", "strengths": "Sleeps well", "concerns": "Stomach aches",
             "family_view": "Worse on school days"}
        ],
        "parenting_capacity": [{"dimension": "safe_caring_environment", "strengths": "Warm home"}],
        "family_and_network": [{"dimension": "housing_employment_finances", "concerns": "Debt"}],
    },
    "child_views": "Emil wants to go to school without stomach aches.",
    "investigations": ["child_investigation"],
}
JOINT = [("children_disability", 0.5), ("adult_services", 0.5)]


def iso(dt: datetime) -> str:
    return dt.isoformat()


def service(
    paragraph: str = "BL § 32", cost: float = 5000, funding: list[tuple[str, float]] | None = None
) -> dict[str, Any]:
    funding = funding or [("children_disability", 1.0)]
    return {
        "name": "Family therapy",
        "paragraph": paragraph,
        "department": "children_disability",
        "monthly_cost": cost,
        "funding": [{"department": d, "share": s} for d, s in funding],
    }


def plan(*services: dict[str, Any], goals: list[dict] | None = None,
         actions: list[dict] | None = None) -> dict[str, Any]:
    return {
        "family_goals": ["Emil goes to school every day"],
        "goals": goals if goals is not None else [
            {"id": "g1", "text": "Emil attends school 5 days a week by March", "owner": "anna"}
        ],
        "actions": actions if actions is not None else [
            {"id": "a1", "goal_id": "g1", "text": "School adapts the timetable", "owner": "school",
             "due": "2027-01-15"}
        ],
        "services": list(services) if services else [service()],
    }


# ---------------------------------------------------------------- running commands


def _input(who, body, load, suggestion, item_id) -> CommandInput:
    return CommandInput(actor=who, body=body, coordinator_load=load, suggestion=suggestion,
                        item_id=item_id)


def run(state: CaseState, name: str, who, body: dict | None = None, *, now: datetime = NOW,
        load: int = 0, suggestion: str | None = None, item_id: str | None = None) -> CaseState:
    """Apply an accepted command as the workflow does, on `working_copy` (which must leave the
    original untouched); every accepted command bumps the version by exactly one."""
    before = state.version
    original = state.model_dump()
    candidate = working_copy(state)
    out = execute(candidate, name, _input(who, body, load, suggestion, item_id), ctx(who, now))
    assert out is candidate
    assert state.model_dump() == original, "working_copy shared something a command changed"
    assert candidate.version == before + 1
    for field in CaseState.model_fields:  # keep the caller's object: tests hold on to it
        setattr(state, field, getattr(candidate, field))
    return state


def refuse(state: CaseState, name: str, who, body: dict | None = None, *, kind: str, match: str,
           now: datetime = NOW, load: int = 0, suggestion: str | None = None,
           item_id: str | None = None) -> Refusal:
    """Apply on a deep copy as the workflow's validator does; the refusal must have the given
    kind and message, leave the case untouched and leave nothing half-applied on the copy."""
    before = state.model_dump()
    candidate = working_copy(state)
    with pytest.raises(Refusal) as caught:
        execute(candidate, name, _input(who, body, load, suggestion, item_id), ctx(who, now))
    refusal = caught.value
    assert refusal.kind == kind, refusal.message
    assert re.search(match, refusal.message), refusal.message
    assert state.model_dump() == before
    assert candidate.model_dump() == before  # atomic: nothing changed before the refusal
    return refusal


def vote(state: CaseState, who, value: str = "agree", reason: str = "", **kw) -> CaseState:
    return run(state, "vote", who, {"staff_id": who.id, "vote": value, "reason": reason}, **kw)


def vote_all(state: CaseState, *voters) -> CaseState:
    for who in voters or (ANNA, OLE, SIF):
        vote(state, who)
    return state


def family(state: CaseState, approved: bool, comment: str = "", **kw) -> CaseState:
    return run(state, "family_response", ANNA, {"approved": approved, "comment": comment}, **kw)


def decide(state: CaseState, decision: str, who=KAREN, **body: Any) -> CaseState:
    item = state.escalations[-1]
    return run(state, "committee_decision", who, {"decision": decision, **body}, item_id=item.id)


def deadline(state: CaseState, kind: DeadlineKind, occurrence: int = 1):
    return next(d for d in state.deadlines if d.kind is kind and d.occurrence == occurrence)


def kinds(state: CaseState, status: DeadlineStatus) -> set[str]:
    return {d.kind.value for d in state.deadlines if d.status is status}


# ---------------------------------------------------------------- cases in each stage


def referred(**referral: Any) -> CaseState:
    return new_case("case-1", case_create(**referral), ctx(ANNA))


def assigned() -> CaseState:
    return run(referred(), "assign_coordinator", MARIA, {"coordinator_id": "anna"})


def formed() -> CaseState:
    return run(assigned(), "form_team", ANNA, TEAM)


def in_assessment() -> CaseState:
    return run(formed(), "schedule_assessment_meeting", ANNA,
               {"at": iso(MEETING_AT), "location": "Family home", "participants": ["anna", "ole"]})


def in_planning(assessment: dict[str, Any] = ASSESSMENT) -> CaseState:
    state = run(in_assessment(), "put_assessment", ANNA, assessment)
    return run(state, "complete_assessment", ANNA)


def drafted(body: dict[str, Any] | None = None) -> CaseState:
    return run(in_planning(), "put_plan", ANNA, body or plan())


def escalated() -> CaseState:
    """Plan v1 escalated at once by Ole's disagreement."""
    return vote(drafted(), OLE, "disagree", "Too little school support")


def active() -> CaseState:
    state = family(vote_all(drafted()), True)
    assert state.stage is Stage.active
    return state


def closed() -> CaseState:
    """Closed while plan v1 waited for the committee (so there is an item to decide)."""
    return run(escalated(), "close", ANNA, {"reason": "family_withdrew"})


# ================================================================ the stage machine


def test_stage_machine_end_to_end() -> None:
    state = referred()
    assert (state.stage, state.version) == (Stage.referred, 1)
    assert (state.blocked_on.what, state.blocked_on.owner) == ("coordinator assignment", "manager")
    assert state.flags == []  # the factory referral is eligible and consented

    run(state, "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    assert state.stage is Stage.coordinator_assigned
    assert (state.blocked_on.what, state.blocked_on.owner) == ("core team", "anna")

    run(state, "form_team", ANNA, TEAM)
    assert state.stage is Stage.team_formed
    assert state.team_ids == ["anna", "ole", "sif"]
    assert state.blocked_on.what == "assessment meeting to be scheduled"

    run(state, "record_contact", ANNA, {"kind": "phone", "at": iso(NOW - timedelta(hours=1))})
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": iso(MEETING_AT), "location": "Family home", "participants": ["anna", "ole", "mette"]})
    assert state.stage is Stage.assessment
    assert (state.blocked_on.what, state.blocked_on.owner) == ("ICS assessment", "anna")
    # The phone call a week before the meeting already was the pre-meeting contact.
    assert deadline(state, DeadlineKind.pre_meeting_contact).status is DeadlineStatus.met

    run(state, "put_assessment", OLE, ASSESSMENT)  # any core-team member may write the ICS
    run(state, "complete_assessment", ANNA)
    assert state.stage is Stage.planning
    assert deadline(state, DeadlineKind.assessment).status is DeadlineStatus.met
    assert deadline(state, DeadlineKind.plan).status is DeadlineStatus.open
    assert (state.blocked_on.what, state.blocked_on.owner) == ("joint plan draft", "anna")

    run(state, "put_plan", ANNA, plan())
    assert state.plan.version == 1 and state.plan.status == "draft"
    assert (state.blocked_on.what, state.blocked_on.owner) == ("team votes on plan v1", "anna,ole,sif")
    vote(state, ANNA)
    vote(state, OLE)
    assert state.blocked_on.owner == "sif"
    vote(state, SIF)
    assert state.stage is Stage.planning  # decided, but the family has not approved yet
    assert state.plan.decision == "team"
    assert (state.blocked_on.what, state.blocked_on.owner) == ("family approval of plan v1", "family")

    family(state, True, "This is our plan")
    assert state.stage is Stage.active
    assert state.active_plan.version == 1
    assert state.measures_started_at == NOW
    assert state.blocked_on.what == "next status meeting"
    assert state.blocked_on.next_due_at == min(d.due_at for d in state.deadlines if d.is_open())

    run(state, "close", ANNA, {"reason": "goals_reached", "note": "Emil goes to school"})
    assert state.stage is Stage.closed
    assert state.blocked_on is None
    assert state.closure.reason.value == "goals_reached"

    changes = [(h.detail["from"], h.detail["to"]) for h in state.history if h.event == "stage_changed"]
    assert changes == [
        ("referred", "coordinator_assigned"),
        ("coordinator_assigned", "team_formed"),
        ("team_formed", "assessment"),
        ("assessment", "planning"),
        ("planning", "active"),
        ("active", "closed"),
    ]
    accepted = 1 + 12  # new_case + the 12 commands above
    assert state.version == accepted


def test_every_command_bumps_version_by_one_and_writes_history() -> None:
    state = referred()
    events_before = len(state.history)
    run(state, "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    assert state.version == 2
    assert [h.event for h in state.history[events_before:]] == ["coordinator_assigned", "stage_changed"]
    assert state.history[-1].actor == "maria"


def test_new_case_fills_language_from_policy_and_flags_problems() -> None:
    body = case_create()
    body.family.language = None
    body.consent.coordinated_handling = False
    body.existing_contacts = body.existing_contacts[:1]
    state = new_case("case-9", body, ctx(ANNA))
    assert state.family.language == "da"
    assert state.policy_key == "DK-v1" and state.country == "DK"
    flag_kinds = [f["kind"] for f in state.flags]
    assert flag_kinds == ["eligibility", "no_consent"]
    assert "sector area" in state.flags[0]["detail"][0]


def test_any_open_stage_can_close() -> None:
    for build in (referred, assigned, formed, in_assessment, in_planning, escalated, active):
        state = build()
        who = MARIA if state.coordinator_id is None else ANNA
        run(state, "close", who, {"reason": "moved_away"})
        assert state.stage is Stage.closed


# ================================================================ refusals: who (403)


@pytest.mark.parametrize(
    ("build", "name", "who", "body", "match"),
    [
        (assigned, "form_team", OLE, TEAM, "coordinator or a manager"),
        (assigned, "form_team", BO, TEAM, "coordinator or a manager"),
        (formed, "record_contact", EVE, {"kind": "phone", "at": iso(NOW)}, "not on this case's core team"),
        (formed, "schedule_assessment_meeting", OLE,
         {"at": iso(MEETING_AT), "location": "x", "participants": ["anna", "ole"]}, "coordinator"),
        (in_assessment, "put_assessment", EVE, ASSESSMENT, "not on this case's core team"),
        (in_assessment, "complete_assessment", SIF, None, "coordinator or a manager"),
        (in_planning, "put_plan", OLE, plan(), "coordinator or a manager"),
        (drafted, "family_response", OLE, {"approved": True}, "coordinator or a manager"),
        (active, "status_meeting", EVE, {"at": iso(NOW), "participants": ["anna"]}, "core team"),
        (active, "close", OLE, {"reason": "other"}, "coordinator or a manager"),
    ],
)
def test_wrong_actor_is_forbidden(build: Callable[[], CaseState], name: str, who, body, match: str) -> None:
    refuse(build(), name, who, body, kind="forbidden", match=match)


def test_triage_is_for_the_case_worker() -> None:
    state = run(referred(kind="concern_report"), "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    refuse(state, "triage", OLE, {}, kind="forbidden", match="coordinator or a manager")


def test_a_manager_may_do_the_coordinators_work() -> None:
    state = run(assigned(), "form_team", MARIA, TEAM)
    assert state.stage is Stage.team_formed


def test_forbidden_is_checked_before_conflict() -> None:
    # Contract order: 403 (who) before 409 (stage / closed).
    refuse(closed(), "form_team", EVE, TEAM, kind="forbidden", match="coordinator or a manager")
    refuse(referred(), "complete_assessment", OLE, None, kind="forbidden", match="coordinator")


# ================================================================ refusals: stage (409)


@pytest.mark.parametrize(
    ("build", "name", "body", "match"),
    [
        (referred, "form_team", TEAM, "stage 'referred'"),
        (assigned, "schedule_assessment_meeting",
         {"at": iso(MEETING_AT), "location": "x", "participants": ["anna", "ole"]}, "coordinator_assigned"),
        (formed, "put_assessment", ASSESSMENT, "stage 'team_formed'"),
        (formed, "complete_assessment", None, "stage 'team_formed'"),
        (in_assessment, "put_plan", plan(), "stage 'assessment'"),
        (in_assessment, "vote", {"staff_id": "anna", "vote": "agree"}, "stage 'assessment'"),
        (in_assessment, "family_response", {"approved": True}, "stage 'assessment'"),
        (in_planning, "status_meeting", {"at": iso(NOW), "participants": ["anna"]}, "stage 'planning'"),
        (in_planning, "schedule_assessment_meeting",
         {"at": iso(MEETING_AT), "location": "x", "participants": ["anna", "ole"]}, "stage 'planning'"),
        (escalated, "form_team", TEAM, "stage 'escalated'"),
        (escalated, "put_plan", plan(), "with the visitation committee"),
        (escalated, "vote", {"staff_id": "anna", "vote": "agree"}, "votes are closed"),
        (in_planning, "vote", {"staff_id": "anna", "vote": "agree"}, "no plan draft"),
        (in_planning, "family_response", {"approved": True}, "no plan draft"),
        (active, "vote", {"staff_id": "anna", "vote": "agree"}, "no plan draft"),
        (formed, "triage", {}, "no concern report"),
    ],
)
def test_wrong_stage_is_a_conflict(build: Callable[[], CaseState], name: str, body, match: str) -> None:
    refuse(build(), name, ADMIN, body, kind="conflict", match=match)


CLOSED_COMMANDS: list[tuple[str, dict | None]] = [
    ("assign_coordinator", {"coordinator_id": "bo"}),
    ("form_team", TEAM),
    ("record_contact", {"kind": "phone", "at": iso(NOW)}),
    ("triage", {"receipt_sent_to_reporter": True}),
    ("schedule_assessment_meeting",
     {"at": iso(MEETING_AT), "location": "x", "participants": ["anna", "ole"]}),
    ("put_assessment", ASSESSMENT),
    ("complete_assessment", None),
    ("put_plan", plan()),
    ("vote", {"staff_id": "anna", "vote": "agree"}),
    ("family_response", {"approved": True}),
    ("committee_decision", {"decision": "approved"}),
    ("status_meeting", {"at": iso(NOW), "participants": ["anna"]}),
    ("close", {"reason": "other"}),
    ("pause", {"reason": "family asked for a break"}),
    ("resume", None),
    ("provisional_assessment", {"text": "provisional"}),
    ("schedule_status_meeting", {"at": "2030-01-01T10:00:00Z", "location": "x",
                                 "participants": ["anna"]}),
    ("extend_assessment", {"new_due_at": "2028-01-01T00:00:00Z", "decision_ref": "N-1",
                           "reason": "more time"}),
    # The family's commands (DESIGN §11), given here by staff on the family's behalf.
    ("give_consent", {"member_id": "m2", "staff_ids": ["ole"], "expires_at": "2030-01-01"}),
    ("change_consent", {"consent_id": "c1", "expires_at": "2030-01-01"}),
    ("revoke_consent", {"consent_id": "c1"}),
    ("set_contact_preference", {"preference": "space"}),
    ("family_focus_points", {"text": "Emil's school"}),
    ("confirm_focus_points", {"number": 1}),
    ("request_pause", {"reason": "We need a break"}),
    ("record_outcomes", {"measurements": [{"instrument": "sdq", "informant": "mother", "scores": {
        "emotional": 2, "conduct": 2, "hyperactivity": 3, "peer": 1, "prosocial": 7}}]}),
]


def test_closed_command_list_covers_every_command() -> None:
    assert {name for name, _ in CLOSED_COMMANDS} == set(BODY_MODELS)


@pytest.mark.parametrize(("name", "body"), CLOSED_COMMANDS, ids=[n for n, _ in CLOSED_COMMANDS])
@pytest.mark.parametrize("who", [ADMIN, MARIA], ids=["admin", "manager"])
def test_every_command_on_a_closed_case_is_a_conflict(name: str, body, who) -> None:
    state = closed()
    if name == "vote" and who is MARIA:
        body = {"staff_id": "maria", "vote": "agree"}
        refuse(state, name, who, body, kind="forbidden", match="not on this case's core team")
        return
    refuse(state, name, who, body, kind="conflict", match="closed \\(family_withdrew\\)",
           item_id=state.escalations[0].id)


def test_the_coordinator_also_gets_conflict_on_a_closed_case() -> None:
    state = closed()
    refuse(state, "put_plan", ANNA, plan(), kind="conflict", match="read-only")
    refuse(state, "record_contact", ANNA, {"kind": "phone", "at": iso(NOW)}, kind="conflict",
           match="closed")


def test_closing_withdraws_the_waiting_item_and_ends_the_coordinator_term() -> None:
    state = closed()
    assert state.escalations[0].status == "withdrawn"
    assert state.coordinator_history[-1].until == NOW
    assert kinds(state, DeadlineStatus.open) == set()


# ================================================================ coordinator assignment


def test_caseload_cap_refuses_with_the_least_loaded_suggestion() -> None:
    refusal = refuse(referred(), "assign_coordinator", MARIA, {"coordinator_id": "anna"},
                     load=DK.caseload_cap, suggestion="bo", kind="conflict", match="cap 8")
    assert "already has 8 open cases" in refusal.message
    assert "Least-loaded coordinator: 'bo'" in refusal.message
    assert '"override": true' in refusal.message


def test_caseload_cap_without_a_suggestion_still_refuses() -> None:
    refusal = refuse(referred(), "assign_coordinator", MARIA, {"coordinator_id": "anna"},
                     load=11, kind="conflict", match="cap 8")
    assert "Least-loaded" not in refusal.message


def test_one_below_the_cap_is_accepted() -> None:
    state = run(referred(), "assign_coordinator", MARIA, {"coordinator_id": "anna"}, load=7)
    assert state.coordinator_id == "anna"
    assert state.coordinator_history[-1].override is False


def test_manager_override_passes_the_cap_and_is_recorded() -> None:
    state = run(referred(), "assign_coordinator", MARIA, {"coordinator_id": "anna", "override": True},
                load=8)
    assert state.coordinator_id == "anna"
    term = state.coordinator_history[-1]
    assert (term.override, term.assigned_by) == (True, "maria")
    assert state.history[-2].event == "coordinator_assigned"
    assert state.history[-2].detail["override"] is True


def test_override_below_the_cap_is_not_recorded_as_an_override() -> None:
    state = run(referred(), "assign_coordinator", MARIA, {"coordinator_id": "anna", "override": True},
                load=2)
    assert state.coordinator_history[-1].override is False


def test_a_coordinator_cannot_override_the_cap() -> None:
    refuse(referred(), "assign_coordinator", ANNA, {"coordinator_id": "anna", "override": True},
           load=8, kind="forbidden", match="Only a manager can pass the caseload cap")


def test_the_cap_also_applies_when_a_coordinator_takes_a_case() -> None:
    refuse(referred(), "assign_coordinator", ANNA, {"coordinator_id": "anna"}, load=8,
           suggestion="bo", kind="conflict", match="cap 8")


def test_a_coordinator_may_take_an_unassigned_case() -> None:
    state = run(referred(), "assign_coordinator", ANNA, {"coordinator_id": "anna"}, load=3)
    assert state.coordinator_id == "anna"
    assert state.stage is Stage.coordinator_assigned
    assert state.coordinator_history[-1].assigned_by == "anna"


def test_a_coordinator_cannot_assign_someone_else() -> None:
    refuse(referred(), "assign_coordinator", ANNA, {"coordinator_id": "bo"}, kind="forbidden",
           match="Only a manager can assign another coordinator")


def test_a_coordinator_cannot_reassign_a_case() -> None:
    state = assigned()
    refuse(state, "assign_coordinator", BO, {"coordinator_id": "bo"}, kind="forbidden",
           match="already has a coordinator")
    refuse(state, "assign_coordinator", ANNA, {"coordinator_id": "bo"}, kind="forbidden",
           match="Only a manager")


def test_staff_without_the_coordinator_role_cannot_take_a_case() -> None:
    # "A coordinator may take an unassigned case themselves" (DESIGN §5) -- not any staff member.
    for who in (OLE, KAREN, actor("nobody")):
        refuse(referred(), "assign_coordinator", who, {"coordinator_id": who.id}, kind="forbidden",
               match="coordinator")


def test_assigning_the_current_coordinator_again_is_a_conflict() -> None:
    refuse(assigned(), "assign_coordinator", MARIA, {"coordinator_id": "anna"}, kind="conflict",
           match="already the coordinator")


def test_reassignment_keeps_the_coordinator_history() -> None:
    state = in_planning()
    later = NOW + timedelta(days=3)
    run(state, "assign_coordinator", MARIA, {"coordinator_id": "bo"}, now=later)
    assert state.coordinator_id == "bo"
    assert state.stage is Stage.planning  # reassignment does not move the case
    first, second = state.coordinator_history
    assert (first.coordinator_id, first.since, first.until) == ("anna", NOW, later)
    assert (second.coordinator_id, second.since, second.until, second.assigned_by) == (
        "bo", later, None, "maria")
    assert state.history[-1].event == "coordinator_reassigned"
    assert state.history[-1].detail["previous"] == "anna"
    assert state.team_ids == ["bo", "ole", "sif"]
    # The old coordinator lost the case, the new one works it.
    refuse(state, "put_plan", ANNA, plan(), kind="forbidden", match="coordinator")
    run(state, "put_plan", BO, plan())
    assert state.blocked_on.owner == "bo,ole,sif"


# ================================================================ team, contact, assessment


def test_team_listing_a_member_twice_is_invalid() -> None:
    body = {"members": TEAM["members"] + TEAM["members"][:1]}
    refuse(assigned(), "form_team", ANNA, body, kind="invalid", match="listed twice")


def test_the_coordinator_listed_in_the_team_is_not_counted_twice() -> None:
    body = {"members": [{"staff_id": "anna", "discipline": "social_worker", "department": "cd"},
                        *TEAM["members"]]}
    state = run(assigned(), "form_team", ANNA, body)
    assert state.team_ids == ["anna", "ole", "sif"]


def test_contact_in_the_future_is_invalid() -> None:
    refuse(formed(), "record_contact", ANNA, {"kind": "phone", "at": iso(NOW + timedelta(hours=1))},
           kind="invalid", match="in the future")


@pytest.mark.parametrize(
    "participants",
    [["anna"], ["anna", "mette"], ["anna", "anna"], ["eve", "mette", "ole"], ["mette", "emil"]],
)
def test_assessment_meeting_needs_two_core_team_members(participants: list[str]) -> None:
    refuse(formed(), "schedule_assessment_meeting", ANNA,
           {"at": iso(MEETING_AT), "location": "Town hall", "participants": participants},
           kind="invalid", match="at least two core-team members")


def test_assessment_meeting_in_the_past_is_invalid() -> None:
    refuse(formed(), "schedule_assessment_meeting", ANNA,
           {"at": iso(NOW - timedelta(days=2)), "location": "x", "participants": ["anna", "ole"]},
           kind="invalid", match="in the future")


def test_rescheduling_the_assessment_meeting_replaces_the_pre_meeting_deadline() -> None:
    state = in_assessment()
    later = MEETING_AT + timedelta(days=7)
    run(state, "schedule_assessment_meeting", ANNA,
        {"at": iso(later), "location": "School", "participants": ["ole", "sif"]})
    assert state.stage is Stage.assessment
    assert state.history[-1].event == "assessment_meeting_rescheduled"
    assert deadline(state, DeadlineKind.pre_meeting_contact, 1).status is DeadlineStatus.cancelled
    assert deadline(state, DeadlineKind.pre_meeting_contact, 2).due_at == later


def test_unknown_ics_dimension_is_invalid() -> None:
    body = {"ics": {"child_development": [{"dimension": "astrology"}]}, "child_views": "x"}
    refuse(in_assessment(), "put_assessment", ANNA, body, kind="invalid", match="astrology")


def test_complete_assessment_without_any_ics_content_is_a_conflict() -> None:
    state = in_assessment()
    refuse(state, "complete_assessment", ANNA, None, kind="conflict", match="Record the ICS assessment")
    run(state, "put_assessment", ANNA, {"ics": {"child_development": []}, "child_views": "x"})
    refuse(state, "complete_assessment", ANNA, None, kind="conflict", match="Record the ICS assessment")


# ================================================================ plan drafts


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (plan(service(funding=[("children_disability", 0.5), ("adult_services", 0.4)])), "add up to 0.9"),
        (plan(service(funding=[("children_disability", 0.7), ("adult_services", 0.7)])), "add up to 1.4"),
        (plan(actions=[{"id": "a1", "goal_id": "g9", "text": "x", "owner": "school"}]), "goal 'g9'"),
        (plan(goals=[{"id": "g1", "text": "a"}, {"id": "g1", "text": "b"}]), "same id"),
    ],
    ids=["shares-short", "shares-over", "unknown-goal", "duplicate-goal"],
)
def test_bad_plan_is_invalid(body: dict, match: str) -> None:
    refuse(in_planning(), "put_plan", ANNA, body, kind="invalid", match=match)


def test_funding_shares_within_rounding_are_accepted() -> None:
    thirds = [("a", 0.3333), ("b", 0.3333), ("c", 0.3334)]
    state = run(in_planning(), "put_plan", ANNA, plan(service(funding=thirds)))
    assert state.plan.version == 1


def test_a_new_draft_supersedes_the_pending_one() -> None:
    state = drafted()
    vote(state, ANNA)
    run(state, "put_plan", ANNA, plan(service(cost=1000)))
    assert [(p.version, p.status) for p in state.plans] == [(1, "superseded"), (2, "draft")]
    assert state.plan.votes == []  # votes belong to a version
    approvals = [d for d in state.deadlines if d.kind is DeadlineKind.family_approval]
    assert [d.status for d in approvals] == [DeadlineStatus.cancelled, DeadlineStatus.open]


# ================================================================ votes


def test_vote_by_a_non_team_member_is_forbidden() -> None:
    refuse(drafted(), "vote", EVE, {"staff_id": "eve", "vote": "agree"}, kind="forbidden",
           match="not on this case's core team")


def test_a_manager_outside_the_team_cannot_vote() -> None:
    refuse(drafted(), "vote", MARIA, {"staff_id": "maria", "vote": "agree"}, kind="forbidden",
           match="not on this case's core team")


def test_voting_as_someone_else_is_forbidden() -> None:
    refuse(drafted(), "vote", OLE, {"staff_id": "sif", "vote": "agree"}, kind="forbidden",
           match="cannot vote as 'sif'")
    # Even the coordinator and a manager cannot vote for a team member.
    refuse(drafted(), "vote", ANNA, {"staff_id": "ole", "vote": "agree"}, kind="forbidden",
           match="cast by the voter")
    refuse(drafted(), "vote", MARIA, {"staff_id": "ole", "vote": "agree"}, kind="forbidden",
           match="cast by the voter")


def test_admin_may_record_a_vote_for_a_team_member() -> None:
    state = run(drafted(), "vote", ADMIN, {"staff_id": "ole", "vote": "agree"})
    assert [v.staff_id for v in state.plan.votes] == ["ole"]


def test_double_vote_is_a_conflict() -> None:
    state = vote(drafted(), OLE)
    refuse(state, "vote", OLE, {"staff_id": "ole", "vote": "agree"}, kind="conflict",
           match="already voted on plan v1")
    refuse(state, "vote", OLE, {"staff_id": "ole", "vote": "disagree", "reason": "changed my mind"},
           kind="conflict", match="already voted")


@pytest.mark.parametrize("reason", ["", "   "])
def test_disagree_without_a_reason_is_invalid(reason: str) -> None:
    refuse(drafted(), "vote", OLE, {"staff_id": "ole", "vote": "disagree", "reason": reason},
           kind="invalid", match="needs a reason")


def _without_child_views() -> dict[str, Any]:
    return {**ASSESSMENT, "child_views": None}


def test_child_voice_gate_refuses_votes_without_views_or_waiver() -> None:
    state = run(in_planning(_without_child_views()), "put_plan", ANNA, plan())
    refuse(state, "vote", ANNA, {"staff_id": "anna", "vote": "agree"}, kind="conflict",
           match="Barnets Lov § 5")
    # Disagreeing is a decision path too (it escalates): also gated.
    refuse(state, "vote", OLE, {"staff_id": "ole", "vote": "disagree", "reason": "no"},
           kind="conflict", match="child's views")


def test_blank_child_views_do_not_pass_the_gate() -> None:
    state = run(in_planning({**ASSESSMENT, "child_views": "  ", "child_views_waiver": " "}),
                "put_plan", ANNA, plan())
    refuse(state, "vote", ANNA, {"staff_id": "anna", "vote": "agree"}, kind="conflict",
           match="child's views")


def test_a_reasoned_waiver_passes_the_gate() -> None:
    body = {**ASSESSMENT, "child_views": None,
            "child_views_waiver": "Emil (3) cannot yet express views; observed at home."}
    state = run(in_planning(body), "put_plan", ANNA, plan())
    vote_all(state)
    assert state.plan.decision == "team"


def test_child_views_can_be_recorded_after_the_assessment_was_completed() -> None:
    """The gate must be passable: a case that completed its assessment before the child was
    heard can still record the child's views while planning (otherwise it is stuck forever)."""
    state = run(in_planning(_without_child_views()), "put_plan", ANNA, plan())
    run(state, "put_assessment", ANNA, ASSESSMENT)
    assert state.stage is Stage.planning
    vote_all(state)
    assert state.plan.decision == "team"


def test_committee_approval_is_gated_by_the_childs_voice_too() -> None:
    state = escalated()
    state.assessment = state.assessment.model_copy(update={"child_views": None})
    item = state.escalations[0]
    refuse(state, "committee_decision", KAREN, {"decision": "approved"}, item_id=item.id,
           kind="conflict", match="Barnets Lov § 5")
    # Rejecting takes no decision on measures: allowed without the child's views.
    run(state, "committee_decision", KAREN, {"decision": "rejected"}, item_id=item.id)
    assert state.stage is Stage.planning


# ================================================================ decision rule


def test_unanimity_is_a_team_decision() -> None:
    state = vote_all(drafted())
    assert state.plan.decision == "team"
    assert state.plan.decided_at == NOW
    assert state.escalations == []
    assert state.stage is Stage.planning


def test_the_plan_waits_until_every_team_member_has_voted() -> None:
    state = vote_all(drafted(), ANNA, OLE)
    assert state.plan.decision == "pending"
    assert state.blocked_on.owner == "sif"


def test_one_disagree_escalates_at_once() -> None:
    state = escalated()  # Ole disagreed as the FIRST vote
    assert state.stage is Stage.escalated
    assert state.plan.decision == "escalated"
    (item,) = state.escalations
    assert (item.id, item.plan_version, item.status) == ("case-1-1", 1, "waiting")
    assert item.reasons == ["disagreement: ole"]
    assert item.escalated_at == NOW
    committee = deadline(state, DeadlineKind.committee_decision)
    assert committee.due_at.isoformat() == "2026-12-14T11:00:00+01:00"  # 21 days, local time
    assert committee.owner == "committee"
    assert (state.blocked_on.what, state.blocked_on.owner, state.blocked_on.since) == (
        "committee decision on plan v1", "committee", NOW)
    # The other votes are closed.
    refuse(state, "vote", SIF, {"staff_id": "sif", "vote": "agree"}, kind="conflict",
           match="votes are closed")


@pytest.mark.parametrize(
    "paragraph", ["BL § 47", "BL  §   47", " BL § 47 ", "BL\t§ 47", "BL\u00a0§\u00a047"]
)
def test_committee_only_paragraph_escalates_after_all_agree(paragraph: str) -> None:
    state = drafted(plan(service(), service(paragraph=paragraph, cost=100)))
    vote_all(state, ANNA, OLE)
    assert state.stage is Stage.planning  # not before every vote is in
    vote(state, SIF)
    assert state.stage is Stage.escalated
    assert state.escalations[0].reasons == ["committee_only_paragraph: BL § 47"]
    assert state.plan.escalation_reasons == ["committee_only_paragraph: BL § 47"]


@pytest.mark.parametrize("paragraph", ["BL § 470", "BL § 4", "SEL § 47"])
def test_other_paragraphs_do_not_escalate(paragraph: str) -> None:
    state = vote_all(drafted(plan(service(paragraph=paragraph))))
    assert state.plan.decision == "team"


@pytest.mark.parametrize(
    ("services", "reason"),
    [
        ([service(cost=10_000, funding=JOINT)], None),  # exactly the limit: the team decides
        ([service(cost=10_000.5, funding=JOINT)], "joint_funding_over_limit: 10000.5 > 10000"),
        ([service(cost=12_000, funding=JOINT)], "joint_funding_over_limit: 12000 > 10000"),
        # Summed over the jointly funded services ...
        ([service(cost=6_000, funding=JOINT), service(cost=5_000, funding=JOINT)],
         "joint_funding_over_limit: 11000 > 10000"),
        # ... and only those: a single department's budget does not count.
        ([service(cost=6_000, funding=JOINT), service(cost=9_000)], None),
        ([service(cost=50_000)], None),
        ([service(cost=50_000, funding=[])], None),
    ],
    ids=["at-limit", "just-over", "over", "summed", "single-dept-excluded", "single-dept-large",
         "no-funding"],
)
def test_joint_funding_limit(services: list[dict], reason: str | None) -> None:
    state = vote_all(drafted(plan(*services)))
    if reason is None:
        assert state.plan.decision == "team"
        assert state.stage is Stage.planning
    else:
        assert state.stage is Stage.escalated
        assert state.escalations[0].reasons == [reason]


def test_both_escalation_reasons_are_listed() -> None:
    state = vote_all(drafted(plan(service(paragraph="BL § 47", cost=20_000, funding=JOINT))))
    assert state.escalations[0].reasons == [
        "committee_only_paragraph: BL § 47",
        "joint_funding_over_limit: 20000 > 10000",
    ]


# ================================================================ the family's approval


def test_family_approval_before_the_decision() -> None:
    state = family(drafted(), True, "Yes")
    assert state.stage is Stage.planning
    assert state.plan.family_approved is True
    assert deadline(state, DeadlineKind.family_approval).status is DeadlineStatus.met
    assert state.blocked_on.what == "team votes on plan v1"  # the family did its part
    vote_all(state)
    assert state.stage is Stage.active
    assert state.active_plan.version == 1


def test_family_approval_after_the_decision() -> None:
    state = vote_all(drafted())
    assert state.stage is Stage.planning
    assert state.plan.status == "draft"
    family(state, True)
    assert state.stage is Stage.active
    assert state.plan.status == "active"


def test_activation_starts_the_measures_clocks() -> None:
    state = active()
    assert state.measures_started_at == NOW
    assert deadline(state, DeadlineKind.plan).status is DeadlineStatus.met
    # 3 months, to the end of the last day (Forældelsesloven § 27 stk. 1).
    assert deadline(state, DeadlineKind.first_followup).due_at.isoformat() == "2027-02-23T23:59:59+01:00"
    # medium concern: a status meeting every 4 weeks
    assert deadline(state, DeadlineKind.status_meeting).due_at.isoformat() == "2026-12-21T11:00:00+01:00"


def test_family_already_approved_is_a_conflict() -> None:
    state = family(drafted(), True)
    refuse(state, "family_response", ANNA, {"approved": False}, kind="conflict", match="already approved")


def test_family_rejection_keeps_planning_and_needs_a_new_version() -> None:
    state = family(vote_all(drafted()), False, "We want more help at school")
    assert state.stage is Stage.planning
    assert (state.plan.status, state.plan.family_approved) == ("rejected", False)
    assert state.plan.family_comment == "We want more help at school"
    assert state.active_plan is None
    assert state.blocked_on.what == "joint plan draft"
    # The rejected version is final: no more responses, no more votes.
    refuse(state, "family_response", ANNA, {"approved": True}, kind="conflict", match="no plan draft")
    run(state, "put_plan", ANNA, plan(service(cost=2000)))
    assert state.plan.version == 2
    assert state.plan.votes == []
    family(vote_all(state), True)
    assert state.stage is Stage.active
    assert [p.status for p in state.plans] == ["rejected", "active"]


def test_family_rejection_while_escalated_withdraws_the_item() -> None:
    state = family(escalated(), False, "Not this plan")
    assert state.stage is Stage.planning
    assert state.escalations[0].status == "withdrawn"
    assert deadline(state, DeadlineKind.committee_decision).status is DeadlineStatus.cancelled
    refuse(state, "committee_decision", KAREN, {"decision": "approved"},
           item_id=state.escalations[0].id, kind="conflict", match="already withdrawn")


# ================================================================ the committee


def test_committee_decision_by_a_non_committee_actor_is_forbidden() -> None:
    state = escalated()
    item_id = state.escalations[0].id
    for who in (ANNA, OLE, EVE):
        refuse(state, "committee_decision", who, {"decision": "approved"}, item_id=item_id,
               kind="forbidden", match="visitation committee")


def test_committee_decision_on_an_unknown_item_is_not_found() -> None:
    refuse(escalated(), "committee_decision", KAREN, {"decision": "approved"}, item_id="case-1-9",
           kind="not_found", match="case-1-9")
    refuse(escalated(), "committee_decision", KAREN, {"decision": "approved"}, item_id=None,
           kind="not_found", match="No committee item")


def test_committee_decision_on_a_decided_item_is_a_conflict() -> None:
    state = decide(escalated(), "approved")
    refuse(state, "committee_decision", KAREN, {"decision": "rejected"},
           item_id=state.escalations[0].id, kind="conflict", match="already decided")


def test_committee_funding_shares_must_add_up() -> None:
    state = escalated()
    refuse(state, "committee_decision", KAREN,
           {"decision": "approved", "funding": [{"department": "a", "share": 0.6},
                                                {"department": "b", "share": 0.3}]},
           item_id=state.escalations[0].id, kind="invalid", match="add up to 0.9")


def test_committee_approves_after_the_family_approved() -> None:
    state = family(escalated(), True)
    assert state.stage is Stage.escalated
    decide(state, "approved", notes="Fine", funding=[{"department": "children_disability", "share": 1}])
    assert state.stage is Stage.active
    assert state.plan.decision == "committee"
    assert state.plan.status == "active"
    item = state.escalations[0]
    assert (item.status, item.decision.value, item.decided_by) == ("decided", "approved", "karen")
    assert deadline(state, DeadlineKind.committee_decision).status is DeadlineStatus.met


def test_committee_approval_before_the_family_waits_for_the_family() -> None:
    state = decide(escalated(), "approved")
    assert state.stage is Stage.planning
    assert (state.blocked_on.what, state.blocked_on.owner) == ("family approval of plan v1", "family")
    family(state, True)
    assert state.stage is Stage.active


def test_a_manager_may_record_the_committee_decision() -> None:
    state = family(escalated(), True)
    decide(state, "approved", who=MARIA)
    assert state.stage is Stage.active


def test_approved_with_changes_needs_the_familys_approval_again() -> None:
    state = family(escalated(), True)
    funding = [{"department": "children_disability", "share": 0.6},
               {"department": "adult_services", "share": 0.4}]
    decide(state, "approved_with_changes", notes="Fewer hours", funding=funding)
    assert state.stage is Stage.planning
    assert state.plan.decision == "committee"
    assert state.plan.family_approved is None
    assert [f.share for f in state.plan.committee_funding] == [0.6, 0.4]
    second = deadline(state, DeadlineKind.family_approval, 2)
    assert second.status is DeadlineStatus.open
    assert state.blocked_on.what == "family approval of plan v1"
    family(state, True, "OK with fewer hours")
    assert state.stage is Stage.active
    assert deadline(state, DeadlineKind.family_approval, 2).status is DeadlineStatus.met


def test_approved_with_changes_before_the_family_answered() -> None:
    state = decide(escalated(), "approved_with_changes")
    assert state.stage is Stage.planning
    family(state, True)
    assert state.stage is Stage.active


def test_committee_rejection_returns_to_planning() -> None:
    state = family(escalated(), True)
    decide(state, "rejected", notes="Not proportionate")
    assert state.stage is Stage.planning
    assert (state.plan.decision, state.plan.status) == ("rejected", "rejected")
    assert state.active_plan is None
    refuse(state, "vote", ANNA, {"staff_id": "anna", "vote": "agree"}, kind="conflict",
           match="no plan draft")
    run(state, "put_plan", ANNA, plan())
    assert state.plan.version == 2 and state.plan.decision == "pending"


# ================================================================ active: status meetings


def _meeting(**extra: Any) -> dict[str, Any]:
    return {"at": iso(NOW + timedelta(days=20)), "participants": ["anna", "ole", "mette"], **extra}


LATER = NOW + timedelta(days=20)


def test_status_meeting_in_the_future_is_invalid() -> None:
    refuse(active(), "status_meeting", ANNA, _meeting(), kind="invalid", match="in the future")


def test_status_meeting_with_an_unknown_goal_is_invalid() -> None:
    body = _meeting(goal_progress=[{"goal_id": "g1", "status": "on_track"},
                                   {"goal_id": "g7", "status": "achieved"}])
    refuse(active(), "status_meeting", ANNA, body, now=LATER, kind="invalid", match="g7")


def test_status_meeting_with_a_bad_plan_change_is_invalid() -> None:
    body = _meeting(plan_changes=plan(service(funding=[("a", 0.2)])))
    refuse(active(), "status_meeting", ANNA, body, now=LATER, kind="invalid", match="add up to 0.2")


def test_first_status_meeting_sets_the_followup_cadence() -> None:
    state = active()
    body = _meeting(goal_progress=[{"goal_id": "g1", "status": "on_track"}], concern_level="high",
                    followup_months=4, followup_reason="Stable after the first months")
    run(state, "status_meeting", OLE, body, now=LATER)
    assert state.stage is Stage.active
    assert state.status_meetings[0].number == 1
    assert deadline(state, DeadlineKind.first_followup).status is DeadlineStatus.met
    assert deadline(state, DeadlineKind.status_meeting, 1).status is DeadlineStatus.met
    assert state.followup_months == 4
    assert deadline(state, DeadlineKind.followup).due_at.isoformat() == "2027-04-13T23:59:59+02:00"
    # high concern now: the next status meeting in 2 weeks
    assert deadline(state, DeadlineKind.status_meeting, 2).due_at.isoformat() == "2026-12-27T11:00:00+01:00"


def test_adjusted_plan_is_decided_again_while_the_case_stays_active() -> None:
    state = active()
    run(state, "status_meeting", ANNA, _meeting(plan_changes=plan(service(cost=3000))), now=LATER)
    assert state.status_meetings[-1].new_plan_version == 2
    assert state.stage is Stage.active
    assert state.active_plan.version == 1  # v1 stays in force while v2 is decided
    assert state.blocked_on.what == "team votes on plan v2"
    vote_all(state, ANNA, OLE, SIF)
    assert state.plan.decision == "team"
    assert state.active_plan.version == 1  # decided, but not yet approved by the family
    assert state.blocked_on.what == "family approval of plan v2"
    family(state, True)
    assert state.stage is Stage.active
    assert [p.status for p in state.plans] == ["superseded", "active"]
    assert state.measures_started_at == NOW  # the measures did not restart


def test_adjusted_plan_goes_through_the_rule_and_back_to_active() -> None:
    state = active()
    changes = plan(service(paragraph="BL § 47"))
    run(state, "status_meeting", ANNA, _meeting(plan_changes=changes), now=LATER)
    vote_all(state)
    assert state.stage is Stage.escalated
    assert state.active_plan.version == 1
    decide(state, "rejected")
    assert state.stage is Stage.active  # the old plan is still in force
    assert state.active_plan.version == 1
    assert state.plans[1].status == "rejected"


def test_adjusted_plan_approved_by_committee_replaces_the_active_plan() -> None:
    state = active()
    run(state, "put_plan", ANNA, plan(service(cost=20_000, funding=JOINT)), now=LATER)
    assert state.stage is Stage.active
    family(vote_all(state), True)
    assert state.stage is Stage.escalated
    decide(state, "approved")
    assert state.stage is Stage.active
    assert state.active_plan.version == 2
    assert state.plans[0].status == "superseded"


def test_family_rejects_an_adjusted_plan_the_case_stays_active() -> None:
    state = active()
    run(state, "put_plan", ANNA, plan(service(cost=100)))
    family(state, False, "Keep the old plan")
    assert state.stage is Stage.active
    assert state.active_plan.version == 1


# ================================================================ refusal leaves no trace


def test_a_refused_command_changes_nothing_on_the_workflow_copy() -> None:
    state = drafted()
    before = state.model_dump()
    for name, who, body in [
        ("vote", EVE, {"staff_id": "eve", "vote": "agree"}),
        ("vote", OLE, {"staff_id": "ole", "vote": "disagree"}),
        ("put_plan", ANNA, plan(goals=[{"id": "g", "text": "a"}, {"id": "g", "text": "b"}])),
        ("close", OLE, {"reason": "other"}),
    ]:
        candidate = state.model_copy(deep=True)
        with pytest.raises(Refusal):
            execute(candidate, name, CommandInput(actor=who, body=body), ctx(who))
        assert candidate.model_dump() == before
    assert state.model_dump() == before
    assert state.version == before["version"]


# ================================================================ blocked on


def test_blocked_on_names_what_each_stage_waits_for() -> None:
    expected = {
        referred: ("coordinator assignment", "manager"),
        assigned: ("core team", "anna"),
        formed: ("assessment meeting to be scheduled", "anna"),
        in_assessment: ("ICS assessment", "anna"),
        in_planning: ("joint plan draft", "anna"),
        drafted: ("team votes on plan v1", "anna,ole,sif"),
        escalated: ("committee decision on plan v1", "committee"),
        active: ("next status meeting", "anna"),
    }
    for build, (what, owner) in expected.items():
        state = build()
        assert state.blocked_on is not None, build.__name__
        assert (state.blocked_on.what, state.blocked_on.owner) == (what, owner), build.__name__
        open_dues = [d.due_at for d in state.deadlines if d.is_open()]
        assert state.blocked_on.next_due_at == min(open_dues), build.__name__
    assert closed().blocked_on is None


# ================================================================ deadlines


def test_initial_deadlines_for_an_application() -> None:
    state = referred()  # received Friday 20 Nov 2026 09:00 UTC (10:00 in Copenhagen)
    assert sorted(d.kind.value for d in state.deadlines) == ["assessment", "first_contact"]
    first = deadline(state, DeadlineKind.first_contact)
    assert first.due_at.isoformat() == "2026-11-27T23:59:59+01:00"  # 5 working days
    assert first.legal_basis == DK.legal_basis["first_contact"]
    assessment = deadline(state, DeadlineKind.assessment)
    # + 4 calendar months = Saturday 20 Mar, moved to Monday 22 Mar, due at its end
    # (Forældelsesloven § 27 stk. 1-2).
    assert assessment.due_at.isoformat() == "2027-03-22T23:59:59+01:00"


def test_deadlines_around_easter_2027() -> None:
    received = datetime(2027, 3, 24, 9, 0, tzinfo=UTC)  # Wednesday before Easter
    state = new_case("case-e", case_create(received_at=iso(received)),
                     ctx(ANNA, received + timedelta(hours=1)))
    # Maundy Thursday, Good Friday, the weekend and Easter Monday are skipped.
    assert deadline(state, DeadlineKind.first_contact).due_at.isoformat() == "2027-04-05T23:59:59+02:00"
    # 4 calendar months = Saturday 24 Jul, moved to Monday 26 Jul, due at its end (summer time).
    assert deadline(state, DeadlineKind.assessment).due_at.isoformat() == "2027-07-26T23:59:59+02:00"


def test_deadlines_count_from_received_at_not_from_registration() -> None:
    received = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    state = referred(received_at=iso(received))  # registered on NOW, months later
    first = deadline(state, DeadlineKind.first_contact)
    # 5 working days; Grundlovsdag (Friday 5 June) is not one (Forældelsesloven § 27 stk. 2).
    assert first.due_at.isoformat() == "2026-06-09T23:59:59+02:00"
    assert first.status_at(NOW) is DeadlineStatus.overdue
    assert deadline(state, DeadlineKind.assessment).status_at(NOW) is DeadlineStatus.overdue


def test_a_contact_satisfies_first_contact() -> None:
    state = formed()
    at = NOW - timedelta(hours=2)
    run(state, "record_contact", OLE, {"kind": "home_visit", "at": iso(at), "notes": "Met Mette"})
    first = deadline(state, DeadlineKind.first_contact)
    assert (first.status, first.met_at, first.satisfied_by) == (DeadlineStatus.met, at, "contact")
    assert first.status_at(NOW + timedelta(days=30)) is DeadlineStatus.met  # met stays met
    # The assessment clock is not touched by a contact.
    assert deadline(state, DeadlineKind.assessment).status is DeadlineStatus.open


def test_status_at_reports_overdue_for_a_past_open_deadline() -> None:
    first = deadline(referred(), DeadlineKind.first_contact)
    assert first.status is DeadlineStatus.open
    assert first.status_at(datetime(2026, 11, 27, 22, 0, tzinfo=UTC)) is DeadlineStatus.open
    assert first.status_at(datetime(2026, 11, 27, 22, 59, 59, tzinfo=UTC)) is DeadlineStatus.overdue
    assert first.status_at(datetime(2026, 11, 28, 9, 0, tzinfo=UTC)) is DeadlineStatus.overdue


def test_concern_report_from_a_professional_adds_triage_and_receipt() -> None:
    state = referred(kind="concern_report", source="school")
    triage = deadline(state, DeadlineKind.concern_triage)
    assert triage.due_at.isoformat() == "2026-11-21T10:00:00+01:00"  # 24 clock hours
    assert triage.legal_basis == "Barnets Lov §§ 136-137"
    receipt = deadline(state, DeadlineKind.reporter_receipt)
    assert receipt.due_at.isoformat() == "2026-11-26T23:59:59+01:00"  # 6 days, the last one whole


@pytest.mark.parametrize(
    ("source", "professional", "receipt"),
    [
        ("school", None, True),
        ("health", None, True),
        ("social_services", None, True),
        ("parent", None, False),
        ("other", None, False),
        ("parent", True, True),  # explicitly flagged overrides the source
        ("school", False, False),
    ],
)
def test_reporter_receipt_only_for_professional_reporters(
    source: str, professional: bool | None, receipt: bool
) -> None:
    state = referred(kind="concern_report", source=source, reporter_is_professional=professional)
    found = {d.kind for d in state.deadlines}
    assert DeadlineKind.concern_triage in found
    assert (DeadlineKind.reporter_receipt in found) is receipt


def test_an_application_has_no_triage() -> None:
    state = referred(kind="application", source="school")
    assert {d.kind for d in state.deadlines} == {DeadlineKind.first_contact, DeadlineKind.assessment}


def test_triage_satisfies_the_concern_deadlines() -> None:
    state = run(referred(kind="concern_report"), "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    run(state, "triage", ANNA, {"child_in_danger": False})
    assert deadline(state, DeadlineKind.concern_triage).status is DeadlineStatus.met
    assert deadline(state, DeadlineKind.reporter_receipt).status is DeadlineStatus.open
    run(state, "triage", ANNA, {"receipt_sent_to_reporter": True})
    assert deadline(state, DeadlineKind.reporter_receipt).status is DeadlineStatus.met
    refuse(state, "triage", ANNA, {}, kind="conflict", match="no concern report")


def test_closing_cancels_open_deadlines_and_keeps_met_ones() -> None:
    state = run(referred(kind="concern_report"), "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    run(state, "record_contact", ANNA, {"kind": "phone", "at": iso(NOW)})
    run(state, "close", ANNA, {"reason": "duplicate"})
    assert kinds(state, DeadlineStatus.met) == {"first_contact"}
    assert kinds(state, DeadlineStatus.cancelled) == {
        "assessment", "concern_triage", "reporter_receipt", "family_checkin"}
    assert kinds(state, DeadlineStatus.open) == set()
    assert all(d.status_at(NOW + timedelta(days=400)) is not DeadlineStatus.overdue for d in state.deadlines)
