"""The manager dashboard as a person uses it: a real headless Chromium (Playwright driving
Debian's /usr/bin/chromium) against the real stack (dev server, worker and API processes).

Seeds cases over the HTTP API in several stages, one of them overdue (a backdated referral),
opens the overview (`/dashboard`), checks the stuck case and its reason are shown in words,
filters the stuck list and the case list, checks a phone-sized screen does not scroll
sideways, opens the case page, acknowledges, nudges and reassigns the coordinator through the
page and checks it changed. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from api.pages import i18n
from tests.e2e_stack import Stack
from tests.factories import STAFF, case_create_body, password_of

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def en(key: str, **values: object) -> str:
    return i18n.translate("en", key, **values)


pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing (Debian package `chromium`)")


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("dashboard")) / "data")
    try:
        with pytest.MonkeyPatch.context() as mp:  # the API's technical sweep: every second
            mp.setenv("ONEFAMILY_STUCK_CHECK_SECONDS", "1")
            mp.setenv("ONEFAMILY_STUCK_INDEX_SECONDS", "1")
            await s.start()
        admin = await s.token()
        async with httpx.AsyncClient(base_url=s.base_url,
                                     headers={"Authorization": f"Bearer {admin}"}) as c:
            for person in STAFF:
                body = {**person, "password": password_of(person["id"])}
                assert (await c.post("/api/v1/staff", json=body)).status_code == 201
        s.tokens = {p["id"]: await s.token(p["id"], password_of(p["id"])) for p in STAFF}
        yield s
    finally:
        s.stop()


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60,
                             headers={"Authorization": f"Bearer {stack.tokens[user]}"})


async def seed(stack: Stack) -> dict[str, str]:
    """Cases in several stages; `overdue` was received 60 days ago and nobody took it."""
    now = datetime.now(UTC)
    ids: dict[str, str] = {}
    async with api(stack, "mia") as mia, api(stack, "anna") as anna:
        async def create(name: str, **referral) -> str:
            body = case_create_body(**referral)
            body["family"]["name"] = name
            r = await mia.post("/cases", json=body)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        ids["overdue"] = await create("Family Overdue",
                                      received_at=(now - timedelta(days=60)).isoformat())
        ids["assigned"] = await create("Family Assigned", received_at=now.isoformat())
        ids["assessment"] = await create("Family Assessment", received_at=now.isoformat())
        for key in ("assigned", "assessment"):
            r = await mia.post(f"/cases/{ids[key]}/coordinator", json={"coordinator_id": "anna"})
            assert r.status_code == 200, r.text
        cid = ids["assessment"]
        r = await anna.post(f"/cases/{cid}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        assert r.status_code == 200, r.text
        r = await anna.post(f"/cases/{cid}/assessment/meeting", json={
            "at": (now + timedelta(days=3)).isoformat(), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        assert r.status_code == 200 and r.json()["stage"] == "assessment", r.text

        deadline = time.monotonic() + 30
        while True:  # the read model is written by the workflow's projection activity
            r = await mia.get("/cases", params={"limit": 50})
            stages = {i["id"]: i["stage"] for i in r.json()["items"]}
            if stages.get(ids["assessment"]) == "assessment" and len(stages) >= 3:
                break
            assert time.monotonic() < deadline, f"read model not updated: {stages}"
            await asyncio.sleep(0.2)
    return ids


async def test_a_manager_finds_the_stuck_case_and_reassigns_through_the_pages(stack: Stack, browser) -> None:
    from playwright.async_api import expect

    ids = await seed(stack)
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB")
    page = await context.new_page()
    page.set_default_timeout(20_000)

    # Not signed in: the overview asks who you are.
    await page.goto(stack.base_url + "/dashboard")
    assert "/login" in page.url
    await page.fill("#staff_id", "mia")
    await page.fill("#password", password_of("mia"))
    await page.click("#form-login button[type=submit]")
    await page.wait_for_url(stack.base_url + "/dashboard")

    # The overview: open cases by stage, and the overdue case with its reason in words.
    await expect(page.locator("h1")).to_contain_text(en("dash.overview.title"))
    await expect(page.locator("#open-total")).to_have_text("3")
    row = page.locator(f"table.of-stuck tr[data-case='{ids['overdue']}']")
    await expect(row).to_be_visible()
    reason = row.locator("[data-reason='overdue:first_contact']")
    words = en("dash.reason.overdue", deadline=en("dash.deadline.first_contact"))
    await expect(reason).to_have_text(words)
    await expect(row).to_contain_text("Family Overdue")
    await expect(page.locator(f"table.of-stuck tr[data-case='{ids['assigned']}']")).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    # The stuck list filters by reason and stage; the case list by name.
    await page.goto(stack.base_url + "/stuck")
    await page.select_option("#f-reason", "overdue:first_contact")
    await page.get_by_role("button", name=en("dash.filter")).click()
    await page.wait_for_url("**/stuck?*reason=overdue%3Afirst_contact*")
    await expect(page.locator(f"tr[data-case='{ids['overdue']}']")).to_be_visible()
    await page.screenshot(path=str(ARTIFACTS / "dashboard-stuck.png"), full_page=True)
    await page.goto(stack.base_url + "/stuck?stage=assessment")
    await expect(page.locator(f"tr[data-case='{ids['overdue']}']")).to_have_count(0)
    await page.goto(stack.base_url + "/cases?q=Overdue")
    await expect(page.locator("#case-list tbody tr[data-case]")).to_have_count(1)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-cases.png"), full_page=True)

    # A narrow screen: the table scrolls inside its region, the page does not.
    await page.set_viewport_size({"width": 375, "height": 800})
    await page.goto(stack.base_url + "/dashboard")
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    await page.screenshot(path=str(ARTIFACTS / "dashboard-overview-mobile.png"), full_page=True)
    await page.set_viewport_size({"width": 1366, "height": 900})

    # The stuck case's page: its reasons, and a link to its workflow in the Temporal UI.
    await page.goto(stack.base_url + "/dashboard")
    await row.get_by_role("link", name="Family Overdue").click()
    await page.wait_for_url(f"**/cases/{ids['overdue']}")
    reasons = page.locator("#reasons")
    first = reasons.locator("[data-reason-row='overdue:first_contact']")
    await expect(first).to_be_visible()
    link = await page.locator("#temporal-link").get_attribute("href")
    assert link.endswith(f"/namespaces/{stack.temporal.namespace}/workflows/case-{ids['overdue']}")

    # Acknowledge the reason: it stays listed, marked with who and when.
    await first.locator("input[name=note]").fill("Bo takes it on Monday")
    await first.get_by_role("button", name=en("case.reason.acknowledge")).click()
    await expect(page.locator(".alert-success")).to_be_visible()
    await expect(first).to_contain_text("Mia Lund")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-case.png"), full_page=True)

    # Another case: nudge its owner (recorded; an in-app notification where the
    # notification outbox exists), then reassign its coordinator through the page.
    await page.goto(stack.base_url + f"/cases/{ids['assigned']}")
    await expect(page.locator("#coordinator")).to_have_attribute("data-coordinator", "anna")
    await page.select_option("#recipient_id", "anna")
    await page.fill("#message", "Please call the family this week.")
    await page.get_by_role("button", name=en("case.nudge.send")).click()
    await expect(page.locator(".alert-success")).to_contain_text("Anna Berg")
    form = page.locator("#form-assign_coordinator")
    await form.locator("select[name=coordinator_id]").select_option("bo")
    await form.get_by_role("button", name=en("forms.assign_coordinator.reassign")).click()
    await expect(page.locator(".alert-success")).to_contain_text("Bo Holm")
    await expect(page.locator("#coordinator")).to_have_attribute("data-coordinator", "bo")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-case-reassigned.png"), full_page=True)

    async with api(stack, "mia") as mia:
        case = (await mia.get(f"/cases/{ids['assigned']}")).json()
        assert case["coordinator_id"] == "bo"
        assert any(h["event"] == "coordinator_reassigned" for h in case["history"])


async def test_the_api_sweep_finds_a_workflow_that_stopped(stack: Stack) -> None:
    """The API's background task (started with the pages router) asks Temporal about open
    cases: a case workflow terminated by hand shows as `workflow_not_running`."""
    from temporalio.client import Client

    async with api(stack, "mia") as mia:
        body = case_create_body()
        body["family"]["name"] = "Family Terminated"
        r = await mia.post("/cases", json=body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        client = await Client.connect(stack.temporal.target, namespace=stack.temporal.namespace)
        deadline = time.monotonic() + 30
        while (await mia.get(f"/cases/{case_id}")).status_code != 200 or not any(
                i["id"] == case_id for i in (await mia.get("/cases")).json()["items"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await client.get_workflow_handle(f"case-{case_id}").terminate("simulating an operator mistake")
        deadline = time.monotonic() + 60
        while True:
            stuck = (await mia.get("/dashboard/stuck", params={"reason": "workflow_not_running"})).json()
            found = [i for i in stuck["items"] if i["case_id"] == case_id]
            if found:
                break
            assert time.monotonic() < deadline, "the sweep never reported the terminated workflow"
            await asyncio.sleep(0.5)
        reason = next(r for r in found[0]["reasons"] if r["kind"] == "workflow_not_running")
        assert reason["technical"] and "terminated" in reason["detail"]
