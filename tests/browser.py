"""What the workbench's browser tests share: a real stack with staff who sign in with a
password, a signed-in Chromium context per person, filling and sending a command form by the
pages' conventions, numbered screenshots and the axe table.

Conventions of the pages (the brief of issue 9): every command form is
`<form id="form-<update name>" data-command="<update name>">` with one `button[type=submit]`,
its field names are the JSON paths of the API body (`members.0.staff_id`), the case page has
`#case-stage[data-stage]`, a refused form shows `#form-<update name>-refusal`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.axe import AxeTable, audit, serious
from tests.e2e_stack import Stack
from tests.factories import password_of

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# The five people of the workbench tests (issue 9 §6).
PEOPLE: list[dict] = [
    {"id": "anna", "name": "Anna Berg", "discipline": "social_worker",
     "department": "children_disability", "roles": ["coordinator"]},
    {"id": "ole", "name": "Ole Dam", "discipline": "adult_services",
     "department": "adult_services", "roles": ["team_member"]},
    {"id": "lise", "name": "Lise Skov", "discipline": "school_coordinator",
     "department": "school", "roles": ["team_member"]},
    {"id": "board", "name": "Karen Udvalg", "discipline": "other",
     "department": "administration", "roles": ["committee"]},
    {"id": "mia", "name": "Mia Lund", "discipline": "manager",
     "department": "children_disability", "roles": ["manager"]},
]


@asynccontextmanager
async def staffed_stack(data_dir: Path, people: list[dict] = PEOPLE) -> AsyncIterator[Stack]:
    """The real stack (dev server, worker, API; local sign-in) with `people` created through
    the JSON API by the admin, each with the password `password_of(id)`."""
    stack = Stack(data_dir, auth="local")
    try:
        await stack.start()
        admin = await stack.token()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30,
                                     headers={"Authorization": f"Bearer {admin}"}) as c:
            for person in people:
                r = await c.post("/api/v1/staff", json={**person, "password": password_of(person["id"])})
                assert r.status_code == 201, r.text
        yield stack
    finally:
        stack.stop()


class Shots:
    """Numbered screenshots `NN-<name>.png` under test-artifacts/<folder>/, and axe once per
    distinct page name."""

    def __init__(self, folder: str, table: AxeTable | None = None) -> None:
        self.dir = ARTIFACTS / folder
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()
        self.n = 0
        self.table = table if table is not None else AxeTable()
        self.taken: list[str] = []
        self.started = time.monotonic()
        self.times: list[tuple[str, float, float, float]] = []  # name, at, screenshot s, axe s

    async def __call__(self, page, name: str, axe: str | None = None, part: str | None = None) -> Path:
        """Screenshot of the whole page, or only of the element `part` (a CSS selector: the
        form a step is about); `axe`: the page's name in the axe table (checked the first
        time that name is seen)."""
        self.n += 1
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        path = self.dir / f"{self.n:02d}-{slug}.png"
        began = time.monotonic()
        if part and await page.locator(part).count():
            await page.locator(part).first.screenshot(path=str(path))
        else:
            await page.screenshot(path=str(path), full_page=True)
        shot_s = time.monotonic() - began
        self.taken.append(path.name)
        if axe and axe not in self.table:
            self.table.add(axe, await audit(page))
        self.times.append((path.name, began - self.started, shot_s, time.monotonic() - began - shot_s))
        return path

    def timing(self) -> str:
        return "\n".join(f"  {at:6.1f} s  {name:<45} screenshot {shot:4.1f} s  axe {axe:4.1f} s"
                         for name, at, shot, axe in self.times)


async def new_person(browser, stack: Stack, staff_id: str, *, viewport=None, locale: str = "en-GB"):
    """A browser context of its own for `staff_id`, signed in through /login (the form as a
    person fills it). Returns (context, page) on the page the sign-in lands on (`/`)."""
    context = await browser.new_context(viewport=viewport or {"width": 1280, "height": 900},
                                        locale=locale, extra_http_headers={"Accept-Language": locale})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    watch_errors(page, staff_id)
    await page.goto(stack.base_url + "/login")
    await page.locator("input[name=staff_id]").fill(staff_id)
    await page.locator("input[name=password]").fill(password_of(staff_id))
    async with page.expect_navigation():
        await page.locator("form[action='/login'] button[type=submit]").click()
    assert "/login" not in page.url, f"{staff_id} could not sign in: {await main_text(page)}"
    return context, page


SERVER_ERRORS: list[str] = []


def watch_errors(page, who: str) -> None:
    """Every page (a document) answered with a 5xx is noted: a page must never show a 500."""
    def seen(response) -> None:
        if response.request.resource_type == "document" and response.status >= 500:
            SERVER_ERRORS.append(f"{who}: {response.request.method} {response.url} → {response.status}")
    page.on("response", seen)


def no_server_errors() -> None:
    errors, SERVER_ERRORS[:] = list(SERVER_ERRORS), []
    assert not errors, "pages answered with a server error:\n" + "\n".join(errors)


async def main_text(page) -> str:
    try:
        return (await page.locator("main").inner_text(timeout=2000))[:1500]
    except Exception:  # noqa: BLE001 - only for a failure message
        return (await page.content())[:1500]


def form(page, update: str):
    return page.locator(f"form#form-{update}")


async def has_form(page, update: str) -> bool:
    return await form(page, update).count() > 0


async def fill(page, update: str, values: dict[str, object]) -> None:
    """Fill the fields of form `update` by name (the JSON path) as a person would: choose an
    option, tick a box, pick a radio button, type a text."""
    f = form(page, update)
    assert await f.count() == 1, (f"no form#form-{update} on {page.url}; forms there: "
                                  f"{await forms_on(page)}")
    for name, value in values.items():
        fields = f.locator(f'[name="{name}"]')
        count = await fields.count()
        assert count, (f"form-{update} has no field named {name!r}; it has "
                       f"{await field_names(page, update)}")
        first = fields.first
        tag = await first.evaluate("e => e.tagName.toLowerCase()")
        kind = (await first.get_attribute("type") or "").lower()
        if tag == "select":
            if isinstance(value, list | tuple):
                await first.select_option([str(v) for v in value])
            else:
                await first.select_option(str(value))
        elif kind == "checkbox":
            if count > 1:  # a group of boxes, one per value
                wanted = {str(v) for v in (value if isinstance(value, list | tuple) else [value])}
                for i in range(count):
                    box = fields.nth(i)
                    await box.set_checked((await box.get_attribute("value")) in wanted)
            else:
                await first.set_checked(bool(value) and value not in ("false", "0"))
        elif kind == "radio":
            await f.locator(f'[name="{name}"][value="{value}"]').check()
        else:
            await first.fill(str(value))


async def forms_on(page) -> list[str]:
    return await page.eval_on_selector_all("form[data-command]", "fs => fs.map(f => f.dataset.command)")


async def field_names(page, update: str) -> list[str]:
    return await form(page, update).locator("[name]").evaluate_all(
        "es => es.filter(e => e.type !== 'hidden').map(e => e.name)")


async def send(page, update: str, values: dict[str, object] | None = None) -> None:
    """Fill and send form `update`; fails with the page's refusal when it is shown again."""
    if values:
        await fill(page, update, values)
    button = form(page, update).locator("button[type=submit]")
    assert await button.count() >= 1, f"form-{update} has no submit button"
    async with page.expect_navigation():
        await button.first.click()
    await expect_no_refusal(page, update)


async def send_refused(page, update: str, values: dict[str, object] | None = None) -> tuple[int, str]:
    """Fill and send form `update` expecting a refusal: (the answer's status, the refusal's
    text shown on the page again). Never a 500."""
    if values:
        await fill(page, update, values)
    async with page.expect_navigation() as navigation:
        await form(page, update).locator("button[type=submit]").first.click()
    status = (await navigation.value).status
    assert status < 500, f"form-{update}: {status}\n{await main_text(page)}"
    refusal = refusal_of(page, update)
    assert await refusal.count(), (f"form-{update} was not refused (status {status}) on {page.url}:\n"
                                   f"{await main_text(page)}")
    return status, await refusal.first.inner_text()


def refusal_of(page, update: str):
    """A form's refusal shown again (`form.refusal(fname)` of templates/pages/_form.html.j2:
    `#<fname>-refusal`, the form's name with or without `form-`)."""
    return page.locator(f"#form-{update}-refusal, #{update}-refusal")


async def expect_no_refusal(page, update: str) -> None:
    refusal = page.locator(f"#form-{update}-refusal, #{update}-refusal, main .alert-error[role=alert]")
    if await refusal.count():
        text = await refusal.first.inner_text()
        raise AssertionError(f"form-{update} was refused on {page.url}: {text}")


async def stage_of(page) -> str | None:
    marker = page.locator("#case-stage")
    if not await marker.count():
        return None
    return await marker.first.get_attribute("data-stage")


async def wait_stage(page, url: str, stage: str, timeout: float = 20) -> None:
    """Reload `url` until its #case-stage says `stage` (a command's effect is live at once;
    another person's may need the read model)."""
    deadline = time.monotonic() + timeout
    while True:
        now = await stage_of(page)
        if now == stage:
            return
        assert time.monotonic() < deadline, f"{url}: stage {now!r}, expected {stage!r}"
        await asyncio.sleep(0.3)
        await page.goto(url)


async def focus_visible(page) -> dict:
    """The focused element and whether it shows its focus (an outline or a box-shadow)."""
    return await page.evaluate("""() => {
        const e = document.activeElement;
        if (!e || e === document.body) return {tag: 'body', visible: false};
        const shows = (s) => (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0)
                             || (!!s.boxShadow && s.boxShadow !== 'none');
        const s = getComputedStyle(e);
        let visible = shows(s);
        // Det Fælles Designsystem hides the native box of a checkbox / radio button and draws
        // it, and its focus ring, on the label (label::before).
        if (!visible && (e.type === 'checkbox' || e.type === 'radio') && e.id) {
            const label = document.querySelector(`label[for="${CSS.escape(e.id)}"]`);
            if (label) visible = shows(getComputedStyle(label)) || shows(getComputedStyle(label, '::before'));
        }
        return {tag: e.tagName.toLowerCase(), name: e.name || '', id: e.id || '',
                type: e.type || '', text: (e.innerText || e.value || '').slice(0, 60),
                visible: visible, outline: s.outlineStyle + ' ' + s.outlineWidth,
                shadow: s.boxShadow};
    }""")


def fail_on_serious(table: AxeTable) -> None:
    bad = {name: serious(v) for name, v in table.rows.items() if serious(v)}
    assert not bad, "axe found serious or critical violations:\n" + table.failures()
