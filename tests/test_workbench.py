"""domain/workbench.py `available_commands` checked AGAINST the workflow's own rules.

For every stage a case reaches (built with the domain functions, as the workflow does) and for
a coordinator, team members, a manager, the committee and others: a command offered is not
refused as forbidden/conflict when sent with a valid sample body, and one not offered is.
Body-dependent rules (documented in `EXCEPTIONS`) are the only allowed differences.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from domain import deadlines as dl
from domain.access import CaseFacts
from domain.lifecycle import Ctx, Refusal, execute, new_case, working_copy
from domain.policy import DK, SE
from domain.workbench import COMMAND_ORDER, FORM_ORDER, INVITE_FAMILY, available_commands, ordered
from models.case import Actor, CaseState, DeadlineKind, Stage
from models.commands import BODY_MODELS, CommandInput
from tests.factories import NOW, actor, admin, case_create, coordinator, manager
from tests.test_domain_lifecycle import ASSESSMENT, TEAM, plan

ANNA = coordinator("anna")  # the case's coordinator
BO = coordinator("bo")  # another coordinator of the unit
OLE = actor("ole", "team_member")
SIF = actor("sif", "team_member")
EVE = actor("eve", "team_member")  # not on the case
MARIA = manager("maria")
KAREN = actor("karen", "committee")
ADMIN = admin()
PEOPLE = {"coordinator": ANNA, "other coordinator": BO, "team member": OLE,
          "second team member": SIF, "other staff": EVE, "manager": MARIA,
          "committee": KAREN, "admin": ADMIN}


def do(state: CaseState, name: str, who: Actor, body: dict | None = None, *,
       now: datetime = NOW, item_id: str | None = None) -> CaseState:
    out = working_copy(state)
    return execute(out, name, CommandInput(actor=who, body=body, item_id=item_id),
                   Ctx(actor=who, now=now, policy=out.policy))


# ---------------------------------------------------------------- cases in every stage


def referred(policy=DK, **referral: Any) -> CaseState:
    return new_case("case-1", case_create(**referral), Ctx(actor=ANNA, now=NOW, policy=policy))


def assigned(policy=DK, **referral: Any) -> CaseState:
    return do(referred(policy, **referral), "assign_coordinator", MARIA, {"coordinator_id": "anna"})


def formed(policy=DK) -> CaseState:
    return do(assigned(policy), "form_team", ANNA, TEAM)


def in_assessment(policy=DK) -> CaseState:
    return do(formed(policy), "schedule_assessment_meeting", ANNA,
              {"at": (NOW + timedelta(days=7)).isoformat(), "location": "Family home",
               "participants": ["anna", "ole"]})


SE_ASSESSMENT = {
    "ics": {"child_development": [{"dimension": "health", "concerns": "Stomach aches"}],
            "parenting_capacity": [{"dimension": "emotional_warmth", "strengths": "Warm home"}]},
    "child_views": "Emil wants to go to school.",
}


def assessed(policy=DK, assessment: dict | None = None) -> CaseState:
    body = assessment or (SE_ASSESSMENT if policy is SE else ASSESSMENT)
    return do(in_assessment(policy), "put_assessment", ANNA, body)


def in_planning(assessment: dict = ASSESSMENT) -> CaseState:
    return do(assessed(DK, assessment), "complete_assessment", ANNA)


def drafted() -> CaseState:
    return do(in_planning(), "put_plan", ANNA, plan())


def without_child_views() -> CaseState:
    body = {k: v for k, v in ASSESSMENT.items() if k != "child_views"}
    return do(in_planning(body), "put_plan", ANNA, plan())


def voted_by_ole() -> CaseState:
    return do(drafted(), "vote", OLE, {"staff_id": "ole", "vote": "agree"})


def escalated() -> CaseState:
    return do(drafted(), "vote", OLE, {"staff_id": "ole", "vote": "disagree", "reason": "More"})


def decided_waiting_for_family() -> CaseState:
    state = drafted()
    for who in (ANNA, OLE, SIF):
        state = do(state, "vote", who, {"staff_id": who.id, "vote": "agree"})
    return state


def family_approved_before_votes() -> CaseState:
    return do(drafted(), "family_response", ANNA, {"approved": True})


def active() -> CaseState:
    state = do(decided_waiting_for_family(), "family_response", ANNA, {"approved": True})
    assert state.stage is Stage.active
    return state


def active_new_draft() -> CaseState:
    return do(active(), "put_plan", ANNA, plan())


def rejected_by_family() -> CaseState:
    return do(drafted(), "family_response", ANNA, {"approved": False, "comment": "No"})


def paused() -> CaseState:
    return do(formed(), "pause", ANNA, {"reason": "Family on holiday", "waiting_for_family": True})


def concern_report() -> CaseState:
    return assigned(kind="concern_report")


def closed() -> CaseState:
    return do(escalated(), "close", ANNA, {"reason": "family_withdrew"})


def _assessment_due(state: CaseState) -> datetime:
    return dl.open_deadlines(state, DeadlineKind.assessment)[0].due_at


# (name, build, now): `now` is when the reader looks (and the command would be sent).
SCENARIOS: list[tuple[str, Callable[[], CaseState], Callable[[CaseState], datetime]]] = [
    ("referred", referred, lambda s: NOW),
    ("concern report", concern_report, lambda s: NOW),
    ("coordinator assigned", assigned, lambda s: NOW),
    ("team formed", formed, lambda s: NOW),
    ("paused", paused, lambda s: NOW),
    ("assessment", in_assessment, lambda s: NOW),
    ("assessment recorded", lambda: assessed(), lambda s: NOW),
    ("assessment overdue", lambda: assessed(), lambda s: _assessment_due(s) + timedelta(days=1)),
    ("SE assessment (extension)", lambda: assessed(SE), lambda s: NOW),
    ("SE assessment overdue", lambda: in_assessment(SE),
     lambda s: _assessment_due(s) + timedelta(days=1)),
    ("planning", in_planning, lambda s: NOW),
    ("plan drafted", drafted, lambda s: NOW),
    ("plan drafted, no child views", without_child_views, lambda s: NOW),
    ("one vote in", voted_by_ole, lambda s: NOW),
    ("family approved first", family_approved_before_votes, lambda s: NOW),
    ("decided, waiting for family", decided_waiting_for_family, lambda s: NOW),
    ("rejected by family", rejected_by_family, lambda s: NOW),
    ("escalated", escalated, lambda s: NOW),
    ("active", active, lambda s: NOW + timedelta(days=1)),
    ("active with a new draft", active_new_draft, lambda s: NOW + timedelta(days=1)),
    ("closed", closed, lambda s: NOW),
]


def sample_body(name: str, state: CaseState, who: Actor, now: datetime) -> dict | None:
    """A body the workflow accepts as far as the body goes, for this reader and case."""
    team = state.team_ids or ["anna"]
    match name:
        case "assign_coordinator":
            if "manager" in who.roles or "admin" in who.roles:
                return {"coordinator_id": "bo" if state.coordinator_id == "anna" else "anna"}
            return {"coordinator_id": who.id}
        case "form_team":
            return TEAM
        case "record_contact":
            return {"kind": "phone", "at": now.isoformat()}
        case "triage":
            return {"receipt_sent_to_reporter": True}
        case "schedule_assessment_meeting":
            return {"at": (now + timedelta(days=3)).isoformat(), "location": "Home",
                    "participants": team[:2]}
        case "put_assessment":
            return SE_ASSESSMENT if state.policy.country == "SE" else ASSESSMENT
        case "put_plan":
            return plan()
        case "vote":
            return {"staff_id": who.id, "vote": "agree"}
        case "family_response":
            return {"approved": True}
        case "schedule_status_meeting":
            return {"at": (now + timedelta(days=10)).isoformat(), "location": "School",
                    "participants": team}
        case "status_meeting":
            return {"at": now.isoformat(), "participants": team}
        case "close":
            return {"reason": "goals_reached"}
        case "record_outcomes":
            return {"measurements": [{"instrument": "sdq", "informant": "mother", "scores": {
                "emotional": 2, "conduct": 2, "hyperactivity": 3, "peer": 1, "prosocial": 7}}]}
        case "pause":
            return {"reason": "Family on holiday"}
        case "provisional_assessment":
            return {"text": "Emil is safe for now"}
        case "give_consent":
            return {"member_id": "m2", "staff_ids": ["ole"],
                    "expires_at": (now + timedelta(days=365)).date().isoformat()}
        case "change_consent":
            return {"consent_id": "c1", "expires_at": (now + timedelta(days=200)).date().isoformat()}
        case "revoke_consent":
            return {"consent_id": "c1", "reason": "The family withdrew it"}
        case "set_contact_preference":
            return {"preference": "space" if state.contact_preference.value != "space" else "close"}
        case "confirm_focus_points":
            return {"number": 1}  # none sent yet: "not found", a body matter (the form says so)
        case "extend_assessment":
            due = dl.open_deadlines(state, DeadlineKind.assessment)
            new = (due[0].due_at if due else now) + timedelta(days=30)
            return {"new_due_at": new.isoformat(), "decision_ref": "N-1", "reason": "More time"}
    return None


def refusal_kind(state: CaseState, name: str, who: Actor, now: datetime) -> str | None:
    try:
        do(state, name, who, sample_body(name, state, who, now), now=now)
    except Refusal as refusal:
        return refusal.kind
    return None


# Where the rule depends on the body, not on who and when (the form then shows the sentence).
EXCEPTIONS: dict[tuple[str, str], str] = {
    # An admin may record a vote FOR a team member (body.staff_id); the form is for one's own.
    ("admin", "vote"): "body-dependent",
}


def test_command_order_covers_every_command_but_the_committees() -> None:
    assert set(COMMAND_ORDER) <= set(BODY_MODELS) - {"committee_decision"}
    assert len(COMMAND_ORDER) == len(set(COMMAND_ORDER))
    # The page's forms: the commands and the portal invitation (no Update), once each.
    assert set(FORM_ORDER) == set(COMMAND_ORDER) | {INVITE_FAMILY}
    assert len(FORM_ORDER) == len(set(FORM_ORDER))


def test_the_family_forms_for_the_case_worker_only() -> None:
    family = {INVITE_FAMILY, "confirm_focus_points", "set_contact_preference", "give_consent",
              "change_consent", "revoke_consent"}
    for build in (assigned, formed, drafted, escalated, active, paused):
        state = build()
        for who in (ANNA, MARIA, ADMIN):
            assert family <= available_commands(state, who, now=NOW), (build.__name__, who.id)
        for who in (OLE, SIF, EVE, BO, KAREN):
            assert not family & available_commands(state, who, now=NOW), (build.__name__, who.id)
    assert not family & available_commands(closed(), ANNA, now=NOW)
    # Nothing left to narrow or revoke once the only consent is revoked.
    revoked = do(formed(), "revoke_consent", ANNA, {"consent_id": "c1"})
    offered = available_commands(revoked, ANNA, now=NOW)
    assert "give_consent" in offered and not {"change_consent", "revoke_consent"} & offered
    assert refusal_kind(revoked, "revoke_consent", ANNA, NOW) == "conflict"  # twice: 409
    # An expired consent (its day is over) is no longer offered for change, even before the
    # workflow's timer has marked it.
    dated = do(formed(), "change_consent", ANNA, {"consent_id": "c1", "expires_at": "2026-12-01"})
    later = datetime(2026, 12, 2, 12, tzinfo=NOW.tzinfo)
    assert "revoke_consent" not in available_commands(dated, ANNA, now=later)


@pytest.mark.parametrize(("scenario", "build", "when"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
@pytest.mark.parametrize("who", list(PEOPLE), ids=list(PEOPLE))
def test_offered_exactly_when_the_workflow_accepts(scenario, build, when, who) -> None:
    state = build()
    now = when(state)
    person = PEOPLE[who]
    offered = available_commands(state, person, now=now)
    assert "committee_decision" not in offered
    wrong = []
    for name in COMMAND_ORDER:
        if (who, name) in EXCEPTIONS:
            continue
        kind = refusal_kind(state, name, person, now)
        refused = kind in ("forbidden", "conflict")
        if (name in offered) == refused:
            wrong.append(f"{name}: offered={name in offered}, workflow says {kind or 'accepted'}")
    assert not wrong, f"{scenario} / {who}: " + "; ".join(wrong)


def test_each_stage_offers_what_the_people_expect() -> None:
    def names(build, who, now=NOW):
        return ordered(available_commands(build(), who, now=now))

    assert names(referred, BO) == ["assign_coordinator"]  # take it
    assert names(referred, OLE) == []
    assert "assign_coordinator" not in names(assigned, BO)  # taken
    assert names(formed, OLE) == ["record_contact"]
    assert "vote" in names(drafted, OLE) and "vote" not in names(voted_by_ole, OLE)
    assert "vote" not in names(without_child_views, OLE)
    assert "vote" not in names(drafted, MARIA)  # a manager is not a voter
    assert names(paused, ANNA)[-2:] == ["resume", "close"]
    assert names(closed, ANNA) == names(closed, MARIA) == []
    assert names(escalated, KAREN) == []
    assert "extend_assessment" in names(lambda: assessed(SE), KAREN)
    assert "extend_assessment" not in names(lambda: assessed(DK), KAREN)


def test_the_access_policy_gate_when_the_case_facts_are_given() -> None:
    state = referred()
    other_unit = Actor(id="bo", roles=["coordinator"], unit="adult_services")
    facts = CaseFacts(id=state.id, unit="children_disability")
    assert available_commands(state, other_unit, now=NOW, facts=facts) == set()
    assert available_commands(state, BO, now=NOW, facts=facts) == {"assign_coordinator"}
    other_manager = Actor(id="max", roles=["manager"], unit="adult_services")
    assert available_commands(state, other_manager, now=NOW, facts=facts) == set()
    family = Actor(id="f", roles=["family"], case_id=state.id, member_id="m1")
    assert available_commands(state, family, now=NOW) == set()
