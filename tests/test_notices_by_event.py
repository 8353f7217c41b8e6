"""A notice is keyed by its event, its recipients fixed when the event happens (issue 13
point 5): assignment and reassignments after an overdue deadline send nothing again, and a
notice whose deadline was met before it left is dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from domain import clocks, effects
from domain.lifecycle import execute, new_case
from models.case import DeadlineKind, DeadlineStatus
from models.commands import CommandInput
from models.db import get_engine
from models.tables import StaffRow
from models.tables_outbox import NotificationRow
from tests.conftest import running_worker, save_history
from tests.factories import admin, case_create, ctx
from tests.test_workflow_lifecycle import ADMIN, ANNA, cmd, start_case
from workflows.case import FamilyCaseWorkflow

LATE = datetime(2026, 12, 10, 10, 0, tzinfo=UTC)  # the first-contact deadline has passed


def _overdue_case():
    state = new_case("3f2c9a1e-1111-4222-8333-444455556666", case_create(), ctx(admin()), [])
    clocks.fire(state, LATE)
    effects.stamp_recipients(state, LATE)
    return state


def _assign(state, who: str, minutes: int) -> None:
    execute(state, "assign_coordinator", CommandInput(actor=admin(), body={"coordinator_id": who}),
            ctx(admin(), LATE + timedelta(minutes=minutes)))


def _notices(state, done: set[str], by_event: bool = True) -> list[str]:
    return [e.key for e in effects.pending(state, done, by_event)
            if e.notification is not None and e.key.split(":")[1] == "deadline"]


def test_reassignments_after_an_overdue_deadline_tell_nobody_again() -> None:
    state = _overdue_case()
    first = _notices(state, set())
    assert first and all(k.endswith(":role:manager:1") for k in first), first
    done = set(first)
    for n, who in enumerate(["anna", "bo", "carl"]):
        _assign(state, who, n + 1)
        assert _notices(state, done) == [], who
    # The old rule (recipient resolved at send time, part of the key) sends it again:
    assert _notices(state, done, by_event=False), "the old behaviour this patch replaces"


def test_the_recipient_is_the_one_of_the_moment_the_event_fired() -> None:
    state = _overdue_case()
    _assign(state, "anna", 1)  # before the effects loop got to the notice
    (key,) = {k for k in _notices(state, set()) if "overdue#0" in k}
    assert key.endswith(":role:manager:1"), "the case had no coordinator when it went overdue"


def test_a_notice_whose_deadline_was_met_before_it_left_is_dropped() -> None:
    state = _overdue_case()
    assert _notices(state, set())
    execute(state, "assign_coordinator", CommandInput(actor=admin(), body={"coordinator_id": "anna"}),
            ctx(admin(), LATE))
    execute(state, "record_contact", CommandInput(
        actor=admin(), body={"kind": "phone", "at": LATE.isoformat()}), ctx(admin(), LATE))
    first_contact = next(d for d in state.deadlines if d.kind is DeadlineKind.first_contact)
    assert first_contact.status is DeadlineStatus.met
    assert not [k for k in _notices(state, set()) if "first_contact" in k]


def _rows(settings, case_id: str) -> list[NotificationRow]:
    with Session(get_engine(settings.db_url)) as s:
        return list(s.exec(select(NotificationRow).where(NotificationRow.case_id == case_id)))


async def _settled(env: WorkflowEnvironment, settings, case_id: str) -> list[NotificationRow]:
    """The outbox once the case's effects loop has handed everything over."""
    count = -1
    for _ in range(60):
        await env.sleep(timedelta(seconds=2))
        await asyncio.sleep(0.2)
        rows = _rows(settings, case_id)
        if rows and len(rows) == count:
            return rows
        count = len(rows)
    return _rows(settings, case_id)


async def test_an_overdue_deadline_then_three_assignments_sends_nothing_again(
    ts_env: WorkflowEnvironment, settings
) -> None:
    with Session(get_engine(settings.db_url)) as s:
        for sid, roles in [("anna", ["coordinator"]), ("bo", ["coordinator"]),
                           ("carl", ["coordinator"]), ("mia", ["manager"]), ("max", ["manager"])]:
            s.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                           department="children_disability", roles=roles,
                           email=f"{sid}@example.org", created_at=datetime.now(UTC)))
        s.commit()
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, (now - timedelta(days=20)).isoformat())
        case_id = (await handle.query(FamilyCaseWorkflow.case)).id
        before = await _settled(ts_env, settings, case_id)
        told = sorted((r.purpose, r.recipient_id) for r in before)
        assert ("deadline:first_contact#1:overdue#0", "max") in told, told
        assert ("deadline:first_contact#1:overdue#0", "mia") in told, told
        for who in ("anna", "bo", "carl"):
            await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": who})
        after = await _settled(ts_env, settings, case_id)
        deadline_rows = [r for r in after if r.purpose.startswith("deadline:")]
        assert len(deadline_rows) == len(before), sorted((r.purpose, r.recipient_id) for r in after)
        per_person = [(r.purpose, r.recipient_id) for r in deadline_rows]
        assert len(per_person) == len(set(per_person)), "nobody told twice of one event"
        await cmd(handle, "close", ANNA.model_copy(update={"id": "carl"}), {"reason": "duplicate"})
        await handle.result()
        await save_history(handle, "case_notice_by_event")


def test_an_event_fired_before_the_stamping_is_told_once_too() -> None:
    """A run continued from one before the patch: its fired events carry no recipient."""
    state = new_case("3f2c9a1e-1111-4222-8333-444455556666", case_create(), ctx(admin()), [])
    clocks.fire(state, LATE)  # not stamped
    done = set(_notices(state, set(), by_event=False))  # what the old run sent
    assert done
    _assign(state, "anna", 1)
    assert _notices(state, done) == []
    assert _notices(state, done, by_event=False), "the old rule would tell anna again"
