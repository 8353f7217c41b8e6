"""The family's SMS reminder the day before each meeting (issue 11 point 6, DESIGN §3.7): at the
meeting's clock time the day before, never in the policy's quiet hours (then at their end,
still before the meeting), a new one when the meeting moves and none for the old time, only
time, place and kind of meeting in the text."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from activities.notifications import NotificationActivities
from activities.rendering import render_message
from domain import effects, family_effects
from domain.lifecycle import execute, new_case
from models.commands import CommandInput
from models.db import get_engine
from models.messaging import Channel
from models.tables import StaffRow
from models.tables_outbox import NotificationRow
from tests.conftest import running_worker, save_history
from tests.factories import admin, case_create, coordinator, ctx
from tests.messaging_fakes import SmsGateway
from tests.test_workflow_lifecycle import ADMIN, ANNA, cmd, start_case
from workflows.case import FamilyCaseWorkflow

CPH = ZoneInfo("Europe/Copenhagen")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday 11:00 in Copenhagen
MEMBERS = [{"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]


def _case_with_meeting(at: datetime, **family):
    body = case_create()
    for key, value in family.items():
        setattr(body.family.members[1], key, value)
    state = new_case("3f2c9a1e-1111-4222-8333-444455556666", body, ctx(admin()), [])
    _run(state, "assign_coordinator", {"coordinator_id": "anna"}, admin())
    _run(state, "form_team", {"members": MEMBERS})
    _meet(state, at)
    return state


def _run(state, name: str, body: dict | None, who=None, now: datetime = NOW) -> None:
    who = who or coordinator()
    execute(state, name, CommandInput(actor=who, body=body), ctx(who, now))


def _meet(state, at: datetime, now: datetime = NOW) -> None:
    _run(state, "schedule_assessment_meeting", {"at": at.isoformat(), "location": "Rådhuset",
                                                "participants": ["anna", "ole", "family"]}, now=now)


def _local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=CPH)


def _due(state, now: datetime, done: frozenset[str] = frozenset()) -> list:
    return [e.notification for e in family_effects.reminder_effects(state, set(done), now)]


def test_the_day_before_at_the_meetings_clock_time() -> None:
    state = _case_with_meeting(_local(27, 10))
    assert family_effects.next_reminder(state, set(), NOW) == _local(26, 10)
    assert _due(state, _local(26, 9, 59)) == []
    [sms] = _due(state, _local(26, 10))
    assert sms.recipient.id == "family:1" and sms.recipient.channel_preference is Channel.sms
    assert sms.quiet_hours == "21:00-08:00" and sms.optional
    assert sms.context.keys() == {"meeting", "at", "location"}  # nothing else reaches the text
    assert datetime.fromisoformat(sms.context["at"]) == _local(27, 10)
    assert (sms.context["meeting"], sms.context["location"]) == ("assessment", "Rådhuset")


def test_in_the_quiet_hours_it_waits_for_their_end_still_before_the_meeting() -> None:
    state = _case_with_meeting(_local(27, 7, 30))  # 07:30 the day before is quiet (21-08)
    assert family_effects.next_reminder(state, set(), NOW) == _local(26, 8)
    assert _due(state, _local(26, 7, 59)) == [] and len(_due(state, _local(26, 8))) == 1


def test_a_meeting_planned_late_is_reminded_at_once_or_after_the_night() -> None:
    soon = _case_with_meeting(_local(23, 18))  # planned at 11:00 for 18:00 the same day
    assert len(_due(soon, NOW)) == 1
    night = _case_with_meeting(_local(24, 7, 30))
    at_night = _local(23, 22)  # planned at 22:00 for 07:30: the night is quiet until 08:00
    assert _due(night, at_night) == []
    assert family_effects.next_reminder(night, set(), at_night) is None, "08:00 is too late"


def test_moving_the_meeting_makes_a_new_reminder_and_drops_the_old_one() -> None:
    state = _case_with_meeting(_local(27, 10))
    [old] = _due(state, _local(26, 10))
    waiting = effects.Effect(key=old.key, notification=old)
    _meet(state, _local(30, 10))
    assert not effects.still_wanted(state, waiting), "not sent for the old time"
    assert _due(state, _local(26, 10)) == []
    [new] = _due(state, _local(29, 10))
    assert new.key != old.key and datetime.fromisoformat(new.context["at"]) == _local(30, 10)
    assert effects.still_wanted(state, effects.Effect(key=new.key, notification=new))
    # Sent once: not again.
    assert _due(state, _local(29, 11), frozenset({new.key})) == []


def test_nothing_for_a_parent_without_a_mobile_number_or_a_closed_case() -> None:
    assert _due(_case_with_meeting(_local(27, 10), phone=None), _local(26, 10)) == []
    state = _case_with_meeting(_local(27, 10))
    _run(state, "close", {"reason": "family_withdrew"})
    assert _due(state, _local(26, 10)) == []


def test_a_policy_without_reminders_sends_none() -> None:
    state = _case_with_meeting(_local(27, 10))
    state.policy = state.policy.model_copy(update={"family_sms_reminder_days_before": 0})
    assert _due(state, _local(26, 10)) == [] and family_effects.next_reminder(state, set(), NOW) is None


@pytest.mark.parametrize("language", ["da", "sv", "en"])
def test_the_text_holds_time_and_place_only(language: str) -> None:
    state = _case_with_meeting(_local(27, 10))
    [sms] = _due(state, _local(26, 10))
    msg = render_message(sms.template, language, {
        "timezone": "Europe/Copenhagen", "app_url": "https://x.example/", "case_id": state.id,
        "case_ref": state.id[:8], "recipient_name": "Mette", "recipient_role": "family",
        "purpose": sms.purpose, "invite": None, **sms.context})
    assert "10:00" in msg.sms and "Rådhuset" in msg.sms and len(msg.sms) <= 160
    for private in ("Emil", "ADHD", "Mette", "Jensen", "Anna", state.id[:8]):
        assert private not in msg.sms


# ---------------------------------------------------------------- through the workflow


def _server_clock() -> datetime:
    """The activity's clock is the (time-skipped) server's: quiet hours follow it."""
    return activity.info().current_attempt_scheduled_time


async def _until(env: WorkflowEnvironment, when: datetime) -> None:
    await env.sleep(when - await env.get_current_time())
    await asyncio.sleep(0.3)  # real time for the activity (nothing skips meanwhile)


async def test_the_reminder_through_a_worker_and_the_gateway(
    ts_env: WorkflowEnvironment, settings, monkeypatch
) -> None:
    with Session(get_engine(settings.db_url)) as s:
        for sid, roles in [("anna", ["coordinator"]), ("ole", ["team_member"])]:
            s.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                           department="children_disability", roles=roles,
                           email=f"{sid}@kommune.example", created_at=datetime.now(UTC)))
        s.commit()
    with SmsGateway() as gateway:
        monkeypatch.setenv("ONEFAMILY_SMS_URL", gateway.url)
        monkeypatch.setenv("ONEFAMILY_SMS_TOKEN", SmsGateway.TOKEN)
        monkeypatch.setattr("worker.NotificationActivities",
                            functools.partial(NotificationActivities, clock=_server_clock))

        def reminders() -> list[dict]:
            return [r for r in gateway.requests if ":meeting_reminder:" in r["body"]["reference"]]

        async with running_worker(ts_env.client, settings):
            now = (await ts_env.get_current_time()).astimezone(CPH)
            day = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
            handle = await start_case(ts_env, settings, now.isoformat())
            case_id = (await handle.query(FamilyCaseWorkflow.case)).id
            await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
            await cmd(handle, "form_team", ANNA, {"members": MEMBERS})
            first = day + timedelta(days=3, hours=7, minutes=30)  # 07:30: reminded at 08:00
            await cmd(handle, "schedule_assessment_meeting", ANNA, {
                "at": first.isoformat(), "location": "Rådhuset",
                "participants": ["anna", "ole", "family"]})
            await _until(ts_env, day + timedelta(days=2, hours=7, minutes=50))
            assert reminders() == [], "not in the quiet hours"
            await _until(ts_env, day + timedelta(days=2, hours=8, minutes=5))
            for _ in range(100):  # up to 10 s
                if reminders():
                    break
                await asyncio.sleep(0.1)
            [sent] = reminders()
            assert sent["body"]["to"] == "+4521111111" and "07:30" in sent["body"]["text"]

            # Moved, then moved again before its reminder: one SMS, for the last time only.
            second = day + timedelta(days=6, hours=10)
            third = day + timedelta(days=7, hours=10)
            for at in (second, third):
                await cmd(handle, "schedule_assessment_meeting", ANNA, {
                    "at": at.isoformat(), "location": "Rådhuset",
                    "participants": ["anna", "ole", "family"]})
                await _until(ts_env, at - timedelta(days=1, hours=1))
            assert len(reminders()) == 1
            await _until(ts_env, third - timedelta(days=1) + timedelta(minutes=5))
            for _ in range(100):  # up to 10 s
                if len(reminders()) > 1:
                    break
                await asyncio.sleep(0.1)
            assert len(reminders()) == 2 and "10:00" in reminders()[1]["body"]["text"]
            await cmd(handle, "close", ANNA, {"reason": "family_withdrew"})
            await handle.result()
            await save_history(handle, "case_family_sms_reminder")
    with Session(get_engine(settings.db_url)) as s:
        rows = [r for r in s.exec(select(NotificationRow).where(NotificationRow.case_id == case_id))
                if r.purpose.startswith("meeting_reminder:")]
    assert sorted(r.purpose for r in rows) == ["meeting_reminder:assessment#0",
                                               "meeting_reminder:assessment#2"]
    assert all(r.status == "sent" and r.channel == "sms" for r in rows)
    first_row = next(r for r in rows if r.purpose.endswith("#0"))
    sent_local = first_row.sent_at.replace(tzinfo=first_row.sent_at.tzinfo or UTC).astimezone(CPH)
    assert (sent_local.hour, sent_local.date()) == (8, (first - timedelta(days=1)).date())
