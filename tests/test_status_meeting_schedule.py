"""Planning the next status meeting: pre-meeting contact with the family, invitations."""

from __future__ import annotations

from datetime import timedelta

from domain import effects
from models.case import DeadlineKind, DeadlineStatus
from tests.factories import NOW
from tests.test_domain_lifecycle import ANNA, BO, active, iso, refuse, run


def _pre_meeting(state):
    return [d for d in state.deadlines if d.kind is DeadlineKind.pre_meeting_contact]


def test_scheduling_starts_the_pre_meeting_contact_and_invites() -> None:
    state = active()
    at = NOW + timedelta(days=14)
    run(state, "schedule_status_meeting", ANNA,
        {"at": iso(at), "location": "Family home", "participants": ["anna", "ole", "family"]})
    assert state.planned_meeting.number == 1 and state.planned_meeting.sequence == 0
    open_ones = [d for d in _pre_meeting(state) if d.status is DeadlineStatus.open]
    assert [d.due_at for d in open_ones] == [at]

    pending = effects.pending(state, set())
    invites = [e.notification for e in pending
               if e.notification and e.notification.purpose == "status-1_invitation"]
    assert {n.recipient.id for n in invites} >= {"anna", "ole", "family:1"}
    assert all(n.invite.uid.endswith("-status-1@onefamily") for n in invites)

    # Moving it re-invites with a higher SEQUENCE and one open pre-meeting contact.
    later = at + timedelta(days=2)
    run(state, "schedule_status_meeting", ANNA,
        {"at": iso(later), "location": "Town hall", "participants": ["anna", "family"]})
    assert state.planned_meeting.sequence == 1
    assert [d.due_at for d in _pre_meeting(state) if d.status is DeadlineStatus.open] == [later]
    done = {e.key for e in pending}
    again = [e for e in effects.pending(state, done) if e.notification
             and e.notification.purpose == "status-1_invitation"]
    assert again and all(e.notification.invite.sequence == 1 for e in again)

    # A call with the family before the meeting meets the clock; holding the meeting clears it.
    run(state, "record_contact", ANNA, {"kind": "phone", "at": iso(NOW + timedelta(hours=1))},
        now=NOW + timedelta(hours=2))
    assert [d.status for d in _pre_meeting(state)][-1] is DeadlineStatus.met
    run(state, "status_meeting", ANNA, {"at": iso(later), "participants": ["anna", "family"]},
        now=later + timedelta(hours=2))
    assert state.planned_meeting is None


def test_scheduling_refusals() -> None:
    state = active()
    refuse(state, "schedule_status_meeting", ANNA,
           {"at": iso(NOW - timedelta(days=1)), "location": "x", "participants": ["anna"]},
           kind="invalid", match="in the future")
    refuse(state, "schedule_status_meeting", BO,
           {"at": iso(NOW + timedelta(days=1)), "location": "x", "participants": ["anna"]},
           kind="forbidden", match="coordinator")
