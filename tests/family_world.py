"""The real stack in-process for the family's tests (tests/test_family_identity.py,
tests/test_family_api.py): the API app (every middleware, local auth) on an ASGI transport,
the real Temporal test server with this stack's workers, a real SMTP server (aiosmtpd) and the
SMS gateway fake (tests/messaging_fakes.py) the notification activity delivers to.

Staff call with personal API tokens; a family member is a client of its own (its own cookie
jar) holding a family session."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from api.credentials import create_token
from models.db import get_engine, init_read_model, migrate
from models.tables import StaffRow
from settings import Settings
from tests.conftest import running_worker
from tests.messaging_fakes import SmsGateway, SmtpServer

BASE = "http://testserver"
STAFF = [("anna", "Anna Berg", ["coordinator"], "children_disability"),
         ("bo", "Bo Holm", ["coordinator"], "children_disability"),
         ("ole", "Ole Dam", ["team_member"], "adult_services"),
         ("mia", "Mia Lund", ["manager"], "children_disability"),
         ("admin", "Administrator", ["admin"], "administration")]
LINK = re.compile(r"/family/welcome\?token=([A-Za-z0-9_-]+)")
CODE = re.compile(r"\b(\d{6})\b")
SIMPLE_PLAN = {
    "family_goals": ["Emil goes to school every day"],
    "goals": [{"id": "g1", "text": "Emil attends school 5 days a week", "owner": "anna"}],
    "actions": [{"id": "a1", "goal_id": "g1", "text": "School adapts the timetable",
                 "owner": "school", "due": "2027-01-15"},
                {"id": "a2", "goal_id": "g1", "text": "We walk Emil to school", "owner": "family",
                 "due": "2027-02-01"}],
    "services": [],
}


@dataclass
class World:
    app: object
    settings: Settings
    smtp: SmtpServer
    sms: SmsGateway
    transport: httpx.ASGITransport
    tokens: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def engine(self):
        return get_engine(self.settings.db_url)

    def client(self, staff_id: str | None = None, peer: str = "127.0.0.1") -> httpx.AsyncClient:
        """A staff member's client (their bearer token), or a browser of its own (None)."""
        headers = {"Authorization": f"Bearer {self.tokens[staff_id]}"} if staff_id else {}
        transport = self.transport if peer == "127.0.0.1" else httpx.ASGITransport(
            app=self.app, client=(peer, 40000))
        c = httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers, timeout=60)
        self.clients.append(c)
        return c

    async def register(self, family: str = "Family Jensen", email: str | None = None,
                       phone: str | None = None, child: str = "Emil") -> dict:
        """A case coordinated by anna with ole on the team; its parent Mette is m2."""
        email = email or f"mette.{uuid.uuid4().hex[:6]}@example.org"
        phone = phone or f"+4521{uuid.uuid4().int % 1_000_000:06d}"
        anna = self.client("anna")
        body = {
            "referral": {"source": "school", "kind": "application", "received_at": "2026-11-20T09:00:00Z",
                         "reason": "Needs coordinated support at home and school"},
            "family": {"name": family, "language": "en", "members": [
                {"name": child, "role": "child", "birth_date": "2015-03-02", "diagnoses": ["ADHD"]},
                {"name": f"Mette of {family}", "role": "parent", "birth_date": "1985-01-10",
                 "phone": phone, "email": email}]},
            "consent": {"coordinated_handling": True}, "contact_preference": "normal",
        }
        r = await anna.post("/api/v1/cases", json=body)
        assert r.status_code == 201, r.text
        case = r.json()
        r = await anna.post(f"/api/v1/cases/{case['id']}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200, r.text
        r = await anna.post(f"/api/v1/cases/{case['id']}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        assert r.status_code == 200, r.text
        return r.json() | {"email": email, "phone": phone}

    async def to_planning(self, case_id: str) -> dict:
        """Contact, assessment meeting, assessment, a plan and both votes: the team's decision
        is made and the plan waits for the family."""
        anna, ole = self.client("anna"), self.client("ole")
        now = datetime.now(UTC)
        steps = [
            (anna.post, "/contacts", {"kind": "phone", "at": now.isoformat()}),
            (anna.post, "/assessment/meeting", {"at": (now + timedelta(days=3)).isoformat(),
                                                 "location": "Town hall",
                                                 "participants": ["anna", "ole", "family"]}),
            (anna.put, "/assessment", {"ics": {"child_development": [
                {"dimension": "health", "concerns": "INTERNAL-ASSESSMENT-NOTE stomach aches"}]},
                "child_views": "Emil wants to go to school without stomach aches."}),
            (anna.post, "/assessment/complete", None),
            (anna.put, "/plan", SIMPLE_PLAN),
            (anna.post, "/plan/votes", {"staff_id": "anna", "vote": "agree",
                                         "reason": "INTERNAL-VOTE-REASON"}),
            (ole.post, "/plan/votes", {"staff_id": "ole", "vote": "agree"}),
        ]
        answer = None
        for call, path, body in steps:
            r = await (call(f"/api/v1/cases/{case_id}{path}", json=body) if body is not None
                       else call(f"/api/v1/cases/{case_id}{path}"))
            assert r.status_code == 200, (path, r.text)
            answer = r.json()
        return answer

    async def invite(self, case_id: str, channel: str = "email", member_id: str = "m2",
                     by: str = "anna") -> httpx.Response:
        return await self.client(by).post(f"/api/v1/cases/{case_id}/family/invitations",
                                          json={"member_id": member_id, "channel": channel})

    async def mail_to(self, address: str, seen: int = 0, timeout: float = 30) -> EmailMessage:
        """The (seen+1)-th mail to `address`, waiting for the worker to send it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            mails = [m for m in self.smtp.messages if address in str(m["To"])]
            if len(mails) > seen:
                return mails[seen]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no mail #{seen + 1} to {address}")
            await asyncio.sleep(0.05)

    async def sms_to(self, phone: str, seen: int = 0, timeout: float = 30) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            texts = [r["body"] for r in self.sms.requests if r["body"].get("to") == phone]
            if len(texts) > seen:
                return texts[seen]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no SMS #{seen + 1} to {phone}")
            await asyncio.sleep(0.05)

    async def find_in_mail(self, address: str, pattern: re.Pattern, seen: int = 0,
                           timeout: float = 30) -> str:
        """The first match of `pattern` in the mails to `address` after the first `seen` (the
        case's own messages may arrive in between)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            mails = [m for m in self.smtp.messages if address in str(m["To"])][seen:]
            for mail in mails:
                found = pattern.search(mail.get_body(preferencelist=("plain",)).get_content())
                if found:
                    return found.group(1)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no mail to {address} matches {pattern.pattern}")
            await asyncio.sleep(0.05)

    async def find_in_sms(self, phone: str, pattern: re.Pattern, seen: int = 0, timeout: float = 30) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for text in [r["body"]["text"] for r in self.sms.requests if r["body"].get("to") == phone][seen:]:
                found = pattern.search(text)
                if found:
                    return found.group(1)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no SMS to {phone} matches {pattern.pattern}")
            await asyncio.sleep(0.05)

    def mails(self, address: str) -> int:
        return len([m for m in self.smtp.messages if address in str(m["To"])])

    def texts(self, phone: str) -> int:
        return len([r for r in self.sms.requests if r["body"].get("to") == phone])

    async def link_from_mail(self, address: str, seen: int = 0) -> str:
        return await self.find_in_mail(address, LINK, seen)

    async def family_session(self, case: dict, channel: str = "email") -> tuple[httpx.AsyncClient, str]:
        """Invite m2 by `channel`, open the link, spend it: (the family's client, its CSRF token)."""
        before = self.mails(case["email"]) if channel == "email" else self.texts(case["phone"])
        r = await self.invite(case["id"], channel)
        assert r.status_code == 201, r.text
        if channel == "email":
            token = await self.find_in_mail(case["email"], LINK, before)
        else:
            token = await self.find_in_sms(case["phone"], LINK, before)
        family = self.client()
        r = await family.post("/family/welcome", json={"token": token})
        assert r.status_code == 200, r.text
        return family, r.json()["csrf_token"]


@asynccontextmanager
async def family_world(ts_env: WorkflowEnvironment, tmp: Path, **extra: str) -> AsyncIterator[World]:
    from api.main import create_app

    async with AsyncExitStack() as stack:
        smtp = stack.enter_context(SmtpServer())
        sms = stack.enter_context(SmsGateway())
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        # The worker's notification channels (activities/notifications.py reads them at build).
        for name, value in {"ONEFAMILY_SMTP_HOST": "127.0.0.1", "ONEFAMILY_SMTP_PORT": str(smtp.port),
                            "ONEFAMILY_SMTP_FROM": "OneFamily <noreply@kommune.example>",
                            "ONEFAMILY_SMS_URL": sms.url, "ONEFAMILY_SMS_TOKEN": SmsGateway.TOKEN,
                            "ONEFAMILY_SMS_QUIET_HOURS": "none", "ONEFAMILY_PUBLIC_URL": BASE,
                            "ONEFAMILY_STUCK_INDEX_SECONDS": "0"}.items():
            patch.setenv(name, value)
        settings = Settings(ONEFAMILY_DATA_DIR=str(tmp / "data"), ONEFAMILY_ALLOWED_HOSTS="testserver",
                            ONEFAMILY_PUBLIC_URL=BASE,
                            ONEFAMILY_TASK_QUEUE=f"test-{uuid.uuid4().hex[:12]}",
                            ONEFAMILY_COMMITTEE_ID=f"test-{uuid.uuid4().hex[:12]}", **extra)
        migrate(settings.db_url)
        init_read_model(settings)
        world_tokens: dict[str, str] = {}
        with Session(get_engine(settings.db_url)) as session:
            for sid, name, roles, dept in STAFF:
                if session.get(StaffRow, sid) is None:
                    session.add(StaffRow(id=sid, name=name, discipline="social_worker", department=dept,
                                         unit="children_disability", roles=roles, email=f"{sid}@example.org",
                                         created_at=datetime.now(UTC)))
            session.commit()
            for sid, *_ in STAFF:
                world_tokens[sid] = create_token(session, sid, "test", 1)[1]
        await stack.enter_async_context(running_worker(ts_env.client, settings))
        app = create_app(settings)
        app.state.settings = settings
        app.state.engine = get_engine(settings.db_url)
        app.state.temporal = ts_env.client
        world = World(app=app, settings=settings, smtp=smtp, sms=sms,
                      transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 40000)),
                      tokens=world_tokens)
        try:
            yield world
        finally:
            for c in world.clients:
                await c.aclose()
