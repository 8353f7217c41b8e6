"""The one access policy (domain/access.py, DESIGN §9): every row of the need-to-know table,
and the SQL form of list scopes (api/scope.py) deciding exactly as the Python form."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from api.scope import load_facts, scope_clause
from domain.access import (
    NOT_CONSENTED,
    NOT_YOUR_CASE,
    CaseFacts,
    CaseScope,
    case_scope,
    command_refusal,
    committee_scope,
    facts_from_state,
    grant_refusal,
    in_scope,
    may_assign,
    may_change_policy,
    may_decrypt,
    may_manage_case,
    may_manage_staff,
    may_read_audit,
    may_read_case,
    may_read_caseload,
    may_read_committee,
    may_read_reports,
    may_see_contact_details,
    may_see_duplicates,
    non_case_refusal,
    read_refusal,
    report_scope,
)
from domain.lifecycle import new_case
from models.case import Actor
from models.db import get_engine
from models.tables import CaseRow, CommitteeItemRow
from settings import Settings
from tests.factories import case_create, ctx

A, B = "unit_a", "unit_b"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def who(staff_id: str, *roles: str, unit: str | None = A) -> Actor:
    return Actor(id=staff_id, roles=list(roles), unit=unit)


ADMIN = who("admin", "admin", unit=None)
ANNA = who("anna", "coordinator")           # coordinator, unit A
BO = who("bo", "coordinator")               # another coordinator of unit A
CARL = who("carl", "coordinator", unit=B)   # a coordinator of unit B
OLE = who("ole", "team_member")
MIA = who("mia", "manager")                 # manager of unit A
MADS = who("mads", "manager", unit=B)       # manager of unit B
KAREN = who("karen", "committee", unit=None)
KNUD = who("knud", "committee", unit=None)
NOBODY = who("eve", "team_member")

UNASSIGNED = CaseFacts(id="c-unassigned", unit=A)
ANNAS = CaseFacts(id="c-anna", unit=A, coordinator_id="anna", team_ids=frozenset({"anna", "ole"}))
ESCALATED = CaseFacts(id="c-esc", unit=A, coordinator_id="anna", team_ids=frozenset({"anna"}),
                      open_escalation=True)
DECIDED_BY_KAREN = CaseFacts(id="c-dec", unit=A, coordinator_id="anna", decided_by=frozenset({"karen"}))
OF_UNIT_B = CaseFacts(id="c-b", unit=B, coordinator_id="carl", team_ids=frozenset({"carl", "ole"}))
UNASSIGNED_B = CaseFacts(id="c-unassigned-b", unit=B)
NO_CONSENT_FOR_OLE = CaseFacts(id="c-consent", unit=A, coordinator_id="anna",
                               team_ids=frozenset({"anna", "ole"}), not_consented=frozenset({"ole"}))
CASES = [UNASSIGNED, ANNAS, ESCALATED, DECIDED_BY_KAREN, OF_UNIT_B, UNASSIGNED_B, NO_CONSENT_FOR_OLE]
ACTORS = [ADMIN, ANNA, BO, CARL, OLE, MIA, MADS, KAREN, KNUD, NOBODY]


def readable(actor: Actor) -> set[str]:
    return {c.id for c in CASES if may_read_case(actor, c)}


# ---------------------------------------------------------------- admin


def test_admin_reads_every_case_and_may_do_everything() -> None:
    assert readable(ADMIN) == {c.id for c in CASES}
    assert case_scope(ADMIN).everything and report_scope(ADMIN).everything
    assert all(command_refusal(ADMIN, c) is None for c in CASES)
    assert all(may_see_duplicates(ADMIN, c) and may_manage_case(ADMIN, c) for c in CASES)
    assert may_change_policy(ADMIN) and may_decrypt(ADMIN)
    assert may_read_committee(ADMIN) and may_read_caseload(ADMIN) and may_read_reports(ADMIN)
    assert may_assign(ADMIN, B) is None and may_read_audit(ADMIN, None)
    assert grant_refusal(ADMIN, ["admin"], A) is None
    assert non_case_refusal(ADMIN, "report-2026-11") is None
    assert non_case_refusal(ADMIN, "committee-main-1") is None


# ---------------------------------------------------------------- coordinator


def test_coordinator_reads_their_cases_and_unassigned_cases_of_their_unit() -> None:
    assert readable(ANNA) == {"c-unassigned", "c-anna", "c-esc", "c-dec", "c-consent"}
    # Another coordinator of the unit: only the unassigned case (to take it).
    assert readable(BO) == {"c-unassigned"}
    assert readable(CARL) == {"c-b", "c-unassigned-b"}
    assert read_refusal(BO, ANNAS) == NOT_YOUR_CASE
    assert command_refusal(BO, ANNAS) == NOT_YOUR_CASE
    assert command_refusal(BO, UNASSIGNED) is None  # may take it (the workflow checks how)
    assert command_refusal(CARL, UNASSIGNED) == NOT_YOUR_CASE  # not of their unit


def test_coordinator_sees_no_duplicates_reports_committee_or_policy() -> None:
    assert not any(may_see_duplicates(ANNA, c) for c in CASES)
    assert not may_read_committee(ANNA) and not may_read_caseload(ANNA)
    assert not may_read_reports(ANNA) and not may_change_policy(ANNA) and not may_decrypt(ANNA)
    assert not may_manage_case(ANNA, ANNAS)
    assert report_scope(ANNA) == CaseScope()
    assert may_assign(ANNA, A) is None  # the workflow's rule: take it yourself
    assert non_case_refusal(ANNA, "committee-main-1") and non_case_refusal(ANNA, "report-2026-11")
    assert grant_refusal(ANNA, ["coordinator"], A) is not None


# ---------------------------------------------------------------- core team member


def test_team_member_reads_a_case_they_are_on_while_consent_covers_them() -> None:
    assert readable(OLE) == {"c-anna", "c-b"}
    assert read_refusal(OLE, NO_CONSENT_FOR_OLE) == NOT_CONSENTED
    assert command_refusal(OLE, NO_CONSENT_FOR_OLE) == NOT_CONSENTED
    assert readable(NOBODY) == set()
    assert not may_read_committee(OLE) and not may_read_caseload(OLE) and not may_read_reports(OLE)


# ---------------------------------------------------------------- manager


def test_manager_reads_every_case_of_their_unit_only() -> None:
    unit_a = {c.id for c in CASES if c.unit == A}
    assert readable(MIA) == unit_a
    assert readable(MADS) == {"c-b", "c-unassigned-b"}
    assert read_refusal(MADS, ANNAS) == NOT_YOUR_CASE
    assert command_refusal(MADS, ANNAS) == NOT_YOUR_CASE  # cannot close, decide, assign


def test_manager_assigns_coordinators_of_their_unit_and_acts_on_its_cases() -> None:
    assert may_assign(MIA, A) is None
    assert may_assign(MIA, B) == "A manager assigns coordinators of their own unit only."
    assert may_manage_case(MIA, ANNAS) and not may_manage_case(MADS, ANNAS)
    assert may_see_duplicates(MIA, ANNAS) and not may_see_duplicates(MADS, ANNAS)
    assert may_read_audit(MIA, ANNAS) and not may_read_audit(MADS, ANNAS)
    assert may_read_caseload(MIA) and may_read_reports(MIA) and may_read_committee(MIA)
    assert report_scope(MIA) == CaseScope(units=frozenset({A}))
    assert committee_scope(MIA) == case_scope(MIA)  # the committee items of their unit only


def test_manager_never_changes_policy_decrypts_or_creates_admins() -> None:
    assert not may_change_policy(MIA) and not may_decrypt(MIA)
    assert grant_refusal(MIA, ["admin"], A) == "Only an administrator can grant the admin role."
    assert grant_refusal(MIA, ["coordinator"], A) is None
    assert grant_refusal(MIA, ["coordinator"], B) == "A manager registers staff of their own unit only."
    assert may_manage_staff(MIA, A) and not may_manage_staff(MIA, B)
    assert not may_manage_staff(MIA, A, ["admin"])
    assert may_see_contact_details(MIA, A, "bo") and not may_see_contact_details(MIA, B, "carl")
    # The municipality's report holds every unit's figures: a manager reads their unit's.
    assert non_case_refusal(MIA, "report-2026-11") is not None
    assert non_case_refusal(MIA, "committee-main-1") is None


# ---------------------------------------------------------------- committee member


def test_committee_member_reads_escalated_cases_open_or_decided_by_them() -> None:
    assert readable(KAREN) == {"c-esc", "c-dec"}
    assert readable(KNUD) == {"c-esc"}  # Karen's decided item is not Knud's
    assert read_refusal(KAREN, ANNAS) == NOT_YOUR_CASE
    assert command_refusal(KAREN, ESCALATED) is None  # decide the item
    assert may_read_committee(KAREN) and committee_scope(KAREN).everything
    assert not may_read_caseload(KAREN) and not may_read_reports(KAREN)
    assert not any(may_see_duplicates(KAREN, c) for c in CASES)
    assert non_case_refusal(KAREN, "committee-main-1") is None


def test_non_case_owner_ids_that_are_neither_are_refused() -> None:
    assert non_case_refusal(ADMIN, "something-else") == NOT_YOUR_CASE


# ---------------------------------------------------------------- lists decide as reads do


def test_list_scope_agrees_with_the_read_rule_for_everyone() -> None:
    for actor, case in itertools.product(ACTORS, CASES):
        assert in_scope(case_scope(actor), case) == may_read_case(actor, case), (actor.id, case.id)


def test_facts_from_state_carry_unit_team_and_escalations() -> None:
    state = new_case("9b1c0000-0000-4000-8000-000000000001", case_create(),
                     ctx(Actor(id="mia", roles=["manager"], unit=B)))
    facts = facts_from_state(state)
    assert facts.unit == B and facts.coordinator_id is None and not facts.open_escalation
    assert facts_from_state(state, unit=A).unit == A  # the read model's resolved unit wins


# ---------------------------------------------------------------- the SQL form


@pytest.fixture
def engine(settings: Settings):
    engine = get_engine(settings.db_url)
    rows = [
        *CASES,
        # Ids that a LIKE pattern or a case-insensitive match would confuse with others.
        CaseFacts(id="c-underscore", unit=B, coordinator_id="carl", team_ids=frozenset({"an_a"})),
        CaseFacts(id="c-upper", unit=B, coordinator_id="carl", team_ids=frozenset({"ANNA"})),
    ]
    with Session(engine) as session:
        for f in rows:
            team = ",".join(sorted(f.team_ids | ({f.coordinator_id} if f.coordinator_id else set())))
            session.add(CaseRow(
                id=f.id, version=1, stage="referred", coordinator_id=f.coordinator_id, unit=f.unit,
                family_name="Family", search_text="", team_text=f",{team},", received_at=NOW,
                created_at=NOW, stage_since=NOW, document={}, updated_at=NOW))
            if f.open_escalation:
                session.add(CommitteeItemRow(id=f"{f.id}-1", case_id=f.id, plan_version=1,
                                             escalated_at=NOW, status="waiting"))
            for by in f.decided_by:
                session.add(CommitteeItemRow(id=f"{f.id}-2", case_id=f.id, plan_version=1,
                                             escalated_at=NOW, status="decided", decided_by=by))
        session.commit()
    return engine


def test_scope_clause_selects_exactly_what_in_scope_accepts(engine) -> None:
    lookalikes = [who("an_a", "team_member"), who("ANNA", "team_member"), who("a%", "coordinator")]
    with Session(engine) as session:
        ids = session.exec(select(CaseRow.id)).all()
        facts = {i: load_facts(session, i) for i in ids}
        for actor in [*ACTORS, *lookalikes]:
            scope = case_scope(actor)
            selected = set(session.exec(select(CaseRow.id).where(scope_clause(scope))).all())
            expected = {i for i, f in facts.items() if in_scope(scope, f)}
            assert selected == expected, actor.id
    # The look-alikes see only the case that names them exactly.
    with Session(engine) as session:
        def sees(actor: Actor) -> set[str]:
            return set(session.exec(select(CaseRow.id).where(scope_clause(case_scope(actor)))).all())
        assert sees(lookalikes[0]) == {"c-underscore"}
        assert sees(lookalikes[1]) == {"c-upper"}
        assert "c-anna" not in sees(lookalikes[0]) | sees(lookalikes[1])


def test_load_facts_reads_unit_team_and_committee_items(engine) -> None:
    with Session(engine) as session:
        assert load_facts(session, "nope") is None
        esc = load_facts(session, "c-esc")
        dec = load_facts(session, "c-dec")
    assert esc.open_escalation and esc.unit == A and esc.coordinator_id == "anna"
    assert dec.decided_by == frozenset({"karen"}) and not dec.open_escalation
