"""What an idle cached case keeps alive (issue 13, memory per cached case): in rules
generation 2 one asyncio task (its run), no effects loop and no task sleeping on its timer,
and its state frozen to bytes once it is quiet (a command leaves it thawed for the next
one); and its state's models share one fields set per class
(models.compact). Generation 1 still
keeps its three tasks, so the count could fail; its histories replay (tests/test_replay.py)."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from models.commands import CASE_RULES
from models.compact import class_fields_set
from tests.conftest import running_worker
from tests.test_compact import _models
from tests.test_workflow_lifecycle import ADMIN, cmd, start_case
from workflows.case import LEAN_LOOP, PROJECTION_QUIET, FamilyCaseWorkflow

CASES = 4


def _case_tasks() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects()
               if isinstance(o, asyncio.Task) and type(o.get_loop()).__name__ != "_UnixSelectorEventLoop"
               and not o.done())


def _cached_cases() -> list[FamilyCaseWorkflow]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is FamilyCaseWorkflow]


@pytest.mark.parametrize("rules, tasks", [(LEAN_LOOP, 1), (1, 3)])
async def test_an_idle_cached_case_keeps_only_its_run(
    ts_env: WorkflowEnvironment, settings, started, rules: int, tasks: int
) -> None:
    assert CASE_RULES >= LEAN_LOOP
    async with running_worker(ts_env.client, settings):
        base = _case_tasks()
        now = await ts_env.get_current_time()
        for _ in range(CASES):
            handle = await start_case(ts_env, settings, (now - timedelta(hours=1)).isoformat(),
                                      rules=rules)
            started.append(handle)
            # A command: a timer for the quiet spell and the case's clocks, messages to send.
            await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        await asyncio.sleep(1)  # the notices' activities finish; their tasks end
        assert _case_tasks() - base == CASES * tasks

        cases = [c for c in _cached_cases() if c.inp.rules == rules]
        assert len(cases) == CASES
        if rules >= LEAN_LOOP:
            # A command leaves the case thawed (the next command of a burst follows soon)...
            assert all(case._state is not None for case in cases)
            # ... until a later workflow task finds it quiet: the quiet spell's projection.
            await ts_env.sleep(PROJECTION_QUIET + timedelta(seconds=5))
            await asyncio.sleep(1)
        for case in cases:
            assert case.inp.create is None  # the referral lives in the state only
            if rules >= LEAN_LOOP:  # frozen while it waits: a few KB of bytes, no objects
                assert case._state is None and case._frozen is not None
                assert len(case._frozen.data) < 4_000
                assert case._state_version() == case.state.version  # thawed by the touch
            models = _models(case.state)
            assert len(models) > 10
            assert all(m.__pydantic_fields_set__ is class_fields_set(type(m)) for m in models)

