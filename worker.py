"""The workers: case workflows and their activities on one task queue; documents on their own.

Rendering a PDF takes 100-300 ms of CPU in WeasyPrint, holding the GIL: run in the process that
runs the workflows it slows every command. `make run` therefore starts two worker processes
(`--role cases`, `--role documents`); `--role all` (the default) polls both in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker

import logjson
from activities.committee import CommitteeActivities
from activities.documents import DocumentActivities
from activities.notifications import NotificationActivities
from activities.projection import ProjectionActivities
from activities.report import ReportActivities
from activities.sweep import SweepActivities
from api.watch import WatchConfig
from domain import command_seal
from models.db import get_engine, init_read_model, migrate, private_data_dir
from settings import Settings, get_settings
from workflows.case import FamilyCaseWorkflow
from workflows.client import connect
from workflows.committee import VisitationCommitteeWorkflow
from workflows.family_messages import FamilySignInMessageWorkflow
from workflows.report import MonthlyReportWorkflow, ensure_report_schedule
from workflows.runner import LeanWorkflowRunner
from workflows.sealing import seal_keyring
from workflows.sweeper import StuckSweeperWorkflow, ensure_sweeper_schedule

WORKFLOWS = [FamilyCaseWorkflow, VisitationCommitteeWorkflow, MonthlyReportWorkflow, StuckSweeperWorkflow,
             FamilySignInMessageWorkflow]

# Workflow code runs without the SDK's sandbox (issue 13, speed). `domain`, `models` and
# `workflows` had to pass through it already (memory per case; `holidays` reads the local
# time), so it no longer policed any of our code, only cost: every payload a workflow task
# carries entered and left it twice (the serialization and storage contexts), ~40 % of the
# case worker's CPU for a Query, ~1 ms per task. Determinism is kept by the replay tests
# (tests/test_replay.py), a static check of the workflow modules
# (tests/test_workflow_determinism.py) and review (DESIGN §8). Its instances let go of each
# activation once handled (workflows/runner.py: memory per cached case).
RUNNER = LeanWorkflowRunner()


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    # The keys the workflows verify command seals with (DESIGN §9): workflow code does no I/O,
    # so they wait in a module passed through the sandbox. One keyring per process.
    command_seal.install(seal_keyring(settings))
    engine = get_engine(settings.db_url)
    projection = ProjectionActivities(engine)
    committee = CommitteeActivities(client, engine, settings.committee_id, settings.task_queue)
    notifications = NotificationActivities(engine, settings)
    # The monthly report is mailed to the managers through the same outbox (exactly once).
    reports = ReportActivities(engine, settings.country, notifications)
    sweep = SweepActivities(client, engine)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        workflow_runner=RUNNER,
        activities=[
            projection.project_case,
            committee.committee_item_changed,
            committee.committee_meeting_held,
            notifications.send_notification,
            notifications.resolve_recipients,
            reports.build_monthly_report,
            reports.send_monthly_report,
            sweep.watch_stuck,
        ],
        activity_executor=executor,
        max_cached_workflows=settings.max_cached_workflows,
        # A case whose worker died waits this long for it before any worker takes it over
        # (the SDK's default, 10 s, is the whole command deadline: issue 13); Go's default.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=5),
        # A malformed payload fails the update, never the workflow task (DESIGN §8).
        workflow_failure_exception_types=[ValidationError],
    )


def build_document_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    documents = DocumentActivities(get_engine(settings.db_url))
    return Worker(
        client,
        task_queue=settings.document_task_queue,
        activities=[documents.render_document],
        activity_executor=executor,
        max_concurrent_activities=2,
    )


def build_workers(
    client: Client, settings: Settings, executor: ThreadPoolExecutor, role: str = "all"
) -> list[Worker]:
    init_read_model(settings)  # sealed read-model columns use these settings' keys (DESIGN §9)
    workers = []
    if role in ("all", "cases"):
        workers.append(build_worker(client, settings, executor))
    if role in ("all", "documents"):
        workers.append(build_document_worker(client, settings, executor))
    return workers


async def main() -> None:
    parser = argparse.ArgumentParser(description="OneFamily worker")
    parser.add_argument("--role", choices=["all", "cases", "documents"], default="all")
    role = parser.parse_args().role
    logjson.configure(f"worker-{role}")  # JSON lines, no personal data (logjson.py)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations ran in the launcher
    settings = get_settings()
    if role == "documents" and settings.document_worker_nice:
        os.nice(settings.document_worker_nice)  # behind the commands on shared cores (settings.py)
    private_data_dir(settings.data_dir)  # umask 077; the data dir 0700, its files 0600
    migrate(settings.db_url)
    client = await connect(settings)
    if role != "documents":
        await ensure_report_schedule(client, settings)  # idempotent; not on the test server
        # The stuck index and technical sweep: once per deployment (workflows/sweeper.py).
        await ensure_sweeper_schedule(client, settings, enabled=WatchConfig.from_env().index_every > 0)
    with ThreadPoolExecutor(max_workers=16) as executor:
        workers = build_workers(client, settings, executor, role)
        logging.info("worker (%s) polling %s at %s", role,
                     ", ".join(w.task_queue for w in workers), settings.temporal_target)
        await asyncio.gather(*(w.run() for w in workers))


if __name__ == "__main__":
    asyncio.run(main())
