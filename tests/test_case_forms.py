"""The case page's forms before the plan, posted as a browser posts them: a signed-in
session cookie, the page's own CSRF token, idempotency key and case version, against the
real stack (dev server, worker and API processes; tests/e2e_stack.py).

The stack runs with the Swedish policy, which has the committee's extension of the
assessment deadline and the BBIC areas as the ICS dimensions; the pages are read in English
(Accept-Language) so the sentences can be compared.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.pages import i18n
from domain.lifecycle import STALE
from tests.e2e_stack import SignedIn, Stack, api_as, with_staff
from tests.factories import case_create_body

ZONE = ZoneInfo("Europe/Stockholm")


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("case-forms")) / "data")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ONEFAMILY_COUNTRY", "SE")
            await s.start()
        await with_staff(s)
        yield s
    finally:
        s.stop()


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return api_as(stack, user)


def local(at: datetime) -> str:
    """What a person types into an <input type="datetime-local">."""
    return at.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


def en(key: str, **values: object) -> str:
    return i18n.translate("en", key, **values)


# ---------------------------------------------------------------- a browser without JavaScript


class Forms(HTMLParser):
    """Every <form id=…> of a page: its action and its fields as a browser would send them
    (hidden and text inputs, checked boxes and radios, selected options, textareas)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: dict[str, dict] = {}
        self._form: dict | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id"):
            self._form = {"action": a.get("action", ""), "command": a.get("data-command"),
                          "fields": {}, "names": []}
            self.forms[a["id"]] = self._form
        if self._form is None:
            return
        name = a.get("name")
        if tag == "input" and name:
            self._form["names"].append(name)
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._form["fields"][name] = a.get("value", "on")
            else:
                self._form["fields"][name] = a.get("value", "")
        elif tag == "select" and name:
            self._form["names"].append(name)
            self._select = name
            self._form["fields"].setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self._form["fields"][self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._form["names"].append(name)
            self._textarea = name
            self._form["fields"][name] = ""

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea:
            self._form["fields"][self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def forms_of(html: str) -> dict[str, dict]:
    parser = Forms()
    parser.feed(html)
    return parser.forms


class Person(SignedIn):
    """One staff member in a browser: signed in with a password, posting the page's forms."""


    async def page(self, case_id: str) -> tuple[str, dict[str, dict]]:
        r = await self.http.get(f"/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.text, forms_of(r.text)

    async def form(self, case_id: str, name: str) -> dict:
        _, forms = await self.page(case_id)
        assert f"form-{name}" in forms, f"no form-{name} for {self.staff_id}: {sorted(forms)}"
        return forms[f"form-{name}"]

    async def post(self, form: dict, fields: dict[str, str] | None = None,
                   drop: tuple[str, ...] = ()) -> httpx.Response:
        """Send `form` as shown, with `fields` typed over it (an empty string clears one)."""
        data = {**form["fields"], **(fields or {})}
        for name in drop:
            data.pop(name, None)
        return await self.http.post(form["action"], data=data)

    async def submit(self, case_id: str, name: str, fields: dict[str, str] | None = None,
                     ok: bool = True) -> httpx.Response:
        r = await self.post(await self.form(case_id, name), fields)
        if ok:
            assert r.status_code == 303, f"{name}: {r.status_code} {flash_or_refusal(r.text)}"
            assert r.headers["location"].startswith(f"/cases/{case_id}?ok="), r.headers["location"]
        return r


def flash_or_refusal(html: str) -> str:
    found = re.search(r'<div class="alert alert-error".*?</div>\s*</div>', html, re.S)
    return re.sub(r"<[^>]+>", " ", found.group(0)) if found else html[:2000]


def stage_of(html: str) -> str:
    found = re.search(r'id="case-stage"[^>]*data-stage="([a-z_]+)"', html) or re.search(
        r'data-stage="([a-z_]+)"[^>]*id="case-stage"', html)
    assert found, "the case page has no #case-stage"
    return found.group(1)


def ok_sentence(response: httpx.Response) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(response.headers["location"]).query)["ok"][0]


async def new_case(stack: Stack, name: str, coordinator: str | None = None, **referral) -> str:
    body = case_create_body(**referral)
    body["family"]["name"] = name
    async with api(stack, "mia") as mia:
        r = await mia.post("/cases", json=body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        if coordinator:
            r = await mia.post(f"/cases/{case_id}/coordinator", json={"coordinator_id": coordinator})
            assert r.status_code == 200, r.text
    return case_id


async def case(stack: Stack, case_id: str) -> dict:
    async with api(stack, "mia") as mia:
        r = await mia.get(f"/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.json()


async def until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- every form once


async def test_a_coordinator_takes_a_concern_report_and_works_it_to_planning(stack: Stack) -> None:
    now = datetime.now(UTC)
    case_id = await new_case(stack, "Family Forms", kind="concern_report", reporter_is_professional=True,
                             received_at=now.isoformat())
    async with Person(stack, "anna") as anna:
        html, forms = await anna.page(case_id)
        assert stage_of(html) == "referred"
        take = forms["form-assign_coordinator"]
        assert take["command"] == "assign_coordinator" and take["fields"]["coordinator_id"] == "anna"
        r = await anna.post(take)
        assert r.status_code == 303 and ok_sentence(r) == en("forms.assign_coordinator.done_self")
        html, forms = await anna.page(case_id)
        assert stage_of(html) == "coordinator_assigned"
        assert "form-assign_coordinator" not in forms  # taken: a manager reassigns

        # The concern report's triage: the 24-hour clock and the reporter's receipt stop.
        await anna.submit(case_id, "triage", {"child_in_danger": "true", "receipt_sent_to_reporter": "true",
                                              "notes": "Not in acute danger; school is told."})
        c = await case(stack, case_id)
        met = {d["kind"]: d["status"] for d in c["deadlines"]}
        assert met["concern_triage"] == "met" and met["reporter_receipt"] == "met"

        # The team from the directory: Ole's discipline and department come from it.
        r = await anna.submit(case_id, "form_team", {"members.0.staff_id": "ole"})
        assert ok_sentence(r) == en("forms.form_team.done", n=1)
        c = await case(stack, case_id)
        assert c["stage"] == "team_formed"
        assert [(m["staff_id"], m["discipline"], m["department"]) for m in c["team"]] == [
            ("ole", "adult_services", "adult_services")]
        team = await anna.form(case_id, "form_team")
        assert team["fields"]["members.0.staff_id"] == "ole"  # the current team, prefilled

        await anna.submit(case_id, "record_contact", {"kind": "phone", "at": local(now - timedelta(hours=1)),
                                                      "notes": "Talked with Mette about the meeting."})
        c = await case(stack, case_id)
        assert [x["kind"] for x in c["contacts"]] == ["phone"]
        assert next(d for d in c["deadlines"] if d["kind"] == "first_contact")["status"] == "met"

        meeting = await anna.form(case_id, "schedule_assessment_meeting")
        boxes = {meeting["fields"][n]: n for n in meeting["fields"] if n.startswith("participants.")}
        assert {"anna", "ole", "family"} <= set(boxes)  # the team and the family, checked
        other = next(n for n in meeting["names"]
                     if n.startswith("participants.") and meeting["fields"].get(n) == "")
        r = await anna.submit(case_id, "schedule_assessment_meeting", {
            "at": local(now + timedelta(days=3)), "location": "Town hall, room 2", other: "Emil's teacher"})
        html, _ = await anna.page(case_id)
        assert stage_of(html) == "assessment"
        c = await case(stack, case_id)
        assert c["assessment_meeting"]["participants"] == ["anna", "ole", "family", "Emil's teacher"]

        # The ICS form has the policy's (BBIC) areas; saving keeps the assessment in progress.
        ics = await anna.form(case_id, "put_assessment")
        dims = {v: n.rsplit(".", 1)[0] for n, v in ics["fields"].items() if n.endswith(".dimension")}
        assert {"health", "education", "basic_care", "housing"} <= set(dims)
        r = await anna.submit(case_id, "put_assessment", {
            f"{dims['health']}.strengths": "Sleeps well", f"{dims['health']}.concerns": "Asthma",
            f"{dims['basic_care']}.family_view": "We manage", "child_views": "Emil wants to play football",
            "investigations.0": "Child investigation"})
        assert ok_sentence(r) == en("forms.put_assessment.done")
        c = await case(stack, case_id)
        assert c["stage"] == "assessment"
        assert c["assessment"]["ics"]["child_development"] == [
            {"dimension": "health", "strengths": "Sleeps well", "concerns": "Asthma", "family_view": ""}]
        assert [e["dimension"] for e in c["assessment"]["ics"]["parenting_capacity"]] == ["basic_care"]
        assert c["assessment"]["investigations"] == ["Child investigation"]
        again = await anna.form(case_id, "put_assessment")  # prefilled from the saved assessment
        assert again["fields"][f"{dims['health']}.concerns"] == "Asthma"
        assert again["fields"]["child_views"] == "Emil wants to play football"

        r = await anna.submit(case_id, "pause", {"reason": "The family is on holiday",
                                                 "waiting_for_family": "true"})
        assert ok_sentence(r) == en("forms.pause.done_family")
        _, forms = await anna.page(case_id)
        assert "form-resume" in forms and "form-pause" not in forms
        assert (await case(stack, case_id))["paused"] is True
        await anna.submit(case_id, "resume")
        assert (await case(stack, case_id))["paused"] is False

        complete = await anna.form(case_id, "complete_assessment")
        assert complete["fields"].keys() >= {"csrf_token", "idempotency_key", "version"}
        html, _ = await anna.page(case_id)
        assert "Areas with nothing written" in html  # what is still empty, shown before
        r = await anna.submit(case_id, "complete_assessment")
        assert ok_sentence(r) == en("forms.complete_assessment.done")
        html, forms = await anna.page(case_id)
        assert stage_of(html) == "planning"
        assert "form-complete_assessment" not in forms and "form-schedule_assessment_meeting" not in forms
        c = await case(stack, case_id)
        assert any(d["kind"] == "plan" and d["status"] == "open" for d in c["deadlines"])


# ---------------------------------------------------------------- bad input


async def test_bad_input_is_shown_on_the_page_and_nothing_is_applied(stack: Stack) -> None:
    now = datetime.now(UTC)
    case_id = await new_case(stack, "Family Bad Input", coordinator="anna", received_at=now.isoformat())
    async with Person(stack, "anna") as anna:
        # Empty required fields: 422, each field's error, what was typed kept.
        form = await anna.form(case_id, "record_contact")
        r = await anna.post(form, {"kind": "", "at": "", "notes": "Called the mother"})
        assert r.status_code == 422
        again = forms_of(r.text)["form-record_contact"]
        assert again["fields"]["notes"] == "Called the mother"
        assert 'id="record_contact-kind-error"' in r.text and 'id="record_contact-at-error"' in r.text
        assert en("error.missing") in r.text
        assert f'{en("forms.record_contact.kind")}: {en("error.missing")}' in r.text  # the summary's label
        assert (await case(stack, case_id))["contacts"] == []

        # A contact in the future: the workflow's sentence, the typed time kept.
        later = local(now + timedelta(days=2))
        r = await anna.post(form, {"kind": "phone", "at": later})
        assert r.status_code == 422 and "is in the future" in r.text
        assert forms_of(r.text)["form-record_contact"]["fields"]["at"] == later

        # A double submit (the same form, the same key): one contact.
        form = await anna.form(case_id, "record_contact")
        typed = {"kind": "home_visit", "at": local(now - timedelta(minutes=30)), "notes": "Visit"}
        first, second = await anna.post(form, typed), await anna.post(form, typed)
        assert first.status_code == 303 and second.status_code == 303, flash_or_refusal(second.text)
        assert len((await case(stack, case_id))["contacts"]) == 1

        # A stale page: the case moved on since it was loaded; 409, nothing applied.
        stale = await anna.form(case_id, "record_contact")
        await anna.submit(case_id, "record_contact",
                          {"kind": "phone", "at": local(now - timedelta(minutes=5))})
        r = await anna.post(stale, {"kind": "message", "at": local(now - timedelta(minutes=1)),
                                    "notes": "Late"})
        assert r.status_code == 409 and STALE in r.text
        assert forms_of(r.text)["form-record_contact"]["fields"]["notes"] == "Late"
        assert [x["kind"] for x in (await case(stack, case_id))["contacts"]] == ["home_visit", "phone"]

        # No CSRF token: 403 page, nothing applied.
        form = await anna.form(case_id, "record_contact")
        r = await anna.post(form, {"kind": "phone", "at": local(now)}, drop=("csrf_token",))
        assert r.status_code == 403 and "CSRF" in r.text and "text/html" in r.headers["content-type"]
        r = await anna.post(form, {"kind": "phone", "at": local(now), "csrf_token": "forged"})
        assert r.status_code == 403
        assert len((await case(stack, case_id))["contacts"]) == 2

        # The team: a row without a staff member; a name twice.
        r = await anna.post(await anna.form(case_id, "form_team"), {"members.0.discipline": "teacher"})
        assert r.status_code == 422 and 'id="form_team-members-0-staff_id-error"' in r.text
        assert forms_of(r.text)["form-form_team"]["fields"]["members.0.discipline"] == "teacher"
        r = await anna.post(await anna.form(case_id, "form_team"),
                            {"members.0.staff_id": "ole", "members.1.staff_id": "ole"})
        assert r.status_code == 422 and "listed twice" in r.text
        await anna.submit(case_id, "form_team", {"members.0.staff_id": "ole"})

        # The assessment meeting in the past, and with one of the team only.
        meeting = await anna.form(case_id, "schedule_assessment_meeting")
        r = await anna.post(meeting, {"at": local(now - timedelta(days=7)), "location": "Town hall"})
        assert r.status_code == 422 and "must be scheduled in the future" in r.text
        assert forms_of(r.text)["form-schedule_assessment_meeting"]["fields"]["location"] == "Town hall"
        lonely = {n: "" for n in meeting["fields"] if n.startswith("participants.")}
        lonely["participants.0"] = "anna"
        r = await anna.post(meeting, {"at": local(now + timedelta(days=2)), "location": "Town hall",
                                      **lonely})
        assert r.status_code == 422 and "at least two core-team members" in r.text
        r = await anna.post(meeting, {"at": "", "location": " "},
                            drop=tuple(n for n in meeting["fields"] if n.startswith("participants.")))
        assert r.status_code == 422
        for name in ("at", "location", "participants"):
            assert f'id="schedule_assessment_meeting-{name}-error"' in r.text, name
        assert (await case(stack, case_id))["stage"] == "team_formed"

        # Pause without a reason.
        r = await anna.post(await anna.form(case_id, "pause"), {"reason": "  "})
        assert r.status_code == 422 and 'id="pause-reason-error"' in r.text
        assert (await case(stack, case_id))["paused"] is False


async def test_a_team_member_sees_no_coordinator_forms_and_is_refused_by_the_api(stack: Stack) -> None:
    now = datetime.now(UTC)
    case_id = await new_case(stack, "Family Team Member", coordinator="anna", received_at=now.isoformat())
    async with Person(stack, "anna") as anna, Person(stack, "ole") as ole:
        await anna.submit(case_id, "form_team", {"members.0.staff_id": "ole"})
        coordinator_form = await anna.form(case_id, "pause")
        _, forms = await ole.page(case_id)
        commands = {f["command"] for f in forms.values() if f["command"]}
        assert "record_contact" in commands  # the team records contacts
        assert not commands & {"assign_coordinator", "form_team", "schedule_assessment_meeting",
                               "pause", "triage", "complete_assessment"}
        # Ole posts the coordinator's form anyway (his own session's token): the API's sentence.
        own = (await ole.form(case_id, "record_contact"))["fields"]
        r = await ole.post(coordinator_form, {"csrf_token": own["csrf_token"], "reason": "I want a break"})
        assert r.status_code == 403 and "Only the case&#39;s coordinator or a manager" in r.text
        r = await ole.http.post(f"/cases/{case_id}/team", data={
            "csrf_token": own["csrf_token"], "members.0.staff_id": "ole"})
        assert r.status_code == 403 and "Only the case&#39;s coordinator or a manager" in r.text
        assert (await case(stack, case_id))["paused"] is False
        await ole.submit(case_id, "record_contact",
                         {"kind": "meeting", "at": local(now - timedelta(hours=2))})
        assert [x["by"] for x in (await case(stack, case_id))["contacts"]] == ["ole"]


async def test_a_manager_reassigns_and_passes_the_cap_only_with_the_override(stack: Stack) -> None:
    now = datetime.now(UTC)
    async with api(stack, "mia") as mia:
        cap = 8
        items = (await mia.get("/dashboard/caseload")).json()["items"]
        loads = {i["coordinator_id"]: i["open_cases"] for i in items}
    for n in range(cap - loads.get("bo", 0)):
        await new_case(stack, f"Family Load {n}", coordinator="bo", received_at=now.isoformat())
    case_id = await new_case(stack, "Family Reassigned", coordinator="anna", received_at=now.isoformat())
    async with Person(stack, "mia") as mia:
        form = await mia.form(case_id, "assign_coordinator")
        assert "coordinator_id" in form["names"]
        r = await mia.post(form, {"coordinator_id": ""})
        assert r.status_code == 422 and 'id="assign_coordinator-coordinator_id-error"' in r.text
        r = await mia.post(form, {"coordinator_id": "bo"})
        assert r.status_code == 409 and f"already has {cap} open cases" in r.text
        again = forms_of(r.text)["form-assign_coordinator"]
        assert "override" in again["names"]  # the cap is reached: the override is offered
        assert again["fields"]["coordinator_id"] == "bo"
        assert (await case(stack, case_id))["coordinator_id"] == "anna"
        r = await mia.post(await mia.form(case_id, "assign_coordinator"),
                           {"coordinator_id": "bo", "override": "true"})
        assert r.status_code == 303 and ok_sentence(r) == en("forms.assign_coordinator.done", name="Bo Holm")
    c = await case(stack, case_id)
    assert c["coordinator_id"] == "bo" and c["coordinator_history"][-1]["override"] is True
    # The manager's old address, as a plain form post (coordinator_id only), still works.
    async with Person(stack, "mia") as mia:
        form = await mia.form(case_id, "assign_coordinator")
        r = await mia.http.post(f"/cases/{case_id}/coordinator", data={
            "csrf_token": form["fields"]["csrf_token"], "coordinator_id": "anna"})
        assert r.status_code == 303 and "Anna Berg" in ok_sentence(r)
    assert (await case(stack, case_id))["coordinator_id"] == "anna"


async def test_a_late_assessment_provisional_then_the_committee_extends_it(stack: Stack) -> None:
    now = datetime.now(UTC)
    case_id = await new_case(stack, "Family Late", coordinator="anna",
                             received_at=(now - timedelta(days=150)).isoformat())
    async with Person(stack, "anna") as anna:
        _, forms = await anna.page(case_id)
        assert "form-provisional_assessment" in forms and "form-extend_assessment" not in forms
        r = await anna.post(forms["form-provisional_assessment"], {"text": ""})
        assert r.status_code == 422 and 'id="provisional_assessment-text-error"' in r.text
        r = await anna.submit(case_id, "provisional_assessment",
                              {"text": "Support at school continues while the assessment is finished."})
        assert ok_sentence(r) == en("forms.provisional_assessment.done")
    c = await case(stack, case_id)
    assert len(c["provisional_assessments"]) == 1
    due = next(d for d in c["deadlines"] if d["kind"] == "assessment")
    async with Person(stack, "mia") as mia:
        form = await mia.form(case_id, "extend_assessment")
        typed = {"decision_ref": "SN 2026/114", "reason": "The child investigation takes longer."}
        r = await mia.post(form, {**typed, "new_due_at": local(now - timedelta(days=1))})
        assert r.status_code == 422 and en("forms.extend_assessment.past") in r.text
        assert 'id="extend_assessment-new_due_at-error"' in r.text
        assert forms_of(r.text)["form-extend_assessment"]["fields"]["decision_ref"] == "SN 2026/114"
        r = await mia.post(form, {**typed, "new_due_at": ""})
        assert r.status_code == 422 and 'id="extend_assessment-new_due_at-error"' in r.text
        new_due = (now + timedelta(days=30)).replace(second=0, microsecond=0)
        r = await mia.post(form, {**typed, "new_due_at": local(new_due)})
        assert r.status_code == 303, flash_or_refusal(r.text)
    c = await case(stack, case_id)
    moved = next(d for d in c["deadlines"] if d["kind"] == "assessment")
    assert datetime.fromisoformat(moved["due_at"]) == new_due != datetime.fromisoformat(due["due_at"])
    assert c["assessment_extensions"][-1]["decision_ref"] == "SN 2026/114"


# ---------------------------------------------------------------- in Chromium, with axe


async def test_the_forms_in_chromium_keyboard_and_axe(stack: Stack, browser) -> None:
    """The same forms as a person uses them in Chromium: filled and sent (one of them with the
    keyboard only), a refusal shown next to its form, axe on every state of the page
    (no serious or critical violation); screenshots under test-artifacts/case-forms/."""
    from tests.browser import CHROMIUM, Shots, fail_on_serious, fill, form, new_person, send
    from tests.browser import stage_of as page_stage

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package `chromium`)")
    from playwright.async_api import expect

    now = datetime.now(UTC)
    case_id = await new_case(stack, "Family Browser", kind="concern_report", reporter_is_professional=True,
                             received_at=now.isoformat())
    late_id = await new_case(stack, "Family Browser Late", coordinator="anna",
                             received_at=(now - timedelta(days=150)).isoformat())
    url = f"{stack.base_url}/cases/{case_id}"
    shots = Shots("case-forms")
    _, page = await new_person(browser, stack, "anna")
    await page.goto(url)
    await shots(page, "anna referred take", axe="case: take this case")
    await send(page, "assign_coordinator")
    assert await page_stage(page) == "coordinator_assigned"
    await shots(page, "anna triage and team", axe="case: triage, team, contact, pause")

    # A refusal is shown next to its form with what was typed.
    await fill(page, "record_contact", {"kind": "phone", "at": local(now + timedelta(days=1)),
                                        "notes": "Typed before the refusal"})
    async with page.expect_navigation():
        await form(page, "record_contact").locator("button[type=submit]").click()
    await expect(page.locator("#record_contact-refusal")).to_contain_text("is in the future")
    await expect(page.locator("#record_contact-notes")).to_have_value("Typed before the refusal")
    await shots(page, "anna contact refused", axe="case: a refused contact")

    await send(page, "triage", {"child_in_danger": True, "notes": "Safe at home"})
    await send(page, "form_team", {"members.0.staff_id": "ole"})
    assert await page_stage(page) == "team_formed"

    # The contact with the keyboard only: focus the form's first field, then Tab on
    # (through the parts of the date-time field, prefilled with the page's time).
    async def tab_to(check: str) -> None:
        trail: list[str] = []
        script = f"() => {{ const e = document.activeElement; return {check}; }}"
        while not await page.evaluate(script):
            trail.append(await page.evaluate("() => document.activeElement.id || "
                                             "document.activeElement.tagName"))
            assert len(trail) < 30, f"Tab never reached {check}: {trail}"
            await page.keyboard.press("Tab")

    await page.locator("#record_contact-kind").focus()
    await page.keyboard.press("ArrowDown")  # the first kind: a phone call
    await tab_to("e.id === 'record_contact-notes'")
    await page.keyboard.type("Called Mette")
    await tab_to("e.type === 'submit' && e.closest('form')?.id === 'form-record_contact'")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await expect(page.locator(".alert-success")).to_be_visible()
    c = await case(stack, case_id)
    assert [(x["kind"], x["notes"]) for x in c["contacts"]] == [("phone", "Called Mette")]

    await send(page, "schedule_assessment_meeting", {
        "at": local(now + timedelta(days=4)), "location": "The family's home"})
    assert await page_stage(page) == "assessment"
    await shots(page, "anna assessment", axe="case: the assessment (ICS) form")
    await send(page, "put_assessment", {"ics.child_development.0.strengths": "Curious",
                                        "child_views": "Wants to see his friends"})
    await send(page, "pause", {"reason": "The family asked for a break"})
    await shots(page, "anna paused", axe="case: paused (resume)")
    await send(page, "resume")
    await send(page, "complete_assessment")
    assert await page_stage(page) == "planning"

    await page.goto(f"{stack.base_url}/cases/{late_id}")
    await shots(page, "anna late provisional", axe="case: provisional assessment")
    await send(page, "provisional_assessment", {"text": "Support continues meanwhile."})

    _, manager = await new_person(browser, stack, "mia")
    await manager.goto(f"{stack.base_url}/cases/{late_id}")
    await shots(manager, "mia reassign and extend", axe="case: reassign, extension (manager)")
    await send(manager, "extend_assessment", {"new_due_at": local(now + timedelta(days=20)),
                                              "decision_ref": "SN 2026/7", "reason": "More time"})
    at_cap = await form(manager, "assign_coordinator").locator("[name=override]").count()
    await send(manager, "assign_coordinator",
               {"coordinator_id": "bo", **({"override": True} if at_cap else {})})
    await shots(manager, "mia reassigned")
    c = await case(stack, late_id)
    assert c["coordinator_id"] == "bo" and c["assessment_extensions"] and c["provisional_assessments"]
    print("\n" + shots.table.text())
    fail_on_serious(shots.table)
