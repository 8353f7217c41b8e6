"""The family portal's pages (DESIGN §11, issue 10 §2, §3, §5) against the real stack (dev
server, worker and API processes) with a real SMTP server (aiosmtpd on 127.0.0.1):

- the coordinator invites a parent by e-mail through the JSON API; the sign-in link is read
  from the SMTP server's mailbox; real Chromium in a phone-sized window (390 × 844) opens it,
  presses the welcome page's button (a GET never spends the link), lands on /family, sees who
  has the ball, reads the plan and approves it — the case moves on (the staff JSON API says
  so); it writes focus points, changes the contact preference, asks for a pause, gives,
  changes and withdraws consents; the page switches language;
- every family page is screenshotted (test-artifacts/family/) and checked by axe-core (no
  serious or critical violation), and fits the phone's width;
- withdrawing a consent on the page: the team member's very next read of the case through
  the staff API is 403 — the time from the revoke's answer to that refused read is printed;
- a family session never sees another family's case on any page or address (403/404), a
  refused form shows the sentence next to the form and keeps what was typed, a staff member
  or nobody does not get the family's pages.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from api.pages.i18n import translate
from models import sealed
from models.db import get_engine
from models.tables_outbox import DocumentRow
from tests.axe import AxeTable
from tests.browser import (
    ARTIFACTS,
    PEOPLE,
    Shots,
    fail_on_serious,
    fill,
    form,
    main_text,
    no_server_errors,
    staffed_stack,
    watch_errors,
)
from tests.e2e_stack import Stack
from tests.factories import password_of
from tests.messaging_fakes import SmtpServer
from workflows.codec import load_keys

PHONE = {"width": 390, "height": 844}
LINK = re.compile(r"(https?://[^\s\"'<>]+/family/welcome\?token=[A-Za-z0-9_-]+)")
CODE = re.compile(r"\b(\d{6})\b")
PLAN = {
    "family_goals": ["Emil goes to school every day", "Calmer mornings at home"],
    "goals": [{"id": "g1", "text": "Emil attends school 5 days a week", "owner": "anna"}],
    "actions": [{"id": "a1", "goal_id": "g1", "text": "School adapts the timetable",
                 "owner": "ole", "due": "2027-01-15"},
                {"id": "a2", "goal_id": "g1", "text": "We walk Emil to school", "owner": "family",
                 "due": "2027-02-01"}],
    "services": [],
}
FAMILY_PAGES = ("/family", "/family/plan", "/family/messages", "/family/consents", "/family/contact")


def en(key: str, **values: object) -> str:
    return translate("en", key, **values)


def da(key: str, **values: object) -> str:
    return translate("da", key, **values)


@dataclass
class World:
    stack: Stack
    smtp: SmtpServer
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.stack.base_url

    def staff(self, staff_id: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base + "/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {self.tokens[staff_id]}"})

    async def register(self, family: str, child: str, language: str = "en") -> dict:
        """A case coordinated by anna with ole (adult services) on the team, waiting for the
        family's answer to plan v1; the parent (m2) has an e-mail address on file."""
        email = f"parent.{uuid.uuid4().hex[:8]}@example.org"
        now = datetime.now(UTC)
        body = {
            "referral": {"source": "school", "kind": "application", "received_at": now.isoformat(),
                         "reason": "Needs coordinated support at home and school"},
            "family": {"name": family, "language": language, "members": [
                {"name": child, "role": "child", "birth_date": "2015-03-02", "diagnoses": ["ADHD"]},
                {"name": f"Mette {family.split()[-1]}", "role": "parent", "birth_date": "1985-01-10",
                 "email": email}]},
            "consent": {"coordinated_handling": True}, "contact_preference": "normal",
        }
        async with self.staff("anna") as anna, self.staff("ole") as ole:
            r = await anna.post("/cases", json=body)
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            steps = [
                (anna, "post", "coordinator", {"coordinator_id": "anna"}),
                (anna, "post", "team", {"members": [{"staff_id": "ole", "discipline": "adult_services",
                                                     "department": "adult_services"}]}),
                (anna, "post", "contacts", {"kind": "phone", "at": now.isoformat()}),
                (anna, "post", "assessment/meeting", {"at": (now + timedelta(days=3)).isoformat(),
                                                      "location": "Town hall",
                                                      "participants": ["anna", "ole", "family"]}),
                (anna, "put", "assessment", {"ics": {"child_development": [
                    {"dimension": "health", "concerns": "INTERNAL-ASSESSMENT-NOTE"}]},
                    "child_views": f"{child} wants to go to school."}),
                (anna, "post", "assessment/complete", None),
                (anna, "put", "plan", PLAN),
                (anna, "post", "plan/votes", {"staff_id": "anna", "vote": "agree",
                                              "reason": "INTERNAL-VOTE-REASON"}),
                (ole, "post", "plan/votes", {"staff_id": "ole", "vote": "agree"}),
            ]
            for who, method, path, payload in steps:
                call = getattr(who, method)
                r = await (call(f"/cases/{cid}/{path}", json=payload) if payload is not None
                           else call(f"/cases/{cid}/{path}"))
                assert r.status_code == 200, (path, r.text)
        return {"id": cid, "family": family, "child": child, "email": email}

    async def invite(self, case: dict) -> str:
        """The coordinator invites the parent by e-mail (JSON API); the link from the mailbox."""
        before = self.mails(case["email"])
        async with self.staff("anna") as anna:
            r = await anna.post(f"/cases/{case['id']}/family/invitations",
                                json={"member_id": "m2", "channel": "email"})
            assert r.status_code == 201, r.text
            assert "token" not in r.text
        return await self.link_from_mailbox(case["email"], before)

    def mails(self, address: str) -> int:
        return len([m for m in self.smtp.messages if address in str(m["To"])])

    async def link_from_mailbox(self, address: str, seen: int = 0) -> str:
        return await self.find_in_mailbox(address, LINK, seen)

    async def find_in_mailbox(self, address: str, pattern: re.Pattern, seen: int = 0,
                              timeout: float = 60) -> str:
        """The first match of `pattern` in the mails to `address` after the first `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            for mail in [m for m in self.smtp.messages if address in str(m["To"])][seen:]:
                found = pattern.search(mail.get_body(preferencelist=("plain",)).get_content())
                if found:
                    return found.group(1)
            assert time.monotonic() < deadline, f"no mail to {address} matches {pattern.pattern}"
            await asyncio.sleep(0.1)

    async def family_client(self, case: dict) -> httpx.AsyncClient:
        """A browser-like client signed in through the invitation link's form (its cookie jar)."""
        link = await self.invite(case)
        client = httpx.AsyncClient(base_url=self.base, timeout=60)
        page = await client.get(link.removeprefix(self.base))
        assert page.status_code == 200 and 'action="/family/welcome"' in page.text
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
        r = await client.post("/family/welcome", data={"token": token})
        assert r.status_code == 303 and r.headers["location"] == "/family", r.text
        return client

    async def stage(self, case_id: str) -> str:
        async with self.staff("anna") as anna:
            r = await anna.get(f"/cases/{case_id}")
            assert r.status_code == 200, r.text
            return r.json()["stage"]


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    people = [p for p in PEOPLE if p["id"] in ("anna", "ole", "lise")]
    with SmtpServer() as smtp, pytest.MonkeyPatch.context() as patch:
        # The worker's notification channel (activities/notifications.py reads these).
        for name, value in {"ONEFAMILY_SMTP_HOST": "127.0.0.1", "ONEFAMILY_SMTP_PORT": str(smtp.port),
                            "ONEFAMILY_SMTP_FROM": "OneFamily <noreply@kommune.example>",
                            "ONEFAMILY_SMS_QUIET_HOURS": "none"}.items():
            patch.setenv(name, value)
        async with staffed_stack(Path(tmp_path_factory.mktemp("family-pages")) / "data", people) as stack:
            w = World(stack, smtp)
            for p in people:
                w.tokens[p["id"]] = await stack.token(p["id"], password_of(p["id"]))
            yield w


def stored_document(world: World, case_id: str, kind: str, text: str) -> str:
    """A document of the case as the documents worker stores it (for the documents list),
    sealed at rest with the stack's own key (the stack's processes must read it)."""
    doc_id = uuid.uuid4().hex
    saved = sealed._keys  # this test process's keys (conftest's), put back afterwards
    current, keys = load_keys(world.stack.settings)
    sealed.configure(current, keys)
    try:
        with Session(get_engine(world.stack.settings.db_url)) as s:
            s.add(DocumentRow(id=doc_id, case_id=case_id, kind=kind, version=1, language="en",
                              content_hash=doc_id[:16], html=f"<html><body>{kind} {text}</body></html>",
                              pdf=b"%PDF-1.4 test", created_at=datetime.now(UTC), created_by="system"))
            s.commit()
    finally:
        sealed._keys = saved
    return doc_id


# ---------------------------------------------------------------- the browser: a parent's phone


async def fits_the_phone(page) -> None:
    wide = await page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
    assert wide <= 1, f"{page.url} scrolls sideways by {wide}px at {PHONE['width']}px"


async def submit(page, selector: str) -> None:
    async with page.expect_navigation():
        await page.locator(f"{selector} button[type=submit]").click()
    refusal = page.locator(".alert-error")
    if await refusal.count():
        raise AssertionError(f"{selector} was refused on {page.url}: {await refusal.first.inner_text()}")


async def test_a_parent_signs_in_from_the_mail_and_approves_the_plan_on_a_phone(
        world: World, browser) -> None:
    from playwright.async_api import expect

    case = await world.register("Family Jensen", "Emil")
    doc = stored_document(world, case["id"], "status_minutes", "MINUTES-FOR-THE-FAMILY")
    link = await world.invite(case)  # the coordinator's invitation, read from the SMTP mailbox
    assert link.startswith(world.base + "/family/welcome?token=")
    table = AxeTable()
    shots = Shots("family", table)
    timings: dict[str, float] = {}
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                        device_scale_factor=1, locale="en-GB",
                                        extra_http_headers={"Accept-Language": "en-GB"})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    watch_errors(page, "parent")

    # The link's page: a button; opening it spends nothing.
    await page.goto(link)
    await expect(page.locator("h1")).to_have_text(en("family.welcome.title"))
    await shots(page, "welcome page of the invitation link", axe="welcome")
    await fits_the_phone(page)
    async with page.expect_navigation():
        await page.locator("#welcome-continue").click()
    assert page.url == world.base + "/family", page.url

    # Home: who has the ball — it is the family's turn to answer plan version 1.
    ball = page.locator("#ball")
    await expect(ball).to_have_attribute("data-ball", "family_approval")
    await expect(ball).to_have_attribute("data-who", "family")
    await expect(page.locator("#ball-sentence")).to_contain_text("It is your turn")
    await expect(page.locator("#family-member")).to_have_text("Mette Jensen")
    await expect(page.locator("#coordinator")).to_contain_text("Anna Berg")
    assert await page.locator("a[href='/family/plan#answer']").count() == 1
    meeting = page.locator("#meeting-assessment")
    await expect(meeting).to_contain_text("Town hall")
    ics = meeting.locator("a.of-calendar-link")
    assert await ics.get_attribute("href") == "/api/v1/family/meetings/assessment.ics"
    calendar = await context.request.get(world.base + "/api/v1/family/meetings/assessment.ics")
    assert calendar.status == 200 and "BEGIN:VEVENT" in await calendar.text()
    assert await page.locator("nav[aria-label='Main menu'], .navigation-menu").count() == 0
    await shots(page, "home who has the ball", axe="home")
    await fits_the_phone(page)

    # The plan: the family's own goals first, the actions with who and by when.
    await page.locator("#answer-link").click()
    await page.wait_for_url(re.compile(r"/family/plan"))
    await expect(page.locator("#family-goals li").first).to_have_text("Emil goes to school every day")
    await expect(page.locator("#action-a1")).to_contain_text("Ole Dam")
    await expect(page.locator("#action-a1")).to_contain_text("15 January 2027")
    await expect(page.locator("#action-a2")).to_contain_text("you")
    main = await main_text(page)
    assert "INTERNAL-VOTE-REASON" not in main and "INTERNAL-ASSESSMENT-NOTE" not in main
    await shots(page, "plan waiting for the answer", axe="plan")
    await fits_the_phone(page)
    await fill(page, "family_response", {"approved": "true",
                                         "comment": "Good plan, thank you. Mornings are hard."})
    await shots(page, "plan answer filled in")
    await submit(page, "#form-family_response")
    await expect(page.locator("#flash-ok")).to_have_text(en("family.plan.answered"))
    await expect(page.locator("#answer-given")).to_have_attribute("data-approved", "true")
    await expect(page.locator("#family-comment")).to_contain_text("Mornings are hard.")
    await shots(page, "plan approved")
    # The case moved on: the team decided, the family approved — the plan is in force.
    deadline = time.monotonic() + 20
    while (stage := await world.stage(case["id"])) != "active":
        assert time.monotonic() < deadline, f"stage {stage!r} after the family's approval"
        await asyncio.sleep(0.2)

    # Home again: the ball moved on.
    await page.locator("#nav-home").click()
    await page.wait_for_url(world.base + "/family")
    await expect(page.locator("#ball")).not_to_have_attribute("data-ball", "family_approval")
    # Focus points before the next meeting.
    await fill(page, "family_focus_points", {"text": "How Emil's mornings can be calmer."})
    await submit(page, "#form-family_focus_points")
    await expect(page.locator("#focus-points")).to_contain_text("How Emil's mornings can be calmer.")
    await shots(page, "home after the approval and the focus points")

    # Letters and messages: the minutes meant for the family, the messages sent to it.
    await page.locator("#nav-messages").click()
    await page.wait_for_url(world.base + "/family/messages")
    await expect(page.locator(f"#document-{doc} a").first).to_have_attribute(
        "href", f"/api/v1/family/documents/{doc}")
    minutes = await context.request.get(world.base + f"/api/v1/family/documents/{doc}")
    assert minutes.status == 200 and "MINUTES-FOR-THE-FAMILY" in await minutes.text()
    await expect(page.locator("#message-list [data-purpose='family_invitation']")).to_have_count(1)
    assert "token=" not in await page.content()  # the link's text is never shown
    await shots(page, "letters and messages", axe="messages")
    await fits_the_phone(page)

    # Contact and pause.
    await page.locator("#nav-contact").click()
    await page.wait_for_url(world.base + "/family/contact")
    await shots(page, "contact and pause", axe="contact")
    await fits_the_phone(page)
    await fill(page, "set_contact_preference", {"preference": "space"})
    await submit(page, "#form-set_contact_preference")
    await expect(page.locator("#contact")).to_have_attribute("data-preference", "space")
    await fill(page, "request_pause", {"reason": "Emil is in hospital for two weeks."})
    await submit(page, "#form-request_pause")
    await expect(page.locator("#pause-requests")).to_contain_text("hospital")
    await shots(page, "contact changed and pause asked for")

    # Sharing: give a consent naming Ole, extend it, withdraw the referral's consent
    # for the whole team — Ole still reads the case (the new consent covers him).
    await page.locator("#nav-consents").click()
    await page.wait_for_url(world.base + "/family/consents")
    await expect(page.locator("#consent-c1")).to_have_attribute("data-status", "active")
    await expect(page.locator("#reader-list [data-reader='anna']")).to_contain_text("Anna Berg")
    await shots(page, "sharing and privacy", axe="consents")
    await fits_the_phone(page)
    until = (date.today() + timedelta(days=90)).isoformat()
    give = form(page, "give_consent")
    await give.locator("input[name^='staff_ids.'][value='ole']").check()
    await give.locator("input[name='expires_at']").fill(until)
    await submit(page, "#form-give_consent")
    await expect(page.locator("#consent-c2")).to_have_attribute("data-status", "active")
    await expect(page.locator("#consent-c2")).to_contain_text("Ole Dam")
    later = (date.today() + timedelta(days=200)).isoformat()
    await page.locator("#consent-c2 summary").click()
    await page.locator("#form-change_consent-c2 input[name='expires_at']").fill(later)
    await submit(page, "#form-change_consent-c2")
    await expect(page.locator("#consent-c2")).to_contain_text(str(date.fromisoformat(later).year))
    await submit(page, "#form-revoke_consent-c1")
    await expect(page.locator("#consent-c1")).to_have_attribute("data-status", "revoked")
    async with world.staff("ole") as ole:
        assert (await ole.get(f"/cases/{case['id']}")).status_code == 200

        # Withdraw the consent naming Ole: his very next read is refused.
        await page.locator("#form-revoke_consent-c2 textarea[name='reason']").fill(
            "We want to talk to Ole first.")
        async with page.expect_response(lambda r: r.url.endswith("/family/consents/c2/revoke")
                                        and r.request.method == "POST") as answer:
            await page.locator("#form-revoke_consent-c2 button[type=submit]").click()
        assert (await answer.value).status == 303
        answered = time.monotonic()
        refused = await ole.get(f"/cases/{case['id']}")
        timings["revoke → refused read"] = time.monotonic() - answered
        assert refused.status_code == 403, refused.text
        assert "consent" in refused.json()["detail"]
    await page.wait_for_url(re.compile(r"/family/consents"))
    await expect(page.locator("#consent-c2")).to_have_attribute("data-status", "revoked")
    await expect(page.locator("#flash-ok")).to_have_text(en("family.consent.revoked"))
    await shots(page, "consents withdrawn")

    # The language switch (a cookie): Danish.
    await page.locator("#of-language").select_option("da")
    async with page.expect_navigation():
        await page.locator("form.of-lang button[type=submit]").click()
    assert await page.locator("html").get_attribute("lang") == "da"
    await expect(page.locator("h1")).to_have_text(da("family.consents.title"))
    await page.locator("#nav-home").click()
    await page.wait_for_url(world.base + "/family")
    await expect(page.locator("#ball-heading")).to_have_text(da("family.ball.heading"))
    await shots(page, "home in danish", axe="home (Danish)")
    await fits_the_phone(page)

    # Signed out: the sign-in page (asks for the phone number or e-mail address).
    async with page.expect_navigation():
        await page.locator("form[action='/family/logout'] button").click()
    assert "/family/login" in page.url
    await shots(page, "sign in with a code", axe="login")
    await fits_the_phone(page)
    await page.goto(world.base + "/family")
    assert "/family/login" in page.url
    # Later sign-ins: a 6-digit code to the e-mail address on file.
    seen = world.mails(case["email"])
    await page.locator("#family_login-contact").fill(case["email"])
    async with page.expect_navigation():
        await page.locator("#form-family_login button[type=submit]").click()
    await expect(page.locator("input[name='code']")).to_be_visible()
    await shots(page, "the code form", axe="code form")
    await fits_the_phone(page)
    code = await world.find_in_mailbox(case["email"], CODE, seen)
    await page.locator("input[name='code']").fill(code)
    async with page.expect_navigation():
        await page.locator("form[action='/family/login/code'] button[type=submit]").click()
    assert page.url == world.base + "/family", page.url
    await expect(page.locator("#family-member")).to_have_text("Mette Jensen")
    async with page.expect_navigation():
        await page.locator("form[action='/family/logout'] button").click()
    await page.goto(link)  # the used link: a sentence, not a sign-in
    await expect(page.locator("#welcome-refused")).to_be_visible()
    await shots(page, "used link", axe="used link")
    await context.close()
    (ARTIFACTS / "family").mkdir(parents=True, exist_ok=True)
    table.write(ARTIFACTS / "family" / "axe.txt")
    print("\n" + table.text())
    print("screenshots:", ", ".join(shots.taken))
    for name, seconds in timings.items():
        print(f"{name}: {seconds * 1000:.0f} ms")
    (ARTIFACTS / "family" / "revoke-timing.txt").write_text(
        "".join(f"{name}: {seconds * 1000:.1f} ms\n" for name, seconds in timings.items()), encoding="utf-8")
    no_server_errors()
    fail_on_serious(table)


# ---------------------------------------------------------------- over HTTP: refusals, isolation


async def test_a_refused_answer_keeps_the_comment_and_a_stale_version_applies_nothing(world: World) -> None:
    case = await world.register("Family Holm", "Ida", language="da")
    family = await world.family_client(case)
    async with aclosing(family):
        page = await family.get("/family/plan")
        assert page.status_code == 200 and '<html lang="da">' in page.text  # the family's language
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        comment = "Vi savner & <mere> hjælp om morgenen"
        # No choice made: 422, the sentence next to the form, the comment kept (escaped).
        r = await family.post("/family/plan/response", data={
            "csrf_token": csrf, "idempotency_key": uuid.uuid4().hex, "comment": comment,
            "_plan_version": "1"})
        assert r.status_code == 422, r.text[:500]
        assert 'id="family_response-refusal"' in r.text
        assert "Vi savner &amp; &lt;mere&gt; hjælp om morgenen</textarea>" in r.text
        assert da("error.missing") in r.text
        # A page showing another version than the one waiting: 409, nothing applied.
        r = await family.post("/family/plan/response", data={
            "csrf_token": csrf, "idempotency_key": uuid.uuid4().hex, "approved": "true",
            "comment": comment, "_plan_version": "7"})
        assert r.status_code == 409, r.text[:300]
        assert da("family.plan.changed", shown=7, version=1) in r.text
        assert await world.stage(case["id"]) == "planning"
        # Without the CSRF token: refused before anything is read.
        r = await family.post("/family/plan/response", data={"approved": "false", "comment": "x"})
        assert r.status_code == 403
        # The answer "no" with the comment: 303, the plan is not adopted, the comment shown.
        key = uuid.uuid4().hex
        body = {"csrf_token": csrf, "idempotency_key": key, "approved": "false", "comment": comment,
                "_plan_version": "1"}
        r = await family.post("/family/plan/response", data=body)
        assert r.status_code == 303 and r.headers["location"].startswith("/family/plan?ok="), r.text
        again = await family.post("/family/plan/response", data=body)  # a double submit: one effect
        assert again.status_code in (303, 409), again.text[:300]
        page = await family.get("/family/plan")
        assert 'data-approved="false"' in page.text and "hjælp om morgenen" in page.text
        async with world.staff("anna") as anna:
            state = (await anna.get(f"/cases/{case['id']}")).json()
            assert state["stage"] == "planning"
            assert state["plan"]["family_approved"] is False and state["plan"]["family_comment"] == comment
        # A focus point left empty: the field's error, nothing sent.
        r = await family.post("/family/focus-points", data={"csrf_token": csrf, "text": "  "})
        assert r.status_code == 422 and 'id="family_focus_points-text-error"' in r.text
        # A consent for nobody: the workflow's sentence, what was typed kept.
        r = await family.post("/family/consents", data={
            "csrf_token": csrf, "idempotency_key": uuid.uuid4().hex, "covers.0": "case",
            "expires_at": (date.today() + timedelta(days=30)).isoformat()})
        assert r.status_code == 422 and 'id="give_consent-refusal"' in r.text, r.text[:400]
        # Withdrawing twice: a sentence, not a 500.
        ok = await family.post("/family/consents/c1/revoke", data={"csrf_token": csrf,
                                                                   "idempotency_key": uuid.uuid4().hex})
        assert ok.status_code == 303
        twice = await family.post("/family/consents/c1/revoke", data={"csrf_token": csrf,
                                                                      "idempotency_key": uuid.uuid4().hex})
        assert twice.status_code == 409 and 'id="revoke_consent-c1-refusal"' in twice.text


async def test_a_family_never_sees_another_familys_case(world: World) -> None:
    alpha = await world.register("Family Alpha", "Asta")
    beta = await world.register("Family Beta", "Bjørn")
    beta_doc = stored_document(world, beta["id"], "status_minutes", "BETA-SECRET-MINUTES")
    alpha_doc = stored_document(world, alpha["id"], "status_minutes", "ALPHA-MINUTES")
    family = await world.family_client(alpha)
    async with aclosing(family):
        for path in FAMILY_PAGES + (f"/family?case_id={beta['id']}", f"/family/plan?case={beta['id']}"):
            r = await family.get(path)
            assert r.status_code == 200, (path, r.status_code)
            # (an address with Beta's id in it is echoed only as the language switch's `next`)
            text = r.text.replace(f'value="{path}"', "")
            for never in ("Family Beta", "Bjørn", beta["id"], beta_doc, "BETA-SECRET",
                          "INTERNAL-VOTE-REASON", "INTERNAL-ASSESSMENT-NOTE"):
                assert never not in text, (path, never)
            assert "Family Alpha" in r.text or path != "/family"
        assert alpha_doc in (await family.get("/family/messages")).text
        # Another family's case through any address: refused, nothing of it shown.
        for path in (f"/cases/{beta['id']}", f"/api/v1/cases/{beta['id']}",
                     f"/api/v1/cases/{beta['id']}/documents", f"/api/v1/family/documents/{beta_doc}",
                     f"/api/v1/documents/{beta_doc}", f"/cases/{beta['id']}/timeline"):
            r = await family.get(path, follow_redirects=False)
            assert r.status_code in (303, 403, 404), (path, r.status_code)
            assert "Family Beta" not in r.text and "BETA-SECRET" not in r.text, path
            if r.status_code == 303:
                assert "/login" in r.headers["location"], path  # the staff sign-in, not the case
        assert (await family.get(f"/api/v1/cases/{beta['id']}")).status_code == 403
        assert (await family.get(f"/api/v1/family/documents/{beta_doc}")).status_code == 404
        # A command names no case: it acts on the session's own (Beta's consent untouched).
        csrf = re.search(r'name="csrf_token" value="([^"]+)"',
                         (await family.get("/family/contact")).text).group(1)
        r = await family.post(f"/family/contact-preference?case_id={beta['id']}",
                              data={"csrf_token": csrf, "preference": "close", "case_id": beta["id"]})
        assert r.status_code in (303, 422), r.text[:300]
    async with world.staff("anna") as anna:
        assert (await anna.get(f"/cases/{beta['id']}")).json()["contact_preference"] == "normal"

    # Nobody signed in: the sign-in page. A staff member: not theirs.
    async with httpx.AsyncClient(base_url=world.base, timeout=30) as nobody:
        for path in FAMILY_PAGES:
            r = await nobody.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/family/login", path
        login = await nobody.get("/family/login")
        assert login.status_code == 200 and 'action="/family/login"' in login.text
        assert 'for="family_login-contact"' in login.text
        bad = await nobody.get("/family/welcome", params={"token": "not-a-token"})
        assert bad.status_code == 400 and 'id="welcome-refused"' in bad.text
    async with httpx.AsyncClient(base_url=world.base, timeout=30,
                                 headers={"Authorization": f"Bearer {world.tokens['anna']}",
                                          "Accept-Language": "en"}) as staff:
        r = await staff.get("/family")
        assert r.status_code == 403 and en("family.error.staff") in r.text
        assert "Family Alpha" not in r.text
