"""The case page (/cases/{id}) per stage, for a coordinator, a team member, a manager and the
committee: the stage, who has the ball in a sentence, the forms this reader may use now (by
`data-command`, the same set as `domain.workbench.available_commands`), a timeline without
machine keys, and `<html lang>` in the reader's language.

Part one renders cases built with the domain functions and stored in the read model (the
app's Temporal is unreachable, so the page reads the read model, as it does when the
workflow does not answer). Part two runs the real stack: a form sent from a page that is out
of date answers 409 on the page with what changed, and applies nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.credentials import set_password
from api.main import create_app
from domain.workbench import available_commands
from models.case import Actor, CaseState
from models.db import get_engine, init_read_model, migrate
from models.projection import write_case
from models.tables import StaffRow
from settings import Settings
from tests import test_workbench as wb

PEOPLE = [
    ("anna", "Anna Berg", ["coordinator"]),
    ("bo", "Bo Holm", ["coordinator"]),
    ("ole", "Ole Dam", ["team_member"]),
    ("sif", "Sif Lund", ["team_member"]),
    ("maria", "Maria Krog", ["manager"]),
    ("karen", "Karen Vik", ["committee"]),
]
NAMES = {pid: name for pid, name, _ in PEOPLE}
RAW_KEY = re.compile(r"\b(?:timeline|case|deadline|overdue)[.:][a-z_]+|#\d|\b[a-z]+_[a-z_]+\b")


def password(pid: str) -> str:
    return f"{pid}'s long test password"


class Page(HTMLParser):
    """The parts of a page the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.lang = None
        self.stage = None
        self.commands: list[str] = []
        self.ids: set[str] = set()
        self._in: list[str] = []
        self.texts: dict[str, list[str]] = {"timeline": [], "ball": [], "deadlines": [],
                                            "messages": []}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if a.get("id") == "case-stage":
            self.stage = a.get("data-stage")
        if tag == "form" and a.get("data-command"):
            self.commands.append(a["data-command"])
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "section":
            self._in.append(a.get("id") or "")

    def handle_endtag(self, tag):
        if tag == "section" and self._in:
            self._in.pop()

    def handle_data(self, data):
        for section in self._in:
            if section in self.texts and data.strip():
                self.texts[section].append(data.strip())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    data = Path(tmp_path_factory.mktemp("case-page")) / "data"
    settings = Settings(ONEFAMILY_DATA_DIR=str(data), TEMPORAL_ADDRESS="127.0.0.1:1",
                        ONEFAMILY_ALLOWED_HOSTS="testserver", ONEFAMILY_TEMPORAL_CONNECT_WAIT="0")
    migrate(settings.db_url)
    init_read_model(settings)
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for pid, name, roles in PEOPLE:
            session.add(StaffRow(id=pid, name=name, discipline="social_worker",
                                 department="children_disability", roles=roles,
                                 created_at=datetime.now(UTC)))
            set_password(session, pid, password(pid))
        session.commit()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client, engine


def store(engine, build: Callable[[], CaseState]) -> CaseState:
    state = build()  # built as "case-1": its id, its committee items' ids and case ids
    state = CaseState.model_validate_json(
        state.model_dump_json().replace('"case-1', f'"{uuid.uuid4()}'))
    with Session(engine) as session:
        write_case(session, state, datetime.now(UTC))
        session.commit()
    return state


def login(client: TestClient, pid: str, language: str = "en") -> None:
    client.cookies.clear()
    r = client.post("/login", data={"staff_id": pid, "password": password(pid)})
    assert r.status_code == 303, r.text
    client.cookies.set("onefamily_lang", language)


def page(client: TestClient, case_id: str, language: str = "en") -> Page:
    r = client.get(f"/cases/{case_id}", headers={"Accept-Language": language})
    assert r.status_code == 200, r.text[:2000]
    return Page(r.text)


ACTORS = {pid: Actor(id=pid, roles=roles) for pid, _, roles in PEOPLE}
STAGES = [
    ("referred", wb.referred, "referred", "a coordinator to be assigned"),
    ("team formed", wb.formed, "team_formed", "the assessment meeting to be scheduled"),
    ("assessment", wb.in_assessment, "assessment", "the ICS assessment"),
    ("plan drafted", wb.drafted, "planning", "votes on version 1 of the plan"),
    ("escalated", wb.escalated, "escalated", "the visitation committee's decision on version 1"),
    ("active", wb.active, "active", "the next status meeting"),
    ("closed", wb.closed, "closed", "The case was closed"),
]


@pytest.mark.parametrize(("name", "build", "stage", "ball"), STAGES, ids=[s[0] for s in STAGES])
def test_the_case_page_per_stage_and_reader(site, name, build, stage, ball) -> None:
    client, engine = site
    state = store(engine, build)
    readers = ["anna", "ole", "maria"] + (["karen"] if stage == "escalated" else [])
    if state.coordinator_id is None:
        readers = ["bo", "maria"]
    for pid in readers:
        login(client, pid)
        p = page(client, state.id)
        assert p.lang == "en"
        assert p.stage == stage
        assert ball in " ".join(p.texts["ball"]), (pid, p.texts["ball"])
        # The forms shown are exactly those the workflow's rules allow this reader now
        # (a form partial another helper has not written yet is simply missing).
        expected = available_commands(state, ACTORS[pid], now=datetime.now(UTC))
        assert set(p.commands) <= expected, (pid, p.commands, expected)
        assert len(p.commands) == len(set(p.commands))
        # Plain sentences: no machine keys, ids of staff replaced by names.
        timeline = " ".join(p.texts["timeline"])
        assert timeline and not RAW_KEY.search(timeline), RAW_KEY.search(timeline)
        assert "anna" not in timeline.split() and ("Anna Berg" in timeline or state.coordinator_id is None)
        for text in p.texts["deadlines"]:
            assert not RAW_KEY.search(text), text


def test_coordinator_team_member_and_manager_see_different_forms(site) -> None:
    client, engine = site
    state = store(engine, wb.drafted)
    shown = {}
    for pid in ("anna", "ole", "maria"):
        login(client, pid)
        shown[pid] = set(page(client, state.id).commands)
    # Whatever partials exist: a team member never gets the coordinator's forms.
    assert not shown["ole"] & {"put_plan", "family_response", "close", "pause", "form_team"}
    assert "vote" not in shown["maria"]  # a manager is not a voter
    wanted = {"anna": available_commands(state, ACTORS["anna"]),
              "ole": available_commands(state, ACTORS["ole"])}
    assert "vote" in wanted["ole"] and "put_plan" in wanted["anna"] and "put_plan" not in wanted["ole"]


def test_the_page_speaks_the_readers_language(site) -> None:
    client, engine = site
    state = store(engine, wb.escalated)
    for language, words in (("da", "visitationsudvalget"), ("sv", "nämnden"), ("en", "committee")):
        login(client, "anna", language)
        r = client.get(f"/cases/{state.id}")
        p = Page(r.text)
        assert p.lang == language and r.headers["content-language"] == language
        assert words in " ".join(p.texts["ball"]) + " ".join(p.texts["timeline"])


def test_strangers_and_bad_ids(site) -> None:
    client, engine = site
    state = store(engine, wb.formed)
    login(client, "bo")  # another coordinator, the case is assigned
    assert client.get(f"/cases/{state.id}").status_code == 403
    assert client.get("/cases/not-a-uuid").status_code == 404
    assert client.get(f"/cases/{uuid.uuid4()}").status_code == 404
    client.cookies.clear()
    assert client.get(f"/cases/{state.id}").status_code == 303


def test_an_overdue_deadline_is_red_and_in_words(site) -> None:
    client, engine = site
    old = wb.NOW - timedelta(days=60)

    def overdue() -> CaseState:
        return wb.referred(received_at=old.isoformat())

    state = store(engine, overdue)
    login(client, "maria")
    r = client.get(f"/cases/{state.id}")
    assert re.search(r'data-deadline="first_contact" data-status="overdue" class="of-overdue"', r.text)
    p = Page(r.text)
    line = next(t for t in p.texts["deadlines"] if t.startswith("First contact with the family"))
    assert "— due " in line and line.endswith("overdue")


# ---------------------------------------------------------------- part two: the real stack


def _hidden(html: str, form_id: str) -> dict[str, str]:
    """The hidden fields (CSRF token, key, version, loaded_at) of one form on a page."""
    start = html.index(f'id="{form_id}"')
    form = html[start:html.index("</form>", start)]
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', form))


@pytest.fixture(scope="module")
def stack(page_stack):
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


async def test_a_form_from_a_stale_page_is_refused_with_what_changed(stack) -> None:
    """The page was loaded, then the case moved on (a colleague recorded a contact): the
    pause sent from the old page answers 409 on the case page, lists what changed, and the
    case is not paused. Sent again from the fresh page, it is applied (303)."""
    import httpx

    from tests.factories import case_create_body, password_of

    api = {pid: httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60,
                                  headers={"Authorization": f"Bearer {stack.tokens[pid]}"})
           for pid in ("mia", "anna")}
    browser = httpx.AsyncClient(base_url=stack.base_url, timeout=60, follow_redirects=False)
    try:
        r = await api["mia"].post("/cases", json=case_create_body())
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        r = await api["mia"].post(f"/cases/{case_id}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200, r.text

        r = await browser.post("/login", data={"staff_id": "anna", "password": password_of("anna")})
        assert r.status_code == 303, r.text
        browser.cookies.set("onefamily_lang", "en")
        page = await browser.get(f"/cases/{case_id}")
        assert page.status_code == 200, page.text[:500]
        assert Page(page.text).stage == "coordinator_assigned"
        assert 'id="form-pause"' in page.text and 'data-command="pause"' in page.text
        hidden = _hidden(page.text, "form-pause")
        assert hidden["version"].isdigit() and hidden["loaded_at"]

        # Meanwhile the case moves on.
        r = await api["anna"].post(f"/cases/{case_id}/contacts", json={
            "kind": "phone", "at": datetime.now(UTC).isoformat(), "notes": "called"})
        assert r.status_code == 200, r.text

        stale = await browser.post(f"/cases/{case_id}/pause",
                                   data={**hidden, "reason": "Family on holiday",
                                         "waiting_for_family": "true"})
        assert stale.status_code == 409, stale.text[:500]
        assert "The case has changed" in stale.text
        changed = re.search(r'<ul class="alert-text"[^>]*>(.*?)</ul>', stale.text, re.S)
        assert changed and "Anna Berg recorded a contact with the family" in changed.group(1)
        assert not RAW_KEY.search(re.sub(r"<[^>]+>", " ", changed.group(1)))
        assert "Family on holiday" in stale.text  # what was typed is kept
        assert 'data-refused-form="pause"' in stale.text
        assert (await api["anna"].get(f"/cases/{case_id}")).json()["paused"] is False

        fresh = _hidden((await browser.get(f"/cases/{case_id}")).text, "form-pause")
        done = await browser.post(f"/cases/{case_id}/pause",
                                  data={**fresh, "reason": "Family on holiday",
                                        "waiting_for_family": "true"})
        assert done.status_code == 303, done.text[:500]
        assert (await api["anna"].get(f"/cases/{case_id}")).json()["paused"] is True
        again = await browser.get(done.headers["location"])
        assert 'id="case-paused"' in again.text and 'data-command="resume"' in again.text
        assert 'data-command="pause"' not in again.text
        assert "paused the case while it waits for the family" in again.text
    finally:
        for client in (*api.values(), browser):
            await client.aclose()


async def test_the_case_page_in_chromium_axe_and_the_refusal_in_view(stack, browser) -> None:
    """The page as people see it (coordinator, manager; a phone's width too): no axe violation
    of impact serious or critical, screenshots under test-artifacts/case-page/, and a refused
    form comes back scrolled to and focused on its refusal."""
    import httpx

    from tests.axe import AxeTable
    from tests.browser import CHROMIUM, Shots, new_person
    from tests.factories import case_create_body

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package `chromium`)")

    mia = httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60,
                            headers={"Authorization": f"Bearer {stack.tokens['mia']}"})
    try:
        body = case_create_body(received_at=(datetime.now(UTC) - timedelta(days=30)).isoformat())
        body["family"]["name"] = "Family Overdue"
        r = await mia.post("/cases", json=body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        assert (await mia.post(f"/cases/{case_id}/coordinator",
                               json={"coordinator_id": "anna"})).status_code == 200
        assert (await mia.post(f"/cases/{case_id}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services",
             "department": "adult_services"}]})).status_code == 200
    finally:
        await mia.aclose()

    table = AxeTable()
    shots = Shots("case-page", table)
    _, anna = await new_person(browser, stack, "anna")
    await anna.goto(f"{stack.base_url}/cases/{case_id}")
    assert await anna.locator("#case-stage").get_attribute("data-stage") == "team_formed"
    assert "First contact with the family" in await anna.locator("#deadlines").inner_text()
    await shots(anna, "coordinator team formed", axe="case page: coordinator")

    # A refused form (no reason for the pause): the page comes back focused on it.
    await anna.locator("#form-pause button[type=submit]").scroll_into_view_if_needed()
    await anna.evaluate("document.querySelector('#form-pause textarea').removeAttribute('required')")
    async with anna.expect_navigation():
        await anna.locator("#form-pause button[type=submit]").click()
    focused = await anna.evaluate("document.activeElement && document.activeElement.id")
    assert focused == "pause-refusal", focused
    await shots(anna, "coordinator refused pause", axe="case page: a refused form")

    _, mia_page = await new_person(browser, stack, "mia")
    await mia_page.goto(f"{stack.base_url}/cases/{case_id}")
    await mia_page.locator("#reasons").wait_for()
    await shots(mia_page, "manager", axe="case page: manager")

    _, phone = await new_person(browser, stack, "anna", viewport={"width": 375, "height": 800},
                                locale="da-DK")
    await phone.goto(f"{stack.base_url}/cases/{case_id}")
    assert await phone.locator("html").get_attribute("lang") == "da"
    width = await phone.evaluate("document.documentElement.scrollWidth")
    await shots(phone, "coordinator phone da", axe="case page: phone, Danish")
    assert width <= 380, f"the page is {width}px wide on a 375px phone"
    print("\n" + table.text())
    table.write(shots.dir / "axe.txt")
    assert not table.failures(), table.failures()
