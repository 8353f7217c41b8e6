"""VisitationCommitteeWorkflow over several weekly meetings, items arriving between them
(DESIGN §3.6), on the time-skipping server.

At each meeting the agenda is frozen: exactly the items waiting at that instant, in the order of
escalation; decided and withdrawn items are gone. Meetings happen on the configured weekday and
local time (Europe/Copenhagen), and the read model gets the meetings and the items' meeting.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from domain.calendar import next_weekly_meeting
from domain.policy import DK
from models.case import EscalationItem
from models.db import get_engine, migrate
from models.tables import CommitteeItemRow, CommitteeMeetingRow
from models.tables_outbox import DocumentRow
from settings import Settings
from tests.conftest import running_worker
from tests.test_workflow_clocks import (
    ANNA,
    BOARD,
    SLACK,
    case,
    cmd,
    eventually,
    sleep_until,
    start,
    to_escalated,
)
from workflows.committee import CommitteeMeeting, CommitteeState, VisitationCommitteeWorkflow

CPH = ZoneInfo("Europe/Copenhagen")
# A committee that meets on Thursdays at 09:15, to see that the schedule is data, not code.
POLICY = DK.model_copy(update={"committee_weekday": 3, "committee_time": "09:15"})
MINUTE = timedelta(minutes=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:12]
    s = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"), ONEFAMILY_TASK_QUEUE=f"committee-{tag}",
                 ONEFAMILY_COMMITTEE_ID=f"vc-{tag}")
    migrate(s.db_url)
    return s




async def agenda(env: WorkflowEnvironment, settings: Settings) -> CommitteeState:
    handle = env.client.get_workflow_handle(f"committee-{settings.committee_id}")
    return await handle.query(VisitationCommitteeWorkflow.agenda)


async def committee_sees(env: WorkflowEnvironment, settings: Settings, **statuses: str) -> CommitteeState:
    """Wait until the committee workflow knows each item (id=status) as the case has it."""

    async def probe() -> CommitteeState | None:
        try:
            state = await agenda(env, settings)
        except RPCError:
            return None  # not started yet
        ok = all(i in state.items and state.items[i].status == s for i, s in statuses.items())
        return state if ok else None

    return await eventually(probe, f"the committee to see {statuses}")


async def escalate(env: WorkflowEnvironment, settings: Settings,
                   started: list[WorkflowHandle]) -> tuple[WorkflowHandle, EscalationItem]:
    handle = await start(env, settings, started, policy=POLICY)
    state = await to_escalated(env, handle)
    item = state.escalations[-1]
    await committee_sees(env, settings, **{item.id: "waiting"})
    return handle, item


def assert_meeting(meeting: CommitteeMeeting, number: int, at: datetime, item_ids: list[str]) -> None:
    held = datetime.fromisoformat(meeting.at)
    assert meeting.number == number
    assert at <= held <= at + SLACK, (meeting, at)
    local = held.astimezone(CPH)
    assert (local.weekday(), local.hour, local.minute) == (3, 9, 15)  # Thursday 09:15 in Copenhagen
    assert meeting.item_ids == item_ids, (number, meeting.item_ids, item_ids)


def as_utc(value: datetime | None) -> datetime | None:
    """The read model's datetimes: aware ones as they are, naive ones as UTC (SQLite)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def near(value: datetime | None, at: datetime) -> bool:
    return value is not None and at <= as_utc(value) <= at + SLACK


async def test_meetings_freeze_exactly_the_items_waiting_at_each_meeting(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        m1 = next_weekly_meeting(now, POLICY.committee_weekday, POLICY.committee_time, POLICY.timezone)
        if m1 - now < timedelta(days=2):  # room for an item to arrive before the first meeting
            await sleep_until(ts_env, m1 + timedelta(hours=1))
            now = await ts_env.get_current_time()
            m1 = next_weekly_meeting(now, POLICY.committee_weekday, POLICY.committee_time, POLICY.timezone)
        # Wall-clock weeks in Copenhagen: still Thursday 09:15 across a DST change.
        m2, m3, m4 = (m1 + timedelta(weeks=k) for k in (1, 2, 3))

        # Two cases escalate before the first meeting, at different times.
        case_a, a = await escalate(ts_env, settings, started)
        await sleep_until(ts_env, now + (m1 - now) / 2)
        case_b, b = await escalate(ts_env, settings, started)
        assert a.meeting_at == m1 and b.meeting_at == m1  # what the case expects
        await sleep_until(ts_env, m1 - MINUTE)
        assert (await agenda(ts_env, settings)).meetings == []  # not before its time

        await sleep_until(ts_env, m1 + MINUTE)
        state = await agenda(ts_env, settings)
        assert len(state.meetings) == 1
        assert_meeting(state.meetings[0], 1, m1, [a.id, b.id])

        # Between the meetings: A decided, B withdrawn (the family rejects plan v1), C arrives.
        await cmd(case_a, "committee_decision", BOARD, {"decision": "approved", "notes": "ok"},
                  item_id=a.id)
        await cmd(case_b, "family_response", ANNA, {"approved": False, "comment": "Not this plan"})
        await sleep_until(ts_env, m1 + timedelta(days=1))
        case_c, c = await escalate(ts_env, settings, started)
        assert c.meeting_at == m2
        await committee_sees(ts_env, settings, **{a.id: "decided", b.id: "withdrawn", c.id: "waiting"})

        await sleep_until(ts_env, m2 + MINUTE)
        state = await agenda(ts_env, settings)
        assert_meeting(state.meetings[1], 2, m2, [c.id])

        # C is not decided at its first meeting: it is on the next agenda again.
        await sleep_until(ts_env, m3 + MINUTE)
        state = await agenda(ts_env, settings)
        assert_meeting(state.meetings[2], 3, m3, [c.id])
        engine = get_engine(settings.db_url)
        with Session(engine) as session:
            assert near(session.get(CommitteeItemRow, c.id).meeting_at, m3)

        # Decided after the third meeting: the fourth has nothing to decide.
        decided = await cmd(case_c, "committee_decision", BOARD,
                            {"decision": "rejected", "notes": "Needs another plan"}, item_id=c.id)
        assert decided.escalations[-1].status == "decided"
        await committee_sees(ts_env, settings, **{c.id: "decided"})
        await sleep_until(ts_env, m4 + MINUTE)
        state = await agenda(ts_env, settings)
        assert len(state.meetings) == 4
        assert_meeting(state.meetings[3], 4, m4, [])
        assert state.meetings_held == 4

        # Everything is projected by now (each case projects before it sleeps again).
        for handle in (case_a, case_b, case_c):
            assert (await case(handle)).version > 0
        with Session(engine) as session:
            rows = session.exec(select(CommitteeMeetingRow)
                                .where(CommitteeMeetingRow.committee_id == settings.committee_id)
                                .order_by(CommitteeMeetingRow.number)).all()
            assert [(r.number, r.item_ids) for r in rows] == [
                (1, [a.id, b.id]), (2, [c.id]), (3, [c.id]), (4, [])]
            for row, at in zip(rows, (m1, m2, m3, m4), strict=True):
                assert near(row.at, at), (row.number, row.at, at)
            items = {i.id: i for i in session.exec(select(CommitteeItemRow)).all()}
            assert {i: items[i].status for i in (a.id, b.id, c.id)} == {
                a.id: "decided", b.id: "withdrawn", c.id: "decided"}
            # The meeting that had each item on its agenda (C: the last one that did, also after
            # C's own case projected its decision).
            assert near(items[a.id].meeting_at, m1)
            assert near(items[b.id].meeting_at, m1)
            assert near(items[c.id].meeting_at, m3), (items[c.id].meeting_at, m3)
            # Each meeting with items handed its frozen agenda to the document service.
            agendas = session.exec(select(DocumentRow).where(
                DocumentRow.case_id == f"committee-{settings.committee_id}")).all()
            assert sorted(d.version for d in agendas) == [1, 2, 3]
            first = next(d for d in agendas if d.version == 1)
            assert a.id[:8] in first.html or "Family Jensen" in first.html
            assert first.pdf.startswith(b"%PDF")


async def test_the_committee_continues_as_new_keeping_waiting_items_and_meeting_numbers(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await ts_env.client.start_workflow(
            VisitationCommitteeWorkflow.run,
            CommitteeState(committee_id=settings.committee_id, policy=POLICY, max_meetings_per_run=2),
            id=f"committee-{settings.committee_id}", task_queue=settings.task_queue)
        first_run = (await handle.describe()).run_id
        case_a, a = await escalate(ts_env, settings, started)  # signal-with-start: joins the running one
        assert (await handle.describe()).run_id == first_run
        m1 = next_weekly_meeting(a.escalated_at, 3, "09:15", POLICY.timezone)
        await sleep_until(ts_env, m1 + timedelta(weeks=2) + MINUTE)
        state = await agenda(ts_env, settings)
        assert (await handle.describe()).run_id != first_run
        assert [(m.number, m.item_ids) for m in state.meetings] == [(1, [a.id]), (2, [a.id]), (3, [a.id])]
        assert state.meetings_held == 3 and state.items[a.id].status == "waiting"

        await cmd(case_a, "committee_decision", BOARD, {"decision": "approved"}, item_id=a.id)
        await committee_sees(ts_env, settings, **{a.id: "decided"})
        await sleep_until(ts_env, m1 + timedelta(weeks=4) + MINUTE)
        state = await agenda(ts_env, settings)
        assert [(m.number, m.item_ids) for m in state.meetings[-2:]] == [(4, []), (5, [])]
        assert a.id not in state.items  # settled items are forgotten at continue-as-new
        assert [m.number for m in state.meetings] == [1, 2, 3, 4, 5]
        for m in state.meetings:
            assert_meeting(m, m.number, m1 + timedelta(weeks=m.number - 1), m.item_ids)


async def test_an_item_escalated_during_a_meeting_week_waits_for_the_next_meeting(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    """An item that arrives right after a meeting is not on it; it is on the next one, and its
    committee-decision clock (21 days) runs across both."""
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        m1 = next_weekly_meeting(now, POLICY.committee_weekday, POLICY.committee_time, POLICY.timezone)
        # A first item starts the committee before m1.
        case_a, a = await escalate(ts_env, settings, started)
        await sleep_until(ts_env, m1 + MINUTE)
        state = await agenda(ts_env, settings)
        assert_meeting(state.meetings[0], 1, m1, [a.id])

        # One minute after the meeting: B misses it.
        case_b, b = await escalate(ts_env, settings, started)
        m2 = m1 + timedelta(weeks=1)
        assert b.meeting_at == m2
        await sleep_until(ts_env, m2 + MINUTE)
        state = await agenda(ts_env, settings)
        assert_meeting(state.meetings[1], 2, m2, [a.id, b.id])
        assert len(state.meetings) == 2

        # Undecided for 21 days: the manager is alerted through B's clock, once.
        await sleep_until(ts_env, b.escalated_at + timedelta(days=24))
        deadlines = (await case(case_b)).deadlines
        decision = next(d for d in deadlines if d.kind.value == "committee_decision")
        assert [(r["kind"], r["to_role"]) for r in decision.reminders_sent] == [
            ("reminder", "owner"), ("overdue", "committee"), ("escalation", "manager")]
        state = await agenda(ts_env, settings)
        assert [m.item_ids for m in state.meetings[2:]] == [[a.id, b.id]] * (len(state.meetings) - 2)
        assert len(state.meetings) == 4  # weekly, whatever happens: m1 .. m1 + 21 days
