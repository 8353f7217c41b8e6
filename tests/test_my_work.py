"""My work (`/`, DESIGN §10): what waits for each person, from the read model, never more
than the access policy lets them read.

The cases are real case states (`domain.lifecycle`, the workflow's own rules) projected into a
real SQLite read model as the projection activity does (`models.projection.write_case`);
the page is the real router behind the real auth middleware (trusted header). Every case is
dated relative to the clock, since the page reads the clock.
"""

from __future__ import annotations

import asyncio
import copy
import re
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from api import watch
from api.pages import mywork
from domain.lifecycle import execute, new_case
from models.case import Actor, CaseState
from models.commands import CommandInput
from models.db import get_engine
from models.projection import write_case
from models.tables import CaseRow, StaffRow
from models.tables_reporting import StuckCaseRow, StuckNudgeRow
from settings import Settings
from tests.apps import router_client
from tests.factories import case_create, ctx, plan_body

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)

PEOPLE = {
    "anna": (["coordinator"], "children_disability", None),
    "bo": (["coordinator"], "children_disability", None),
    "carl": (["coordinator"], "adult_services", None),
    "ole": (["team_member"], "children_disability", None),
    "sif": (["team_member"], "children_disability", "da"),
    "eve": (["team_member"], "children_disability", None),
    "tom": (["team_member"], "children_disability", None),  # on no case
    "mia": (["manager"], "children_disability", None),
    "karen": (["committee"], "administration", None),
}
TEAM = [{"staff_id": "ole", "discipline": "school_psychologist", "department": "school"},
        {"staff_id": "sif", "discipline": "family_therapist", "department": "children_disability"}]
ASSESSMENT = {
    "ics": {"child_development": [{"dimension": "health", "concerns": "Stomach aches"}]},
    "child_views": "Emil wants to go to school without stomach aches.",
}
CHEAP_PLAN = {"family_goals": ["Emil goes to school every day"],
              "services": [{"name": "Family therapy", "paragraph": "BL § 32",
                            "department": "children_disability", "monthly_cost": 5000,
                            "funding": [{"department": "children_disability", "share": 1}]}]}


def who(staff_id: str) -> Actor:
    roles, unit, _ = PEOPLE[staff_id]
    return Actor(id=staff_id, roles=roles, unit=unit)


class Case:
    """One case driven through the workflow's rules, `at` a time relative to NOW."""

    def __init__(self, case_id: str, family: str, received: timedelta, by: str = "mia") -> None:
        body = case_create(received_at=(NOW - received).isoformat())
        body.family.name = family
        self.state: CaseState = new_case(case_id, body, ctx(who(by), NOW - received))

    def do(self, name: str, by: str, body: dict | None, ago: timedelta, **extra) -> Case:
        execute(self.state, name, CommandInput(actor=who(by), body=body, **extra),
                ctx(who(by), NOW - ago))
        return self

    def to_planning(self, coordinator: str, team: list[dict], meeting_at: datetime,
                    participants: list[str], plan: dict) -> Case:
        self.do("assign_coordinator", "mia", {"coordinator_id": coordinator}, 19 * DAY)
        self.do("form_team", coordinator, {"members": team}, 18 * DAY)
        self.do("schedule_assessment_meeting", coordinator,
                {"at": meeting_at.isoformat(), "location": "Town hall", "participants": participants},
                17 * DAY)
        self.do("put_assessment", coordinator, copy.deepcopy(ASSESSMENT), 3 * DAY)
        self.do("complete_assessment", coordinator, None, 3 * DAY)
        return self.do("put_plan", coordinator, copy.deepcopy(plan), 2 * DAY)

    def vote(self, by: str, value: str = "agree", reason: str = "") -> Case:
        return self.do("vote", by, {"staff_id": by, "vote": value, "reason": reason}, DAY)


@pytest.fixture
def world(settings: Settings):
    """The cases of a unit and one of another unit, in several stages, and two nudges."""
    engine = get_engine(settings.db_url)
    this_week = NOW  # always inside this week, whatever day the test runs
    cases = {
        # Anna's, nobody called the family: first contact is long overdue.
        "overdue": Case("c-overdue", "Family Overdue", 30 * DAY)
        .do("assign_coordinator", "mia", {"coordinator_id": "anna"}, 29 * DAY),
        # Anna's plan waits for the votes of Anna and Ole (Sif has voted).
        "votes": Case("c-votes", "Family Votes", 20 * DAY)
        .to_planning("anna", TEAM, this_week, ["anna", "ole", "family"], CHEAP_PLAN).vote("sif"),
        # Bo's plan waits for Eve's vote (another team).
        "other_team": Case("c-other", "Family Other", 20 * DAY)
        .to_planning("bo", [{"staff_id": "eve", "discipline": "teacher", "department": "school"}],
                     this_week + 30 * DAY, ["bo", "eve"], CHEAP_PLAN),
        # Anna's plan was decided by the team; the family has not answered.
        "family": Case("c-family", "Family Answer", 20 * DAY)
        .to_planning("anna", TEAM, this_week + 30 * DAY, ["anna", "ole"], CHEAP_PLAN)
        .vote("anna").vote("ole").vote("sif"),
        # Anna's plan went to the committee (joint funding over the team's limit).
        "committee": Case("c-committee", "Family Committee", 20 * DAY)
        .to_planning("anna", TEAM, this_week + 30 * DAY, ["anna", "ole"], plan_body())
        .vote("anna").vote("ole").vote("sif"),
        # Another unit's case, overdue too.
        "elsewhere": Case("c-elsewhere", "Family Elsewhere", 30 * DAY, by="carl")
        .do("assign_coordinator", "carl", {"coordinator_id": "carl"}, 29 * DAY),
        # Nobody took these yet: their deadlines are the manager's of the unit.
        "unassigned": Case("c-unassigned", "Family Waiting", 10 * DAY),
        "unassigned_elsewhere": Case("c-unassigned-x", "Family Far", 10 * DAY, by="carl"),
    }
    assert cases["committee"].state.stage.value == "escalated"
    with Session(engine) as session:
        for staff_id, (roles, unit, language) in PEOPLE.items():
            session.add(StaffRow(id=staff_id, name=staff_id.title() + " Person", discipline="social_worker",
                                 department=unit, unit=unit, roles=roles, created_at=NOW,
                                 language=language))
        session.commit()
        for c in cases.values():
            write_case(session, c.state, NOW)
        session.add(StuckNudgeRow(case_id="c-overdue", kind="overdue:first_contact", recipient_id="anna",
                                  sent_by="mia", sent_at=NOW - DAY, message="Please call the family today"))
        session.add(StuckNudgeRow(case_id="c-other", kind="stage_too_long", recipient_id="anna",
                                  sent_by="mia", sent_at=NOW, message="Not Anna's case"))
        session.commit()
    watch.forget_watermarks()
    client = router_client(engine, settings, mywork.router)
    return client, cases, engine


def page(client, user: str | None, **headers: str) -> str:
    if user is not None:
        headers["X-User"] = user
    headers.setdefault("Accept-Language", "en")  # Denmark's pages speak Danish otherwise
    response = client.get("/", headers=headers, follow_redirects=False)
    assert response.status_code == 200, response.text
    return response.text


def section(html: str, name: str) -> str:
    found = re.search(rf'<section id="my-{name}".*?</section>', html, re.S)
    assert found, f"no section {name}"
    return found.group(0)


def test_a_coordinator_sees_the_overdue_deadline_first_in_red_with_words(world) -> None:
    client, cases, _ = world
    html = page(client, "anna")
    deadlines = section(html, "deadlines")
    rows = re.findall(r'<tr data-case="([^"]+)" data-kind="([^"]+)"( data-overdue="true")?>(.*?)</tr>',
                      deadlines, re.S)
    assert rows[0][:2] == ("c-overdue", "first_contact")
    first = rows[0][3]
    assert 'class="of-overdue"' in first and "Overdue for" in first and "days" in first
    assert "First contact with the family" in first and "/cases/c-overdue" in first
    assert "Family Overdue" in first
    # Soonest first: the due dates never go back in time.
    dues = [cases_due(cases, case_id, kind) for case_id, kind, *_ in rows]
    assert dues == sorted(dues)
    # Anna's own deadlines only: the family's answer on her decided plan is one of them,
    # nothing of Bo's or of the other unit's cases.
    assert ("c-family", "family_approval") in {(c, k) for c, k, *_ in rows}
    assert not {"c-other", "c-elsewhere"} & {c for c, *_ in rows}
    assert "Family Other" not in html and "Family Elsewhere" not in html


def cases_due(cases: dict, case_id: str, kind: str) -> datetime:
    state = next(c.state for c in cases.values() if c.state.id == case_id)
    return min(d.due_at for d in state.deadlines if d.kind.value == kind and d.is_open())


def test_a_team_member_sees_the_vote_waiting_for_them_and_not_another_team_s(world) -> None:
    client, _, _ = world
    votes = section(page(client, "ole"), "votes")
    assert 'data-case="c-votes"' in votes and "Family Votes" in votes
    assert "plan version 1 waits for your vote (1 of 3 have voted)" in votes
    assert 'href="/cases/c-votes#form-vote"' in votes
    assert "c-other" not in votes and "c-family" not in votes  # decided: not waiting
    eve = section(page(client, "eve"), "votes")
    assert 'data-case="c-other"' in eve and "c-votes" not in eve
    # Sif has voted: nothing waits for her, and the section says so (in her language, Danish).
    sif = section(page(client, "sif"), "votes")
    assert "Intet venter på dig: ingen plan venter på din stemme." in sif and "<li" not in sif


def test_the_coordinator_sees_the_plan_waiting_for_the_family(world) -> None:
    client, _, _ = world
    family = section(page(client, "anna"), "family-plans")
    assert 'data-case="c-family"' in family and "decided by the team" in family
    assert "c-votes" not in family and "c-committee" not in family
    assert 'href="/cases/c-family#form-family_response"' in family
    assert "No plan of yours waits" in section(page(client, "bo"), "family-plans")


def test_meetings_this_week_for_who_takes_part(world) -> None:
    client, cases, _ = world
    anna = section(page(client, "anna"), "meetings")
    assert re.findall(r'data-case="([^"]+)" data-meeting="([^"]+)"', anna) == [("c-votes", "assessment")]
    assert "Assessment meeting" in anna and "Town hall" in anna
    local = cases["votes"].state.assessment_meeting.at.astimezone(ZoneInfo("Europe/Copenhagen"))
    assert local.strftime("%H:%M") in anna  # the municipality's time zone
    assert 'data-case="c-votes"' in section(page(client, "ole"), "meetings")
    # Sif is on the team but not at the meeting; Bo's meeting is next month.
    assert "Du har ingen møder i denne uge." in section(page(client, "sif"), "meetings")  # Danish
    assert "You have no meetings this week." in section(page(client, "bo"), "meetings")


def test_nudges_newest_first_only_on_cases_they_may_read(world) -> None:
    client, _, _ = world
    nudges = section(page(client, "anna"), "nudges")
    assert 'data-case="c-overdue"' in nudges and "Please call the family today" in nudges
    assert "Mia Person asked you to look at this case" in nudges
    assert "Overdue: First contact with the family" in nudges and 'class="badge badge-info"' in nudges
    assert "c-other" not in nudges and "Not Anna" not in nudges  # Bo's case: not Anna's to read
    assert "No manager has nudged you" in section(page(client, "ole"), "nudges")


def test_a_committee_member_sees_the_waiting_item(world) -> None:
    client, _, _ = world
    html = page(client, "karen")
    committee = section(html, "committee")
    assert 'data-case="c-committee"' in committee and "One item waits for a decision." in committee
    assert 'href="/committee"' in committee and "Family Committee" in committee
    # The committee's decision deadline is the committee's own.
    assert 'data-case="c-committee" data-kind="committee_decision"' in section(html, "deadlines")
    assert "Family Votes" not in html  # no item: not the committee's to read
    assert 'id="my-committee"' not in page(client, "anna")  # not on the committee


def test_a_manager_sees_the_stuck_count_of_their_unit(world) -> None:
    client, _, engine = world
    html = page(client, "mia")  # the page indexes what was projected (catch_up) first
    with Session(engine) as session:
        units = dict(session.execute(select(CaseRow.id, CaseRow.unit)).all())
        stuck = list(session.execute(select(StuckCaseRow.case_id).where(StuckCaseRow.reasons > 0)).scalars())
    assert "c-elsewhere" in stuck and "c-overdue" in stuck
    mine = [c for c in stuck if units[c] == "children_disability"]
    stuck_section = section(html, "stuck")
    assert f'data-count="{len(mine)}"' in stuck_section
    assert f"{len(mine)} cases in your unit are stuck." in stuck_section
    assert 'href="/stuck"' in stuck_section and 'href="/dashboard"' in stuck_section
    # The deadlines of the unit's unassigned cases are the manager's, not another unit's.
    deadlines = section(html, "deadlines")
    assert 'data-case="c-unassigned" data-kind="first_contact"' in deadlines
    assert "c-unassigned-x" not in html and "Family Elsewhere" not in html
    assert "c-unassigned" not in section(page(client, "anna"), "deadlines")
    assert 'id="my-stuck"' not in page(client, "anna")


def test_empty_sections_say_so_in_a_sentence(world) -> None:
    client, _, _ = world
    html = page(client, "tom")
    assert "Nothing waits for you: you own no open deadlines." in section(html, "deadlines")
    assert "Nothing waits for you: no plan waits for your vote." in section(html, "votes")
    assert "You have no meetings this week." in section(html, "meetings")
    assert "No manager has nudged you about a case." in section(html, "nudges")


def test_html_lang_follows_the_language(world) -> None:
    client, _, _ = world
    sif = page(client, "sif")  # chose Danish
    assert '<html lang="da">' in sif and "<h1" in sif and "Mit arbejde" in sif
    assert "mywork." not in sif  # no raw keys
    ole = page(client, "ole", **{"Accept-Language": "sv-SE,sv;q=0.9"})
    assert '<html lang="sv">' in ole and "Mitt arbete" in ole and "Röster som väntar på dig" in ole
    anna = page(client, "anna")
    assert '<html lang="en">' in anna and "My work" in anna and "mywork." not in anna


def test_not_signed_in_goes_to_the_login(world) -> None:
    client, _, _ = world
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_due_words_count_calendar_days_in_the_municipality() -> None:
    tz = ZoneInfo("Europe/Copenhagen")
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # 11:00 in Copenhagen
    assert mywork.due_words(now - timedelta(hours=1), now, tz)["key"] == "mywork.due.overdue_today"
    assert mywork.due_words(datetime(2026, 11, 30, 23, 30, tzinfo=UTC), now, tz)["key"] \
        == "mywork.due.overdue_today"  # 23:30 UTC: 00:30 on 1 December in Copenhagen
    assert mywork.due_words(now - DAY, now, tz)["key"] == "mywork.due.overdue_yesterday"
    late = mywork.due_words(now - 3 * DAY, now, tz)
    assert (late["key"], late["n"], late["overdue"]) == ("mywork.due.overdue_days", 3, True)
    assert mywork.due_words(now + 2 * DAY, now, tz)["n"] == 2
    start, end = mywork.week_of(now, tz)  # a Tuesday: Monday 30 November to Sunday 6 December
    assert start == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 12, 6, 23, 0, tzinfo=UTC)


CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "my-work"


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package `chromium`)")
async def test_every_role_s_my_work_passes_axe_at_desktop_and_mobile_width(world) -> None:
    """axe-core (tests/axe.py's copy) on the page's own content (<main>; the frame is
    base.html.j2's), each role, 1280 and 375 pixels wide; screenshots in test-artifacts/."""
    import uvicorn
    from fastapi.staticfiles import StaticFiles
    from playwright.async_api import async_playwright

    from tests.axe import TAGS, axe_source, describe, serious
    from tests.browser import CHROMIUM_ARGS

    client, _, _ = world
    app = client.app
    app.mount("/static", StaticFiles(directory=Path(__file__).resolve().parent.parent / "static"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, list] = {}
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                for user, width in [("anna", 1280), ("anna", 375), ("ole", 1280), ("mia", 1280),
                                    ("karen", 375), ("tom", 1280), ("sif", 375)]:
                    context = await browser.new_context(
                        viewport={"width": width, "height": 900},
                        extra_http_headers={"X-User": user, "Accept-Language": "en"})
                    page_ = await context.new_page()
                    await page_.goto(f"http://127.0.0.1:{port}/")
                    await page_.evaluate(axe_source())
                    violations = await page_.evaluate("""async (tags) => {
                        const r = await axe.run({include: [['main']]}, {
                            resultTypes: ['violations'], runOnly: {type: 'tag', values: tags}});
                        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map(n => ({target: n.target.map(String),
                                                      html: n.html.slice(0, 200)}))}));
                    }""", TAGS)
                    found[f"{user} {width}px"] = violations
                    # No horizontal scrolling of the page at a phone's width.
                    assert await page_.evaluate("document.documentElement.scrollWidth") <= width + 1, user
                    await page_.screenshot(path=str(SHOTS / f"{user}-{width}.png"), full_page=True)
                    await context.close()
            finally:
                await browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    bad = {name: serious(v) for name, v in found.items() if serious(v)}
    assert not bad, "\n".join(f"{name}:\n{describe(v)}" for name, v in bad.items())
