"""The monthly report's outcomes (issue 11, point 2) and its delivery (point 6): before/after
per instrument and informant with the Uppsala evaluation's Tyresö figures, old closing
outcomes still counted, family climate against its norms, the cooperation key figure, the JSON
`GET /api/v1/reports/{yyyy-mm}` and the page over a real read model, and the mail to the
managers of each unit through the notification outbox on real SMTP (aiosmtpd), sent once
per manager by MonthlyReportWorkflow on the time-skipping server."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session
from temporalio.worker import Worker

from activities.notifications import NotificationActivities, NotificationSettings
from activities.report import ReportActivities, compute_report, cooperates, render_report_html
from api import pages
from api import reports as reports_api
from bench.dashboard import build_case
from domain import cooperation
from domain.lifecycle import Ctx, execute
from domain.outcomes import measure
from domain.policy import DK
from models.case import Actor, CloseReason, Closure, Stage, TeamMember
from models.commands import CommandInput
from models.db import get_engine
from models.outcomes import DEFAULT_INSTRUMENTS, OutcomeIn, OutcomeMeasurement
from models.projection import write_case
from models.tables import StaffRow
from settings import Settings
from tests.apps import router_client
from tests.messaging_fakes import SmtpServer
from workflows.report import MonthlyReportWorkflow, ReportInput

DAY = timedelta(days=1)
MONTH = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 5, tzinfo=UTC)
ADMIN = Actor(id="admin", roles=["admin"])
SDQ = ("emotional", "conduct", "hyperactivity", "peer")


def sdq(informant: str, occasion: str, at: datetime, difficulties: tuple[float, ...],
        prosocial: float) -> OutcomeMeasurement:
    """One SDQ as the domain records it (totals computed by domain/outcomes.py)."""
    scores = {**dict(zip(SDQ, difficulties, strict=True)), "prosocial": prosocial}
    item = OutcomeIn(instrument="sdq", informant=informant, scores=scores)
    return measure(DEFAULT_INSTRUMENTS, [item], occasion, at, "coord001")[0]  # type: ignore[arg-type]


def closed_case(name: str = "Family Tyresö", coordinator: str = "coord001", outcomes: dict | None = None):
    """An active case walked through the real rules, closed on 21 October."""
    state = build_case(Stage.active, START - 60 * DAY, coordinator=coordinator, name=name,
                       step=timedelta(days=4))
    return execute(state, "close", CommandInput(actor=ADMIN, body={"reason": "goals_reached"}),
                   Ctx(actor=ADMIN, now=START + 20 * DAY, policy=DK)).model_copy(
        update={"closure": Closure(reason=CloseReason.goals_reached, outcomes=outcomes,
                                   at=START + 20 * DAY, by="admin")} if outcomes else {})


def tyreso_case(name: str = "Family Tyresö", coordinator: str = "coord001"):
    """The Uppsala evaluation's Tyresö figures: the child before 5/4/6/3 (prosocial 7.8),
    after 5/7/9/8 (9); the mother 2/2/3/1 (7) -> 5/1/2/3 (6)."""
    state = closed_case(name, coordinator)
    assessed, closed = START - 30 * DAY, START + 20 * DAY
    state.outcome_measurements = [
        sdq("child", "assessment", assessed, (5, 4, 6, 3), 7.8),
        sdq("mother", "assessment", assessed, (2, 2, 3, 1), 7),
        sdq("child", "closing", closed, (5, 7, 9, 8), 9),
        sdq("mother", "closing", closed, (5, 1, 2, 3), 6),
    ]
    return state


def measures(data: dict, instrument: str, informant: str) -> dict[str, dict]:
    row = next(r for r in data["outcomes"]["instruments"]
               if r["instrument"] == instrument and r["informant"] == informant)
    return {m["key"]: m for m in row["measures"]}


def html_row(html: str, informant: str, measure_key: str) -> list[str]:
    """The cells of one outcome row of the rendered report, as text."""
    found = re.search(rf'<tr data-informant="{informant}" data-measure="{measure_key}">(.*?)</tr>',
                      html, re.S)
    assert found, f"no row {informant}/{measure_key}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def test_tyreso_totals_in_the_json_and_the_document() -> None:
    data = compute_report([tyreso_case()], MONTH, timezone="Europe/Copenhagen", now=NOW)
    assert data["outcomes"]["population"] == "closed_in_month"
    assert data["outcomes"]["closed_with_outcomes"] == 1
    child, mother = measures(data, "sdq", "child"), measures(data, "sdq", "mother")
    child_total, mother_total = child["total_difficulties"], mother["total_difficulties"]
    assert (child_total["mean_before"], child_total["mean_after"]) == (18, 29)
    assert (mother_total["mean_before"], mother_total["mean_after"]) == (8, 11)
    assert (child["prosocial"]["mean_before"], child["prosocial"]["mean_after"]) == (7.8, 9)
    assert (mother["prosocial"]["mean_before"], mother["prosocial"]["mean_after"]) == (7, 6)
    assert child["total_difficulties"]["mean_change"] == 11 and child["total_difficulties"]["worsened"] == 1
    assert child["prosocial"]["improved"] == 1  # prosocial: higher is better
    # Bands from the informant's own form: self-report 18 is high, 29 very high.
    assert child["total_difficulties"]["bands_before"] == {"high": 1}
    assert child["total_difficulties"]["bands_after"] == {"very_high": 1}
    assert mother["total_difficulties"]["bands_before"] == {"close_to_average": 1}
    assert {r["informant"]: (r["mean_before"], r["mean_after"]) for r in data["outcomes"]["sdq"]} == {
        "child": (18, 29), "mother": (8, 11)}

    danish = render_report_html(data)  # the municipality's language
    assert '<html lang="da">' in danish and "<title>Månedsrapport 2026-10</title>" in danish
    cells = html_row(danish, "child", "total_difficulties")
    assert cells[:6] == ["Barnet (selv)", "Samlede vanskeligheder (0–40)", "1", "18", "29", "+11"]
    assert html_row(danish, "child", "prosocial")[3:5] == ["7,8", "9"]
    assert html_row(danish, "mother", "total_difficulties")[3:5] == ["8", "11"]
    english = render_report_html(data, "en")
    assert html_row(english, "child", "prosocial")[3:6] == ["7.8", "9", "+1.2"]
    assert "very high 1" in " ".join(html_row(english, "child", "total_difficulties"))


def test_old_closing_outcomes_still_count_and_never_twice() -> None:
    old = closed_case("Family Old", outcomes={
        "sdq": [{"informant": "mother", "before": 20, "after": 14},
                {"informant": "teacher", "before": {"total": 16}, "after": {"total": 17}},
                {"informant": "child", "before": dict(zip(SDQ, (5, 4, 6, 3), strict=True)),
                 "after": dict(zip(SDQ, (5, 7, 9, 8), strict=True))}],
        "goal_attainment": {"g1": "achieved", "g2": {"score": 1}}})
    # A newer case: recorded measurements AND the old object for the same informant count once.
    both = tyreso_case("Family Both")
    both.closure = both.closure.model_copy(update={"outcomes": {
        "sdq": [{"informant": "mother", "before": 30, "after": 30}]}})
    data = compute_report([old, both], MONTH, timezone="Europe/Copenhagen", now=NOW)
    assert data["outcomes"]["closed_with_outcomes"] == 2
    sdq_rows = {r["informant"]: r for r in data["outcomes"]["sdq"]}
    assert sdq_rows["mother"]["n"] == 2 and sdq_rows["mother"]["mean_before"] == 14  # (20 + 8) / 2
    assert sdq_rows["teacher"]["mean_change"] == 1
    assert sdq_rows["child"]["n"] == 2 and sdq_rows["child"]["mean_after"] == 29
    assert data["outcomes"]["goal_attainment"]["scores"] == 1
    assert data["outcomes"]["goal_attainment"]["achieved"] == 1


def test_family_climate_against_norms_and_goal_attainment_per_goal() -> None:
    state = closed_case("Family Climate")
    before, after = START - 30 * DAY, START + 20 * DAY
    climate = DEFAULT_INSTRUMENTS["family_climate"]
    items = {"closeness": 2.5, "distance": 2.2, "spontaneity": 2.4, "chaos": 2.6}
    better = {"closeness": 3.0, "distance": 1.8, "spontaneity": 2.9, "chaos": 1.9}
    state.outcome_measurements = [
        *measure(DEFAULT_INSTRUMENTS, [OutcomeIn(instrument="family_climate", informant="mother",
                                                 scores=items)], "assessment", before, "coord001"),
        *measure(DEFAULT_INSTRUMENTS, [OutcomeIn(instrument="goal_attainment", informant="team",
                                                 scores={"attainment": -1}, goal_id="g1")],
                 "status_meeting", before, "coord001"),
        *measure(DEFAULT_INSTRUMENTS, [OutcomeIn(instrument="family_climate", informant="mother",
                                                 scores=better)], "closing", after, "coord001"),
        *measure(DEFAULT_INSTRUMENTS, [OutcomeIn(instrument="goal_attainment", informant="team",
                                                 scores={"attainment": 1}, goal_id="g1")],
                 "closing", after, "coord001"),
    ]
    data = compute_report([state], MONTH, timezone="Europe/Copenhagen", now=NOW)
    fc = measures(data, "family_climate", "mother")
    assert fc["closeness"]["norm"] == climate.norms["closeness"]
    assert fc["closeness"]["before_vs_norm"] == round(2.5 - climate.norms["closeness"], 2)
    assert fc["closeness"]["after_vs_norm"] == round(3.0 - climate.norms["closeness"], 2)
    assert fc["closeness"]["improved"] == 1 and fc["chaos"]["improved"] == 1  # chaos: lower is better
    gas = measures(data, "goal_attainment", "team")["attainment"]
    assert (gas["mean_before"], gas["mean_after"], gas["bands_after"]) == (-1, 1, {"more_than_expected": 1})
    assert data["outcomes"]["goal_attainment"]["mean_score"] == 1  # the latest per goal
    html = render_report_html(data, "sv")
    norm = str(climate.norms["closeness"]).replace(".", ",")  # Swedish decimal comma
    assert "Familjeklimat" in html and html_row(html, "mother", "closeness")[7] == norm


def test_active_cooperation_between_adult_and_child_units() -> None:
    assert cooperation.side_of("adult_services") == "adult"
    assert cooperation.side_of("child_psychiatry") == "child"  # child words win
    assert cooperation.side_of("Jobcenter") == "adult" and cooperation.side_of("administration") is None
    assert cooperation.cooperates(has_coordinator=True, team=[("adult_services", "adult_services")],
                                  funding_departments=[])
    assert not cooperation.cooperates(has_coordinator=True, team=[("school", "school_psychologist")],
                                      funding_departments=["children_disability"])
    assert cooperation.cooperates(has_coordinator=True, team=[], funding_departments=["adult_services"])

    working = build_case(Stage.active, START - 60 * DAY, coordinator="coord001")  # adult team + funding
    assert cooperates(working, START, START + 31 * DAY)
    # The adult member waits for the family's consent and nobody adult pays: no cooperation.
    waiting = build_case(Stage.team_formed, START - 10 * DAY, coordinator="coord002")
    waiting.team = [TeamMember(staff_id="ole", discipline="adult_services", department="adult_services",
                               status="pending_consent")]
    assert not cooperates(waiting, START, START + 31 * DAY)
    data = compute_report([working, waiting], MONTH, timezone="Europe/Copenhagen", now=NOW)
    assert data["outcomes"]["cooperation"] == {"cases": 2, "cooperating": 1, "share": 0.5}


@pytest.fixture
def engine(settings: Settings):
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for sid, roles, unit, language in [
            ("mia", ["manager"], "children_disability", "da"),
            ("sven", ["manager"], "adult_disability", "sv"),
            ("coord001", ["coordinator"], "children_disability", None),
            ("admin", ["admin"], "administration", None),
        ]:
            session.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker", department=unit,
                                 unit=unit, roles=roles, email=f"{sid}@kommune.example",
                                 language=language, created_at=NOW))
        session.commit()
    return engine


def project(engine, *states) -> None:
    with Session(engine) as session:
        for state in states:
            write_case(session, state, datetime.now(UTC))
        session.commit()


def test_the_json_and_the_page_show_the_same_figures(engine, settings: Settings) -> None:
    project(engine, tyreso_case())
    http = router_client(engine, settings, reports_api.router, pages.router)
    with http as client:
        mia = {"X-User": "mia"}
        answer = client.get(f"/api/v1/reports/{MONTH}", headers=mia)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["scope"] == {"kind": "units", "units": ["children_disability"]}
        assert data["stored"] is None  # a unit's figures are computed, never stored
        child = measures(data, "sdq", "child")["total_difficulties"]
        mother = measures(data, "sdq", "mother")["total_difficulties"]
        assert (child["mean_before"], child["mean_after"], mother["mean_before"], mother["mean_after"]) == (
            18, 29, 8, 11)
        page = client.get(f"/reports/{MONTH}", headers=mia)
        assert page.status_code == 200
        assert html_row(page.text, "child", "total_difficulties")[3:5] == ["18", "29"]
        assert html_row(page.text, "mother", "total_difficulties")[3:5] == ["8", "11"]
        # The manager of another unit reads no Tyresö figures; the administrator the whole
        # municipality's report, stored and then read back.
        other = client.get(f"/api/v1/reports/{MONTH}", headers={"X-User": "sven"}).json()
        assert other["outcomes"]["instruments"] == [] and other["cases"]["closed"] == 0
        admin = {"X-User": "admin"}
        computed = client.get(f"/api/v1/reports/{MONTH}", headers=admin).json()
        assert computed["scope"]["kind"] == "municipality" and computed["stored"] is None
        assert client.get(f"/reports/{MONTH}", headers=admin).status_code == 200  # stores it
        stored = client.get(f"/api/v1/reports/{MONTH}", headers=admin).json()
        assert stored["stored"]["by"] == "admin" and stored["outcomes"] == computed["outcomes"]
        assert measures(stored, "sdq", "child")["total_difficulties"]["mean_after"] == 29
        # Refusals, each with a sentence.
        assert client.get(f"/api/v1/reports/{MONTH}").status_code == 401
        assert client.get(f"/api/v1/reports/{MONTH}", headers={"X-User": "coord001"}).status_code == 403
        for bad in ("2026-13", "2026-1", "october", "2026-10-01"):
            refused = client.get(f"/api/v1/reports/{bad}", headers=mia)
            assert refused.status_code == 422 and refused.json()["detail"] == reports_api.NOT_A_MONTH
        future = client.get("/api/v1/reports/2099-01", headers=mia)
        assert future.status_code == 404 and future.json()["detail"] == reports_api.NOT_BEGUN
        empty = client.get("/api/v1/reports/2020-01", headers=mia).json()
        assert empty["cases"]["open_at_end"] == 0 and empty["outcomes"]["instruments"] == []


async def test_the_report_is_mailed_once_to_each_manager(ts_env, engine, settings: Settings) -> None:
    project(engine, tyreso_case(), build_case(Stage.active, START - 60 * DAY, coordinator="coord001"))
    with SmtpServer() as smtp:
        channels = NotificationSettings(ONEFAMILY_SMTP_HOST="127.0.0.1", ONEFAMILY_SMTP_PORT=smtp.port,
                                        ONEFAMILY_SMTP_FROM="OneFamily <noreply@kommune.example>",
                                        ONEFAMILY_PUBLIC_URL="https://onefamily.kommune.example")
        activities = ReportActivities(engine, "DK", NotificationActivities(engine, settings, channels))
        with ThreadPoolExecutor(max_workers=4) as executor:
            async with Worker(ts_env.client, task_queue=settings.task_queue,
                              workflows=[MonthlyReportWorkflow], activity_executor=executor,
                              activities=[activities.build_monthly_report,
                                          activities.send_monthly_report]):
                for _ in range(2):  # the schedule's run, then a re-run of the same month
                    result = await ts_env.client.execute_workflow(
                        MonthlyReportWorkflow.run, ReportInput(month=MONTH),
                        id=f"report-{uuid.uuid4()}", task_queue=settings.task_queue)
                    assert result["notified"] == 2
        mails = {m["To"].split("<")[-1].rstrip(">"): m for m in smtp.messages}
    assert sorted(mails) == ["mia@kommune.example", "sven@kommune.example"]  # once each, no admin
    mia, sven = mails["mia@kommune.example"], mails["sven@kommune.example"]
    assert mia["Subject"] == "Månedsrapport 2026-10" and sven["Subject"] == "Månadsrapport 2026-10"
    mia_text, sven_text = mia.get_content(), sven.get_content()
    assert "Din enhed (children_disability) i 2026-10:" in mia_text
    assert "afsluttede sager: 1" in mia_text and "åbne sager ved månedens udgang: 1" in mia_text
    assert "avslutade ärenden: 0" in sven_text  # his unit's figures, not the municipality's
    assert "https://onefamily.kommune.example/reports/2026-10" in mia_text
    for mail in (mia, sven):
        text = mail.get_content()
        assert not mail.is_multipart()  # no attachment
        # No personal data: no family or child name, no outcome score.
        for private in ("Tyresö", "Jensen", "Emil", "Mette", "29", "7,8", "ADHD"):
            assert private not in text, private


def test_escalation_reasons_are_words_in_the_reports_language() -> None:
    """The monthly report named why cases were escalated by their keys ("joint funding over
    limit") in every language; now each kind has its words, an unknown kind its key."""
    data = compute_report([tyreso_case()], MONTH, timezone="Europe/Copenhagen", now=NOW)
    data["escalations"]["reasons"] = {"committee_only_paragraph": 1, "disagreement": 2,
                                      "joint_funding_over_limit": 3, "a_kind_from_later": 1}
    danish = render_report_html(data, "da")
    assert ("Hvorfor sagerne blev sendt videre: en ydelse som kun visitationsudvalget må bevilge 1; "
            "teamet var ikke enigt 2; fællesfinansierede ydelser over teamets grænse 3; "
            "a kind from later 1") in danish
    assert "joint funding over limit" not in danish and "report.escalation_reason" not in danish
    swedish = render_report_html(data, "sv")
    assert "teamet var inte enigt 2" in swedish
    assert "the team did not agree 2" in render_report_html(data, "en")
