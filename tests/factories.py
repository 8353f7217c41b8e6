"""Shared test data builders: pure functions, no I/O, no clock, no Temporal.

`case_create_body()` is the DESIGN §5 example referral as a JSON-ready dict (what the API
accepts); `case_create()` is the same validated as `CaseCreate`. `actor()` / `ctx()` build the
caller and the command context of `domain.lifecycle`.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from domain import shared_policy
from domain.lifecycle import Ctx
from domain.policy import DK, Policy
from models.case import Actor, CaseAnswer, CaseCreate, CaseState

# A fixed, tz-aware instant (the DESIGN example's received_at) so tests never read the clock.
RECEIVED_AT = "2026-11-20T09:00:00Z"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

_CASE_CREATE: dict[str, Any] = {
    "referral": {
        "source": "school",
        "kind": "application",
        "received_at": RECEIVED_AT,
        "reason": "Needs coordinated support at home and school",
    },
    "family": {
        "name": "Family Jensen",
        "language": "da",
        "members": [
            {"name": "Emil", "role": "child", "birth_date": "2015-03-02", "diagnoses": ["ADHD"]},
            {"name": "Mette", "role": "parent", "birth_date": "1985-01-10", "phone": "+4521111111"},
        ],
    },
    "existing_contacts": [
        {"department": "adult_services", "caseworker": "Ole"},
        {"department": "school", "caseworker": "Lise"},
    ],
    "consent": {"coordinated_handling": True},
    "contact_preference": "normal",
}


def whole(answer: CaseAnswer) -> CaseState:
    """A command's answer as the whole case, its policy from this process's policies (the
    tests' workers run in the test process, so they have met it; api/gateway.py asks the case
    otherwise)."""
    policy = answer.policy or shared_policy.by_digest(answer.policy_digest)
    assert policy is not None, "the answer names a policy this process has not met"
    return answer.case(policy)


def case_create_body(**referral: Any) -> dict[str, Any]:
    """A valid `POST /api/v1/cases` body (a fresh copy every call).

    Keyword arguments override fields of `referral`, e.g.
    `case_create_body(kind="concern_report", received_at="2027-03-24T09:00:00Z")`.
    """
    body = copy.deepcopy(_CASE_CREATE)
    body["referral"].update(referral)
    return body


def case_create(**referral: Any) -> CaseCreate:
    return CaseCreate.model_validate(case_create_body(**referral))


def actor(actor_id: str, *roles: str) -> Actor:
    return Actor(id=actor_id, roles=list(roles))


def coordinator(actor_id: str = "anna") -> Actor:
    return actor(actor_id, "coordinator")


def manager(actor_id: str = "maria") -> Actor:
    return actor(actor_id, "manager")


def admin() -> Actor:
    return actor("admin", "admin")


def ctx(who: Actor, now: datetime = NOW, policy: Policy = DK) -> Ctx:
    return Ctx(actor=who, now=now, policy=policy)


# The staff the end-to-end tests register: two coordinators, a team member, a manager and the
# visitation committee.
def password_of(staff_id: str) -> str:
    """Test staff sign in with this password (local mode)."""
    return f"{staff_id}'s test password"


STAFF: list[dict[str, Any]] = [
    {"id": "anna", "name": "Anna Berg", "discipline": "social_worker",
     "department": "children_disability", "roles": ["coordinator"]},
    {"id": "bo", "name": "Bo Holm", "discipline": "social_worker",
     "department": "children_disability", "roles": ["coordinator"]},
    {"id": "ole", "name": "Ole Dam", "discipline": "adult_services",
     "department": "adult_services", "roles": ["team_member"]},
    {"id": "mia", "name": "Mia Lund", "discipline": "manager",
     "department": "children_disability", "roles": ["manager"]},
    {"id": "board", "name": "Committee", "discipline": "other",
     "department": "administration", "roles": ["committee"]},
]


def plan_body(child: str = "Emil", owner: str = "anna") -> dict[str, Any]:
    """A joint plan of 12000 a month funded by two departments: over the team's limit
    (10000), so the visitation committee decides it."""
    return {
        "family_goals": [f"{child} goes to school every day"],
        "goals": [{"id": "g1", "text": f"{child} attends school 5 days a week", "owner": owner}],
        "actions": [{"id": "a1", "goal_id": "g1", "text": "School adapts the timetable",
                     "owner": "school", "due": "2027-01-15"}],
        "services": [{"name": "Family therapy", "paragraph": "BL § 32",
                      "department": "children_disability", "monthly_cost": 12000,
                      "funding": [{"department": "children_disability", "share": 0.5},
                                  {"department": "adult_services", "share": 0.5}]}],
    }
