"""Notifications (DESIGN §3, §4, issue 4): real SMTP (aiosmtpd) and a fake SMS gateway on
127.0.0.1, exactly-once per key, quiet hours, channel choice, .ics invitations, the outbox API,
and the activity through a real worker on the time-skipping server."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.notifications import (
    NotificationActivities,
    NotificationSettings,
    choose_channel,
    quiet_until,
)
from activities.rendering import render_message
from api import notifications as notifications_api
from domain.lifecycle import new_case
from models.case import ContactPreference
from models.db import get_engine
from models.messaging import (
    Channel,
    MeetingInvite,
    NotificationRequest,
    NotificationResult,
    NotificationStatus,
    Recipient,
    RecipientQuery,
    RecipientRole,
    family_recipients,
    notification_key,
    staff_recipient,
)
from models.projection import write_case
from models.tables import StaffRow
from models.tables_outbox import NotificationRow
from tests.apps import router_client
from tests.factories import NOW, actor, case_create, ctx
from tests.messaging_fakes import SmsGateway, SmtpServer

CPH = ZoneInfo("Europe/Copenhagen")
DAY = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # 11:00 in Copenhagen
NIGHT = datetime(2026, 12, 1, 20, 30, tzinfo=UTC)  # 21:30 in Copenhagen
CASE = "3f2c9a1e-1111-4222-8333-444455556666"
MEETING = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)  # 10:00 in Copenhagen


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def gateway():
    with SmsGateway() as gw:
        yield gw


@pytest.fixture
def engine(settings):
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for sid, name, roles, email, phone in [
            ("admin", "Admin", ["admin"], None, None),
            ("anna", "Anna Berg", ["coordinator"], "anna@kommune.example", "+4520000000"),
            ("ole", "Ole Holm", ["team_member"], "ole@kommune.example", None),
            ("maria", "Maria Lund", ["manager"], "maria@kommune.example", None),
            ("mads", "Mads Due", ["manager"], "mads@kommune.example", None),
            ("eve", "Eve Nord", ["team_member"], "eve@kommune.example", None),
        ]:
            session.add(StaffRow(id=sid, name=name, discipline="social_worker",
                                 department="children_disability", roles=roles, email=email,
                                 phone=phone, created_at=NOW))
        session.commit()
    return engine


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def channels(smtp: SmtpServer | None, gateway: SmsGateway | None, **extra) -> NotificationSettings:
    values = {"ONEFAMILY_SMTP_FROM": "OneFamily <noreply@kommune.example>",
              "ONEFAMILY_PUBLIC_URL": "https://onefamily.kommune.example/"}
    if smtp is not None:
        values.update(ONEFAMILY_SMTP_HOST="127.0.0.1", ONEFAMILY_SMTP_PORT=smtp.port)
    if gateway is not None:
        values.update(ONEFAMILY_SMS_URL=gateway.url, ONEFAMILY_SMS_TOKEN=SmsGateway.TOKEN)
    values.update(extra)
    return NotificationSettings(**values)


def acts(engine, settings, smtp=None, gateway=None, now: datetime = DAY, **kw) -> NotificationActivities:
    return NotificationActivities(engine, settings, channels(smtp, gateway), clock=Clock(now), **kw)


def send(a: NotificationActivities, req: NotificationRequest) -> NotificationResult:
    return ActivityEnvironment().run(a.send_notification, req)


def reminder(to: Recipient, occurrence: int = 1, **context) -> NotificationRequest:
    return NotificationRequest(
        key=notification_key(CASE, "reminder:assessment", to.id, occurrence),
        case_id=CASE, purpose="reminder:assessment", recipient=to, template="deadline_reminder",
        context={"deadline": "assessment", "due_at": "2027-03-20T09:00:00+00:00",
                 "legal_basis": "Barnets Lov § 20, stk. 3", **context},
    )


def family_member(**kw) -> Recipient:
    base = dict(role=RecipientRole.family, id="family:1", name="Mette", phone="+4521111111",
                language="da")
    return Recipient(**{**base, **kw})


def sms_reminder(to: Recipient | None = None, occurrence: int = 1) -> NotificationRequest:
    to = to or family_member()
    return NotificationRequest(
        key=notification_key(CASE, "family_sms_reminder", to.id, occurrence), case_id=CASE,
        purpose="family_sms_reminder", recipient=to, template="meeting_reminder",
        context={"meeting": "status", "at": MEETING.isoformat(), "location": "Rådhuset, lokale 2"},
    )


def rows(engine) -> list[NotificationRow]:
    with Session(engine) as session:
        return list(session.exec(select(NotificationRow)).all())


# ---------------------------------------------------------------- e-mail


def test_email_to_staff_uses_the_directory_and_the_language(engine, settings, smtp) -> None:
    result = send(acts(engine, settings, smtp), reminder(staff_recipient("coordinator", "anna", "da")))

    assert (result.status, result.channel) == (NotificationStatus.sent, Channel.email)
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail["To"] == "Anna Berg <anna@kommune.example>"
    assert mail["From"] == "OneFamily <noreply@kommune.example>"
    assert mail["Subject"] == "Påmindelse: Tværfaglig udredning (sag 3f2c9a1e)"
    text = mail.get_body(("plain",)).get_content()
    assert "Hej Anna Berg" in text
    assert "udløber 20. marts 2027 kl. 10:00" in text  # 09:00 UTC shown in Copenhagen time
    assert "Barnets Lov § 20, stk. 3" in text
    assert "https://onefamily.kommune.example/" in text
    assert mail["Message-ID"].endswith("@kommune.example>")
    [row] = rows(engine)
    assert (row.status, row.attempts, row.channel, row.recipient_id) == ("sent", 1, "email", "anna")
    assert row.sent_at is not None and row.last_error is None
    assert row.subject == mail["Subject"] and "Tværfaglig udredning" in row.body


def test_the_same_key_is_delivered_once(engine, settings, smtp) -> None:
    a = acts(engine, settings, smtp)
    req = reminder(staff_recipient("coordinator", "anna", "en"))
    first = send(a, req)
    second = send(a, req)
    third = send(acts(engine, settings, smtp), req)  # another worker process, same key

    assert first.id == second.id == third.id
    assert len(smtp.messages) == 1
    assert [r.attempts for r in rows(engine)] == [1]
    # A new occurrence is a new notification.
    send(a, reminder(staff_recipient("coordinator", "anna", "en"), occurrence=2))
    assert len(smtp.messages) == 2


def test_a_worker_dying_between_record_and_send_delivers_exactly_once(engine, settings, smtp) -> None:
    def die(_row) -> None:
        raise RuntimeError("worker killed")

    req = reminder(staff_recipient("coordinator", "anna", "en"))
    with pytest.raises(RuntimeError):
        send(acts(engine, settings, smtp, before_send=die), req)
    [row] = rows(engine)
    assert (row.status, row.attempts, row.sent_at) == ("queued", 1, None)  # recorded, not sent
    assert smtp.messages == []

    # The retry on a restarted worker (after the dead attempt's lease ran out) sends it once.
    later = DAY + timedelta(minutes=5)
    result = send(acts(engine, settings, smtp, now=later), req)
    again = send(acts(engine, settings, smtp, now=later), req)
    assert result.status is NotificationStatus.sent and again.id == result.id
    assert len(smtp.messages) == 1
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("sent", 2)


def test_an_attempt_holding_the_row_blocks_a_concurrent_one(engine, settings, smtp) -> None:
    req = reminder(staff_recipient("coordinator", "anna", "en"))
    entered, release = threading.Event(), threading.Event()

    def slow(_row) -> None:
        entered.set()
        assert release.wait(10)

    first = acts(engine, settings, smtp, before_send=slow)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(first.send, req)
        assert entered.wait(10)
        with pytest.raises(ApplicationError) as busy:
            acts(engine, settings, smtp).send(req)  # a zombie retry while the first still sends
        assert busy.value.type == "NotificationBusy" and not busy.value.non_retryable
        release.set()
        assert running.result(10).status is NotificationStatus.sent
    assert len(smtp.messages) == 1


def test_smtp_failure_is_recorded_and_retried(engine, settings, smtp) -> None:
    smtp.sink.fail_data = "451 4.3.0 Mail server temporarily unavailable"
    req = reminder(staff_recipient("coordinator", "anna", "en"))
    a = acts(engine, settings, smtp)
    with pytest.raises(ApplicationError) as failed:
        send(a, req)
    assert failed.value.type == "DeliveryFailed" and not failed.value.non_retryable
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "SMTP 451 (SMTPDataError)"
    assert "anna" not in failed.value.message and "@" not in failed.value.message

    smtp.sink.fail_data = None
    assert send(a, req).status is NotificationStatus.sent
    assert len(smtp.messages) == 1
    [row] = rows(engine)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_a_refused_address_fails_for_good_without_personal_data(engine, settings, smtp) -> None:
    smtp.sink.refuse_rcpt = "550 5.1.1 No such user"
    with pytest.raises(ApplicationError) as refused:
        send(acts(engine, settings, smtp), reminder(staff_recipient("coordinator", "anna")))
    assert refused.value.type == "DeliveryRejected" and refused.value.non_retryable
    [row] = rows(engine)
    assert row.status == "failed" and row.last_error == "SMTP recipient refused (550)"


def test_smtp_down_is_a_retryable_failure(engine, settings) -> None:
    from launcher import free_port

    cfg = channels(None, None, ONEFAMILY_SMTP_HOST="127.0.0.1", ONEFAMILY_SMTP_PORT=free_port())
    a = NotificationActivities(engine, settings, cfg, clock=Clock(DAY))
    with pytest.raises(ApplicationError) as failed:
        send(a, reminder(staff_recipient("coordinator", "anna")))
    assert failed.value.type == "DeliveryFailed"
    assert rows(engine)[0].last_error == "SMTP connection failed (ConnectionRefusedError)"


def test_without_smtp_and_sms_the_outbox_is_the_delivery(engine, settings) -> None:
    """The embedded default (`make run`): nothing external, the in-app outbox holds it."""
    a = NotificationActivities(engine, settings, NotificationSettings(ONEFAMILY_SMTP_HOST=None,
                                                                      ONEFAMILY_SMS_URL=None),
                               clock=Clock(DAY))
    result = send(a, reminder(staff_recipient("manager", "maria"), step="manager", overdue=True))
    assert (result.status, result.channel) == (NotificationStatus.sent, Channel.in_app)
    [row] = rows(engine)
    assert row.subject == "Overskredet: Tværfaglig udredning (sag 3f2c9a1e)"  # DK default: Danish
    assert "eskaleret til dig (leder)" in row.body


# ---------------------------------------------------------------- SMS


def test_sms_to_the_family_goes_through_the_gateway(engine, settings, smtp, gateway) -> None:
    req = sms_reminder()
    result = send(acts(engine, settings, smtp, gateway), req)
    assert (result.status, result.channel) == (NotificationStatus.sent, Channel.sms)
    [request] = gateway.requests
    assert request["auth"] == f"Bearer {SmsGateway.TOKEN}"
    body = request["body"]
    assert body["to"] == "+4521111111" and body["reference"] == req.key
    assert body["text"].startswith("Påmindelse: statusmøde 8. december 2026 kl. 10:00, Rådhuset")
    assert smtp.messages == []
    [row] = rows(engine)
    assert (row.provider_ref, row.recipient_role, row.recipient_id) == ("sms-1", "family", "family:1")


def test_gateway_down_is_retried_and_delivers_once(engine, settings, gateway) -> None:
    gateway.fail_with = 503
    a = acts(engine, settings, None, gateway)
    req = sms_reminder()
    for attempt in (1, 2):
        with pytest.raises(ApplicationError) as failed:
            send(a, req)
        assert failed.value.type == "DeliveryFailed" and not failed.value.non_retryable
        [row] = rows(engine)
        assert (row.status, row.attempts, row.last_error) == ("failed", attempt, "SMS gateway HTTP 503")
        assert "+45" not in failed.value.message

    gateway.fail_with = None
    assert send(a, req).status is NotificationStatus.sent
    assert send(a, req).status is NotificationStatus.sent
    assert len(gateway.accepted) == 1 and len(gateway.requests) == 3


def test_gateway_already_holding_the_reference_counts_as_sent(engine, settings, gateway) -> None:
    """The worker died after the gateway accepted the SMS: the retry re-posts the same reference,
    the gateway answers 409 and the family still gets one SMS."""
    req = sms_reminder()
    gateway.accepted[req.key] = {"to": "+4521111111"}
    result = send(acts(engine, settings, None, gateway), req)
    assert result.status is NotificationStatus.sent
    assert len(gateway.accepted) == 1


def test_a_refused_number_is_not_retried(engine, settings, gateway) -> None:
    gateway.fail_with = 422
    with pytest.raises(ApplicationError) as refused:
        send(acts(engine, settings, None, gateway), sms_reminder())
    assert refused.value.type == "DeliveryRejected" and refused.value.non_retryable


def test_quiet_hours_defer_family_sms_until_morning(engine, settings, gateway) -> None:
    req = sms_reminder()
    result = send(acts(engine, settings, None, gateway, now=NIGHT), req)
    morning = datetime(2026, 12, 2, 8, 0, tzinfo=CPH)
    assert result.status is NotificationStatus.deferred
    assert result.not_before == morning.astimezone(UTC)
    assert gateway.requests == []
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("deferred", 0)

    # Called again too early (the workflow woke early): still deferred, nothing sent.
    early = send(acts(engine, settings, None, gateway, now=morning - timedelta(minutes=1)), req)
    assert (early.status, early.not_before) == (NotificationStatus.deferred, result.not_before)
    assert gateway.requests == []

    # At 08:00 the same request sends it, once.
    done = send(acts(engine, settings, None, gateway, now=morning), req)
    assert done.status is NotificationStatus.sent and done.id == result.id
    assert len(gateway.accepted) == 1
    assert rows(engine)[0].sent_at == morning.astimezone(UTC)


def test_quiet_hours_are_only_for_family_sms(engine, settings, smtp, gateway) -> None:
    staff = send(acts(engine, settings, smtp, gateway, now=NIGHT),
                 reminder(staff_recipient("coordinator", "anna")))
    assert staff.status is NotificationStatus.sent  # e-mail to staff at night is fine
    by_mail = send(acts(engine, settings, smtp, gateway, now=NIGHT),
                   sms_reminder(family_member(email="mette@example.org", channel_preference="email")))
    assert (by_mail.status, by_mail.channel) == (NotificationStatus.sent, Channel.email)
    assert gateway.requests == []


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-12-01T19:59", None),
        ("2026-12-01T20:00", "2026-12-02T08:00"),
        ("2026-12-01T23:30", "2026-12-02T08:00"),
        ("2026-12-02T03:00", "2026-12-02T08:00"),
        ("2026-12-02T07:59", "2026-12-02T08:00"),
        ("2026-12-02T08:00", None),
        ("2027-03-27T22:00", "2027-03-28T08:00"),  # over the switch to summer time
    ],
)
def test_quiet_until(local: str, expected: str | None) -> None:
    from datetime import time

    now = datetime.fromisoformat(local).replace(tzinfo=CPH)
    got = quiet_until(now, "Europe/Copenhagen", (time(20, 0), time(8, 0)))
    if expected is None:
        assert got is None
    else:
        assert got == datetime.fromisoformat(expected).replace(tzinfo=CPH)
        assert got.tzinfo is UTC


# ---------------------------------------------------------------- channel choice


def test_channel_choice() -> None:
    fam = family_member(email="mette@example.org")
    both = dict(smtp=True, sms=True)
    assert choose_channel(fam, optional=False, has_invite=False, **both) is Channel.sms
    assert choose_channel(fam, optional=False, has_invite=True, **both) is Channel.email
    assert choose_channel(fam.model_copy(update={"channel_preference": Channel.email}),
                          optional=False, has_invite=False, **both) is Channel.email
    assert choose_channel(fam, optional=False, has_invite=False, smtp=True, sms=False) is Channel.email
    assert choose_channel(fam, optional=False, has_invite=False, smtp=False, sms=False) is Channel.in_app
    space = fam.model_copy(update={"contact_preference": "space"})
    assert choose_channel(space, optional=True, has_invite=False, **both) is Channel.in_app
    assert choose_channel(space, optional=False, has_invite=False, **both) is Channel.sms
    staff = Recipient(role=RecipientRole.coordinator, id="anna", email="a@x", phone="+45")
    assert choose_channel(staff, optional=False, has_invite=False, **both) is Channel.email
    assert choose_channel(staff.model_copy(update={"channel_preference": Channel.in_app}),
                          optional=False, has_invite=False, **both) is Channel.in_app


def test_a_family_that_asked_for_space_gets_courtesy_messages_in_app_only(
    engine, settings, smtp, gateway
) -> None:
    state = new_case(CASE, case_create(), ctx(actor("anna", "coordinator")))
    state.contact_preference = ContactPreference.space
    [mette] = family_recipients(state)
    assert (mette.id, mette.name, mette.phone, mette.language) == ("family:1", "Mette", "+4521111111", "da")
    req = NotificationRequest(key=notification_key(CASE, "family_checkin", mette.id, 1), case_id=CASE,
                              purpose="family_checkin", recipient=mette, template="family_checkin",
                              optional=True)
    result = send(acts(engine, settings, smtp, gateway), req)
    assert (result.status, result.channel) == (NotificationStatus.sent, Channel.in_app)
    assert gateway.requests == [] and smtp.messages == []
    assert "Hvordan går det?" in rows(engine)[0].body
    # A statutory reminder still reaches her by SMS.
    assert send(acts(engine, settings, smtp, gateway), sms_reminder(mette)).channel is Channel.sms


def test_resolve_recipients_by_role(engine, settings) -> None:
    a = acts(engine, settings)
    managers = ActivityEnvironment().run(a.resolve_recipients, RecipientQuery(role="manager"))
    assert [(r.id, r.role, r.email) for r in managers] == [
        ("mads", RecipientRole.manager, "mads@kommune.example"),
        ("maria", RecipientRole.manager, "maria@kommune.example"),
    ]
    team = ActivityEnvironment().run(a.resolve_recipients, RecipientQuery(role="team_member"))
    assert {r.id for r in team} == {"ole", "eve"} and {r.role for r in team} == {RecipientRole.team}


def test_escalations_reach_only_the_managers_of_the_cases_unit(engine, settings) -> None:
    """Need-to-know (DESIGN §9): a deadline escalation about a case of one unit once reached
    every manager of every unit."""
    with Session(engine) as session:
        session.get(StaffRow, "mads").unit = "adult_disability"
        session.commit()
        write_case(session, new_case(CASE, case_create(), ctx(actor("anna", "coordinator"))), NOW)
        session.commit()
    a = acts(engine, settings)
    managers = ActivityEnvironment().run(a.resolve_recipients,
                                         RecipientQuery(role="manager", case_id=CASE))
    assert [r.id for r in managers] == ["maria"]


# ---------------------------------------------------------------- meeting invitations (.ics)


def invitation(to: Recipient, sequence: int = 0, method: str = "REQUEST",
               start: datetime = MEETING) -> NotificationRequest:
    invite = MeetingInvite(uid=f"{CASE}-assessment@onefamily", start=start,
                           end=start + timedelta(minutes=90), location="Familiens hjem",
                           summary="Udredningsmøde", method=method, sequence=sequence,
                           tz="Europe/Copenhagen")
    return NotificationRequest(
        key=notification_key(CASE, "meeting_invitation", to.id, f"assessment-{sequence}"),
        case_id=CASE, purpose="meeting_invitation", recipient=to, template="meeting_invitation",
        context={"meeting": "assessment"}, invite=invite,
    )


def calendar_of(mail) -> icalendar.Calendar:
    parts = [p for p in mail.walk() if p.get_content_type() == "text/calendar"]
    assert parts, "no text/calendar part"
    assert any(p.get_filename() == "invite.ics" for p in parts)
    return icalendar.Calendar.from_ical(parts[0].get_content())


def test_meeting_invitation_carries_an_ics_in_copenhagen_time(engine, settings, smtp) -> None:
    a = acts(engine, settings, smtp)
    send(a, invitation(staff_recipient("team", "ole", "da")))
    [mail] = smtp.messages
    assert mail["Subject"] == "Invitation: udredningsmøde 8. december 2026 kl. 10:00"
    cal_part = next(p for p in mail.walk() if p.get_content_type() == "text/calendar")
    assert cal_part.get_param("method") == "REQUEST"
    cal = calendar_of(mail)
    assert str(cal["METHOD"]) == "REQUEST"
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Copenhagen"]
    [event] = cal.walk("VEVENT")
    assert str(event["UID"]) == f"{CASE}-assessment@onefamily"
    assert int(event["SEQUENCE"]) == 0
    start = event.decoded("DTSTART")
    assert event["DTSTART"].params["TZID"] == "Europe/Copenhagen"
    assert start == MEETING and (start.hour, str(start.tzinfo)) == (10, "Europe/Copenhagen")
    assert event.decoded("DTEND") - start == timedelta(minutes=90)
    assert str(event["LOCATION"]) == "Familiens hjem"
    assert "mailto:ole@kommune.example" in str(event["ATTENDEE"])
    [row] = rows(engine)
    assert row.ics and "UID:" in row.ics


def test_moving_and_cancelling_a_meeting_keeps_the_uid(engine, settings, smtp) -> None:
    a = acts(engine, settings, smtp)
    anna = staff_recipient("coordinator", "anna", "en")
    send(a, invitation(anna))
    moved_to = MEETING + timedelta(days=2, hours=3)
    send(a, invitation(anna, sequence=1, start=moved_to))
    send(a, invitation(anna, sequence=2, method="CANCEL", start=moved_to))
    assert [m["Subject"].split(":")[0] for m in smtp.messages] == ["Invitation", "Moved", "Cancelled"]
    events = [calendar_of(m).walk("VEVENT")[0] for m in smtp.messages]
    assert {str(e["UID"]) for e in events} == {f"{CASE}-assessment@onefamily"}
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert events[1].decoded("DTSTART") == moved_to
    cancel = calendar_of(smtp.messages[2])
    assert str(cancel["METHOD"]) == "CANCEL" and str(events[2]["STATUS"]) == "CANCELLED"
    assert "The assessment meeting on 10 December 2026, 13:00 has been cancelled." in (
        smtp.messages[2].get_body(("plain",)).get_content())


def test_an_invitation_by_sms_is_a_short_text(engine, settings, gateway) -> None:
    send(acts(engine, settings, None, gateway), invitation(family_member(language="sv")))
    [request] = gateway.requests
    assert request["body"]["text"].startswith("Inbjudan: utredningsmöte 8 december 2026 kl. 10:00")


# ---------------------------------------------------------------- every message, every language

SAMPLES: dict[str, dict] = {
    "meeting_invitation": {"meeting": "status", "invite": {
        "start": MEETING.isoformat(), "end": (MEETING + timedelta(hours=1)).isoformat(),
        "location": "Rådhuset", "method": "REQUEST", "sequence": 0}},
    "meeting_reminder": {"meeting": "status", "at": MEETING.isoformat(), "location": "Rådhuset"},
    "contact_family_before_meeting": {"meeting": "assessment", "at": MEETING.isoformat(),
                                      "due_at": (MEETING - timedelta(days=1)).isoformat()},
    "deadline_reminder": {"deadline": "first_contact", "due_at": MEETING.isoformat()},
    "case_assigned": {"due_at": MEETING.isoformat()},
    "team_added": {"coordinator_name": "Anna Berg"},
    "plan_for_approval": {"plan_version": 2, "due_at": MEETING.isoformat()},
    "committee_decision": {"plan_version": 2, "decision": "approved"},
    "consent_renewal": {"valid_until": "2027-06-30"},
    "reporter_receipt": {"received_at": "2026-11-20T09:00:00Z"},
    "family_checkin": {},
    "nudge": {"last_contact_at": "2026-11-01T09:00:00Z", "days": 14},
    "committee_agenda_ready": {"meeting_at": MEETING.isoformat(), "items": 3},
    "monthly_report_ready": {"month": "2026-11"},
    "family_update": {"event": "consent_revoked", "consent_id": "c2",
                      "no_longer_covered": ["ole"]},
    "family_invitation": {"link": "https://x.example/family/welcome?token=t0k3n", "channel": "email",
                          "expires_at": MEETING.isoformat(), "coordinator_name": "Anna Berg"},
    "family_sign_in_code": {"code": "042917", "minutes": 10},
}
# One phrase per language that only a correct translation contains.
EXPECT = {
    ("deadline_reminder", "da"): "Første kontakt med familien",
    ("deadline_reminder", "sv"): "Första kontakt med familjen",
    ("deadline_reminder", "en"): "First contact with the family",
    ("meeting_reminder", "da"): "8. december 2026 kl. 10:00",
    ("meeting_reminder", "sv"): "8 december 2026 kl. 10:00",
    ("meeting_reminder", "en"): "8 December 2026, 10:00",
    ("committee_decision", "da"): "Godkendt",
    ("committee_decision", "sv"): "Bifall",
    ("committee_decision", "en"): "Approved",
    ("consent_renewal", "da"): "30. juni 2027",
    ("consent_renewal", "sv"): "30 juni 2027",
    ("consent_renewal", "en"): "30 June 2027",
    ("family_update", "da"): "tilbagekaldt samtykke c2",
    ("family_update", "sv"): "återkallat samtycke c2",
    ("family_update", "en"): "revoked consent c2",
}


def test_the_sample_list_covers_every_message_template() -> None:
    from activities.rendering import TEMPLATES

    for lang in ("da", "sv", "en"):
        names = {p.name.removesuffix(".txt.j2") for p in (TEMPLATES / "messages" / lang).glob("*.txt.j2")}
        assert names == set(SAMPLES), lang


@pytest.mark.parametrize("language", ["da", "sv", "en"])
@pytest.mark.parametrize("template", sorted(SAMPLES))
def test_every_message_renders_in_every_language(template: str, language: str) -> None:
    variables = {"timezone": "Europe/Copenhagen", "app_url": "https://x.example/", "case_id": CASE,
                 "case_ref": CASE[:8], "recipient_name": "Mette", "recipient_role": "family",
                 "purpose": template, "invite": None, **SAMPLES[template]}
    msg = render_message(template, language, variables)
    assert msg.subject and "{" not in msg.subject and "\n" not in msg.subject
    assert len(msg.body) > 40 and "{{" not in msg.body and "<<<" not in msg.body
    assert msg.sms and len(msg.sms) <= 400
    other = {"da": "sv", "sv": "en", "en": "da"}[language]
    assert msg.body != render_message(template, other, variables).body
    phrase = EXPECT.get((template, language))
    if phrase:
        assert phrase in msg.subject + msg.body


def test_a_missing_variable_is_a_non_retryable_template_error(engine, settings, smtp) -> None:
    req = NotificationRequest(key="k1", case_id=CASE, purpose="nudge",
                              recipient=staff_recipient("coordinator", "anna"),
                              template="committee_agenda_ready", context={})
    with pytest.raises(ApplicationError) as broken:
        send(acts(engine, settings, smtp), req)
    assert broken.value.type == "NotificationTemplateError" and broken.value.non_retryable
    assert rows(engine) == [] and smtp.messages == []  # nothing recorded, nothing sent


# ---------------------------------------------------------------- the outbox API


def api_client(engine, settings) -> TestClient:
    return router_client(engine, settings, notifications_api.router)


def test_outbox_api_lists_what_was_sent_with_need_to_know(engine, settings, smtp, gateway) -> None:
    state = new_case(CASE, case_create(), ctx(actor("anna", "coordinator")))
    state.coordinator_id = "anna"
    with Session(engine) as session:
        write_case(session, state, NOW)
        session.commit()
    a = acts(engine, settings, smtp, gateway)
    send(a, reminder(staff_recipient("coordinator", "anna")))
    send(a, sms_reminder())
    send(a, reminder(staff_recipient("manager", "maria"), step="manager"))

    client = api_client(engine, settings)
    answer = client.get("/api/v1/notifications", params={"case_id": CASE}, headers={"X-User": "anna"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["total"] == 3
    by_recipient = {i["recipient_id"]: i for i in body["items"]}
    assert {k: by_recipient["family:1"][k] for k in ("channel", "recipient_role", "purpose", "status")} == {
        "channel": "sms", "recipient_role": "family", "purpose": "family_sms_reminder", "status": "sent"}
    assert set(by_recipient["anna"]) >= {"id", "case_id", "channel", "recipient_id", "recipient_role",
                                         "purpose", "status", "created_at", "sent_at"}
    assert "Tværfaglig udredning" in by_recipient["anna"]["subject"]  # her own inbox
    assert "body" not in by_recipient["maria"]  # someone else's message text stays hidden

    assert client.get("/api/v1/notifications", params={"case_id": CASE}).status_code == 401
    assert client.get("/api/v1/notifications", headers={"X-User": "nobody"}).status_code == 401
    assert client.get("/api/v1/notifications", params={"case_id": str(uuid.uuid4())},
                      headers={"X-User": "anna"}).status_code == 404
    assert client.get("/api/v1/notifications", params={"case_id": CASE},
                      headers={"X-User": "eve"}).status_code == 403
    assert client.get("/api/v1/notifications", headers={"X-User": "eve"}).json()["total"] == 0
    assert client.get("/api/v1/notifications", headers={"X-User": "maria"}).json()["total"] == 3
    failed = client.get("/api/v1/notifications", params={"status": "failed"}, headers={"X-User": "admin"})
    assert failed.json() == {"items": [], "total": 0}
    assert client.get("/api/v1/notifications", params={"status": "bogus"},
                      headers={"X-User": "admin"}).status_code == 422


# ---------------------------------------------------------------- through a real worker


@workflow.defn(name="NotifyOnce")
class NotifyOnce:
    """The workflow side of a notification, as the case workflow does it: call, and on
    `deferred` sleep on a durable timer until `not_before`, then call again with the same key."""

    @workflow.run
    async def run(self, req: NotificationRequest) -> list[NotificationResult]:
        results = []
        while True:
            result = await workflow.execute_activity(
                "send_notification", req, result_type=NotificationResult,
                start_to_close_timeout=timedelta(seconds=5),
                schedule_to_close_timeout=timedelta(days=2),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                         maximum_interval=timedelta(seconds=2)),
            )
            results.append(result)
            if result.status is not NotificationStatus.deferred:
                return results
            await workflow.sleep(max(result.not_before - workflow.now(), timedelta(seconds=1)))


def server_clock() -> datetime:
    """The (time-skipped) server time at which this attempt was scheduled."""
    return activity.info().current_attempt_scheduled_time


async def test_worker_defers_family_sms_and_delivers_after_the_timer(
    ts_env: WorkflowEnvironment, engine, settings, gateway
) -> None:
    now = (await ts_env.get_current_time()).astimezone(CPH)
    # Quiet hours around the server's current time: from an hour ago to two hours ahead.
    start, end = now - timedelta(hours=1), now + timedelta(hours=2)
    cfg = channels(None, gateway, ONEFAMILY_SMS_QUIET_HOURS=f"{start:%H:%M}-{end:%H:%M}")
    a = NotificationActivities(engine, settings, cfg, clock=server_clock)
    req = sms_reminder()
    with ThreadPoolExecutor(4) as pool:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[NotifyOnce],
                          activities=[a.send_notification], activity_executor=pool,
                          workflow_runner=UnsandboxedWorkflowRunner()):
            results = await ts_env.client.execute_workflow(
                NotifyOnce.run, req, id=f"notify-{uuid.uuid4()}", task_queue=settings.task_queue,
                result_type=list[NotificationResult])
            # The same key again (e.g. a replayed or repeated workflow step): nothing new sent.
            again = await ts_env.client.execute_workflow(
                NotifyOnce.run, req, id=f"notify-{uuid.uuid4()}", task_queue=settings.task_queue,
                result_type=list[NotificationResult])
    assert [r.status for r in results] == [NotificationStatus.deferred, NotificationStatus.sent]
    assert results[0].not_before == end.replace(second=0, microsecond=0).astimezone(UTC)
    assert results[1].sent_at >= results[0].not_before  # sent after the quiet hours, not before
    assert [r.status for r in again] == [NotificationStatus.sent] and again[0].id == results[1].id
    assert len(gateway.accepted) == 1 and len(gateway.requests) == 1


async def test_worker_restarted_between_record_and_send_delivers_once(
    ts_env: WorkflowEnvironment, engine, settings, smtp
) -> None:
    died = threading.Event()

    def die(_row) -> None:
        died.set()
        raise RuntimeError("worker killed between record and send")

    cfg = channels(smtp, None)
    first = NotificationActivities(engine, settings, cfg, before_send=die, lease=timedelta(0))
    req = reminder(staff_recipient("coordinator", "anna", "en"))
    # No workflow cache: a dead worker's sticky queue must not hold the workflow's next task.
    with ThreadPoolExecutor(4) as pool:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[NotifyOnce],
                          activities=[first.send_notification], activity_executor=pool,
                          workflow_runner=UnsandboxedWorkflowRunner(), max_cached_workflows=0):
            handle = await ts_env.client.start_workflow(
                NotifyOnce.run, req, id=f"notify-{uuid.uuid4()}", task_queue=settings.task_queue)
            await asyncio.to_thread(died.wait, 20)
    assert died.is_set() and smtp.messages == []
    assert [(r.status, r.attempts >= 1) for r in rows(engine)] == [("queued", True)]

    second = NotificationActivities(engine, settings, cfg)  # the restarted worker
    with ThreadPoolExecutor(4) as pool:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[NotifyOnce],
                          activities=[second.send_notification], activity_executor=pool,
                          workflow_runner=UnsandboxedWorkflowRunner(), max_cached_workflows=0):
            results = await handle.result()
    assert [r.status for r in results] == [NotificationStatus.sent]
    assert len(smtp.messages) == 1
    [row] = rows(engine)
    assert row.status == "sent" and row.attempts >= 2
