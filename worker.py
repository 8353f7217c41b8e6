"""The worker: case workflows and their activities on one task queue."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.committee import CommitteeActivities
from activities.documents import DocumentActivities
from activities.notifications import NotificationActivities
from activities.projection import ProjectionActivities
from activities.report import ReportActivities
from models.db import get_engine, migrate
from settings import Settings, get_settings
from workflows.case import FamilyCaseWorkflow
from workflows.client import connect
from workflows.committee import VisitationCommitteeWorkflow
from workflows.report import MonthlyReportWorkflow, ensure_report_schedule

WORKFLOWS = [FamilyCaseWorkflow, VisitationCommitteeWorkflow, MonthlyReportWorkflow]

# Pure, deterministic libraries loaded once, outside the sandbox: `holidays` loads country
# modules lazily and reads the local time for its defaults, which the sandbox forbids.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("holidays", "domain", "models")
)


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    engine = get_engine(settings.db_url)
    projection = ProjectionActivities(engine)
    committee = CommitteeActivities(client, engine, settings.committee_id, settings.task_queue)
    reports = ReportActivities(engine, settings.country)
    notifications = NotificationActivities(engine, settings)
    documents = DocumentActivities(engine)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        workflow_runner=SANDBOX,
        activities=[
            projection.project_case,
            committee.committee_item_changed,
            committee.committee_meeting_held,
            notifications.send_notification,
            notifications.resolve_recipients,
            documents.render_document,
            reports.build_monthly_report,
            reports.send_monthly_report,
        ],
        activity_executor=executor,
        max_cached_workflows=settings.max_cached_workflows,
        # A malformed payload fails the update, never the workflow task (DESIGN §8).
        workflow_failure_exception_types=[ValidationError],
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations ran in the launcher
    settings = get_settings()
    migrate(settings.db_url)
    client = await connect(settings)
    await ensure_report_schedule(client, settings)  # idempotent; not on the time-skipping server
    with ThreadPoolExecutor(max_workers=16) as executor:
        worker = build_worker(client, settings, executor)
        logging.info("worker polling task queue %s at %s", settings.task_queue, settings.temporal_target)
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
