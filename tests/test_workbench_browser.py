"""ONE case from referral to closed, using only the pages, as five people (issue 9 §6):
a coordinator (Anna), two team members (Ole, Lise), a committee member (Karen) and a manager
(Mia), each signed in through /login in a browser context of their own — real headless
Chromium (Debian's /usr/bin/chromium) against the real stack (dev server, worker, API).

Mia and Karen read the pages in Danish, Ole in Swedish (their browsers' language).

The case: Anna registers the referral; Mia assigns it to Anna; Anna forms the team with Ole
and Lise, records the first contact, plans the assessment meeting, writes the ICS assessment
and completes it; plan v1 (12000 a month, funded by two departments: over the team's limit)
is agreed by all three and so escalated; Karen's committee approves it with a funding split;
the family rejects it; plan v2 (within the team's limit) is agreed and the family approves
it; Ole records a status meeting; Anna closes the case. Mia looks at the overview, the stuck
list and the reports.

Every page visited is photographed (test-artifacts/workbench/NN-<page>.png) and each distinct
page is checked with axe-core (tests/axe.py); the table of results is printed and written to
test-artifacts/workbench/axe.txt, and a serious or critical violation fails the test.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.axe import AxeTable
from tests.browser import (
    ARTIFACTS,
    CHROMIUM,
    Shots,
    expect_no_refusal,
    fail_on_serious,
    fill,
    form,
    forms_on,
    main_text,
    new_person,
    no_server_errors,
    refusal_of,
    send,
    send_refused,
    stage_of,
    wait_stage,
    watch_errors,
)
from tests.e2e_stack import Stack
from tests.factories import password_of

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing (Debian package `chromium`)")

TZ = ZoneInfo("Europe/Copenhagen")  # the DK policy's time zone: what datetime-local means


def local(dt: datetime) -> str:
    """A value for <input type=datetime-local> in the municipality's time zone."""
    return dt.astimezone(TZ).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture(scope="module")
def stack(page_stack: Stack) -> Stack:
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


REFERRAL = {
    "referral.source": "school",
    "referral.reason": "Emil has stomach aches and stays home from school; the school asks for help.",
    "family.name": "Family Holm",
    "family.members.0.name": "Emil Holm",
    "family.members.0.role": "child",
    "family.members.0.birth_date": "2015-03-02",
    "family.members.0.diagnoses": "ADHD",
    "family.members.1.name": "Mette Holm",
    "family.members.1.role": "parent",
    "family.members.1.phone": "+4521111111",
    "existing_contacts.0.department": "adult_services",
    "existing_contacts.0.caseworker": "Ole",
    "existing_contacts.1.department": "school",
    "existing_contacts.1.caseworker": "Lise",
    "consent.coordinated_handling": "true",
}


def plan_v1() -> dict[str, str]:
    """12000 a month funded jointly by two departments: over the team's limit (10000)."""
    return {
        "family_goals.0": "Emil goes to school every day",
        "goals.0.text": "Emil attends school 5 days a week",
        "actions.0.text": "School adapts the timetable",
        "actions.0.owner": "school",
        "services.0.name": "Family therapy",
        "services.0.paragraph": "BL § 32",
        "services.0.department": "children_disability",
        "services.0.monthly_cost": "12000",
    }


async def test_one_case_from_referral_to_closed_by_five_people(stack: Stack, browser) -> None:
    started = time.monotonic()
    table = AxeTable()
    shot = Shots("workbench", table)
    url = stack.base_url
    try:
        # ---- signing in: the login page itself first (nobody signed in)
        guest = await browser.new_page()
        watch_errors(guest, "guest")
        await guest.goto(url + "/login")
        await shot(guest, "login", axe="login")
        await guest.close()

        # Five people sign in, each in a browser context of their own; the browser's
        # language is the pages' first guess: Mia and Karen read Danish, Ole Swedish.
        languages = {"anna": "en-GB", "mia": "da-DK", "ole": "sv-SE", "lise": "en-GB", "board": "da-DK"}
        anna, mia, ole, lise, karen = [page for _, page in await asyncio.gather(*(
            new_person(browser, stack, who, locale=lang) for who, lang in languages.items()))]
        for page, lang in ((anna, "en"), (mia, "da"), (ole, "sv"), (karen, "da")):
            assert await page.get_attribute("html", "lang") == lang
        await shot(anna, "my work coordinator", axe="My work (coordinator)")

        # ---- 1. Anna registers the referral (New referral)
        await anna.goto(url + "/cases/new")
        await shot(anna, "new referral", axe="new referral")
        # Bad input: required fields left empty — the page says which, keeps what was typed.
        status, text = await send_refused(anna, "register_referral", {"family.name": "Family Holm"})
        assert status == 422 and text.strip(), (status, text)
        assert await form(anna, "register_referral").locator('[name="family.name"]').input_value() \
            == "Family Holm"
        assert await anna.locator("#form-register_referral .form-error-message").count()
        await shot(anna, "new referral refused", part="main")
        await fill(anna, "register_referral", REFERRAL)
        await send(anna, "register_referral")
        match = re.search(r"/cases/([0-9a-f-]{36})", anna.url)
        assert match, f"after the referral: {anna.url}\n{await main_text(anna)}"
        case_id = match.group(1)
        case = f"{url}/cases/{case_id}"
        assert await stage_of(anna) == "referred"
        await shot(anna, "case referred", axe="case page: referred")

        # ---- 2. Mia (manager) assigns the case to Anna
        await mia.goto(url + "/")
        await shot(mia, "my work manager", axe="My work (manager)")
        await mia.goto(case)
        await shot(mia, "case referred manager", part="#section-assign_coordinator")
        await send(mia, "assign_coordinator", {"coordinator_id": "anna"})
        assert await stage_of(mia) == "coordinator_assigned"

        # ---- 3. Anna: the team, the first contact, the assessment meeting
        await anna.goto(case)
        await shot(anna, "case coordinator assigned", axe="case page: coordinator_assigned")
        await send(anna, "form_team", {"members.0.staff_id": "ole", "members.1.staff_id": "lise"})
        assert await stage_of(anna) == "team_formed"
        await shot(anna, "case team formed", axe="case page: team_formed")
        now = datetime.now(TZ)
        # Bad input: a double click on the button sends the form twice — one contact.
        await fill(anna, "record_contact", {"kind": "phone", "at": local(now),
                                            "notes": "Spoke with Mette; she welcomes a meeting."})
        async with anna.expect_navigation():
            await form(anna, "record_contact").locator("button[type=submit]").dblclick()
        await expect_no_refusal(anna, "record_contact")
        await anna.goto(case)
        assert len((await api_case(stack, case_id))["contacts"]) == 1, "a double submit has one effect"
        await send(anna, "schedule_assessment_meeting", {
            "at": local((now + timedelta(days=3)).replace(hour=10, minute=0)),
            "location": "Town hall, room 2"})
        assert await stage_of(anna) == "assessment"
        await shot(anna, "case assessment", axe="case page: assessment")

        # ---- 4. the ICS assessment (the child's own views included), then complete it
        await send(anna, "put_assessment", {
            "ics.child_development.0.concerns": "Stomach aches on school days",
            "ics.child_development.1.strengths": "Likes maths and football",
            "ics.parenting_capacity.0.strengths": "Warm and caring parents",
            "child_views": "Emil wants to go to school without stomach aches."})
        await send(anna, "complete_assessment")
        assert await stage_of(anna) == "planning"
        await shot(anna, "case planning", axe="case page: planning")

        # ---- 5. plan v1: over the team's limit, jointly funded. Bad input first: a split
        # that does not add up to 100 % is refused, what was typed stays.
        await put_plan(anna, plan_v1(), funding=[("children_disability", "50"), ("adult_services", "40")],
                       refused=True)
        assert await form(anna, "put_plan").locator('[name="services.0.monthly_cost"]').input_value() \
            == "12000"
        await shot(anna, "case plan refused funding", part="#section-put_plan")
        await put_plan(anna, plan_v1(), funding=[("children_disability", "50"), ("adult_services", "50")])
        await shot(anna, "case plan v1", part="#plan")
        await lise.goto(case)  # Lise opens the case now and votes after the others:
        for person in (anna, ole):
            await person.goto(case)
            if person is ole:
                await shot(ole, "case team member vote", axe="case page: team member, vote")
            await send(person, "vote", {"vote": "agree"})
        # Bad input: a stale page — the case moved on; nothing applied, what changed shown.
        status, text = await send_refused(lise, "vote", {"vote": "agree"})
        assert status == 409, (status, text)
        assert await refusal_of(lise, "vote").locator("li").count(), f"no list of what changed: {text}"
        await shot(lise, "case stale vote", part="#section-vote")
        await lise.goto(case)
        await send(lise, "vote", {"vote": "agree"})
        assert await stage_of(lise) == "escalated"
        await ole.goto(url + "/")
        await shot(ole, "my work team member", axe="My work (team member)")
        await anna.goto(case)
        await shot(anna, "case escalated", axe="case page: escalated")

        # ---- 6. Karen's committee approves plan v1 with a funding split
        await karen.goto(url + "/")
        await shot(karen, "my work committee", axe="My work (committee)")
        await karen.goto(url + "/committee")
        await wait_committee_item(karen, url, case_id)
        await shot(karen, "committee", axe="committee")
        await committee_decides(karen, case_id)
        await shot(karen, "committee decided", part="main")
        await anna.goto(case)
        await wait_stage(anna, case, "planning")

        # ---- 7. the family rejects plan v1; plan v2 within the team's limit
        await send(anna, "family_response", {"approved": "false",
                                              "comment": "We cannot manage weekly sessions."})
        assert await stage_of(anna) == "planning"
        await shot(anna, "case family rejected", part="#section-put_plan")
        v2 = {**plan_v1(), "services.0.name": "Family therapy, every other week",
              "services.0.monthly_cost": "6000"}
        await put_plan(anna, v2, funding=[("children_disability", "100")])
        for person in (anna, ole, lise):
            await person.goto(case)
            await send(person, "vote", {"vote": "agree"})
        await anna.goto(case)
        assert await stage_of(anna) == "planning"
        await send(anna, "family_response", {"approved": "true", "comment": "This is our plan."})
        assert await stage_of(anna) == "active"
        await shot(anna, "case active", axe="case page: active")

        # ---- 8. Ole records a status meeting with progress on the goal
        await ole.goto(case)
        await shot(ole, "case active team member", part="#section-status_meeting")
        await send(ole, "status_meeting", status_meeting_values(now))
        await shot(ole, "case status meeting recorded", part="#timeline")

        # ---- 9. Anna closes the case. Bad input first: the form without its CSRF token.
        await anna.goto(case)
        await anna.locator("#form-close input[name=csrf_token]").evaluate("e => e.remove()")
        await fill(anna, "close", {"reason": "goals_reached"})
        async with anna.expect_navigation() as navigation:
            await form(anna, "close").locator("button[type=submit]").click()
        assert (await navigation.value).status == 403
        assert await anna.locator("html[lang] h1, html[lang] main").count(), "a readable 403 page"
        await shot(anna, "close without csrf")
        await anna.goto(case)
        assert await stage_of(anna) == "active", "nothing applied"
        await send(anna, "close", {"reason": "goals_reached",
                                   "note": "Emil goes to school every day.",
                                   "outcomes.goal_attainment.0.status": "achieved",
                                   "outcomes.goal_attainment.0.score": "1"})
        assert await stage_of(anna) == "closed"
        assert not await forms_on(anna), "a closed case offers no forms"
        await shot(anna, "case closed", axe="case page: closed")

        # ---- 10. Mia: the case list, the overview, the stuck list, the reports
        for path, name in (("/cases", "case list"), ("/dashboard", "dashboard"),
                           ("/stuck", "stuck"), ("/reports", "reports")):
            await mia.goto(url + path)
            assert await mia.locator("main h1").count(), f"{path}: no heading"
            await shot(mia, name, axe=name)
        await mia.goto(case)
        await shot(mia, "case closed manager", part="#timeline")
        timeline = await mia.locator("#timeline").inner_text()
        for machine_key in ("kind:", "occurrence:", "deadline:", "overdue:"):
            assert machine_key not in timeline, f"the timeline shows a machine key {machine_key!r}"
    finally:
        table.write(ARTIFACTS / "workbench" / "axe.txt")  # also when a step failed

    report = table.text()
    print(f"\n{report}\nscreenshots: {', '.join(shot.taken)}\n"
          f"five-person test: {time.monotonic() - started:.1f} s\n{shot.timing()}")
    no_server_errors()
    fail_on_serious(table)


# ---------------------------------------------------------------- the forms with rows


async def put_plan(page, values: dict[str, str], funding: list[tuple[str, str]],
                   refused: bool = False) -> None:
    """The plan editor: family goals, SMART goals, actions, services; each service's funding
    split in percent over its rows (rows of the version it starts from emptied when unused)."""
    form = page.locator("form#form-put_plan")
    assert await form.count(), f"no plan editor on {page.url}; forms: {await forms_on(page)}"
    names = set(await form.locator("[name]").evaluate_all("es => es.map(e => e.name)"))
    wanted = dict(values)
    due = (datetime.now(TZ) + timedelta(days=60)).strftime("%Y-%m-%d")
    # An action's goal is the goal's row on the page (`#0`), or its id.
    goal_ref = "#0" if "#0" in await form.locator('[name="actions.0.goal_id"] option').evaluate_all(
        "os => os.map(o => o.value)") else "g1"
    for name, value in (("goals.0.id", "g1"), ("goals.0.owner", "anna"), ("actions.0.goal_id", goal_ref),
                        ("actions.0.due", due)):
        if name in names:
            wanted[name] = value
    for i, (department, percent) in enumerate(funding):
        share = next((n for n in (f"services.0.funding.{i}.percent", f"services.0.funding.{i}.share")
                      if n in names), None)
        assert share, f"the plan editor has no funding rows: {sorted(names)}"
        wanted[f"services.0.funding.{i}.department"] = department
        wanted[share] = percent  # the editor takes percent (its hint: "must add up to 100 %")
    for i in range(len(funding), 6):  # rows from the previous version left over: emptied
        for suffix in ("department", "percent", "share"):
            name = f"services.0.funding.{i}.{suffix}"
            if name in names:
                wanted[name] = ""
    await fill(page, "put_plan", wanted)
    if refused:
        status, text = await send_refused(page, "put_plan")
        assert status == 422 and "100" in text, (status, text)
    else:
        await send(page, "put_plan")


async def api_case(stack: Stack, case_id: str) -> dict:
    """The case as the JSON API shows it (to check what the pages did, not to do it)."""
    token = await stack.token("anna", password_of("anna"))
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.get(f"/api/v1/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.json()


async def wait_committee_item(page, url: str, case_id: str, timeout: float = 20) -> None:
    """The escalation reaches the committee's agenda through the committee workflow."""
    deadline = time.monotonic() + timeout
    # This case's item: the agenda of the shared stack holds other modules' items too.
    while not await page.locator(f"[data-case='{case_id}'] form[data-command='committee_decision']").count():
        assert time.monotonic() < deadline, f"the case never reached /committee:\n{await main_text(page)}"
        await page.wait_for_timeout(300)
        await page.goto(url + "/committee")


async def committee_decides(page, case_id: str) -> None:
    form = page.locator(f"[data-case='{case_id}'] form[data-command='committee_decision']").first
    names = set(await form.locator("[name]").evaluate_all("es => es.map(e => e.name)"))
    values: dict[str, str] = {"decision": "approved", "notes": "Approved as proposed, split 60/40."}
    for i, (department, percent) in enumerate((("children_disability", "60"), ("adult_services", "40"))):
        share = next((n for n in (f"funding.{i}.percent", f"funding.{i}.share") if n in names), None)
        if share is None:
            continue
        values[f"funding.{i}.department"] = department
        values[share] = percent if share.endswith("percent") else str(int(percent) / 100)
    form_id = await form.get_attribute("id")
    await fill(page, form_id.removeprefix("form-"), values)
    async with page.expect_navigation():
        await form.locator("button[type=submit]").first.click()
    refusal = page.locator(".alert-error")
    if await refusal.count():
        raise AssertionError(f"the committee's decision was refused: {await refusal.first.inner_text()}")


def status_meeting_values(now: datetime) -> dict[str, str]:
    return {"at": local(now), "minutes": "Emil went to school four days of five.",
            "goal_progress.0.status": "on_track"}

