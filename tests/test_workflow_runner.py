"""workflows/runner.py: a cached run keeps no activation, completion or random generator of its
own alive (issue 13, memory; its payload converter is the process's one, tests/test_codec.py).

Counted as live objects while the runs sit in the worker's cache, each after a start and an
Update that both carry 20 KB. The SDK's own unsandboxed runner is counted too: it keeps one of
each per cached run, so this test would fail on the old runner (and its half fails when an SDK
release stops keeping them: then that part of workflows/runner.py can go).
"""

from __future__ import annotations

import gc
import uuid
from collections import Counter

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner

from worker import RUNNER

RUNS = 8
BLOB = "x" * 20_000
KEPT = ("WorkflowActivation", "WorkflowActivationCompletion", "InitializeWorkflow", "Random")


@workflow.defn
class HoldingWorkflow:
    def __init__(self) -> None:
        self.touched = 0

    @workflow.run
    async def run(self, blob: str) -> int:
        await workflow.wait_condition(lambda: self.touched > 1)  # stays cached, waiting
        return len(blob)

    @workflow.update
    def touch(self, blob: str) -> str:
        self.touched = 1
        return blob


def live_protos() -> Counter[str]:
    gc.collect()
    return Counter(n for o in gc.get_objects() if (n := type(o).__name__) in KEPT)


async def kept_per_run(env: WorkflowEnvironment, runner: WorkflowRunner) -> Counter[str]:
    queue = f"test-runner-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=[HoldingWorkflow],
                      workflow_runner=runner, max_cached_workflows=RUNS + 10):
        before = live_protos()
        for i in range(RUNS):
            handle = await env.client.start_workflow(HoldingWorkflow.run, BLOB,
                                                     id=f"{queue}-{i}", task_queue=queue)
            assert await handle.execute_update(HoldingWorkflow.touch, BLOB) == BLOB
        after = live_protos()
        for i in range(RUNS):
            await env.client.get_workflow_handle(f"{queue}-{i}").terminate()
    return after - before


async def test_the_lean_runner_keeps_no_activation_of_a_cached_run(ts_env: WorkflowEnvironment) -> None:
    kept = await kept_per_run(ts_env, RUNNER)
    assert all(kept[name] <= 1 for name in KEPT), kept  # at most the one in flight


@pytest.mark.parametrize("name", [n for n in KEPT if n != "InitializeWorkflow"])
async def test_the_sdks_own_runner_keeps_one_per_cached_run(ts_env: WorkflowEnvironment, name: str) -> None:
    kept = await kept_per_run(ts_env, UnsandboxedWorkflowRunner())
    assert kept[name] >= RUNS, (f"the SDK no longer keeps a {name} per cached run ({kept}): "
                                "workflows/runner.py may not be needed any more")
