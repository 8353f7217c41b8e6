"""Writing a case to the read model: idempotent, ordered by the case's version (DESIGN §4).
Used by the API (every command's answer), the projection activity (the safety net) and
`rebuild.py`; an SQL module of its own, so the API imports no activity module."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select, update

from domain import consent, shared_policy
from domain import deadlines as dl
from domain.access import DEFAULT_UNIT
from models import sealed
from models.case import CaseState, Stage
from models.policy import Policy
from models.tables import CasePersonRow, CaseRow, CommitteeItemRow, StaffRow
from models.tables_outbox import NotificationRow

# Outbox rows not sent yet: cancelled when the family's consent stops covering their recipient.
UNSENT = ("queued", "failed", "deferred")
CANCELLED = "cancelled"


def person_key(name: str, birth_date: object) -> str:
    """What `case_persons.person_key` stores: a keyed hash of "name|birthdate" (the name
    normalised as for `q`), never the name itself (DESIGN §9 "Files at rest")."""
    return sealed.person_hashes(name, birth_date)[0]


def legacy_person_key(name: str, birth_date: object) -> str:
    """The plaintext key of rows projected before hashing: matched until the case is projected
    again, so an existing data dir keeps flagging duplicates."""
    return f"{' '.join(name.lower().split())}|{birth_date or ''}"


CASES = CaseRow.__table__
PERSONS = CasePersonRow.__table__


def _ids(ids: frozenset[str]) -> str:
    return "," + ",".join(sorted(ids)) + "," if ids else ""


def case_values(state: CaseState, now: datetime, unit: str | None = None,
                document: object = None) -> dict:
    """The read-model row of a case as column values. `document` defaults to the state as a
    JSON text serialised once by pydantic (`sealed.JSONText`): the sealed column takes it as
    it is instead of building a dict and serialising it again (issue 13, speed)."""
    blocked = state.blocked_on
    contacts = [c.at for c in state.contacts]
    names = [state.family.name, *(m.name for m in state.family.members)]
    return dict(
        id=state.id,
        version=state.version,
        stage=state.stage.value,
        coordinator_id=state.coordinator_id,
        unit=unit or state.unit or DEFAULT_UNIT,
        family_name=state.family.name,
        search_text=sealed.name_hashes(names),
        team_text="," + ",".join(state.team_ids) + ",",
        uncovered_text=_ids(consent.uncovered(state, consent.CASE, now)),
        uncovered_documents_text=_ids(consent.uncovered(state, consent.DOCUMENTS, now)),
        consent_until=consent.next_expiry(state, now),
        received_at=state.referral.received_at,
        created_at=state.created_at,
        stage_since=state.stage_since,
        next_due_at=dl.next_due(state),
        blocked_what=blocked.what if blocked else None,
        blocked_owner=blocked.owner if blocked else None,
        blocked_since=blocked.since if blocked else None,
        closed_at=state.closure.at if state.closure else None,
        last_contact_at=max(contacts) if contacts else None,
        document=document if document is not None else sealed.JSONText(state.model_dump_json()),
        updated_at=now,
    )


def case_row(state: CaseState, now: datetime, unit: str | None = None) -> CaseRow:
    return CaseRow(**case_values(state, now, unit, document=state.model_dump(mode="json")))


def _split(text: str | None) -> frozenset[str]:
    return frozenset(t for t in (text or "").split(",") if t)


# policy_key -> (a policy as a document stores it, that policy validated): a document's policy is
# ~9.5 KB of its ~12 KB and the same in most cases, so it is validated once per content.
_DOCUMENT_POLICIES: OrderedDict[str, tuple[dict, Policy]] = OrderedDict()
_DOCUMENT_POLICIES_KEPT = 16
_document_policies_lock = threading.Lock()


def case_from_document(document: dict) -> CaseState:
    """A read-model document as the case it holds (what `case_values` stored). The same as
    `CaseState.model_validate(document)`, but the policy of an equal stored policy (a dict
    comparison) is the object validated before (issue 13: the stuck index and the reports read
    every changed or reported case's document)."""
    raw, key = document.get("policy"), document.get("policy_key")
    if isinstance(raw, dict) and isinstance(key, str):
        with _document_policies_lock:
            hit = _DOCUMENT_POLICIES.get(key)
        if hit is not None and hit[0] == raw:
            policy = hit[1]
        else:
            policy = shared_policy.shared(Policy.model_validate(raw))
            with _document_policies_lock:
                _DOCUMENT_POLICIES[key] = (raw, policy)
                _DOCUMENT_POLICIES.move_to_end(key)
                while len(_DOCUMENT_POLICIES) > _DOCUMENT_POLICIES_KEPT:
                    _DOCUMENT_POLICIES.popitem(last=False)
        document = {**document, "policy": policy}
    return CaseState.model_validate(document)


def uncovered_of_row(row: CaseRow, now: datetime) -> tuple[frozenset[str], frozenset[str]]:
    """Team members the family's consent does not cover (for the case, for its documents) as
    of `now`, from the read model: the projected columns while no consent has ended since;
    afterwards computed from the case's document itself, so an expiry the workflow has not
    projected yet already counts."""
    until = row.consent_until
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    if until is None or now < until or not row.document:
        return _split(row.uncovered_text), _split(row.uncovered_documents_text)
    state = case_from_document(row.document)
    return (consent.uncovered(state, consent.CASE, now),
            consent.uncovered(state, consent.DOCUMENTS, now))


def cancel_unsent(session: Session, case_id: str, recipients: frozenset[str], now: datetime) -> int:
    """Messages about the case waiting in the outbox for people the family's consent no
    longer covers are not sent: cancelled (DESIGN §11)."""
    if not recipients:
        return 0
    return session.exec(
        update(NotificationRow)
        .where(NotificationRow.case_id == case_id, NotificationRow.recipient_id.in_(sorted(recipients)),
               NotificationRow.status.in_(UNSENT),
               # A meeting's CANCEL to them still goes: it only takes back an invitation.
               NotificationRow.purpose.not_like("%\\_cancelled", escape="\\"))
        .values(status=CANCELLED, lease_until=None, updated_at=now,
                last_error="cancelled: the family's consent does not cover the recipient")
    ).rowcount


def case_unit(session: Session, state: CaseState) -> str:
    """A case belongs to its coordinator's unit; before assignment to the referral's."""
    if state.coordinator_id:
        unit = session.exec(select(StaffRow.unit).where(StaffRow.id == state.coordinator_id)).first()
        if unit:
            return unit
    return state.unit or DEFAULT_UNIT


_STORED_VERSION = select(CASES.c.version).where(CASES.c.id == bindparam("case_id"))
# SET is every column of the values passed at execution (all of `case_values`).
_NEWER = CASES.update().where(CASES.c.id == bindparam("case_id"),
                              CASES.c.version < bindparam("older_than"))
_PERSON_KEYS = select(PERSONS.c.person_key).where(PERSONS.c.case_id == bindparam("case_id"))


def write_case(session: Session, state: CaseState, now: datetime) -> bool:
    """Upsert the case unless the stored version is already as new. Returns True if written.

    The API and the projection activity both write: the version check is one conditional
    UPDATE, so of two racing writers the older version can never win."""
    # Most calls find the version already there (the API writes every command's answer; the
    # workflow's activity is the safety net): one indexed SELECT instead of building, sealing
    # and serialising the whole row first (issue 13, speed).
    # SQLAlchemy Core on the tables below: the ORM's statement handling cost more than the
    # writes themselves (profile of a command, issue 13); the column types (sealing) still apply.
    # The statements are built once (module level, bound parameters): building them per call
    # (coercing ~20 values, a cache key each time) cost more than executing them.
    conn = session.connection()
    stored = conn.execute(_STORED_VERSION, {"case_id": state.id}).scalar()
    if stored is not None and stored >= state.version:
        return False
    values = case_values(state, now, case_unit(session, state))
    if stored is not None:
        updated = conn.execute(_NEWER, {**values, "case_id": state.id,
                                        "older_than": state.version}).rowcount
        if not updated:  # another writer stored this version or a newer one meanwhile
            return False
    else:
        try:
            with conn.begin_nested():
                conn.execute(CASES.insert(), values)
        except IntegrityError:  # another writer inserted it first: its version decides
            return write_case(session, state, now)
    cancel_unsent(session, state.id, _split(values["uncovered_text"]), now)
    wanted = sorted({person_key(m.name, m.birth_date) for m in state.family.members}
                    if state.stage is not Stage.closed else ())
    stored_keys = conn.execute(_PERSON_KEYS, {"case_id": state.id}).scalars()
    if sorted(stored_keys) != wanted:  # most commands change no family member: nothing to write
        conn.execute(PERSONS.delete().where(PERSONS.c.case_id == state.id))
        if wanted:
            conn.execute(PERSONS.insert(), [{"case_id": state.id, "person_key": k} for k in wanted])
    for item in state.escalations:
        plan = next((p for p in state.plans if p.version == item.plan_version), None)
        existing = session.get(CommitteeItemRow, item.id)
        values = dict(
            case_id=item.case_id,
            plan_version=item.plan_version,
            reasons=item.reasons,
            escalated_at=item.escalated_at,
            status=item.status,
            decision=item.decision.value if item.decision else None,
            decided_at=item.decided_at,
            decided_by=item.decided_by,
            funding=[f.model_dump() for f in item.funding],
            monthly_total=sum(s.monthly_cost for s in plan.services) if plan else 0,
        )
        if existing is None:
            # The case predicts the meeting; the committee records the one that took it.
            session.add(CommitteeItemRow(id=item.id, meeting_at=item.meeting_at, **values))
        else:
            for field, value in values.items():
                setattr(existing, field, value)
    return True


def open_case_ids_for_person(session: Session, name: str, birth_date: object) -> list[str]:
    keys = [*sealed.person_hashes(name, birth_date), legacy_person_key(name, birth_date)]
    return list(session.exec(select(CasePersonRow.case_id).where(CasePersonRow.person_key.in_(keys))))
