"""Need-to-know: the ONE access policy (DESIGN §9). Pure functions, no I/O.

Every endpoint, page, list, count, search, document, notification, report, the stuck list
and the codec ask these functions; nothing else decides who may see or do what. Lists turn
`case_scope()` into SQL in exactly one place (`api/scope.py`).

| who | may read | may do |
|---|---|---|
| admin | everything (audited) | every command |
| coordinator | cases they coordinate, unassigned cases of their unit | commands on those |
| core team member | a case they are on, while the family's consent covers them | vote, contacts, meetings |
| manager | every case of their unit | assign within the unit, cap override, nudge, reports |
| committee member | cases with an escalation item (open, or decided by them) | decide items |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain import consent
from models.case import Actor, CaseState

DEFAULT_UNIT = "children_disability"

NOT_YOUR_CASE = ("You do not work on this case: only its coordinator, its core team and the "
                 "unit's manager do.")
NOT_CONSENTED = "The family has not consented to share this case with you."


@dataclass(frozen=True)
class CaseFacts:
    """What the policy needs to know about one case, from the workflow state or the read
    model (both give the same facts)."""

    id: str
    unit: str = DEFAULT_UNIT
    coordinator_id: str | None = None
    team_ids: frozenset[str] = frozenset()
    # Committee: items waiting for a decision, and who decided the others.
    open_escalation: bool = False
    decided_by: frozenset[str] = frozenset()
    # Consent (DESIGN §11, domain/consent.py): team members no active consent of the family
    # covers for the case, and (a superset) for its documents.
    not_consented: frozenset[str] = frozenset()
    documents_not_consented: frozenset[str] = frozenset()


def facts_from_state(state: CaseState, unit: str | None = None,
                     now: datetime | None = None) -> CaseFacts:
    """`unit`: the case's unit as the read model resolved it (the coordinator's unit); the
    state alone knows only the unit it was registered in. `now`: a consent past its end
    covers nobody even before the workflow marked it expired (None: the recorded status)."""
    return CaseFacts(
        id=state.id,
        unit=unit or state.unit or DEFAULT_UNIT,
        coordinator_id=state.coordinator_id,
        team_ids=frozenset(m.staff_id for m in state.team),
        open_escalation=any(i.status == "waiting" for i in state.escalations),
        decided_by=frozenset(i.decided_by for i in state.escalations if i.decided_by),
        not_consented=consent.uncovered(state, consent.CASE, now),
        documents_not_consented=consent.uncovered(state, consent.DOCUMENTS, now),
    )


def unit_of(actor: Actor) -> str:
    return actor.unit or DEFAULT_UNIT


FAMILY_ROLE = "family"
NOT_YOUR_FAMILY = "This is not your family's case."
FAMILY_USE_PORTAL = "Family members see their case in the family portal (/family)."


def is_family(actor: Actor) -> bool:
    """A family member signed in to the portal (DESIGN §11): never staff, whatever else. Every
    function of this policy gives a family actor nothing but `family_refusal`'s own case."""
    return FAMILY_ROLE in actor.roles


def is_staff_role(actor: Actor, role: str) -> bool:
    return role in actor.roles and not is_family(actor)


def is_admin(actor: Actor) -> bool:
    return is_staff_role(actor, "admin")


def manages(actor: Actor, unit: str) -> bool:
    return is_staff_role(actor, "manager") and unit_of(actor) == unit


# ---------------------------------------------------------------- one case


def family_refusal(actor: Actor, case: CaseFacts) -> str | None:
    """The family's own view of a case: only the signed-in member's own case."""
    if not is_family(actor) or actor.case_id is None or actor.member_id is None:
        return NOT_YOUR_FAMILY
    return None if actor.case_id == case.id else NOT_YOUR_FAMILY


def read_refusal(actor: Actor, case: CaseFacts, what: str = "case") -> str | None:
    """None if `actor` may read the case's content (`what` = "documents": its documents);
    otherwise the sentence for the 403."""
    if is_family(actor):
        return FAMILY_USE_PORTAL  # the staff view of a case is never the family's
    if is_admin(actor) or manages(actor, case.unit):
        return None
    if actor.id == case.coordinator_id:
        return None
    if case.coordinator_id is None and "coordinator" in actor.roles and unit_of(actor) == case.unit:
        return None  # an unassigned case of their unit: they may take it
    if actor.id in case.team_ids:
        refused = case.documents_not_consented if what == "documents" else case.not_consented
        return NOT_CONSENTED if actor.id in refused else None
    if "committee" in actor.roles and (case.open_escalation or actor.id in case.decided_by):
        return None
    return NOT_YOUR_CASE


def may_read_case(actor: Actor, case: CaseFacts, what: str = "case") -> bool:
    return read_refusal(actor, case, what) is None


def command_refusal(actor: Actor, case: CaseFacts) -> str | None:
    """The gate before any command reaches the case: who may not read it may not change it.
    The workflow's rules then decide which command this reader may give (roles, stage)."""
    return read_refusal(actor, case)


def may_see_duplicates(actor: Actor, case: CaseFacts) -> bool:
    """A possible duplicate names other cases: only for the manager of the unit (and admin)."""
    return is_admin(actor) or manages(actor, case.unit)


def may_assign(actor: Actor, coordinator_unit: str) -> str | None:
    """A manager assigns coordinators of their own unit; admin any."""
    if is_family(actor):
        return FAMILY_USE_PORTAL
    if is_admin(actor) or "manager" not in actor.roles:
        return None  # admin: anything; others: the workflow's rule (take it yourself)
    if unit_of(actor) != coordinator_unit:
        return "A manager assigns coordinators of their own unit only."
    return None


def may_manage_case(actor: Actor, case: CaseFacts) -> bool:
    """Manager actions on a case (nudge, acknowledge a stuck reason): the manager of the
    case's unit, or admin."""
    return is_admin(actor) or manages(actor, case.unit)


def invite_refusal(actor: Actor, case: CaseFacts) -> str | None:
    """Inviting a family member to the portal (a sign-in link, DESIGN §11): the case's
    coordinator, the manager of its unit, or admin."""
    if is_family(actor):
        return FAMILY_USE_PORTAL
    if is_admin(actor) or manages(actor, case.unit) or actor.id == case.coordinator_id:
        return None
    return "Only the case's coordinator, the unit's manager or an administrator invites the family."


def may_read_audit(actor: Actor, case: CaseFacts | None) -> bool:
    if is_admin(actor):
        return True
    return case is not None and manages(actor, case.unit)


# ---------------------------------------------------------------- lists


@dataclass(frozen=True)
class CaseScope:
    """Which cases a list may show: `everything`, or the union of the parts."""

    everything: bool = False
    units: frozenset[str] = frozenset()  # every case of these units
    unassigned_in_units: frozenset[str] = frozenset()  # cases without a coordinator there
    staff_id: str | None = None  # cases they coordinate or are on the team of
    committee_member: str | None = None  # cases with an open item, or decided by them


def case_scope(actor: Actor) -> CaseScope:
    if is_family(actor):
        return CaseScope()  # staff lists show a family member nothing (the portal is theirs)
    if is_admin(actor):
        return CaseScope(everything=True)
    unit = unit_of(actor)
    return CaseScope(
        units=frozenset({unit}) if "manager" in actor.roles else frozenset(),
        unassigned_in_units=frozenset({unit}) if "coordinator" in actor.roles else frozenset(),
        staff_id=actor.id,
        committee_member=actor.id if "committee" in actor.roles else None,
    )


def report_scope(actor: Actor) -> CaseScope:
    """The cases behind a manager's figures (caseload, monthly report): every case for admin,
    the cases of their unit for a manager, none for anyone else."""
    if is_family(actor):
        return CaseScope()
    if is_admin(actor):
        return CaseScope(everything=True)
    if "manager" in actor.roles:
        return CaseScope(units=frozenset({unit_of(actor)}))
    return CaseScope()


def committee_scope(actor: Actor) -> CaseScope:
    """Whose committee items (agenda, meetings, decided funding) a reader of the committee
    sees: the committee and admin all of them, a manager those of their unit's cases."""
    if is_family(actor):
        return CaseScope()
    if is_admin(actor) or "committee" in actor.roles:
        return CaseScope(everything=True)
    return case_scope(actor)


def in_scope(scope: CaseScope, case: CaseFacts) -> bool:
    """The same decision as the SQL of `api/scope.py`, for lists built in Python."""
    if scope.everything or case.unit in scope.units:
        return True
    if case.coordinator_id is None and case.unit in scope.unassigned_in_units:
        return True
    if scope.staff_id is not None:
        if case.coordinator_id == scope.staff_id:
            return True
        if scope.staff_id in case.team_ids and scope.staff_id not in case.not_consented:
            return True
    member = scope.committee_member
    return member is not None and (case.open_escalation or member in case.decided_by)


# ---------------------------------------------------------------- everything else


def may_read_committee(actor: Actor) -> bool:
    """The committee's agenda, meetings and decided funding."""
    return is_admin(actor) or is_staff_role(actor, "committee") or is_staff_role(actor, "manager")


def may_read_caseload(actor: Actor) -> bool:
    return is_admin(actor) or is_staff_role(actor, "manager")


def may_read_reports(actor: Actor) -> bool:
    """The monthly report and the stuck overview: managers (of their unit) and admin."""
    return is_admin(actor) or is_staff_role(actor, "manager")


def non_case_refusal(actor: Actor, owner_id: str) -> str | None:
    """Documents that belong to no single case: the committee's (`committee-<id>`) for
    readers of the committee; the municipality's monthly report (`report-<yyyy-mm>`, the
    figures of every unit) for those whose report scope is everything."""
    if is_family(actor):
        return FAMILY_USE_PORTAL
    if owner_id.startswith("committee-"):
        return None if may_read_committee(actor) else "The committee's documents are for the committee."
    if owner_id.startswith("report-"):
        if report_scope(actor).everything:
            return None
        return "The municipality's report is for administrators; a manager reads their unit's on /reports."
    return NOT_YOUR_CASE


def may_change_policy(actor: Actor) -> bool:
    """The municipality's policy (caseload cap, deadlines) is the administrator's."""
    return is_admin(actor)


def may_decrypt(actor: Actor) -> bool:
    """The codec: decrypted payloads are case content; admins only, each case audited."""
    return is_admin(actor)


def may_see_contact_details(actor: Actor, staff_unit: str, staff_id: str) -> bool:
    """Phone numbers and e-mail addresses in the staff directory."""
    if is_family(actor):
        return False
    return is_admin(actor) or actor.id == staff_id or manages(actor, staff_unit)


def grant_refusal(actor: Actor, roles: Iterable[str], unit: str) -> str | None:
    """Only admin grants admin; only admin or a manager of the unit grants other roles."""
    roles = set(roles)
    if is_family(actor):
        return FAMILY_USE_PORTAL
    if is_admin(actor):
        return None
    if "admin" in roles:
        return "Only an administrator can grant the admin role."
    if "manager" in actor.roles and unit_of(actor) == unit:
        return None
    if "manager" in actor.roles:
        return "A manager registers staff of their own unit only."
    return "Only an administrator or a manager of the unit registers staff."


def may_manage_staff(actor: Actor, staff_unit: str, staff_roles: Iterable[str] = ()) -> bool:
    """Deactivate, reset passwords: admin, or the manager of the staff member's unit (never
    of an administrator)."""
    if is_admin(actor):
        return True
    return manages(actor, staff_unit) and "admin" not in set(staff_roles)
