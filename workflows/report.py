"""MonthlyReportWorkflow: the coordination group's monthly report, on a Temporal Schedule.

The schedule (`ensure_report_schedule`, called at worker start, idempotent) starts the
workflow at 06:00 on the 1st of every month in the municipality's time zone; the workflow
reports on the month before, asks the activities to compute, render and store it
(activities/report.py) and then to tell the managers. Deterministic: the month comes from
`workflow.now()`, nothing else is read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

SCHEDULE_PREFIX = "onefamily-monthly-report"
REPORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))


@dataclass
class ReportInput:
    month: str | None = None  # "yyyy-mm"; None: the month before the one the run starts in
    notify: bool = True


def month_before(year: int, month: int) -> str:
    return f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"


@workflow.defn
class MonthlyReportWorkflow:
    @workflow.run
    async def run(self, inp: ReportInput) -> dict:
        now = workflow.now()  # UTC; at 06:00 local on the 1st it is the 1st in UTC too
        month = inp.month or month_before(now.year, now.month)
        result = await workflow.execute_activity(
            "build_monthly_report", month, result_type=dict,
            start_to_close_timeout=timedelta(minutes=10),
            schedule_to_close_timeout=timedelta(hours=6),
            retry_policy=REPORT_RETRY,
        )
        if inp.notify:
            result["notified"] = await workflow.execute_activity(
                "send_monthly_report", month, result_type=int,
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(hours=6),
                retry_policy=REPORT_RETRY,
            )
        return result


def schedule_id(task_queue: str) -> str:
    return f"{SCHEDULE_PREFIX}:{task_queue}"


async def ensure_report_schedule(client, settings) -> str:
    """Create the monthly report's Temporal Schedule, or bring an existing one up to date
    (same id): safe to call at every worker start. Returns the schedule id."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleCalendarSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleRange,
        ScheduleSpec,
        ScheduleUpdate,
    )

    from domain.policy import current_policy

    sid = schedule_id(settings.task_queue)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            MonthlyReportWorkflow.run, ReportInput(), id=f"monthly-report-{settings.task_queue}",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(day_of_month=[ScheduleRange(1)], hour=[ScheduleRange(6)],
                                            comment="06:00 on the 1st: last month's report")],
            time_zone_name=current_policy(settings.country).timezone,
        ),
        # A server down on the 1st still produces the report when it is back within a week.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=7)),
    )
    try:
        await client.create_schedule(sid, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(sid).update(lambda _: ScheduleUpdate(schedule=schedule))
    return sid
