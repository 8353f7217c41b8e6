"""The dashboard's index over a real read model, SQLite and PostgreSQL (stuck list,
acknowledgements, counts, metrics; `db_url`, tests/postgres.py), the monthly report's figures,
and MonthlyReportWorkflow on the real time-skipping test server."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select
from temporalio.worker import Worker

from activities.funding import funding_lines
from activities.report import ReportActivities, build_report, compute_report, render_report_html
from api import dashboard, metrics, pages, watch
from bench.dashboard import build_case, seed_staff
from domain.lifecycle import Ctx, execute
from domain.policy import DK
from models.case import Actor, Stage
from models.commands import CommandInput
from models.db import get_engine
from models.projection import write_case
from models.tables import StaffRow
from models.tables_reporting import MonthlyReportRow, StuckKindCountRow
from settings import Settings
from tests.apps import router_client
from workflows.report import MonthlyReportWorkflow, ReportInput, month_before

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def project(engine, *states) -> None:
    with Session(engine) as session:
        for state in states:
            write_case(session, state, datetime.now(UTC))
        session.commit()


@pytest.fixture
def engine(db_url: str):
    watch.forget_watermarks()
    e = get_engine(db_url)
    seed_staff(e)
    return e


def test_stuck_list_from_the_index(engine) -> None:
    late = build_case(Stage.referred, NOW - 40 * DAY, name="Family Late")
    fresh = build_case(Stage.referred, NOW - timedelta(hours=1), name="Family Fresh")
    assessing = build_case(Stage.assessment, NOW - 200 * DAY, coordinator="coord001", name="Family Slow")
    project(engine, late, fresh, assessing)
    assert watch.catch_up(engine) == 3
    assert watch.catch_up(engine) == 0, "nothing new: nothing re-indexed"

    with Session(engine) as s:
        result = dashboard.stuck_list(s, NOW)
        ids = [i["case_id"] for i in result["items"]]
        assert fresh.id not in ids and {late.id, assessing.id} <= set(ids)
        assert result["total"] == 2
        oldest = [i["oldest"] for i in result["items"]]
        assert oldest == sorted(oldest)
        late_item = next(i for i in result["items"] if i["case_id"] == late.id)
        assert {"overdue:first_contact", "stage_too_long", "no_family_contact"} <= {
            r["kind"] for r in late_item["reasons"]}
        only = dashboard.stuck_list(s, NOW, stage="assessment")
        assert [i["case_id"] for i in only["items"]] == [assessing.id]
        by_reason = dashboard.stuck_list(s, NOW, reason="overdue:first_contact")
        assert late.id in [i["case_id"] for i in by_reason["items"]]
        mine = dashboard.stuck_list(s, NOW, me="coord001")
        assert [i["case_id"] for i in mine["items"]] == [assessing.id]
        counts = dashboard.stuck_counts(s)
        assert counts["overdue:first_contact"] >= 1 and counts["stage_too_long"] == 2

    # The case moves on: the new version replaces its reasons.
    admin = Actor(id="admin", roles=["admin"])
    closed = execute(late, "close", CommandInput(actor=admin, body={"reason": "duplicate"}),
                     Ctx(actor=admin, now=NOW, policy=DK))
    project(engine, closed)
    assert watch.catch_up(engine) == 1
    with Session(engine) as s:
        assert late.id not in [i["case_id"] for i in dashboard.stuck_list(s, NOW)["items"]]
        assert dashboard.stuck_counts(s).get("overdue:first_contact", 0) == 0


def test_time_passing_makes_a_case_stuck_without_a_new_version(engine) -> None:
    state = build_case(Stage.referred, NOW - 3 * DAY)
    project(engine, state)
    watch.catch_up(engine, now=NOW)
    with Session(engine) as s:
        assert dashboard.stuck_list(s, NOW)["total"] == 0
    later = NOW + 30 * DAY
    watch.catch_up(engine, now=later)  # nothing projected, only time passed
    with Session(engine) as s:
        result = dashboard.stuck_list(s, later)
        assert [i["case_id"] for i in result["items"]] == [state.id]


def test_acknowledged_reasons_stay_listed_marked_and_can_be_hidden(engine) -> None:
    state = build_case(Stage.referred, NOW - 40 * DAY)
    project(engine, state)
    watch.catch_up(engine)
    with Session(engine) as s:
        reasons = dashboard.case_reasons(s, NOW, state.id)
    for r in reasons:
        watch.acknowledge(engine, state.id, r["kind"], r["since"], "mia", "on it")
    with Session(engine) as s:
        shown = dashboard.stuck_list(s, NOW)
        assert shown["total"] == 1
        assert all(r["acknowledged"]["by"] == "mia" for r in shown["items"][0]["reasons"])
        assert dashboard.stuck_list(s, NOW, include_acknowledged=False)["total"] == 0
    # Re-indexing the same case (a new version) keeps the acknowledgement of the same reason.
    state.version += 1
    project(engine, state)
    watch.catch_up(engine)
    with Session(engine) as s:
        assert dashboard.stuck_list(s, NOW, include_acknowledged=False)["total"] == 0


def test_kind_counts_survive_a_recount(engine) -> None:
    states = [build_case(Stage.referred, NOW - (30 + i) * DAY) for i in range(5)]
    project(engine, *states)
    watch.catch_up(engine)
    with Session(engine) as s:
        before = dashboard.stuck_counts(s)
        watch.recount_kinds(s)
        s.commit()
        assert dashboard.stuck_counts(s) == before
        assert s.exec(select(StuckKindCountRow)).all()


def test_funding_lines_split_services_and_follow_the_committee() -> None:
    active = build_case(Stage.active, NOW - 100 * DAY, coordinator="anna")
    lines = funding_lines(active)
    by_department = {(line.department, line.joint): line.monthly_amount for line in lines}
    assert by_department[("children_disability", True)] == 3000
    assert by_department[("adult_services", True)] == 3000
    assert by_department[("children_disability", False)] == 2500  # the mentor, one department
    assert all(line.valid_until is None for line in lines)
    decided = build_case(Stage.active, NOW - 100 * DAY, coordinator="anna", escalate=True)
    split = {(line.department, line.joint): line.monthly_amount for line in funding_lines(decided)}
    assert split[("children_disability", True)] == pytest.approx(16000 * 0.6)
    assert split[("adult_services", True)] == pytest.approx(16000 * 0.4)


def test_monthly_report_figures() -> None:
    month_start = datetime(2026, 10, 1, tzinfo=UTC)
    now = datetime(2026, 11, 5, tzinfo=UTC)
    active = build_case(Stage.active, month_start - 60 * DAY, coordinator="anna", step=timedelta(days=4))
    referred = build_case(Stage.referred, month_start + 3 * DAY)
    closed = build_case(Stage.coordinator_assigned, month_start + 1 * DAY, coordinator="bo")
    admin = Actor(id="admin", roles=["admin"])
    closed = execute(closed, "close", CommandInput(actor=admin, body={
        "reason": "goals_reached",
        "outcomes": {"sdq": [{"informant": "mother", "before": 20, "after": 14},
                             {"informant": "teacher", "before": {"total": 16}, "after": {"total": 17}}],
                     "goal_attainment": {"g1": "achieved", "g2": "dropped"}}}),
        Ctx(actor=admin, now=month_start + 20 * DAY, policy=DK))
    data = compute_report([active, referred, closed], "2026-10", timezone="Europe/Copenhagen", now=now)
    assert data["complete"] is True
    assert data["cases"]["new_referrals"] == 2
    assert data["cases"]["closed"] == 1 and data["cases"]["close_reasons"] == {"goals_reached": 1}
    assert data["cases"]["by_stage_at_end"]["referred"] == 1
    assert data["cases"]["by_stage_at_end"]["active"] == 1
    assert data["cases"]["open_at_end"] == 2
    sdq = {row["informant"]: row for row in data["outcomes"]["sdq"]}
    assert sdq["mother"]["mean_change"] == -6 and sdq["teacher"]["mean_change"] == 1
    assert data["outcomes"]["goal_attainment"]["achieved"] == 1
    assert data["outcomes"]["goal_attainment"]["goals"] == 2
    funding = {row["department"]: row for row in data["funding"]["items"]}
    assert funding["adult_services"]["joint"] == 3000
    referred_days = next(r for r in data["stage_days"] if r["stage"] == "referred")
    assert referred_days["n"] >= 1  # the closed case left `referred` in October
    html = render_report_html(data)  # the municipality's language: Danish
    assert '<html lang="da">' in html and "Månedsrapport 2026-10" in html and "Mor" in html
    english = render_report_html(data, "en")
    assert "Monthly report 2026-10" in english and "Mother" in english


def test_month_before() -> None:
    assert month_before(2026, 1) == "2025-12"
    assert month_before(2026, 11) == "2026-10"


def test_metrics_and_pages_answer_over_the_read_model(engine, settings: Settings) -> None:
    late = build_case(Stage.referred, NOW - 40 * DAY)
    project(engine, late)
    http = router_client(engine, settings, dashboard.router, pages.router, metrics.router)
    http.app.add_middleware(metrics.CommandLatencyMiddleware)
    metrics.observe_command("POST /api/v1/cases/{case_id}/coordinator", 0.02, 200)
    with http as client:
        body = client.get("/metrics").text
        assert 'onefamily_open_cases{stage="referred"} 1.0' in body
        assert 'onefamily_overdue_deadlines{kind="first_contact"} 1.0' in body
        assert 'onefamily_stuck_cases{reason="stage_too_long"} 1.0' in body
        assert "onefamily_committee_queue 0.0" in body
        assert "onefamily_command_seconds_bucket" in body
        assert client.get("/dashboard", follow_redirects=False).status_code == 303  # who are you?
        page = client.get("/dashboard", headers={"X-User": "mia"})
        assert page.status_code == 200 and 'data-reason="overdue:first_contact"' in page.text
        stuck = client.get("/api/v1/dashboard/stuck", headers={"X-User": "mia"}).json()
        assert stuck["total"] == 1 and stuck["items"][0]["case_id"] == late.id
        assert {"kind", "since", "owner", "detail"} <= set(stuck["items"][0]["reasons"][0])
        # A coordinator sees the unassigned cases of their unit (to take one), no others.
        assert client.get("/api/v1/dashboard/stuck", headers={"X-User": "coord003"}).json()["total"] == 1
        with Session(engine) as session:
            session.add(StaffRow(id="outsider", name="Other unit", discipline="social_worker",
                                 department="adult_disability", unit="adult_disability",
                                 roles=["coordinator"], created_at=datetime.now(UTC)))
            session.commit()
        assert client.get("/api/v1/dashboard/stuck", headers={"X-User": "outsider"}).json()["total"] == 0
        case_page = client.get(f"/cases/{late.id}", headers={"X-User": "mia"})
        assert case_page.status_code == 200 and 'id="form-assign_coordinator"' in case_page.text
        assert client.get(f"/cases/{late.id}", headers={"X-User": "outsider"}).status_code == 403
        assert client.get(f"/cases/{uuid.uuid4()}", headers={"X-User": "mia"}).status_code == 404


async def test_monthly_report_workflow_on_the_time_skipping_server(ts_env, settings: Settings) -> None:
    engine = get_engine(settings.db_url)
    seed_staff(engine)
    project(engine, build_case(Stage.active, datetime(2026, 8, 1, tzinfo=UTC), coordinator="coord001"))
    activities = ReportActivities(engine, "DK")
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[MonthlyReportWorkflow],
                          activities=[activities.build_monthly_report, activities.send_monthly_report],
                          activity_executor=executor):
            result = await ts_env.client.execute_workflow(
                MonthlyReportWorkflow.run, ReportInput(month="2026-09"),
                id=f"report-{uuid.uuid4()}", task_queue=settings.task_queue)
    assert result["month"] == "2026-09" and result["open_cases"] == 1
    with Session(engine) as session:
        row = session.get(MonthlyReportRow, "2026-09")
        assert row is not None and "Månedsrapport 2026-09" in row.html
        assert row.data["funding"]["total"] > 0
    again = build_report(engine, "2026-09", "DK")
    assert again["cases"] == row.data["cases"]  # the same month computes the same figures
