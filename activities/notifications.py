"""Notifications: e-mail over SMTP, SMS through an HTTP gateway, and the in-app outbox.

Activity `send_notification(NotificationRequest) -> NotificationResult`
=========================================================================

Exactly once per idempotency key
--------------------------------
1. The message is rendered and RECORDED first: one `notifications` row per `key` (UNIQUE),
   status `queued`, with the rendered subject/body/.ics. Nothing is sent before that commit.
2. A row already `sent` is returned as it is: a retried activity, a restarted worker or a
   replayed workflow never sends twice.
3. An attempt CLAIMS the row before sending (a conditional UPDATE that sets a short lease and
   counts the attempt); a second attempt that finds the row claimed does not send but fails
   retryably (`NotificationBusy`) and so comes back after Temporal's backoff.
4. After a successful send the row becomes `sent` (with `sent_at` and the provider's
   reference). A failed send marks it `failed` with a technical `last_error` (SMTP code, HTTP
   status, exception class: never an address or a name) and raises, so Temporal retries with
   backoff; a row left `queued` by a worker that died between record and send is simply sent
   by the next attempt.
   The one window left is a worker dying after the provider accepted the message and before
   the row says `sent`: the SMS is then sent again with the same `reference` (= the key), which
   the gateway de-duplicates; an e-mail is sent again with the same Message-ID (derived from
   the key), which mail clients de-duplicate.

Channels and recipients
-----------------------
- Staff (coordinator/team/manager/committee): e-mail and phone from the staff directory.
  Family members and reporters: from the request (`family_recipients(state)` builds them).
- The recipient's `channel_preference` wins when that channel is configured and the person has
  an address for it; otherwise staff and meeting invitations go by e-mail first, other family
  messages by SMS first. No usable channel: the in-app outbox (the row itself, status `sent`).
- A family that asked for space (`contact_preference == "space"`) gets `optional` messages in
  the in-app outbox only; statutory reminders and invitations are never optional.
- Meeting invitations (`invite`) carry an iCalendar attachment: stable UID, METHOD
  REQUEST/CANCEL, SEQUENCE, DTSTART/DTEND with the meeting's TZID and its VTIMEZONE.

Quiet hours: what the workflow does with `deferred`
---------------------------------------------------
SMS to families is never sent in the quiet hours (default 20:00-08:00 in the country's time
zone, `ONEFAMILY_SMS_QUIET_HOURS`). Such a call records the row as `deferred` with
`not_before` (the end of the quiet hours, UTC) and returns
`NotificationResult(status="deferred", not_before=...)` without failing. The workflow then
sleeps on a durable timer and calls again with the SAME request (same key):

    while True:
        result = await workflow.execute_activity(
            "send_notification", req, result_type=NotificationResult,
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(days=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=10)))
        if result.status != "deferred":
            break
        await workflow.sleep(max(result.not_before - workflow.now(), timedelta(seconds=1)))

A call before `not_before` answers `deferred` again (nothing is sent), so an early wake-up is
harmless.

Settings (environment)
----------------------
ONEFAMILY_SMTP_HOST (unset = no e-mail), ONEFAMILY_SMTP_PORT (25), ONEFAMILY_SMTP_USER,
ONEFAMILY_SMTP_PASSWORD, ONEFAMILY_SMTP_STARTTLS (false), ONEFAMILY_SMTP_SSL (false, implicit
TLS), ONEFAMILY_SMTP_FROM, ONEFAMILY_SMS_URL (unset = no SMS), ONEFAMILY_SMS_TOKEN,
ONEFAMILY_SMS_QUIET_HOURS ("20:00-08:00"), ONEFAMILY_PUBLIC_URL (links in messages).

SMS gateway contract (generic JSON): `POST {ONEFAMILY_SMS_URL}` with
`Authorization: Bearer {ONEFAMILY_SMS_TOKEN}` and body `{"to": "+45...", "text": "...",
"reference": "<notification key>"}`. 2xx = accepted (an optional JSON `id` is kept);
409 = this reference was already accepted (treated as sent); 400/404/422 = refused for good
(non-retryable); 401/403/408/429/5xx and network errors = retried.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import httpx
from jinja2 import TemplateError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.rendering import render_message
from domain.access import DEFAULT_UNIT
from domain.ics import build_ics
from domain.quiet_hours import parse_quiet, quiet_until
from models.messaging import (
    STAFF_ROLES,
    Channel,
    NotificationRequest,
    NotificationResult,
    NotificationStatus,
    Recipient,
    RecipientQuery,
    RecipientRole,
)
from models.projection import uncovered_of_row
from models.tables import CaseRow, StaffRow
from models.tables_outbox import NotificationRow
from settings import Settings

TIMEZONES = {"DK": "Europe/Copenhagen", "SE": "Europe/Stockholm"}
LANGUAGE_BY_COUNTRY = {"DK": "da", "SE": "sv"}
STAFF_ROLE_AS_RECIPIENT = {
    "coordinator": RecipientRole.coordinator, "team_member": RecipientRole.team,
    "manager": RecipientRole.manager, "committee": RecipientRole.committee,
    "admin": RecipientRole.manager,
}


class NotificationSettings(BaseSettings):
    """The delivery channels; read from the environment (names in the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    smtp_host: str | None = Field(None, validation_alias="ONEFAMILY_SMTP_HOST")
    smtp_port: int = Field(25, validation_alias="ONEFAMILY_SMTP_PORT")
    smtp_user: str | None = Field(None, validation_alias="ONEFAMILY_SMTP_USER")
    smtp_password: str | None = Field(None, validation_alias="ONEFAMILY_SMTP_PASSWORD")
    smtp_starttls: bool = Field(False, validation_alias="ONEFAMILY_SMTP_STARTTLS")
    smtp_ssl: bool = Field(False, validation_alias="ONEFAMILY_SMTP_SSL")
    smtp_from: str = Field("OneFamily <noreply@onefamily.invalid>", validation_alias="ONEFAMILY_SMTP_FROM")
    smtp_timeout: float = Field(30, validation_alias="ONEFAMILY_SMTP_TIMEOUT")
    sms_url: str | None = Field(None, validation_alias="ONEFAMILY_SMS_URL")
    sms_token: str | None = Field(None, validation_alias="ONEFAMILY_SMS_TOKEN")
    sms_timeout: float = Field(10, validation_alias="ONEFAMILY_SMS_TIMEOUT")
    sms_quiet_hours: str = Field("20:00-08:00", validation_alias="ONEFAMILY_SMS_QUIET_HOURS")
    public_url: str | None = Field(None, validation_alias="ONEFAMILY_PUBLIC_URL")

    @property
    def quiet(self) -> tuple[time, time] | None:
        return parse_quiet(self.sms_quiet_hours)


# ---------------------------------------------------------------- pure helpers


def choose_channel(recipient: Recipient, *, optional: bool, has_invite: bool, smtp: bool,
                   sms: bool) -> Channel:
    if (optional and recipient.role is RecipientRole.family
            and recipient.contact_preference == "space"):
        return Channel.in_app
    usable = {Channel.email: bool(smtp and recipient.email), Channel.sms: bool(sms and recipient.phone)}
    pref = recipient.channel_preference
    if pref is Channel.in_app:
        return Channel.in_app
    if pref is not None and usable.get(pref):
        return pref
    family_first_sms = recipient.role in (RecipientRole.family,) and not has_invite
    for channel in ((Channel.sms, Channel.email) if family_first_sms else (Channel.email, Channel.sms)):
        if usable[channel]:
            return channel
    return Channel.in_app


def message_id(key: str, sender: str) -> str:
    domain = sender.rsplit("@", 1)[-1].strip("> ") or "onefamily.invalid"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


# ---------------------------------------------------------------- delivery adapters


class DeliveryError(Exception):
    """A failed send. `text` is technical only (it is stored and shown): no address, no name."""

    def __init__(self, text: str, permanent: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent


class SmtpMailer:
    def __init__(self, cfg: NotificationSettings) -> None:
        self.cfg = cfg

    def send(self, msg: EmailMessage) -> None:
        cfg = self.cfg
        try:
            if cfg.smtp_ssl:
                client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout,
                                          context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout)
            with client:
                client.ehlo()
                if cfg.smtp_starttls and not cfg.smtp_ssl:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                if cfg.smtp_user:
                    client.login(cfg.smtp_user, cfg.smtp_password or "")
                client.send_message(msg)
        except smtplib.SMTPRecipientsRefused as error:
            codes = sorted({code for code, _ in error.recipients.values()})
            raise DeliveryError(f"SMTP recipient refused ({','.join(map(str, codes))})",
                                permanent=all(500 <= c < 600 for c in codes)) from None
        except smtplib.SMTPResponseException as error:
            raise DeliveryError(f"SMTP {error.smtp_code} ({type(error).__name__})") from None
        except smtplib.SMTPException as error:
            raise DeliveryError(f"SMTP error ({type(error).__name__})") from None
        except OSError as error:
            raise DeliveryError(f"SMTP connection failed ({type(error).__name__})") from None


class HttpSmsGateway:
    RETRYABLE_4XX = {401, 403, 408, 425, 429}

    def __init__(self, cfg: NotificationSettings) -> None:
        self.cfg = cfg

    def send(self, to: str, text: str, reference: str) -> str | None:
        headers = {"Authorization": f"Bearer {self.cfg.sms_token}"} if self.cfg.sms_token else {}
        try:
            response = httpx.post(self.cfg.sms_url, json={"to": to, "text": text, "reference": reference},
                                  headers=headers, timeout=self.cfg.sms_timeout)
        except httpx.HTTPError as error:
            raise DeliveryError(f"SMS gateway unreachable ({type(error).__name__})") from None
        status = response.status_code
        if status == 409:  # the gateway already has this reference: delivered before
            return None
        if 200 <= status < 300:
            try:
                body = response.json()
            except ValueError:
                return None
            ref = body.get("id") if isinstance(body, dict) else None
            return str(ref)[:200] if ref is not None else None
        permanent = 400 <= status < 500 and status not in self.RETRYABLE_4XX
        raise DeliveryError(f"SMS gateway HTTP {status}", permanent=permanent)


# ---------------------------------------------------------------- the activities


def _result(row: NotificationRow) -> NotificationResult:
    return NotificationResult(id=row.id, key=row.key, status=NotificationStatus(row.status),
                              channel=Channel(row.channel), not_before=row.not_before,
                              sent_at=row.sent_at)


class NotificationActivities:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        notify: NotificationSettings | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        mailer: SmtpMailer | None = None,
        sms: HttpSmsGateway | None = None,
        before_send: Callable[[NotificationRow], None] | None = None,
        lease: timedelta | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.cfg = notify or NotificationSettings()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.mailer = mailer or (SmtpMailer(self.cfg) if self.cfg.smtp_host else None)
        self.sms = sms or (HttpSmsGateway(self.cfg) if self.cfg.sms_url else None)
        self.before_send = before_send  # test hook: a crash between record and send
        # How long one attempt holds a row: longer than any single send can take.
        self.lease = lease if lease is not None else timedelta(
            seconds=max(self.cfg.smtp_timeout, self.cfg.sms_timeout) + 30)
        country = settings.country.upper()
        self.timezone = TIMEZONES.get(country, "Europe/Copenhagen")
        try:
            from domain.policy import current_policy

            self.timezone = current_policy(country).timezone
        except Exception:  # noqa: BLE001 - unknown country: the table above
            pass
        self.default_language = LANGUAGE_BY_COUNTRY.get(country, "en")
        self.public_url = self.cfg.public_url or f"http://{settings.api_host}:{settings.api_port}/"

    # ------------------------------------------------------------ recipients

    def _resolve(self, recipient: Recipient) -> Recipient:
        if recipient.role not in STAFF_ROLES:
            return recipient
        if recipient.email and recipient.phone and recipient.name:
            return recipient
        with Session(self.engine) as session:
            row = session.get(StaffRow, recipient.id)
        if row is None or not row.active:
            return recipient
        return recipient.model_copy(update={
            "name": recipient.name or row.name,
            "email": recipient.email or row.email,
            "phone": recipient.phone or row.phone,
        })

    @activity.defn(name="resolve_recipients")
    def resolve_recipients(self, query: RecipientQuery) -> list[Recipient]:
        """Every active staff member with a role (e.g. all managers), as recipients."""
        role = STAFF_ROLE_AS_RECIPIENT[query.role]
        with Session(self.engine) as session:
            rows = session.exec(select(StaffRow).where(StaffRow.active).order_by(StaffRow.id)).all()
            if query.role == "manager" and query.unit is None and query.case_id is not None:
                case = session.get(CaseRow, query.case_id)
                query = query.model_copy(update={"unit": case.unit if case else DEFAULT_UNIT})
        return [
            Recipient(role=role, id=r.id, name=r.name, email=r.email, phone=r.phone)
            for r in rows
            if query.role in r.roles and (query.unit is None or r.unit == query.unit)
        ]

    def _organizer(self, staff_id: str | None) -> str:
        """The ORGANIZER of an invitation: the case's coordinator ("Name <address>") from the
        staff directory, so a reply reaches a person; the sender address when they have none."""
        if staff_id:
            with Session(self.engine) as session:
                row = session.get(StaffRow, staff_id)
            if row is not None and row.email:
                return formataddr((row.name or "", row.email))
        return self.cfg.smtp_from

    def _consent_withdrawn(self, req: NotificationRequest, recipient: Recipient,
                           now: datetime) -> bool:
        """A staff member on the case's team whom the family's consent does not cover (any
        more) gets no message about it (DESIGN §11): the read model's facts decide, as for
        reading the case. A meeting's CANCEL still reaches them: it takes back what they were
        sent and tells nothing new."""
        if recipient.role not in STAFF_ROLES:
            return False
        if req.invite is not None and req.invite.method == "CANCEL":
            return False
        with Session(self.engine) as session:
            # The projected columns; the sealed document is loaded (and decrypted) only if a
            # consent ended since the last projection (uncovered_of_row).
            case = session.get(CaseRow, req.case_id, options=[load_only(
                CaseRow.consent_until, CaseRow.uncovered_text, CaseRow.uncovered_documents_text)])
            return case is not None and recipient.id in uncovered_of_row(case, now)[0]

    # ------------------------------------------------------------ record

    def _render(self, req: NotificationRequest, recipient: Recipient, language: str,
                channel: Channel, now: datetime) -> tuple[str, str, str | None]:
        variables = {
            "timezone": req.invite.tz if req.invite else self.timezone,
            "app_url": self.public_url,
            "case_id": req.case_id,
            "case_ref": req.case_id[:8],
            "recipient_name": recipient.name or "",
            "recipient_role": recipient.role.value,
            "purpose": req.purpose,
            "invite": req.invite.model_dump(mode="json") if req.invite else None,
            **req.context,
        }
        try:
            msg = render_message(req.template, language, variables)
        except TemplateError as error:
            raise ApplicationError(
                f"Message template {req.template}/{language} failed: {type(error).__name__}: "
                f"{getattr(error, 'message', '')}"[:300],
                type="NotificationTemplateError", non_retryable=True,
            ) from None
        ics = (build_ics(req.invite, self._organizer(req.invite.organizer_id), recipient, now)
               if req.invite is not None else None)
        return msg.subject, (msg.sms if channel is Channel.sms else msg.body), ics

    def _record(self, req: NotificationRequest, recipient: Recipient, now: datetime,
                cancelled: bool = False) -> NotificationRow:
        with Session(self.engine) as session:
            row = session.exec(select(NotificationRow).where(NotificationRow.key == req.key)).first()
            if row is not None:
                return row
        language = req.language or recipient.language or self.default_language
        channel = choose_channel(recipient, optional=req.optional, has_invite=req.invite is not None,
                                 smtp=self.mailer is not None, sms=self.sms is not None)
        subject, body, ics = self._render(req, recipient, language, channel, now)
        in_app = channel is Channel.in_app
        row = NotificationRow(
            id=str(uuid.uuid4()), key=req.key, case_id=req.case_id, channel=channel.value,
            recipient_id=recipient.id, recipient_role=recipient.role.value, purpose=req.purpose,
            template=req.template, language=language,
            status=(NotificationStatus.cancelled if cancelled else NotificationStatus.sent
                    if in_app else NotificationStatus.queued).value,
            created_at=now, updated_at=now, sent_at=now if in_app and not cancelled else None,
            subject=subject, body=body, ics=ics,
        )
        # The row as written is the row stored (every column set here): no reload after commit.
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # a concurrent attempt recorded it first
                session.rollback()
                return session.exec(select(NotificationRow).where(NotificationRow.key == req.key)).one()
            return row

    def _set(self, row_id: str, **values: object) -> NotificationRow:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(NotificationRow, row_id)
            for k, v in values.items():
                setattr(row, k, v)
            session.add(row)
            session.commit()
            return row

    def _claim(self, row_id: str, now: datetime) -> bool:
        """Take the row for one send attempt (atomic): not sent, not held by a live attempt."""
        with Session(self.engine) as session:
            result = session.execute(
                update(NotificationRow)
                .where(NotificationRow.id == row_id,
                       NotificationRow.status.not_in([NotificationStatus.sent.value,
                                                      NotificationStatus.cancelled.value]),
                       or_(NotificationRow.lease_until.is_(None), NotificationRow.lease_until < now))
                .values(lease_until=now + self.lease, attempts=NotificationRow.attempts + 1,
                        status=NotificationStatus.queued.value, updated_at=now)
            )
            session.commit()
            return result.rowcount == 1

    # ------------------------------------------------------------ send

    def _email(self, row: NotificationRow, recipient: Recipient) -> str:
        msg = EmailMessage()
        msg["From"] = self.cfg.smtp_from
        msg["To"] = formataddr((recipient.name or "", recipient.email or ""))
        msg["Subject"] = row.subject
        msg["Date"] = formatdate(localtime=False)
        mid = message_id(row.key, self.cfg.smtp_from)
        msg["Message-ID"] = mid
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(row.body)
        if row.ics:
            method = "CANCEL" if "METHOD:CANCEL" in row.ics else "REQUEST"
            msg.add_alternative(row.ics, subtype="calendar", params={"method": method})
            msg.add_attachment(row.ics.encode("utf-8"), maintype="text", subtype="calendar",
                               filename="invite.ics", params={"method": method})
        self.mailer.send(msg)
        return mid

    def _deliver(self, row: NotificationRow, recipient: Recipient) -> str | None:
        channel = Channel(row.channel)
        if channel is Channel.email:
            if self.mailer is None or not recipient.email:
                raise DeliveryError("e-mail channel not available (no SMTP host or no address)")
            return self._email(row, recipient)
        if channel is Channel.sms:
            if self.sms is None or not recipient.phone:
                raise DeliveryError("SMS channel not available (no gateway or no phone number)")
            return self.sms.send(recipient.phone, row.body, row.key)
        return None

    def send(self, req: NotificationRequest) -> NotificationResult:
        """The activity's body, usable without Temporal."""
        now = self.clock()
        recipient = self._resolve(req.recipient)
        withdrawn = self._consent_withdrawn(req, recipient, now)
        row = self._record(req, recipient, now, cancelled=withdrawn)
        if row.status in (NotificationStatus.sent.value, NotificationStatus.cancelled.value):
            return _result(row)
        if withdrawn:
            return _result(self._set(row.id, status=NotificationStatus.cancelled.value,
                                     updated_at=now, last_error="cancelled: the family's "
                                     "consent does not cover the recipient"))
        if (row.channel == Channel.sms.value and recipient.role is RecipientRole.family
                and not req.asked_for):  # a sign-in code the family just asked for: now
            # The case's policy sets the quiet hours when the request carries them.
            quiet = self.cfg.quiet if req.quiet_hours is None else parse_quiet(req.quiet_hours)
            not_before = quiet_until(now, self.timezone, quiet)
            if row.not_before is not None and row.not_before > now:
                not_before = max(not_before or row.not_before, row.not_before)
            if not_before is not None:
                return _result(self._set(row.id, status=NotificationStatus.deferred.value,
                                         not_before=not_before, updated_at=now))
        if not self._claim(row.id, now):
            with Session(self.engine) as session:
                current = session.get(NotificationRow, row.id)
            if current.status == NotificationStatus.sent.value:
                return _result(current)
            raise ApplicationError("Another attempt is sending this notification; retrying later.",
                                   type="NotificationBusy")
        if self.before_send is not None:
            self.before_send(row)
        try:
            ref = self._deliver(row, recipient)
        except DeliveryError as error:
            self._set(row.id, status=NotificationStatus.failed.value, last_error=error.text[:300],
                      lease_until=None, updated_at=self.clock())
            raise ApplicationError(
                f"{row.channel} delivery failed: {error.text}",
                type="DeliveryRejected" if error.permanent else "DeliveryFailed",
                non_retryable=error.permanent,
            ) from None
        done = self.clock()
        return _result(self._set(row.id, status=NotificationStatus.sent.value, sent_at=done,
                                 provider_ref=ref, lease_until=None, last_error=None,
                                 updated_at=done))

    @activity.defn(name="send_notification")
    def send_notification(self, req: NotificationRequest) -> NotificationResult:
        return self.send(req)
