"""Against the real Temporal dev server:

- technical stuck reasons from Temporal itself: an activity that keeps failing, a workflow
  task that keeps failing, and a workflow that is no longer running while the read model says
  the case is open. The sweep (api.watch.technical_sweep) asks describe() and stores what it
  finds; the dashboard lists it with the business reasons;
- the monthly report's Schedule: created idempotently, and a triggered run stores the report.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.report import ReportActivities
from api import dashboard, watch
from bench.dashboard import build_case
from launcher import EmbeddedTemporal, free_port
from models.case import Stage
from models.db import get_engine, migrate
from models.projection import write_case
from models.tables_reporting import MonthlyReportRow
from settings import Settings
from workflows.report import MonthlyReportWorkflow, ensure_report_schedule, month_before


@activity.defn(name="send_sms")
async def send_sms() -> None:
    raise RuntimeError("SMS gateway down (HTTP 503)")


@workflow.defn(name="CaseWithFailingActivity")
class CaseWithFailingActivity:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            send_sms, start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0))


@workflow.defn(name="CaseWithBrokenCode")
class CaseWithBrokenCode:
    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("simulated non-determinism after a bad deploy")  # fails the task


@workflow.defn(name="FamilyCaseWorkflow")
class CaseThatEnded:
    @workflow.run
    async def run(self) -> None:
        return None


@workflow.defn(name="HealthyCase")
class HealthyCase:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@pytest.fixture(scope="module")
async def temporal(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[EmbeddedTemporal, Client]]:
    data = Path(tmp_path_factory.mktemp("technical")) / "temporal"
    server = EmbeddedTemporal(data, free_port(), free_port())
    server.start()
    try:
        client = await server.wait_ready()
        yield server, client
    finally:
        server.stop()


async def test_technical_reasons_come_from_temporal(temporal, tmp_path: Path) -> None:
    _, client = temporal
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"))
    migrate(settings.db_url)
    engine = get_engine(settings.db_url)
    watch.forget_watermarks()
    queue = f"technical-{uuid.uuid4().hex[:8]}"
    cases = {name: str(uuid.uuid4()) for name in ("failing", "broken", "ended", "healthy")}
    # The read model says all four are open (they were projected while running).
    with Session(engine) as session:
        for case_id in cases.values():
            write_case(session, build_case(Stage.assessment, datetime.now(UTC) - timedelta(days=2),
                                           coordinator="anna", case_id=case_id), datetime.now(UTC))
        session.commit()
    watch.catch_up(engine)

    async with Worker(client, task_queue=queue, activities=[send_sms],
                      workflows=[CaseWithFailingActivity, CaseWithBrokenCode, CaseThatEnded, HealthyCase],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        started = datetime.now(UTC)
        for name, wf in (("failing", CaseWithFailingActivity), ("broken", CaseWithBrokenCode),
                         ("ended", CaseThatEnded), ("healthy", HealthyCase)):
            await client.start_workflow(wf.run, id=f"case-{cases[name]}", task_queue=queue)
        await client.get_workflow_handle(f"case-{cases['ended']}").result()

        deadline = time.monotonic() + 45
        while True:
            results = await watch.technical_sweep(client, engine, batch=50, closed_since=started)
            found = {name: {r.kind for r in results.get(case_id, [])} for name, case_id in cases.items()}
            if (found["failing"] == {"activity_failing"} and found["broken"] == {"workflow_task_failing"}
                    and found["ended"] == {"workflow_not_running"}):
                break
            assert time.monotonic() < deadline, f"technical reasons not found: {found}"
            await asyncio.sleep(0.5)
        assert found["healthy"] == set()
        failing = results[cases["failing"]][0]
        assert "send_sms" in failing.detail and "SMS gateway down" in failing.detail
        assert "simulated non-determinism" in results[cases["broken"]][0].detail

        # Visibility tells at once which case workflows closed (checked out of turn).
        deadline = time.monotonic() + 20
        while cases["ended"] not in await watch._recently_closed(client, started - timedelta(minutes=1)):
            assert time.monotonic() < deadline, "visibility never listed the ended workflow"
            await asyncio.sleep(0.5)

        # The dashboard lists technical and business reasons in one list.
        with Session(engine) as session:
            listed = dashboard.stuck_list(session, datetime.now(UTC), reason="activity_failing")
            assert [i["case_id"] for i in listed["items"]] == [cases["failing"]]
            reasons = listed["items"][0]["reasons"]
            assert any(r["technical"] and r["owner"] == "admin" for r in reasons)
            counts = dashboard.stuck_counts(session)
            assert counts["activity_failing"] == counts["workflow_task_failing"] == 1
            assert counts["workflow_not_running"] == 1

        # Fixed: the healthy state is seen on the next sweep and the reason goes away.
        await client.get_workflow_handle(f"case-{cases['failing']}").terminate("fixed by hand")
        with Session(engine) as session:
            for case_id in (cases["failing"],):
                from models.tables import CaseRow

                row = session.get(CaseRow, case_id)
                row.stage, row.version = "closed", row.version + 1
                doc = dict(row.document)
                doc["stage"], doc["version"] = "closed", row.version
                row.document = doc
                row.updated_at = datetime.now(UTC)
            session.commit()
        watch.catch_up(engine)
        await watch.technical_sweep(client, engine, batch=50)
        with Session(engine) as session:
            assert dashboard.stuck_counts(session).get("activity_failing", 0) == 0

        for case_id in (cases["broken"], cases["healthy"]):
            await client.get_workflow_handle(f"case-{case_id}").terminate("test over")


async def test_the_monthly_report_schedule(temporal, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, client = temporal
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"),
                        ONEFAMILY_TASK_QUEUE=f"reports-{uuid.uuid4().hex[:8]}")
    migrate(settings.db_url)
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        write_case(session, build_case(Stage.active, datetime.now(UTC) - timedelta(days=90),
                                       coordinator="anna"), datetime.now(UTC))
        session.commit()

    sid = await ensure_report_schedule(client, settings)
    assert await ensure_report_schedule(client, settings) == sid  # idempotent at every start
    handle = client.get_schedule_handle(sid)
    desc = await handle.describe()
    calendar = desc.schedule.spec.calendars[0]
    assert [r.start for r in calendar.day_of_month] == [1] and [r.start for r in calendar.hour] == [6]
    assert desc.schedule.spec.time_zone_name == "Europe/Copenhagen"
    assert desc.info.next_action_times, "the schedule is armed"

    activities = ReportActivities(engine, settings.country)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(client, task_queue=settings.task_queue, workflows=[MonthlyReportWorkflow],
                          activities=[activities.build_monthly_report, activities.send_monthly_report],
                          activity_executor=executor):
            await handle.trigger()  # as on the 1st of the month
            now = datetime.now(UTC)
            month = month_before(now.year, now.month)
            deadline = time.monotonic() + 30
            while True:
                with Session(engine) as session:
                    row = session.get(MonthlyReportRow, month)
                if row is not None:
                    break
                assert time.monotonic() < deadline, "the scheduled run stored no report"
                await asyncio.sleep(0.3)
    assert row.generated_by == "schedule" and row.data["cases"]["open_at_end"] == 1
    await handle.delete()
