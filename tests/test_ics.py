"""Meeting invitations that real calendars accept (issue 11 point 3): REQUEST on planning and
on every move (same UID, SEQUENCE up), CANCEL when the case closes with the meeting ahead or
an invitee leaves the team, a rule-based VTIMEZONE, the coordinator as ORGANIZER — read back
with a second, independent parser (vobject), in winter and in summer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import vobject
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from domain import effects
from domain.ics import build_ics, vtimezone
from domain.lifecycle import execute, new_case
from models.commands import CommandInput
from models.db import get_engine
from models.messaging import MeetingInvite, Recipient, RecipientRole
from models.tables import StaffRow
from models.tables_outbox import NotificationRow
from tests.conftest import running_worker, save_history
from tests.factories import admin, case_create, coordinator, ctx
from tests.test_workflow_lifecycle import ADMIN, ANNA, cmd, start_case
from workflows.case import FamilyCaseWorkflow

ORGANIZER = "Anna Berg <anna@kommune.example>"
METTE = Recipient(role=RecipientRole.family, id="family:1", name="Mette", email="mette@example.org")


def _parse(text: str):
    """vobject's reading of `text` from ITS OWN VTIMEZONE: vobject keeps one process-wide
    TZID registry (first VTIMEZONE wins, else pytz's zone by name), emptied here so that the
    rules in this file are the ones applied."""
    registry = getattr(vobject.icalendar, "__tzidMap")
    registry.clear()
    registry["UTC"] = vobject.icalendar.utc
    cal = vobject.readOne(text)
    start = getattr(cal.vevent.dtstart.value, "tzinfo", None)
    assert type(start).__name__ == "_tzicalvtz", "read from the file's VTIMEZONE"
    return cal


@pytest.mark.parametrize(("tz", "utc", "local"), [
    ("Europe/Copenhagen", datetime(2027, 1, 14, 9, 0, tzinfo=UTC), "10:00"),   # winter, +01:00
    ("Europe/Copenhagen", datetime(2027, 7, 14, 8, 0, tzinfo=UTC), "10:00"),   # summer, +02:00
    ("Europe/Stockholm", datetime(2027, 1, 14, 13, 30, tzinfo=UTC), "14:30"),
    ("Europe/Stockholm", datetime(2027, 7, 14, 12, 30, tzinfo=UTC), "14:30"),
    # The first week of each season (the last Sunday of March / October 2027: 28th / 31st):
    ("Europe/Copenhagen", datetime(2027, 3, 29, 8, 0, tzinfo=UTC), "10:00"),
    ("Europe/Copenhagen", datetime(2027, 11, 1, 9, 0, tzinfo=UTC), "10:00"),
])
def test_an_independent_parser_reads_the_local_time(tz: str, utc: datetime, local: str) -> None:
    invite = MeetingInvite(uid="c1-status-1@onefamily", start=utc, end=utc + timedelta(hours=1),
                           summary="Status meeting 1", location="Rådhuset", sequence=3, tz=tz)
    cal = _parse(build_ics(invite, ORGANIZER, METTE, utc))
    event = cal.vevent
    start = event.dtstart.value
    assert start.strftime("%H:%M") == local  # the wall clock the parser shows
    assert start.astimezone(UTC) == utc  # and the same instant
    assert start.utcoffset() == utc.astimezone(ZoneInfo(tz)).utcoffset()
    assert event.dtend.value.astimezone(UTC) == utc + timedelta(hours=1)
    assert cal.method.value == "REQUEST"
    assert event.sequence.value == "3" and event.uid.value == "c1-status-1@onefamily"
    assert event.organizer.value == "mailto:anna@kommune.example"
    assert event.organizer.params["CN"] == ["Anna Berg"]
    assert event.attendee.value == "mailto:mette@example.org"


def test_the_vtimezone_is_rules_not_a_list_of_dates() -> None:
    invite = MeetingInvite(uid="u@onefamily", start=datetime(2027, 7, 1, 8, tzinfo=UTC),
                           end=datetime(2027, 7, 1, 9, tzinfo=UTC), summary="S",
                           tz="Europe/Copenhagen")
    text = build_ics(invite, ORGANIZER, None, invite.start)
    block = text[text.index("BEGIN:VTIMEZONE"):text.index("END:VTIMEZONE")]
    assert "RDATE" not in block
    assert block.count("RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3") == 1
    assert block.count("RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10") == 1
    assert "DTSTART:19700329T020000" in block and "DTSTART:19701025T030000" in block
    # The parser applies these rules (not a zone it knows by name): a wrong rule shows.
    wrong = text.replace("BYMONTH=3", "BYMONTH=8")
    assert _parse(wrong).vevent.dtstart.value.astimezone(UTC) == invite.start + timedelta(hours=1)
    # The same rules hold in another year: vobject applies them to 2031 as well.
    late = invite.model_copy(update={"start": datetime(2031, 7, 1, 8, tzinfo=UTC),
                                     "end": datetime(2031, 7, 1, 9, tzinfo=UTC)})
    late_text = build_ics(late, ORGANIZER, None, invite.start)
    assert _parse(late_text).vevent.dtstart.value.astimezone(UTC) == late.start


def test_a_zone_without_daylight_saving_gets_one_standard_component() -> None:
    component = vtimezone("Atlantic/Reykjavik", 2027)
    assert [c.name for c in component.subcomponents] == ["STANDARD"]


def test_a_cancel_is_a_cancel() -> None:
    utc = datetime(2027, 7, 14, 8, 0, tzinfo=UTC)
    invite = MeetingInvite(uid="u@onefamily", start=utc, end=utc + timedelta(hours=1),
                           summary="S", method="CANCEL", sequence=2)
    cal = _parse(build_ics(invite, "OneFamily <noreply@kommune.example>", None, utc))
    assert cal.method.value == "CANCEL" and cal.vevent.status.value == "CANCELLED"
    assert cal.vevent.sequence.value == "2"
    assert cal.vevent.organizer.params["CN"] == ["OneFamily"]


# ---------------------------------------------------------------- which invitations go out

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MEMBERS = [{"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"},
           {"staff_id": "per", "discipline": "school_psychologist", "department": "school"}]


def _run(state, name: str, body: dict | None, minutes: int, who=None) -> None:
    execute(state, name, CommandInput(actor=who or coordinator(), body=body),
            ctx(who or coordinator(), NOW + timedelta(minutes=minutes)))


def _handed_over(state, done: set[str]) -> list:
    """Hand every pending invitation over (as the workflow does); return them."""
    out = [e.notification for e in effects.pending(state, done, True, True)
           if e.notification is not None and e.notification.invite is not None]
    done.update(n.key for n in out)
    return out


def test_request_on_planning_and_moves_cancel_on_leaving_and_closing() -> None:
    state = new_case("3f2c9a1e-1111-4222-8333-444455556666", case_create(), ctx(admin()), [])
    _run(state, "assign_coordinator", {"coordinator_id": "anna"}, 0, admin())
    _run(state, "form_team", {"members": MEMBERS}, 1)
    at = (NOW + timedelta(days=10)).isoformat()
    _run(state, "schedule_assessment_meeting", {"at": at, "location": "Town hall",
                                                "participants": ["anna", "ole", "per", "family"]}, 2)
    done: set[str] = set()
    first = _handed_over(state, done)
    assert {(n.recipient.id, n.invite.method, n.invite.sequence) for n in first} == {
        ("anna", "REQUEST", 0), ("ole", "REQUEST", 0), ("per", "REQUEST", 0),
        ("family:1", "REQUEST", 0)}
    assert {n.invite.organizer_id for n in first} == {"anna"}
    later = (NOW + timedelta(days=11)).isoformat()
    _run(state, "schedule_assessment_meeting", {"at": later, "location": "Town hall",
                                                "participants": ["anna", "ole", "per", "family"]}, 3)
    moved = _handed_over(state, done)
    assert {(n.recipient.id, n.invite.sequence) for n in moved} == {
        ("anna", 1), ("ole", 1), ("per", 1), ("family:1", 1)}
    assert {n.invite.uid for n in first} == {n.invite.uid for n in moved}
    # Per leaves the team: he alone gets the CANCEL, once.
    _run(state, "form_team", {"members": MEMBERS[:1]}, 4)
    left = _handed_over(state, done)
    assert [(n.recipient.id, n.invite.method, n.invite.sequence) for n in left] == [
        ("per", "CANCEL", 2)]
    assert _handed_over(state, done) == []
    _run(state, "close", {"reason": "family_withdrew"}, 5)
    closed = _handed_over(state, done)
    assert sorted((n.recipient.id, n.invite.method, n.invite.sequence) for n in closed) == [
        ("anna", "CANCEL", 2), ("family:1", "CANCEL", 2), ("ole", "CANCEL", 2)]
    assert _handed_over(state, done) == []
    # Without the patch (cases started before it) nothing is cancelled.
    assert not [e for e in effects.pending(state, set(), True, False) if "_cancelled" in e.key]


async def test_closing_a_case_cancels_its_meeting_in_everyones_calendar(
    ts_env: WorkflowEnvironment, settings
) -> None:
    with Session(get_engine(settings.db_url)) as s:
        for sid, name, roles in [("anna", "Anna Berg", ["coordinator"]),
                                 ("ole", "Ole Holm", ["team_member"]),
                                 ("per", "Per Dahl", ["team_member"])]:
            s.add(StaffRow(id=sid, name=name, discipline="social_worker",
                           department="children_disability", roles=roles,
                           email=f"{sid}@kommune.example", created_at=datetime.now(UTC)))
        s.commit()
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, now.isoformat())
        case_id = (await handle.query(FamilyCaseWorkflow.case)).id
        await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        await cmd(handle, "form_team", ANNA, {"members": MEMBERS})
        for days in (10, 12):  # planned, then moved
            await cmd(handle, "schedule_assessment_meeting", ANNA, {
                "at": (now + timedelta(days=days)).isoformat(), "location": "Town hall",
                "participants": ["anna", "ole", "family"]})
            await asyncio.sleep(0.5)
        await cmd(handle, "close", ANNA, {"reason": "family_withdrew"})
        await handle.result()
        await save_history(handle, "case_meeting_cancel")
    with Session(get_engine(settings.db_url)) as s:
        rows = list(s.exec(select(NotificationRow).where(NotificationRow.case_id == case_id)))
    cancels = {r.recipient_id: r for r in rows if r.purpose == "assessment_meeting_cancelled"}
    assert set(cancels) == {"anna", "ole", "family:1"}, sorted((r.purpose, r.recipient_id) for r in rows)
    ole = _parse(cancels["ole"].ics)
    assert ole.method.value == "CANCEL"
    requests = [_parse(r.ics) for r in rows if r.purpose == "assessment_meeting_invitation"
                and r.recipient_id == "ole"]
    assert int(ole.vevent.sequence.value) > max(int(c.vevent.sequence.value) for c in requests)
    assert {c.vevent.uid.value for c in requests} == {ole.vevent.uid.value}
    assert ole.vevent.organizer.value == "mailto:anna@kommune.example"
    assert ole.vevent.organizer.params["CN"] == ["Anna Berg"]


def test_a_member_the_consent_no_longer_covers_gets_the_cancel() -> None:
    from tests.test_consent import ANNA as COORDINATOR
    from tests.test_consent import MEETING_AT, MOTHER, case, give, iso
    from tests.test_consent import run as run_consent

    state = case(coordinated_handling=True, departments=["school"])  # covers lise, not ole
    give(state, staff_ids=["ole"])  # c2: ole too
    run_consent(state, "schedule_assessment_meeting", COORDINATOR, {
        "at": iso(MEETING_AT), "location": "Family home",
        "participants": ["anna", "lise", "ole", "family"]})
    done: set[str] = set()
    assert {n.recipient.id for n in _handed_over(state, done)} == {"anna", "lise", "ole", "family:1"}
    run_consent(state, "revoke_consent", MOTHER, {"consent_id": "c2"})
    [cancel] = _handed_over(state, done)
    assert (cancel.recipient.id, cancel.invite.method, cancel.invite.sequence) == ("ole", "CANCEL", 1)
    assert _handed_over(state, done) == []
