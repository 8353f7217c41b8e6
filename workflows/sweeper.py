"""StuckSweeperWorkflow: the dashboard's background work once per deployment (issue 12 point 6).

The stuck index and the technical sweep (api/watch.py `watch_rounds`) used to run inside
every API process: two or ten replicas swept two or ten times. Now a Temporal Schedule
(`ensure_sweeper_schedule`, called by every case worker at its start, idempotent) starts
this workflow every minute with overlap policy SKIP, so at most one runs per deployment
(per task queue), and a new one starts within a minute if a run ends, fails or is terminated.

The workflow runs the activity `watch_stuck` (activities/sweep.py) a few times in a row;
each activity runs the rounds for SPAN and heartbeats every few seconds. A case worker
killed mid-span stops heartbeating: after HEARTBEAT the server retries the activity, and
another case worker takes over. Few events per hour (no timer or activity per round), so
the Temporal UI is not flooded with sweeper runs: one per SPANS x SPAN (an hour).

Deterministic and without I/O; the activity is called by name only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

SCHEDULE_PREFIX = "onefamily-stuck-sweeper"
WORKFLOW_PREFIX = "stuck-sweeper"
SPAN = timedelta(minutes=10)  # one activity execution
SPANS = 6  # activity executions per workflow run
HEARTBEAT = timedelta(seconds=10)  # a dead worker's span moves on after this
EVERY = timedelta(minutes=1)  # the schedule's interval (skipped while a run is on)
SWEEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))


@dataclass
class SweeperInput:
    span_seconds: float = SPAN.total_seconds()
    spans: int = SPANS


@workflow.defn
class StuckSweeperWorkflow:
    @workflow.run
    async def run(self, inp: SweeperInput) -> dict:
        done = failed = rounds = 0
        span = timedelta(seconds=inp.span_seconds)
        for _ in range(inp.spans):
            try:
                totals = await workflow.execute_activity(
                    "watch_stuck", inp.span_seconds, result_type=dict,
                    start_to_close_timeout=span + timedelta(minutes=2),
                    heartbeat_timeout=HEARTBEAT,
                    schedule_to_close_timeout=span + timedelta(minutes=15),
                    retry_policy=SWEEP_RETRY,
                )
                done += 1
                rounds += int(totals.get("rounds", 0))
            except ActivityError:
                # e.g. no case worker for 15 minutes; the next span (or run) tries again.
                failed += 1
                await workflow.sleep(timedelta(seconds=30))
        return {"spans": done, "failed_spans": failed, "rounds": rounds}


def schedule_id(task_queue: str) -> str:
    return f"{SCHEDULE_PREFIX}:{task_queue}"


def workflow_id(task_queue: str) -> str:
    return f"{WORKFLOW_PREFIX}-{task_queue}"


async def ensure_sweeper_schedule(client, settings, enabled: bool = True) -> str:
    """Create the sweeper's Schedule or bring it up to date (same id), then trigger it so a
    sweeper runs now (a no-op while one runs: overlap SKIP). `enabled=False` (the background
    rounds switched off by ONEFAMILY_STUCK_INDEX_SECONDS=0) pauses it. Returns its id."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleState,
        ScheduleUpdate,
    )

    sid = schedule_id(settings.task_queue)
    note = "stuck index and technical sweep, once per deployment" if enabled else \
        "paused: ONEFAMILY_STUCK_INDEX_SECONDS=0"
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            StuckSweeperWorkflow.run, SweeperInput(), id=workflow_id(settings.task_queue),
            task_queue=settings.task_queue,
            # A run that hangs (e.g. its code broke on a deploy) ends; the next tick starts anew.
            run_timeout=SPAN * SPANS + timedelta(minutes=30),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=1)),
        state=ScheduleState(paused=not enabled, note=note),
    )
    try:
        await client.create_schedule(sid, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(sid).update(lambda _: ScheduleUpdate(schedule=schedule))
    if enabled:
        await client.get_schedule_handle(sid).trigger(overlap=ScheduleOverlapPolicy.SKIP)
    return sid
