"""The committee's page (`/committee`, DESIGN §10) as the committee uses it: the agenda per
meeting with the plan, the team's votes and reasons, why the plan was escalated (in words) and
the funding asked; the decision form posted as a browser posts it (session cookie, the page's
CSRF token, idempotency key and case version) against the real stack: a split that does not
add up to 100 % is refused with the sentence and applies nothing, the decision is recorded
through the API's own code path, a double submit decides once; only the committee, managers
and administrators see the page. The percent → share rules first, without a server.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from markupsafe import escape

from api.pages import i18n
from api.pages.committee import asked_funding, check_funding
from tests.e2e_stack import SignedIn, Stack, api_as
from tests.factories import case_create_body, plan_body
from tests.test_case_forms import forms_of
from tests.test_domain_lifecycle import ASSESSMENT


def en(key: str, **values: object) -> str:
    return str(escape(i18n.translate("en", key, **values)))


# ---------------------------------------------------------------- percent → share, no server


def test_the_decision_form_starts_from_the_funding_the_plan_asks() -> None:
    svc = lambda cost, dept, funding=(): SimpleNamespace(  # noqa: E731
        monthly_cost=cost, department=dept,
        funding=[SimpleNamespace(department=d, share=s) for d, s in funding])
    plan = SimpleNamespace(services=[
        svc(12000, "children_disability", [("children_disability", 0.5), ("adult_services", 0.5)]),
        svc(3000, "school")])  # no shares: its own department pays
    assert asked_funding(plan) == [{"department": "children_disability", "percent": "40"},
                                   {"department": "adult_services", "percent": "40"},
                                   {"department": "school", "percent": "20"}]
    thirds = SimpleNamespace(services=[svc(100, "a", [("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)])])
    assert sum(float(r["percent"]) for r in asked_funding(thirds)) == 100


def test_a_split_must_add_up_to_100_percent() -> None:
    rows = {"funding.0.department": "children_disability", "funding.0.percent": "60",
            "funding.1.department": "adult_services", "funding.1.percent": "40,0 %",
            "funding.2.department": "", "funding.2.percent": ""}
    assert check_funding(rows, "en") == ({}, "", [{"department": "children_disability", "share": 0.6},
                                                  {"department": "adult_services", "share": 0.4}])
    _, message, _ = check_funding({**rows, "funding.1.percent": "30"}, "en")
    assert message == i18n.translate("en", "committee.error.total", total="90")
    assert "90 %" in check_funding({**rows, "funding.1.percent": "30"}, "da")[1]
    errors, _, _ = check_funding({**rows, "funding.1.percent": "lots", "funding.2.percent": "10"}, "en")
    assert errors == {"funding.1.percent": i18n.translate("en", "error.number"),
                      "funding.2.department": i18n.translate("en", "error.missing")}
    errors, _, _ = check_funding({**rows, "funding.1.percent": "140"}, "en")
    assert errors == {"funding.1.percent": i18n.translate("en", "committee.error.percent_range")}
    thirds = {f"funding.{i}.department": d for i, d in enumerate("abc")} | {
        "funding.0.percent": "33.33", "funding.1.percent": "33.33", "funding.2.percent": "33.34"}
    assert check_funding(thirds, "en")[:2] == ({}, "")


# ---------------------------------------------------------------- the real stack


@pytest.fixture(scope="module")
def stack(page_stack: Stack) -> Stack:
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return api_as(stack, user)


class Browser(SignedIn):
    """A signed-in staff member (tests.e2e_stack.SignedIn)."""


async def escalated_case(stack: Stack, name: str) -> tuple[str, str]:
    """A case whose plan (12 000 a month, funded half and half by two departments: over the
    team's limit) the team agreed on, so it waits for the committee: (case id, item id)."""
    now = datetime.now(UTC)
    body = case_create_body(received_at=now.isoformat())
    body["family"]["name"] = name
    async with api(stack, "mia") as mia, api(stack, "anna") as anna, api(stack, "ole") as ole:
        r = await mia.post("/cases", json=body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        steps = [
            (mia.post, f"/cases/{case_id}/coordinator", {"coordinator_id": "anna"}),
            (anna.post, f"/cases/{case_id}/team", {"members": [
                {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]}),
            (anna.post, f"/cases/{case_id}/assessment/meeting", {
                "at": (now + timedelta(days=2)).isoformat(), "location": "Town hall",
                "participants": ["anna", "ole", "family"]}),
            (anna.put, f"/cases/{case_id}/assessment", ASSESSMENT),
            (anna.post, f"/cases/{case_id}/assessment/complete", None),
            (anna.put, f"/cases/{case_id}/plan", plan_body()),
            (anna.post, f"/cases/{case_id}/plan/votes", {"staff_id": "anna", "vote": "agree"}),
            (ole.post, f"/cases/{case_id}/plan/votes", {"staff_id": "ole", "vote": "agree",
                                                        "reason": "Adult services can pay half"}),
        ]
        for call, path, payload in steps:
            r = await call(path, json=payload) if payload is not None else await call(path)
            assert r.status_code == 200, f"{path}: {r.text}"
        assert r.json()["stage"] == "escalated", r.text
        item_id = r.json()["escalations"][-1]["id"]
    return case_id, item_id


async def case(stack: Stack, case_id: str) -> dict:
    async with api(stack, "mia") as mia:
        r = await mia.get(f"/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.json()


async def agenda_page(person: Browser, item_id: str) -> str:
    """The committee page once the read model has the item (projected by the workflow)."""
    deadline = time.monotonic() + 30
    while True:
        r = await person.http.get("/committee")
        assert r.status_code == 200, r.text[:2000]
        if f'data-item="{item_id}"' in r.text or time.monotonic() > deadline:
            return r.text
        await asyncio.sleep(0.3)


def refusal_of(html: str, form: str) -> str:
    found = re.search(rf'id="{form}-refusal".*?</div>\s*</div>', html, re.S)
    return found.group(0) if found else ""


async def test_the_committee_decides_an_escalated_plan_from_its_page(stack: Stack) -> None:
    case_id, item_id = await escalated_case(stack, "Family Udvalg")
    fname = f"form-committee_decision-{item_id}"
    async with Browser(stack, "board") as board:
        html = await agenda_page(board, item_id)
        item = re.search(rf'<article[^>]*data-item="{item_id}".*?</article>', html, re.S).group(0)
        # The plan, the votes with their reasons, why it is here (in words), the funding asked.
        assert "Family Udvalg" in item and f'href="/cases/{case_id}"' in item
        assert "Emil goes to school every day" in item and "Family therapy" in item and "BL § 32" in item
        assert "12\u202f000" in item
        assert en("dash.escalation.funding", amount="12\u202f000", limit="10\u202f000") in item
        assert "Anna Berg" in item and "Ole Dam" in item and "Adult services can pay half" in item
        assert "joint_funding_over_limit" not in item
        form = forms_of(html)[fname]
        assert form["command"] == "committee_decision" and form["fields"]["version"]
        assert {form["fields"]["funding.0.department"]: form["fields"]["funding.0.percent"],
                form["fields"]["funding.1.department"]: form["fields"]["funding.1.percent"]} == {
            "children_disability": "50", "adult_services": "50"}

        # A split of 90 %: the sentence, what was typed, nothing applied.
        fields = {**form["fields"], "decision": "approved", "notes": "Approved for six months",
                  "funding.0.percent": "60", "funding.1.percent": "30"}
        r = await board.http.post(form["action"], data=fields)
        assert r.status_code == 422, r.text[:2000]
        assert en("committee.error.total", total="90") in refusal_of(r.text, fname)
        kept = forms_of(r.text)[fname]["fields"]
        assert kept["notes"] == "Approved for six months" and kept["funding.1.percent"] == "30"
        assert kept["decision"] == "approved"
        c = await case(stack, case_id)
        assert c["stage"] == "escalated" and c["escalations"][-1]["status"] == "waiting"

        # No decision chosen: the field's error.
        r = await board.http.post(form["action"], data={**fields, "decision": "", "funding.1.percent": "40"})
        assert r.status_code == 422 and f'id="{fname}-decision-1"' in r.text
        assert f"{en('committee.label.decision')}: {en('error.missing')}" in refusal_of(r.text, fname)

        # 60 / 40: recorded through the API's own code path; pressed twice, decided once.
        good = {**fields, "funding.1.percent": "40"}
        one, two = await asyncio.gather(board.http.post(form["action"], data=good),
                                        board.http.post(form["action"], data=good))
        for r in (one, two):
            assert r.status_code == 303, r.text[:2000]
            assert r.headers["location"].startswith("/committee?ok=")
        c = await case(stack, case_id)
        item_state = c["escalations"][-1]
        assert item_state["status"] == "decided" and item_state["decision"] == "approved"
        assert item_state["notes"] == "Approved for six months" and item_state["decided_by"] == "board"
        assert [(f["department"], f["share"]) for f in item_state["funding"]] == [
            ("children_disability", 0.6), ("adult_services", 0.4)]
        assert c["stage"] == "planning"  # the family has not answered yet
        assert sum(1 for h in c["history"] if h["event"] == "committee_decided") == 1

        # The decided item leaves the agenda and is listed as decided.
        deadline = time.monotonic() + 30
        while True:
            page = (await board.http.get("/committee")).text
            decided = re.search(r'<table[^>]*id="decided".*?</table>', page, re.S).group(0)
            if f'data-item="{item_id}"' in decided or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert f'data-item="{item_id}"' in decided and en("committee.decision.approved") in decided
        assert f'<article class="of-item" id="item-{item_id}"' not in page


async def test_a_rejection_needs_no_split_and_a_stale_page_applies_nothing(stack: Stack) -> None:
    case_id, item_id = await escalated_case(stack, "Family Afslag")
    fname = f"form-committee_decision-{item_id}"
    async with Browser(stack, "mia") as mia:  # a manager decides on the committee's behalf
        html = await agenda_page(mia, item_id)
        form = forms_of(html)[fname]
        # The case moves on while the page is open (the coordinator pauses it): stale, 409.
        async with api(stack, "anna") as anna:
            r = await anna.post(f"/cases/{case_id}/pause", json={"reason": "The family is away"})
            assert r.status_code == 200, r.text
        r = await mia.http.post(form["action"], data={**form["fields"], "decision": "rejected"})
        assert r.status_code == 409, r.text[:2000]
        assert refusal_of(r.text, fname)
        assert (await case(stack, case_id))["escalations"][-1]["status"] == "waiting"
        # The page loaded again: a rejection with a split of 10 % is still a rejection.
        form = forms_of(await agenda_page(mia, item_id))[fname]
        r = await mia.http.post(form["action"], data={**form["fields"], "decision": "rejected",
                                                      "funding.0.percent": "10", "notes": "Too costly"})
        assert r.status_code == 303, r.text[:2000]
        c = await case(stack, case_id)
        assert c["escalations"][-1]["decision"] == "rejected" and c["escalations"][-1]["funding"] == []
        assert c["plans"][-1]["status"] == "rejected"


async def test_only_the_committee_managers_and_admins_see_the_committee(stack: Stack) -> None:
    for who in ("anna", "ole"):
        async with Browser(stack, who) as person:
            r = await person.http.get("/committee")
            assert r.status_code == 403 and en("committee.who") in r.text
            r = await person.http.post("/committee/items/x-1/decision", data={"decision": "approved"})
            assert r.status_code == 403
    for who in ("board", "mia"):
        async with Browser(stack, who) as person:
            assert (await person.http.get("/committee")).status_code == 200
    async with httpx.AsyncClient(base_url=stack.base_url, follow_redirects=False) as anonymous:
        r = await anonymous.get("/committee")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


# ---------------------------------------------------------------- in Chromium, with axe


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is missing")
async def test_the_pages_in_a_browser_pass_axe_and_fit_a_phone(stack: Stack, browser) -> None:
    """New referral, the committee, the staff directory, the manager pages, sign-in and the
    error page in real Chromium: a screenshot of each, axe-core finds nothing serious or
    critical, and at a phone's width nothing makes the page scroll sideways."""
    from tests.axe import AxeTable
    from tests.browser import Shots, fail_on_serious, new_person, no_server_errors

    case_id, item_id = await escalated_case(stack, "Family Browser")
    table = AxeTable()
    shots = Shots("manager-pages", table)
    month = datetime.now(UTC).strftime("%Y-%m")

    async def fits_a_phone(page, path: str) -> None:
        await page.set_viewport_size({"width": 375, "height": 800})
        await page.goto(stack.base_url + path)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        await shots(page, f"phone {path}")
        await page.set_viewport_size({"width": 1280, "height": 900})
        assert overflow <= 1, (path, overflow)

    # Sign-in pages, as nobody yet.
    context = await browser.new_context(locale="en-GB")
    page = await context.new_page()
    await page.goto(stack.base_url + "/login")
    await shots(page, "login", axe="login")
    await page.fill("#staff_id", "anna")
    await page.fill("#password", "not the password")
    await page.click("#form-login button[type=submit]")
    await shots(page, "login refused", axe="login refused")
    await page.goto(stack.base_url + "/set-password?token=x")
    await shots(page, "set password", axe="set password")
    await context.close()

    # The coordinator: New referral, refused, then the duplicate warning; no committee.
    context, page = await new_person(browser, stack, "anna")
    await page.goto(stack.base_url + "/cases/new")
    await shots(page, "new referral", axe="new referral")
    await page.click("#form-register_referral button[type=submit]")
    await shots(page, "new referral refused", axe="new referral refused")
    await page.fill("#form-register_referral-referral-reason", "Needs support at school")
    await page.select_option("#form-register_referral-referral-source", "school")
    await page.fill("#form-register_referral-family-name", "Family Browser Again")
    await page.fill("#form-register_referral-family-members-0-name", "Emil")
    await page.fill("#form-register_referral-family-members-0-birth_date", "2015-03-02")
    await page.check("#form-register_referral-consent-coordinated_handling-1")
    await page.click("#form-register_referral button[type=submit]")
    await page.wait_for_selector("#duplicate-warning")
    await shots(page, "new referral duplicate", axe="new referral: possible duplicate")
    await fits_a_phone(page, "/cases/new")
    await page.goto(stack.base_url + "/cases")
    await shots(page, "cases coordinator", axe="cases (coordinator)")
    await page.goto(stack.base_url + "/committee")
    await shots(page, "committee refused", axe="error page (403)")
    await context.close()

    # The committee: the agenda and a refused split.
    context, page = await new_person(browser, stack, "board")
    await page.goto(stack.base_url + "/committee")
    await page.wait_for_selector(f"[data-item='{item_id}']")
    await shots(page, "committee", axe="committee")
    fname = f"form-committee_decision-{item_id}"
    await page.check(f"#{fname}-decision-1")
    await page.fill(f"#{fname}-funding-1-percent", "30")
    await page.click(f"#{fname} button[type=submit]")
    await page.wait_for_selector(f"#{fname}-refusal")
    await shots(page, "committee refused split", axe="committee: split refused")
    await fits_a_phone(page, "/committee")
    await context.close()

    # The manager's pages.
    context, page = await new_person(browser, stack, "mia")
    for path, name in (("/dashboard", "overview"), ("/stuck", "stuck cases"), ("/cases", "cases"),
                       ("/reports", "reports"), (f"/reports/{month}", "monthly report")):
        await page.goto(stack.base_url + path)
        await shots(page, name, axe=name)
    await fits_a_phone(page, "/stuck")
    await context.close()

    # The administrator: the staff directory, a new person's one-time link.
    context = await browser.new_context(locale="en-GB")
    page = await context.new_page()
    await page.goto(stack.base_url + "/login")
    await page.fill("#staff_id", "admin")
    from tests.e2e_stack import ADMIN_PASSWORD

    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("#form-login button[type=submit]")
    await page.goto(stack.base_url + "/staff")
    await shots(page, "staff", axe="staff")
    await page.fill("#form-register_staff-id", "nina")
    await page.fill("#form-register_staff-name", "Nina Sand")
    await page.select_option("#form-register_staff-discipline", "family_therapist")
    await page.fill("#form-register_staff-department", "children_disability")
    await page.check("#form-register_staff-roles-team_member")
    await page.click("#form-register_staff button[type=submit]")
    await page.wait_for_selector("#password-link-url")
    await shots(page, "staff link", axe="staff: one-time link")
    await fits_a_phone(page, "/staff")
    await context.close()
    table.write(shots.dir / "axe.txt")
    no_server_errors()
    fail_on_serious(table)
    assert case_id
