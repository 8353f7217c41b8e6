"""Mobile width (issue 9 §4): at 375 × 812 the case page, My work and the new-referral form
fit — the page never scrolls sideways (a wide table scrolls inside its own box) — and the main
menu can still be reached (its links show, or a visible button opens it). Real headless
Chromium against the real stack; screenshots under test-artifacts/mobile/.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.browser import (
    CHROMIUM,
    Shots,
    new_person,
    no_server_errors,
    stage_of,
)
from tests.e2e_stack import Stack
from tests.factories import case_create_body, password_of

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing (Debian package `chromium`)")

PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="module")
def stack(page_stack: Stack) -> Stack:
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


async def case_in_assessment(stack: Stack) -> str:
    """A case with a team, a contact and an assessment meeting, so the page has a timeline,
    deadlines and several forms — set up over the JSON API (this test is about the pages' width)."""
    token = await stack.token("anna", password_of("anna"))
    async with httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}) as anna:
        r = await anna.post("/cases", json=case_create_body())
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        now = datetime.now(UTC)
        for path, body in (
            ("coordinator", {"coordinator_id": "anna"}),
            ("team", {"members": [{"staff_id": "ole", "discipline": "adult_services",
                                   "department": "adult_services"}]}),
            ("contacts", {"kind": "phone", "at": now.isoformat()}),
            ("assessment/meeting", {"at": (now + timedelta(days=3)).isoformat(),
                                    "location": "Town hall", "participants": ["anna", "ole", "family"]}),
        ):
            r = await anna.post(f"/cases/{cid}/{path}", json=body)
            assert r.status_code == 200, f"{path}: {r.text}"
        deadline = time.monotonic() + 20  # My work reads the read model
        while cid not in [c["id"] for c in (await anna.get(  # this case (the stack is shared)
                "/cases", params={"stage": "assessment", "limit": 500})).json()["items"]]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    return cid


async def menu_reachable(page) -> bool:
    """The main menu's links show, or a visible button opens them (Det Fælles Designsystem's
    mobile menu)."""
    return await page.evaluate("""() => {
        const shown = (e) => !!e && e.getClientRects().length > 0
                             && getComputedStyle(e).visibility !== 'hidden';
        const links = [...document.querySelectorAll('nav a[href="/cases"]')];
        if (links.some(shown)) return true;
        const opener = [...document.querySelectorAll('button, [role=button]')].filter(b =>
            b.matches('.button-menu-open, [aria-controls], [aria-expanded]'));
        return opener.some(shown);
    }""")


async def overflow(page) -> dict:
    return await page.evaluate("""() => {
        const se = document.scrollingElement;
        const wide = [...document.querySelectorAll('body *')].filter(e => {
            const r = e.getBoundingClientRect();
            return r.right > window.innerWidth + 1 && getComputedStyle(e).position !== 'fixed';
        }).filter(e => !e.closest('.of-table-wrap, .table--responsive-scroll, [data-scrolls]'))
          .slice(0, 8).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                                 + (e.className && typeof e.className === 'string'
                                    ? '.' + e.className.trim().split(/\\s+/).join('.') : '')
                                 + ' right=' + Math.round(e.getBoundingClientRect().right));
        return {scrollWidth: se.scrollWidth, innerWidth: window.innerWidth, wide};
    }""")


async def test_the_workbench_fits_a_phone(stack: Stack, browser) -> None:
    cid = await case_in_assessment(stack)
    shot = Shots("mobile")
    problems: list[str] = []
    _, page = await new_person(browser, stack, "anna", viewport=PHONE)
    for path, name in (("/", "my work"), ("/cases/new", "new referral"),
                       (f"/cases/{cid}", "case page")):
        await page.goto(stack.base_url + path)
        assert await page.locator("main h1").count(), f"{path}: no heading"
        if name == "case page":
            assert await stage_of(page) == "assessment"
        await shot(page, f"{name} 375")
        if not await menu_reachable(page):
            problems.append(f"{path}: at {PHONE['width']} px the main menu is hidden and no "
                            "visible button opens it")
        width = await overflow(page)
        if width["scrollWidth"] > width["innerWidth"] + 1:
            problems.append(f"{path}: the page is {width['scrollWidth']} px wide at "
                            f"{width['innerWidth']} px; too wide: {width['wide']}")
    no_server_errors()
    assert not problems, "\n".join(problems)
