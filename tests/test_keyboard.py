"""One case worked with the keyboard only (issue 9 §5): a coordinator signs in, registers a
referral, takes the case, forms the team, records the first contact, plans the assessment
meeting, writes and completes the assessment and drafts the plan — using nothing but
Tab / Shift+Tab / Enter / Space / the arrow keys and typing (`page.keyboard`). The test reads the
page (where the focus is, which option is chosen) but never clicks or fills an element.

On every control it uses, the focus must be visible: the focused element (or, for Det Fælles
Designsystem's drawn checkboxes and radio buttons, its label) has an outline or a box-shadow.
Real headless Chromium against the real stack; screenshots under test-artifacts/keyboard/.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.browser import (
    CHROMIUM,
    Shots,
    focus_visible,
    main_text,
    no_server_errors,
    stage_of,
    watch_errors,
)
from tests.e2e_stack import Stack
from tests.factories import password_of

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing (Debian package `chromium`)")

TZ = ZoneInfo("Europe/Copenhagen")
MAX_TABS = 400


@pytest.fixture(scope="module")
def stack(page_stack: Stack) -> Stack:
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


class Keyboard:
    """A person at the keyboard: moves the focus with Tab / Shift+Tab to a control (found by
    reading the page), checks its focus is visible, and types, chooses or ticks."""

    def __init__(self, page, date_order: str) -> None:
        self.page = page
        self.keys = page.keyboard
        self.date_order = date_order  # "mdy" or "dmy": how Chromium's date fields read
        self.used: list[str] = []
        self.invisible: list[dict] = []

    async def _at(self, selector: str) -> bool:
        return await self.page.evaluate(
            "(s) => !!document.activeElement && document.activeElement.matches(s)", selector)

    async def focus(self, selector: str) -> None:
        """Tab (or Shift+Tab, when the control is above the focus) until `selector` has the
        focus; the focus must be visible there."""
        if not await self._at(selector):
            backwards = await self.page.evaluate("""(s) => {
                const t = document.querySelector(s), a = document.activeElement;
                if (!t) return null;
                if (!a || a === document.body) return false;
                return !!(a.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_PRECEDING);
            }""", selector)
            assert backwards is not None, (f"{self.page.url}: no element {selector}\n"
                                           f"{await main_text(self.page)}")
            key = "Shift+Tab" if backwards else "Tab"
            for _ in range(MAX_TABS):
                await self.keys.press(key)
                if await self._at(selector):
                    break
            else:
                raise AssertionError(f"{self.page.url}: {MAX_TABS} × {key} never reached {selector}")
        state = await focus_visible(self.page)
        self.used.append(f"{state['tag']}#{state['id'] or state['name']}")
        if not state["visible"]:
            self.invisible.append(state)

    async def type(self, selector: str, text: str) -> None:
        await self.focus(selector)
        await self.keys.press("Control+A")
        await self.keys.type(text)

    async def choose(self, selector: str, value: str) -> None:
        """A <select>: the arrow keys move to the option."""
        await self.focus(selector)
        for _ in range(100):
            state = await self.page.evaluate("""(s) => { const e = document.querySelector(s);
                const values = [...e.options].map(o => o.value);
                return {now: values.indexOf(e.value), values}; }""", selector)
            if state["values"][state["now"]] == value:
                return
            assert value in state["values"], f"{selector} has no option {value!r}: {state['values']}"
            await self.keys.press("ArrowDown" if state["values"].index(value) > state["now"] else "ArrowUp")
        raise AssertionError(f"{selector}: could not choose {value!r}")

    async def radio(self, name: str, value: str) -> None:
        """A radio group: Tab into it, Space on the first, the arrow keys to the one wanted."""
        await self.focus(f'input[type=radio][name="{name}"]')
        target = f'input[type=radio][name="{name}"][value="{value}"]'
        for _ in range(20):
            if await self._at(target):
                if not await self.page.evaluate("(s) => document.querySelector(s).checked", target):
                    await self.keys.press("Space")
                return
            await self.keys.press("ArrowDown")
        raise AssertionError(f"radio {name}={value} not reached")

    async def tick(self, selector: str, on: bool = True) -> None:
        await self.focus(selector)
        if await self.page.evaluate("(s) => document.querySelector(s).checked", selector) != on:
            await self.keys.press("Space")

    async def date(self, selector: str, day: date) -> None:
        await self.focus(selector)
        parts = ((day.month, day.day) if self.date_order == "mdy" else (day.day, day.month))
        await self.keys.type(f"{parts[0]:02d}{parts[1]:02d}{day.year}")
        got = await self.page.evaluate("(s) => document.querySelector(s).value", selector)
        assert got == day.isoformat(), f"{selector}: typed {day}, the field says {got!r}"

    async def datetime(self, selector: str, when: datetime) -> None:
        """Chromium's datetime-local: month/day (order by locale), year, Tab, hour, minute
        (and AM/PM in a 12-hour locale)."""
        await self.focus(selector)
        first, second = ((when.month, when.day) if self.date_order == "mdy" else (when.day, when.month))
        await self.keys.type(f"{first:02d}{second:02d}{when.year}")
        await self.keys.press("Tab")
        if self.date_order == "mdy":
            hour = when.hour % 12 or 12
            await self.keys.type(f"{hour:02d}{when.minute:02d}{'A' if when.hour < 12 else 'P'}")
        else:
            await self.keys.type(f"{when.hour:02d}{when.minute:02d}")
        got = await self.page.evaluate("(s) => document.querySelector(s).value", selector)
        assert got == when.strftime("%Y-%m-%dT%H:%M"), f"{selector}: typed {when}, the field says {got!r}"

    async def press(self, selector: str, key: str = "Enter") -> None:
        """A button or link: focus it and press Enter (the page that follows is loaded)."""
        await self.focus(selector)
        async with self.page.expect_navigation():
            await self.keys.press(key)


async def date_order(browser) -> str:
    """How this Chromium's date fields read (headless follows its own locale, not the page's)."""
    page = await browser.new_page()
    try:
        await page.set_content('<label for="d">d</label><input id="d" type="date">')
        await page.keyboard.press("Tab")
        await page.keyboard.type("02032015")
        return "mdy" if await page.evaluate("document.getElementById('d').value") == "2015-02-03" else "dmy"
    finally:
        await page.close()


def field(form: str, name: str) -> str:
    return f'#form-{form} [name="{name}"]'


def submit(form: str) -> str:
    return f"#form-{form} button[type=submit]"


async def refused(page, form: str) -> str | None:
    alert = page.locator(f"#form-{form}-refusal, #{form}-refusal, main .alert-error[role=alert]")
    return await alert.first.inner_text() if await alert.count() else None


async def test_a_coordinator_works_a_case_with_the_keyboard_only(stack: Stack, browser) -> None:
    started = time.monotonic()
    shot = Shots("keyboard")
    order = await date_order(browser)
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = await context.new_page()
    page.set_default_timeout(20_000)
    watch_errors(page, "anna")
    kb = Keyboard(page, order)
    await page.goto(stack.base_url + "/login")

    # ---- sign in (the page puts the focus on the staff id)
    await kb.type("input[name=staff_id]", "anna")
    await kb.type("input[name=password]", password_of("anna"))
    await kb.press("form[action='/login'] button[type=submit]")
    assert "/login" not in page.url, await main_text(page)
    await shot(page, "my work")

    # On a new page the first Tab reaches the skip link, and it shows; Enter moves the
    # focus to the content.
    await page.keyboard.press("Tab")
    first = await focus_visible(page)
    href = await page.evaluate("document.activeElement.getAttribute('href')") or ""
    assert first["tag"] == "a" and href == "#main-content", first
    assert first["visible"], f"the skip link's focus is not visible: {first}"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main-content"

    # ---- the menu's New referral
    await kb.press("nav a[href='/cases/new']")
    assert page.url.endswith("/cases/new"), page.url
    F = "register_referral"
    await kb.choose(field(F, "referral.source"), "school")
    await kb.radio("referral.kind", "application")
    await kb.type(field(F, "referral.reason"), "Emil stays home; the school asks for help.")
    await kb.type(field(F, "family.name"), "Family Keys")
    await kb.type(field(F, "family.members.0.name"), "Emil Keys")
    await kb.choose(field(F, "family.members.0.role"), "child")
    await kb.date(field(F, "family.members.0.birth_date"), date(2015, 3, 2))
    await kb.type(field(F, "family.members.0.diagnoses"), "ADHD")
    await kb.type(field(F, "family.members.1.name"), "Mette Keys")
    await kb.choose(field(F, "family.members.1.role"), "parent")
    await kb.type(field(F, "existing_contacts.0.department"), "adult_services")
    await kb.type(field(F, "existing_contacts.1.department"), "school")
    await kb.radio("consent.coordinated_handling", "true")
    await shot(page, "new referral filled")
    await kb.press(submit(F))
    assert not await refused(page, F), await refused(page, F)
    match = re.search(r"/cases/([0-9a-f-]{36})", page.url)
    assert match, f"{page.url}\n{await main_text(page)}"
    assert await stage_of(page) == "referred"
    await shot(page, "case referred")

    # ---- take the case, form the team, the first contact
    async def command(form: str, stage: str | None = None) -> None:
        await kb.press(submit(form))
        assert not await refused(page, form), f"{form}: {await refused(page, form)}"
        if stage:
            assert await stage_of(page) == stage, f"after {form}: {await stage_of(page)}"
        await shot(page, f"after {form}")

    await command("assign_coordinator", "coordinator_assigned")
    await kb.choose(field("form_team", "members.0.staff_id"), "ole")
    await kb.choose(field("form_team", "members.1.staff_id"), "lise")
    await command("form_team", "team_formed")
    await kb.choose(field("record_contact", "kind"), "home_visit")
    await kb.type(field("record_contact", "notes"), "Visited the family at home.")
    await command("record_contact")

    # ---- the assessment meeting, the ICS assessment, complete it
    meeting = (datetime.now(TZ) + timedelta(days=4)).replace(hour=14, minute=30, second=0,
                                                           microsecond=0)
    await kb.datetime(field("schedule_assessment_meeting", "at"), meeting)
    await kb.type(field("schedule_assessment_meeting", "location"), "The family's home")
    await command("schedule_assessment_meeting", "assessment")
    A = "put_assessment"
    await kb.type(field(A, "ics.child_development.0.concerns"), "Stomach aches on school days")
    await kb.type(field(A, "ics.parenting_capacity.0.strengths"), "Caring parents")
    await kb.type(field(A, "child_views"), "Emil wants to go to school again.")
    await command(A)
    await command("complete_assessment", "planning")

    # ---- the plan: a family goal, a SMART goal, a service
    P = "put_plan"
    await kb.type(field(P, "family_goals.0"), "Emil goes to school every day")
    names = set(await page.locator(f"#form-{P} [name]").evaluate_all("es => es.map(e => e.name)"))
    if "goals.0.id" in names and not await page.locator(field(P, "goals.0.id")).input_value():
        await kb.type(field(P, "goals.0.id"), "g1")
    await kb.type(field(P, "goals.0.text"), "Emil attends school 5 days a week")
    await kb.type(field(P, "services.0.name"), "Family therapy")
    await kb.type(field(P, "services.0.paragraph"), "BL § 32")
    await kb.type(field(P, "services.0.department"), "children_disability")
    await kb.type(field(P, "services.0.monthly_cost"), "6000")
    share = next(n for n in ("services.0.funding.0.percent", "services.0.funding.0.share")
                 if n in names)
    await kb.type(field(P, "services.0.funding.0.department"), "children_disability")
    await kb.type(field(P, share), "100")  # percent (the editor's hint)
    await command(P, "planning")
    assert await page.locator("#form-vote").count(), "the coordinator can vote on the new plan"

    print(f"\nkeyboard-only: {len(kb.used)} controls, {time.monotonic() - started:.1f} s")
    no_server_errors()
    assert not kb.invisible, "focus not visible on:\n" + "\n".join(map(str, kb.invisible))
