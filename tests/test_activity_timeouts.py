"""Activity timeouts that fit their work (issue 13 point 6): what the case workflow asks
Temporal for, read from a real case's history. An attempt lost with a dead worker is retried
when its start-to-close timeout passes, so these figures bound how long a crash delays a case.
Replaying the histories recorded with the old timeouts is tests/test_replay.py's job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from models.db import get_engine
from models.tables import StaffRow
from tests.conftest import running_worker
from tests.test_workflow_lifecycle import ADMIN, ANNA, cmd, start_case
from workflows.case import QUICK_ACTIVITY, RENDER_TIMEOUT


async def _scheduled(handle) -> dict[str, tuple[timedelta, timedelta | None]]:
    """activity type -> (start-to-close, heartbeat timeout) as scheduled in the history."""
    out = {}
    for event in (await handle.fetch_history()).events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            a = event.activity_task_scheduled_event_attributes
            heartbeat = a.heartbeat_timeout.ToTimedelta() if a.HasField("heartbeat_timeout") else None
            out[a.activity_type.name] = (a.start_to_close_timeout.ToTimedelta(), heartbeat)
    return out


async def test_projection_and_quick_activities_time_out_in_seconds(
    ts_env: WorkflowEnvironment, settings, started
) -> None:
    with Session(get_engine(settings.db_url)) as s:  # a manager to tell of the overdue deadline
        s.add(StaffRow(id="mia", name="Mia", discipline="manager", department="children_disability",
                       roles=["manager"], email="mia@example.org", created_at=datetime.now(UTC)))
        s.commit()
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, (now - timedelta(days=30)).isoformat())
        started.append(handle)
        await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        await cmd(handle, "close", ANNA, {"reason": "duplicate"})
        await handle.result()
        scheduled = await _scheduled(handle)
    print(f"\n{ {k: v[0].total_seconds() for k, v in scheduled.items()} }")
    assert scheduled["project_case"][0] == QUICK_ACTIVITY == timedelta(seconds=10)
    # Overdue at once (backdated): the managers are looked up for the deadline notice.
    assert scheduled["resolve_recipients"][0] == QUICK_ACTIVITY
    if "render_document" in scheduled:
        assert scheduled["render_document"][0] == RENDER_TIMEOUT
    # The one longer attempt: a message holds its outbox row (lease) for the channel's socket
    # timeout + 30 s, and a retry before the lease ends would only find the row busy.
    assert scheduled["send_notification"][0] == timedelta(seconds=60)
    assert all(start_to_close <= timedelta(seconds=60) for start_to_close, _ in scheduled.values())
