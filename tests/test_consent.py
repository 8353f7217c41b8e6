"""The family's consent (issue 10, DESIGN §3.11, §11).

First the pure rules (domain/consent.py, the commands of domain/lifecycle.py, the access
policy, the messages of domain/effects.py and the read model's columns), without Temporal;
then the HTTP API (api/consents.py and the case endpoints) against the real time-skipping
Temporal test server, a real worker and a real SQLite read model, in trusted-header mode
(identity is not the subject: `X-User` from 127.0.0.1 is the caller).

Expiry and the renewal reminder on the time-skipping server: tests/test_consent_workflow.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.notifications import NotificationActivities
from api import cases as cases_api
from api import consents as consents_api
from api import documents as documents_api
from api import notifications as notifications_api
from api.auth import AuthMiddleware
from api.deps import forget_staff
from api.scope import facts_from_row, load_facts, scope_clause
from domain import clocks, consent, effects
from domain.access import (
    FAMILY_USE_PORTAL,
    NOT_CONSENTED,
    case_scope,
    committee_scope,
    facts_from_state,
    family_refusal,
    grant_refusal,
    in_scope,
    may_assign,
    may_change_policy,
    may_decrypt,
    may_manage_case,
    may_manage_staff,
    may_read_audit,
    may_read_caseload,
    may_read_committee,
    may_read_reports,
    may_see_contact_details,
    may_see_duplicates,
    non_case_refusal,
    read_refusal,
    report_scope,
)
from domain.lifecycle import after_clocks, execute, new_case, working_copy
from domain.policy import DK
from models.case import (
    Actor,
    CaseState,
    ConsentStatus,
    DeadlineKind,
    DeadlineStatus,
)
from models.commands import CommandInput
from models.db import get_engine
from models.messaging import NotificationRequest, staff_recipient
from models.projection import write_case
from models.tables import CaseRow, StaffRow
from models.tables_outbox import NotificationRow
from settings import Settings
from tests.conftest import running_worker
from tests.factories import NOW, actor, case_create, ctx
from tests.test_domain_lifecycle import (
    ADMIN,
    ANNA,
    ASSESSMENT,
    MARIA,
    MEETING_AT,
    iso,
    plan,
    refuse,
    run,
)

CPH = ZoneInfo("Europe/Copenhagen")
OLE = actor("ole", "team_member")    # adult_services
LISE = actor("lise", "team_member")  # school
EVE = actor("eve", "team_member")    # not on the case
TEAM = {"members": [
    {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"},
    {"staff_id": "lise", "discipline": "school_coordinator", "department": "school"},
]}
DIRECTORY = ["adult_services", "children_disability", "school"]


def family_actor(case_id: str = "case-1", member_id: str = "m2") -> Actor:
    return Actor(id=f"family:{member_id}", roles=["family"], case_id=case_id, member_id=member_id)


MOTHER = family_actor()


def case(**consent_fields: Any) -> CaseState:
    """A case with anna as coordinator and ole (adult_services) and lise (school) on its team,
    the referral's consent as given."""
    body = case_create()
    body.consent = body.consent.model_copy(update=consent_fields)
    state = new_case("case-1", body, ctx(MARIA))
    run(state, "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    return run(state, "form_team", ANNA, TEAM)


def give(state: CaseState, who: Actor = ANNA, **body: Any) -> CaseState:
    body = {"member_id": "m2", "expires_at": "2027-06-30", **body}
    candidate = working_copy(state)
    execute(candidate, "give_consent", CommandInput(actor=who, body=body,
                                                    known_departments=DIRECTORY), ctx(who))
    for field in CaseState.model_fields:
        setattr(state, field, getattr(candidate, field))
    return state


def statuses(state: CaseState) -> dict[str, str]:
    return {m.staff_id: m.status for m in state.team}


# ================================================================ the referral's consent


def test_coordinated_handling_covers_the_coordinator_and_the_core_team_as_it_is_formed() -> None:
    state = case(coordinated_handling=True)
    [first] = state.consents
    assert (first.id, first.core_team, first.source, first.member_id) == ("c1", True, "referral", "m2")
    assert first.status is ConsentStatus.active and first.expires_at is None
    assert consent.uncovered(state) == frozenset()
    assert statuses(state) == {"ole": "active", "lise": "active"}
    assert state.blocked_on.what == "assessment meeting to be scheduled"


def test_departments_narrow_the_referral_consent_to_members_of_those_departments() -> None:
    state = case(coordinated_handling=True, departments=["school"])
    assert state.consents[0].departments == ["school"] and not state.consents[0].core_team
    assert consent.uncovered(state) == {"ole"}
    assert statuses(state) == {"ole": "pending_consent", "lise": "active"}
    assert state.blocked_on.what == "the family's consent to share with ole (adult_services)"
    assert state.blocked_on.owner == "family"
    assert read_refusal(OLE, facts_from_state(state)) == NOT_CONSENTED
    assert read_refusal(LISE, facts_from_state(state)) is None
    assert read_refusal(ANNA, facts_from_state(state)) is None  # the coordinator: always


def test_without_coordinated_handling_only_the_coordinator_is_covered() -> None:
    state = case(coordinated_handling=False, departments=["school"])
    assert consent.uncovered(state) == {"ole", "lise"}
    for member in (OLE, LISE):
        assert read_refusal(member, facts_from_state(state)) == NOT_CONSENTED
    assert read_refusal(ANNA, facts_from_state(state)) is None
    assert read_refusal(MARIA, facts_from_state(state)) is None  # the unit's manager, as today


def test_the_issue_case_expired_one_department_no_coordinated_handling_refuses_the_other_department() -> None:
    """Issue 10: registered with coordinated_handling false, limited to one department and
    already expired — a team member from another department read the child's diagnoses."""
    state = case(coordinated_handling=False, departments=["school"], valid_until=date(2026, 10, 31))
    assert state.consents[0].status is ConsentStatus.expired  # expired when registered
    assert any(f["kind"] == "consent_expired" for f in state.flags)
    facts = facts_from_state(state)
    assert read_refusal(OLE, facts) == NOT_CONSENTED
    assert read_refusal(OLE, facts, "documents") == NOT_CONSENTED
    assert not in_scope(case_scope(OLE), facts)
    # The same case as a state from before consents existed: the consent derived on load
    # is the same, and the read-side policy (with the instant of the read) refuses just as well.
    old = state.model_dump(mode="json")
    old.pop("consents"), old.pop("consent_rules")
    old["team"] = [{k: v for k, v in m.items() if k in ("staff_id", "discipline", "department")}
                   for m in old["team"]]
    legacy = CaseState.model_validate(old)
    again = CaseState.model_validate(old)
    assert legacy.consents == again.consents  # deterministic, no clock
    assert legacy.consents[0].status is ConsentStatus.active  # nobody marked it: time does
    assert read_refusal(OLE, facts_from_state(legacy, now=NOW)) == NOT_CONSENTED
    assert read_refusal(ANNA, facts_from_state(legacy, now=NOW)) is None


def test_a_consent_holds_through_its_last_day_in_the_municipalitys_zone() -> None:
    state = case(coordinated_handling=True, valid_until=date(2027, 1, 31))
    c1 = state.consents[0]
    last = datetime(2027, 1, 31, 23, 59, 59, tzinfo=CPH)
    assert consent.expiry_instant(c1.expires_at, DK.timezone) == datetime(2027, 2, 1, tzinfo=CPH)
    assert consent.is_active(c1, DK.timezone, last)
    assert not consent.is_active(c1, DK.timezone, last + timedelta(seconds=1))
    assert consent.uncovered(state, now=last) == frozenset()
    assert consent.uncovered(state, now=last + timedelta(seconds=1)) == {"ole", "lise"}


# ================================================================ clocks: renewal and expiry


def test_the_renewal_deadline_reminds_consent_renewal_days_before_and_expiry_narrows() -> None:
    state = case(coordinated_handling=True, valid_until=date(2027, 3, 31))
    [renewal] = [d for d in state.deadlines if d.kind is DeadlineKind.consent_renewal]
    due = datetime(2027, 4, 1, tzinfo=CPH)
    assert (renewal.ref, renewal.owner, renewal.due_at) == ("c1", "family", due)
    assert renewal.remind_at == [due - timedelta(days=DK.consent_renewal_days)]
    assert DK.consent_renewal_days == 30
    events = [(e.kind, e.at) for e in clocks.pending(state) if e.deadline is renewal]
    assert events == [("reminder", due - timedelta(days=30)), ("overdue", due)]

    # The reminder: to the family (the parents), with the consent's last day.
    clocks.fire(state, due - timedelta(days=30))
    [sent] = [e for e in effects.pending(state, set()) if e.key.split(":")[1].startswith("consent_renewal")]
    assert sent.notification.recipient.role.value == "family"
    assert sent.notification.template == "consent_renewal"
    assert sent.notification.context["valid_until"] == "2027-03-31"

    # Its end: the consent expires, the team waits for consent, the coordinator is told.
    clocks.fire(state, due - timedelta(seconds=1))
    assert after_clocks(state, due - timedelta(seconds=1)) == []
    assert state.consents[0].status is ConsentStatus.active
    clocks.fire(state, due)
    assert after_clocks(state, due) == ["c1"]
    assert state.consents[0].status is ConsentStatus.expired
    assert renewal.status is DeadlineStatus.cancelled  # not an overdue case: a fact
    assert statuses(state) == {"ole": "pending_consent", "lise": "pending_consent"}
    assert state.blocked_on.what.startswith("the family's consent to share with ole")
    notice = state.notices[-1]
    assert (notice.event, notice.to, notice.detail["no_longer_covered"]) == (
        "consent_expired", "anna", ["lise", "ole"])
    keys = [e.key for e in effects.pending(state, set())]
    assert f"case-1:family_update#{notice.number}:anna:1" in keys
    # No "overdue" message for the consent's deadline itself, nothing fires any more.
    assert not [k for k in keys if "deadline:consent_renewal" in k]
    assert all(e.deadline is not renewal for e in clocks.pending(state))


def test_a_policy_with_other_renewal_days_reminds_that_many_days_before() -> None:
    policy = DK.model_copy(update={"consent_renewal_days": 12})
    body = case_create()
    body.consent.valid_until = date(2027, 3, 31)
    state = new_case("case-1", body, ctx(MARIA, policy=policy))
    [renewal] = [d for d in state.deadlines if d.kind is DeadlineKind.consent_renewal]
    assert renewal.remind_at == [datetime(2027, 4, 1, tzinfo=CPH) - timedelta(days=12)]


# ================================================================ the commands


def test_a_consent_given_on_paper_covers_the_named_staff_and_departments() -> None:
    state = case(coordinated_handling=False)
    give(state, staff_ids=["ole"], covers=["case"], expires_at="2027-06-30")
    c2 = state.consents[-1]
    assert (c2.id, c2.staff_ids, c2.covers, c2.source, c2.given_by) == (
        "c2", ["ole"], ["case"], "paper", "anna")
    assert statuses(state) == {"ole": "active", "lise": "pending_consent"}
    facts = facts_from_state(state)
    assert read_refusal(OLE, facts) is None
    assert read_refusal(OLE, facts, "documents") == NOT_CONSENTED  # covers the case only
    give(state, departments=["school"], expires_at="2027-06-30")
    assert consent.uncovered(state) == frozenset()
    assert state.history[-1].event == "consent_given"
    renewals = [d for d in state.deadlines if d.kind is DeadlineKind.consent_renewal]
    assert {d.ref for d in renewals} == {"c2", "c3"}


@pytest.mark.parametrize(("who", "body", "kind", "match"), [
    (ANNA, {"member_id": "m9", "staff_ids": ["ole"]}, "invalid", "'m9' is not on this case"),
    (ANNA, {"member_id": "m2", "departments": ["astrology"]}, "invalid", "Unknown department"),
    (ANNA, {"member_id": "m2", "staff_ids": ["ole"], "expires_at": "2026-11-22"}, "invalid",
     "in the past"),
    (ANNA, {"member_id": "m2"}, "invalid", "Name the professionals"),
    (ANNA, {"member_id": "m2", "staff_ids": ["ole"], "covers": ["documents"]}, "invalid",
     "covers the case"),
    (OLE, {"member_id": "m2", "staff_ids": ["ole"]}, "forbidden", "coordinator or a manager"),
    (family_actor("another-case"), {"member_id": "m2", "staff_ids": ["ole"]}, "forbidden",
     "not your family's case"),
    (family_actor(member_id="m1"), {"member_id": "m1", "staff_ids": ["ole"]}, "forbidden",
     "Only a parent"),
    (family_actor(member_id="m7"), {"member_id": "m7", "staff_ids": ["ole"]}, "forbidden",
     "not your family's case"),
])
def test_give_consent_refusals(who: Actor, body: dict, kind: str, match: str) -> None:
    state = case(coordinated_handling=False)
    refuse(state, "give_consent", who, {"expires_at": "2027-06-30", **body}, kind=kind, match=match)


def test_the_family_gives_narrows_extends_and_revokes_its_own_consent() -> None:
    state = case(coordinated_handling=False)
    give(state, MOTHER, staff_ids=["ole", "lise"], expires_at="2027-06-30")
    c2 = state.consents[-1]
    assert (c2.source, c2.given_by, c2.member_id) == ("family", "family:m2", "m2")
    assert state.notices[-1].event == "consent_given" and state.notices[-1].to == "anna"
    refuse(state, "give_consent", MOTHER, {"member_id": "m1", "staff_ids": ["ole"],
                                           "expires_at": "2027-06-30"},
           kind="forbidden", match="in your own name")
    # Narrow: lise only; ole loses access at once, the coordinator is told who.
    run(state, "change_consent", MOTHER, {"consent_id": "c2", "staff_ids": ["lise"]})
    assert statuses(state) == {"ole": "pending_consent", "lise": "active"}
    assert state.notices[-1].detail["no_longer_covered"] == ["ole"]
    # Extend: a later end moves the renewal clock (a new occurrence, the old one cancelled).
    run(state, "change_consent", MOTHER, {"consent_id": "c2", "expires_at": "2028-06-30"})
    renewals = [d for d in state.deadlines if d.kind is DeadlineKind.consent_renewal and d.ref == "c2"]
    assert [d.status for d in renewals] == [DeadlineStatus.cancelled, DeadlineStatus.open]
    assert renewals[-1].due_at == datetime(2028, 7, 1, tzinfo=CPH)
    refuse(state, "change_consent", MOTHER, {"consent_id": "c2", "staff_ids": [],
                                             "departments": []}, kind="invalid", match="revoke it")
    refuse(state, "change_consent", MOTHER, {"consent_id": "c9", "expires_at": "2028-01-01"},
           kind="not_found", match="No consent 'c9'")
    # Revoke: nobody but the coordinator; again: 409.
    run(state, "revoke_consent", MOTHER, {"consent_id": "c2"})
    assert state.consents[-1].status is ConsentStatus.revoked
    assert state.consents[-1].revoked_at == NOW
    assert all(d.status is DeadlineStatus.cancelled for d in state.deadlines
               if d.kind is DeadlineKind.consent_renewal)
    assert consent.uncovered(state) == {"ole", "lise"}
    assert state.notices[-1].event == "consent_revoked"
    refuse(state, "revoke_consent", MOTHER, {"consent_id": "c2"}, kind="conflict",
           match="already revoked")
    refuse(state, "change_consent", ANNA, {"consent_id": "c2", "expires_at": "2028-01-01"},
           kind="conflict", match="already revoked")


def test_the_referral_consent_can_be_narrowed_to_departments() -> None:
    state = case(coordinated_handling=True)
    run(state, "change_consent", ANNA, {"consent_id": "c1", "departments": ["school"]})
    assert not state.consents[0].core_team and state.consents[0].departments == ["school"]
    assert consent.uncovered(state) == {"ole"}


def test_consent_commands_on_a_closed_case_are_a_conflict() -> None:
    state = case(coordinated_handling=True)
    run(state, "close", ANNA, {"reason": "moved_away"})
    for name, body in [("give_consent", {"member_id": "m2", "staff_ids": ["ole"],
                                         "expires_at": "2027-06-30"}),
                       ("revoke_consent", {"consent_id": "c1"}),
                       ("change_consent", {"consent_id": "c1", "expires_at": "2027-06-30"})]:
        for who in (ANNA, MOTHER):
            refuse(state, name, who, body, kind="conflict", match="closed")


# ================================================================ votes and the decision rule


def planning(**consent_fields: Any) -> CaseState:
    state = case(**consent_fields)
    run(state, "schedule_assessment_meeting", ANNA, {
        "at": iso(MEETING_AT), "location": "Family home", "participants": ["anna", "lise", "ole"]})
    run(state, "put_assessment", ANNA, ASSESSMENT)
    run(state, "complete_assessment", ANNA)
    return run(state, "put_plan", ANNA, plan())


def test_an_uncovered_member_cannot_vote_and_the_plan_waits_for_their_consent() -> None:
    state = planning(coordinated_handling=True, departments=["school"])
    run(state, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
    run(state, "vote", LISE, {"staff_id": "lise", "vote": "agree"})
    assert state.plan.decision == "pending"  # waits for ole
    assert state.blocked_on.what == "the family's consent to share with ole (adult_services)"
    refuse(state, "vote", ADMIN, {"staff_id": "ole", "vote": "agree"}, kind="forbidden",
           match="has not consented to share this case with 'ole'.*waits for the family's consent")
    give(state, staff_ids=["ole"])
    assert state.blocked_on.what == "team votes on plan v1" and state.blocked_on.owner == "ole"
    run(state, "vote", OLE, {"staff_id": "ole", "vote": "agree"})
    assert state.plan.decision == "team"


def test_the_plan_is_decided_when_the_uncovered_member_leaves_the_team() -> None:
    state = planning(coordinated_handling=True, departments=["school"])
    run(state, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
    run(state, "vote", LISE, {"staff_id": "lise", "vote": "agree"})
    assert state.plan.decision == "pending"
    run(state, "form_team", ANNA, {"members": [TEAM["members"][1]]})  # lise stays, ole leaves
    assert state.plan.decision == "team"
    assert state.history[-1].event == "plan_decided"


def test_the_assessment_meeting_counts_only_members_the_consent_covers() -> None:
    state = case(coordinated_handling=True, departments=["school"])
    refuse(state, "schedule_assessment_meeting", ANNA, {
        "at": iso(MEETING_AT), "location": "x", "participants": ["anna", "ole"]},
        kind="invalid", match="not consented to share the case with ole")


# ================================================================ the family's other commands


def test_the_family_may_do_exactly_its_own_commands() -> None:
    state = planning(coordinated_handling=True)
    for name, body in [("form_team", TEAM), ("record_contact", {"kind": "phone", "at": iso(NOW)}),
                       ("put_plan", plan()), ("close", {"reason": "family_withdrew"}),
                       ("pause", {"reason": "a break"}),
                       ("vote", {"staff_id": "family:m2", "vote": "agree"}),
                       ("confirm_focus_points", {"number": 1}),
                       ("assign_coordinator", {"coordinator_id": "anna"})]:
        refuse(state, name, MOTHER, body, kind="forbidden", match="family member cannot do this")
    # Another family's member cannot act on this case at all.
    refuse(state, "family_response", family_actor("case-2"), {"approved": True},
           kind="forbidden", match="not your family's case")
    # A family member with staff roles too is still only a family member.
    sneaky = MOTHER.model_copy(update={"roles": ["family", "admin", "manager"]})
    refuse(state, "close", sneaky, {"reason": "other"}, kind="forbidden", match="family member")
    run(state, "set_contact_preference", MOTHER, {"preference": "space"})
    assert state.contact_preference.value == "space"
    refuse(state, "set_contact_preference", MOTHER, {"preference": "space"}, kind="conflict",
           match="already 'space'")
    run(state, "family_focus_points", MOTHER, {"text": "Emil's mornings"})
    assert state.focus_points[-1].member_id == "m2" and state.notices[-1].event == "focus_points"
    run(state, "request_pause", MOTHER, {"reason": "We need a summer break"})
    assert state.notices[-1].event == "pause_requested"
    assert state.pause_requests[-1].handled_at is None
    run(state, "family_response", MOTHER, {"approved": True, "comment": "Our plan"})
    assert state.plan.family_approved is True
    assert state.history[-1].actor == "family:m2"
    run(state, "pause", ANNA, {"reason": "The family asked for a break"})
    assert state.pause_requests[-1].handled_at == NOW


def test_confirmed_focus_points_count_as_the_pre_meeting_contact() -> None:
    state = case(coordinated_handling=True)
    run(state, "schedule_assessment_meeting", ANNA, {
        "at": iso(MEETING_AT), "location": "Family home", "participants": ["anna", "lise"]})
    pre = next(d for d in state.deadlines if d.kind is DeadlineKind.pre_meeting_contact)
    assert pre.status is DeadlineStatus.open
    run(state, "family_focus_points", MOTHER, {"text": "Emil's school mornings"})
    refuse(state, "confirm_focus_points", ANNA, {"number": 2}, kind="not_found", match="number 2")
    run(state, "confirm_focus_points", ANNA, {"number": 1})
    pre = next(d for d in state.deadlines if d.kind is DeadlineKind.pre_meeting_contact)
    assert pre.status is DeadlineStatus.met and pre.satisfied_by == "contact"
    assert state.contacts[-1].kind.value == "message"
    refuse(state, "confirm_focus_points", ANNA, {"number": 1}, kind="conflict", match="already")


# ================================================================ the access policy and family actors


def test_every_policy_function_gives_a_family_actor_nothing() -> None:
    facts = facts_from_state(case(coordinated_handling=True))
    for fam in (MOTHER, MOTHER.model_copy(update={"roles": ["family", "admin", "manager", "committee"],
                                                  "unit": "children_disability"})):
        assert read_refusal(fam, facts) == FAMILY_USE_PORTAL
        assert family_refusal(fam, facts) is None  # their own case, in the portal
        assert case_scope(fam) == report_scope(fam) == committee_scope(fam)
        assert not case_scope(fam).everything and not case_scope(fam).units
        assert not in_scope(case_scope(fam), facts)
        assert not (may_read_committee(fam) or may_read_caseload(fam) or may_read_reports(fam))
        assert not (may_change_policy(fam) or may_decrypt(fam) or may_manage_case(fam, facts))
        assert not (may_see_duplicates(fam, facts) or may_read_audit(fam, facts))
        assert not may_see_contact_details(fam, "children_disability", "anna")
        assert not may_manage_staff(fam, "children_disability")
        assert may_assign(fam, "children_disability") is not None
        assert grant_refusal(fam, ["coordinator"], "children_disability") is not None
        assert non_case_refusal(fam, "report-2026-11") and non_case_refusal(fam, "committee-x-1")
    assert family_refusal(family_actor("case-2"), facts) is not None


# ================================================================ messages


def test_uncovered_members_get_no_invitations_or_reminders() -> None:
    state = case(coordinated_handling=True, departments=["school"])
    run(state, "schedule_assessment_meeting", ANNA, {
        "at": iso(MEETING_AT), "location": "Family home",
        "participants": ["anna", "lise", "ole", "family"]})
    invited = {e.notification.recipient.id for e in effects.pending(state, set())
               if e.notification and e.notification.purpose == "assessment_meeting_invitation"}
    assert invited == {"anna", "lise", "family:1"}
    # Covered later: the invitation they missed is theirs too.
    give(state, staff_ids=["ole"])
    done = {e.key for e in effects.pending(state, set())} - {
        e.key for e in effects.pending(state, set()) if e.notification
        and e.notification.recipient.id == "ole"}
    assert {e.notification.recipient.id for e in effects.pending(state, done)} == {"ole"}


# ================================================================ the read model


@pytest.fixture
def engine(settings: Settings):
    return get_engine(settings.db_url)


def test_the_read_model_gives_the_same_facts_as_the_state(engine) -> None:
    state = case(coordinated_handling=True, departments=["school"], valid_until=date(2027, 1, 31))
    state.id = str(uuid.uuid4())
    with Session(engine) as session:
        write_case(session, state, NOW)
        session.commit()
        row = session.get(CaseRow, state.id)
        assert (row.uncovered_text, row.uncovered_documents_text) == (",ole,", ",ole,")
        assert row.consent_until == datetime(2027, 2, 1, tzinfo=CPH)
        facts = load_facts(session, state.id)
        assert facts.not_consented == facts_from_state(state).not_consented == {"ole"}

        def listed(who: Actor, now: datetime) -> bool:
            return state.id in set(session.exec(select(CaseRow.id).where(
                scope_clause(case_scope(who), now=now))).all())

        assert listed(LISE, NOW) and not listed(OLE, NOW) and listed(ANNA, NOW)
        # Past the consent's end and before the workflow projected it: reads compute the
        # facts from the document, lists leave the case out for the team (never open).
        later = datetime(2027, 2, 1, 0, 0, 1, tzinfo=CPH)
        facts = facts_from_row(session.get(CaseRow, state.id), session, now=later)
        assert facts.not_consented == {"ole", "lise"} == facts_from_state(state, now=later).not_consented
        assert load_facts(session, state.id, now=later) == facts  # its document read for it
        assert load_facts(session, state.id, now=NOW).not_consented == {"ole"}
        assert not listed(LISE, later) and listed(ANNA, later)


def test_revoking_cancels_messages_not_yet_sent_to_those_it_covered(engine, settings) -> None:
    state = case(coordinated_handling=True)
    state.id = str(uuid.uuid4())
    with Session(engine) as session:
        write_case(session, state, NOW)
        for i, (who, status) in enumerate([("ole", "queued"), ("ole", "failed"), ("ole", "sent"),
                                           ("lise", "queued"), ("anna", "queued")]):
            session.add(NotificationRow(
                id=f"n{i}-{state.id}", key=f"{state.id}:p{i}:{who}:1", case_id=state.id,
                channel="email", recipient_id=who, recipient_role="team", purpose=f"p{i}",
                template="team_added", language="en", status=status, created_at=NOW,
                updated_at=NOW))
        session.commit()
    run(state, "change_consent", ANNA, {"consent_id": "c1", "departments": ["school"]})
    with Session(engine) as session:
        write_case(session, state, NOW)
        session.commit()
        rows = {(r.recipient_id, r.purpose): r.status for r in session.exec(
            select(NotificationRow).where(NotificationRow.case_id == state.id))}
    assert rows == {("ole", "p0"): "cancelled", ("ole", "p1"): "cancelled", ("ole", "p2"): "sent",
                    ("lise", "p3"): "queued", ("anna", "p4"): "queued"}
    # The activity itself never sends to them either (a message handed over meanwhile).
    acts = NotificationActivities(engine, settings)
    request = NotificationRequest(key=f"{state.id}:new:ole:1", case_id=state.id, purpose="new",
                                  recipient=staff_recipient("team", "ole"), template="team_added",
                                  context={"coordinator_name": "Anna"})
    assert acts.send(request).status.value == "cancelled"
    assert acts.send(request).status.value == "cancelled"  # and stays so
    lise = request.model_copy(update={"key": f"{state.id}:new:lise:1",
                                      "recipient": staff_recipient("team", "lise")})
    assert acts.send(lise).status.value == "sent"  # in-app: covered staff are told


def test_a_message_after_the_consent_ended_but_before_its_projection_is_not_sent(engine, settings) -> None:
    """The activity reads the projected columns, and the sealed document only when a consent
    has ended since (models.projection.uncovered_of_row, loaded on demand)."""
    state = case(coordinated_handling=True, departments=["school"], valid_until=date(2027, 1, 31))
    state.id = str(uuid.uuid4())
    with Session(engine) as session:
        write_case(session, state, NOW)
        session.commit()
    later = datetime(2027, 2, 1, 0, 0, 1, tzinfo=CPH)
    request = NotificationRequest(key=f"{state.id}:late:lise:1", case_id=state.id, purpose="late",
                                  recipient=staff_recipient("team", "lise"), template="team_added",
                                  context={"coordinator_name": "Anna"})
    now_sent = NotificationActivities(engine, settings, clock=lambda: NOW).send(request)
    assert now_sent.status.value == "sent"  # covered while the consent runs
    after = NotificationActivities(engine, settings, clock=lambda: later).send(
        request.model_copy(update={"key": f"{state.id}:late:lise:2"}))
    assert after.status.value == "cancelled"  # ended, not projected yet: from the document


# ================================================================ over HTTP, real Temporal

STAFF = [
    ("admin", ["admin"], "administration"), ("anna", ["coordinator"], "children_disability"),
    ("bo", ["coordinator"], "children_disability"),
    ("mia", ["manager"], "children_disability"), ("ole", ["team_member"], "adult_services"),
    ("lise", ["team_member"], "school"),
]


@pytest.fixture
async def api(ts_env: WorkflowEnvironment, settings: Settings,
              started: list[WorkflowHandle]) -> AsyncIterator[Any]:
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for sid, roles, dept in STAFF:
            session.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                                 department=dept, unit="children_disability", roles=roles,
                                 created_at=NOW))
        session.commit()
    forget_staff()
    app = FastAPI()
    app.state.engine = engine
    app.state.temporal = ts_env.client
    app.state.settings = settings.model_copy(update={"auth": "trusted-header"})
    app.add_middleware(AuthMiddleware)
    for router in (cases_api.router, consents_api.router, documents_api.router,
                   notifications_api.router):
        app.include_router(router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    class Api:
        def __init__(self) -> None:
            self.engine = engine

        def as_(self, user: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=transport, base_url="http://onefamily.test/api/v1",
                                     headers={"X-User": user}, timeout=60)

        async def register(self, **consent_fields: Any) -> str:
            body = case_create().model_dump(mode="json")
            body["consent"].update({k: (v.isoformat() if isinstance(v, date) else v)
                                    for k, v in consent_fields.items()})
            async with self.as_("mia") as mia:
                r = await mia.post("/cases", json=body)
                assert r.status_code == 201, r.text
                cid = r.json()["id"]
                started.append(ts_env.client.get_workflow_handle(f"case-{cid}"))
                r = await mia.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "anna"})
                assert r.status_code == 200, r.text
            async with self.as_("anna") as anna:
                r = await anna.post(f"/cases/{cid}/team", json=TEAM)
                assert r.status_code == 200, r.text
            return cid

    async with running_worker(ts_env.client, settings):
        yield Api()
    forget_staff()


async def listed(c: httpx.AsyncClient, cid: str) -> bool:
    r = await c.get("/cases", params={"limit": 500})
    assert r.status_code == 200, r.text
    return cid in {i["id"] for i in r.json()["items"]}


async def test_http_the_issue_case_an_uncovered_member_reads_nothing(api) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    cid = await api.register(coordinated_handling=False, departments=["school"], valid_until=yesterday)
    async with api.as_("ole") as ole, api.as_("lise") as lise, api.as_("anna") as anna:
        for c in (ole, lise):
            for path in (f"/cases/{cid}", f"/cases/{cid}/documents", f"/cases/{cid}/consents",
                         f"/notifications?case_id={cid}"):
                r = await c.get(path)
                assert r.status_code == 403, (path, r.text)
                assert r.json() == {"detail": NOT_CONSENTED}
                assert "Emil" not in r.text and "ADHD" not in r.text
            assert not await listed(c, cid)
            r = await c.post(f"/cases/{cid}/contacts", json={"kind": "phone", "at": iso(datetime.now(UTC))})
            assert r.status_code == 403, r.text
        case_ = (await anna.get(f"/cases/{cid}")).json()
        assert {m["staff_id"]: m["status"] for m in case_["team"]} == {
            "ole": "pending_consent", "lise": "pending_consent"}
        assert case_["blocked_on"]["what"] == (
            "the family's consent to share with ole (adult_services), lise (school)")
        consents = (await anna.get(f"/cases/{cid}/consents")).json()
        assert consents["total"] == 1 and consents["items"][0]["status"] == "expired"
        assert await listed(anna, cid)


async def test_http_revoke_narrows_access_at_once(api) -> None:
    cid = await api.register(coordinated_handling=False)
    expires = (datetime.now(UTC) + timedelta(days=200)).date().isoformat()
    async with api.as_("ole") as ole, api.as_("anna") as anna, api.as_("mia") as mia:
        assert (await ole.get(f"/cases/{cid}")).status_code == 403
        r = await anna.post(f"/cases/{cid}/consents", json={
            "member_id": "m2", "staff_ids": ["ole"], "expires_at": expires})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"/api/v1/cases/{cid}/consents/c2"
        assert (await ole.get(f"/cases/{cid}")).status_code == 200
        assert await listed(ole, cid)
        one = (await ole.get(f"/cases/{cid}/consents/c2")).json()
        assert one["active"] and one["covered_team"] == ["ole"] and one["source"] == "paper"

        # Refusals: unknown staff, unknown department, past expiry, another case's member.
        for body, status in [({"member_id": "m2", "staff_ids": ["nobody"], "expires_at": expires}, 422),
                             ({"member_id": "m2", "departments": ["astrology"], "expires_at": expires}, 422),
                             ({"member_id": "m2", "staff_ids": ["ole"], "expires_at": "2020-01-01"}, 422),
                             ({"member_id": "m9", "staff_ids": ["ole"], "expires_at": expires}, 422)]:
            r = await anna.post(f"/cases/{cid}/consents", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["detail"].endswith("."), r.text

        samples = []
        for _ in range(3):
            r = await anna.post(f"/cases/{cid}/consents", json={
                "member_id": "m2", "staff_ids": ["ole"], "expires_at": expires})
            assert r.status_code == 201
            consent_id = r.json()["consents"][-1]["id"]
            # Every other consent for ole revoked first: this revoke is the one that counts.
            for other in r.json()["consents"]:
                if other["status"] == "active" and other["id"] != consent_id:
                    assert (await anna.post(f"/cases/{cid}/consents/{other['id']}/revoke")).status_code == 200
            assert (await ole.get(f"/cases/{cid}")).status_code == 200
            r = await anna.post(f"/cases/{cid}/consents/{consent_id}/revoke")
            answered = time.perf_counter()
            assert r.status_code == 200, r.text
            refused = await ole.get(f"/cases/{cid}")
            samples.append((time.perf_counter() - answered) * 1000)
            assert refused.status_code == 403 and refused.json()["detail"] == NOT_CONSENTED
            assert not await listed(ole, cid)
        print(f"\nrevoke answer -> refused read: {', '.join(f'{s:.1f}' for s in samples)} ms "
              f"(max {max(samples):.1f} ms)")

        # Sent again with a key of its own (on purpose, not a retry: domain/retries.py): 409.
        again = await anna.post(f"/cases/{cid}/consents/{consent_id}/revoke",
                                headers={"Idempotency-Key": "revoke-again"})
        assert again.status_code == 409 and "already revoked" in again.json()["detail"]
        r = await anna.patch(f"/cases/{cid}/consents/{consent_id}", json={"expires_at": expires})
        assert r.status_code == 409
        assert (await anna.post(f"/cases/{cid}/consents/c99/revoke")).status_code == 404
        assert (await anna.post(f"/cases/{cid}/consents/x%20y/revoke")).status_code == 404
        # The coordinator heard nothing of their own revocations; the manager may revoke too.
        r = await mia.post(f"/cases/{cid}/consents", json={
            "member_id": "m2", "staff_ids": ["ole"], "expires_at": expires})
        newest = r.json()["consents"][-1]["id"]
        r = await mia.post(f"/cases/{cid}/consents/{newest}/revoke", json={"reason": "by phone"})
        assert r.status_code == 200 and r.json()["notices"][-1]["event"] == "consent_revoked"
        # Closed: 409.
        assert (await anna.post(f"/cases/{cid}/close", json={"reason": "moved_away"})).status_code == 200
        r = await anna.post(f"/cases/{cid}/consents", json={
            "member_id": "m2", "staff_ids": ["ole"], "expires_at": expires})
        assert r.status_code == 409, r.text


async def test_http_the_plan_waits_for_a_pending_consent_member(api) -> None:
    cid = await api.register(coordinated_handling=True, departments=["school"])
    now = datetime.now(UTC)
    async with api.as_("anna") as anna, api.as_("ole") as ole, api.as_("lise") as lise, \
            api.as_("admin") as admin:
        assert (await anna.post(f"/cases/{cid}/contacts",
                                json={"kind": "phone", "at": iso(now)})).status_code == 200
        r = await anna.post(f"/cases/{cid}/assessment/meeting", json={
            "at": iso(now + timedelta(days=3)), "location": "Town hall",
            "participants": ["anna", "lise", "ole", "family"]})
        assert r.status_code == 200, r.text
        assert (await anna.put(f"/cases/{cid}/assessment", json=ASSESSMENT)).status_code == 200
        assert (await anna.post(f"/cases/{cid}/assessment/complete")).status_code == 200
        assert (await anna.put(f"/cases/{cid}/plan", json=plan())).status_code == 200
        assert (await anna.post(f"/cases/{cid}/plan/votes",
                                json={"staff_id": "anna", "vote": "agree"})).status_code == 200
        r = await lise.post(f"/cases/{cid}/plan/votes", json={"staff_id": "lise", "vote": "agree"})
        assert r.status_code == 200 and r.json()["plans"][-1]["decision"] == "pending", r.text
        assert r.json()["blocked_on"]["what"] == "the family's consent to share with ole (adult_services)"
        r = await ole.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "agree"})
        assert r.status_code == 403 and r.json()["detail"] == NOT_CONSENTED
        r = await admin.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "agree"})
        assert r.status_code == 403 and "cannot vote" in r.json()["detail"], r.text

        # Nobody sent ole the invitation to the assessment meeting the others got.
        async def invited() -> set[str]:
            with Session(api.engine) as session:
                return set(session.exec(select(NotificationRow.recipient_id).where(
                    NotificationRow.case_id == cid,
                    NotificationRow.purpose == "assessment_meeting_invitation")).all())
        deadline = asyncio.get_running_loop().time() + 20
        while (got := await invited()) != {"anna", "lise", "family:1"}:
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.1)

        # The family's consent arrives: ole votes, the team's decision is made.
        expires = (now + timedelta(days=100)).date().isoformat()
        r = await anna.post(f"/cases/{cid}/consents", json={
            "member_id": "m2", "staff_ids": ["ole"], "expires_at": expires})
        assert r.status_code == 201, r.text
        assert r.json()["blocked_on"]["what"] == "team votes on plan v1"
        r = await ole.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "agree"})
        assert r.status_code == 200 and r.json()["plans"][-1]["decision"] == "team", r.text


async def test_http_the_plan_is_decided_when_the_pending_member_is_removed(api) -> None:
    cid = await api.register(coordinated_handling=True, departments=["school"])
    now = datetime.now(UTC)
    async with api.as_("anna") as anna, api.as_("lise") as lise:
        r = await anna.post(f"/cases/{cid}/assessment/meeting", json={
            "at": iso(now + timedelta(days=3)), "location": "Town hall",
            "participants": ["anna", "lise", "family"]})
        assert r.status_code == 200, r.text
        assert (await anna.put(f"/cases/{cid}/assessment", json=ASSESSMENT)).status_code == 200
        assert (await anna.post(f"/cases/{cid}/assessment/complete")).status_code == 200
        assert (await anna.put(f"/cases/{cid}/plan", json=plan())).status_code == 200
        for who, c in (("anna", anna), ("lise", lise)):
            r = await c.post(f"/cases/{cid}/plan/votes", json={"staff_id": who, "vote": "agree"})
            assert r.status_code == 200, r.text
        assert r.json()["plans"][-1]["decision"] == "pending"
        r = await anna.post(f"/cases/{cid}/team", json={"members": [TEAM["members"][1]]})
        assert r.status_code == 200 and r.json()["plans"][-1]["decision"] == "team", r.text
        assert r.json()["blocked_on"]["what"] == "family approval of plan v1"
