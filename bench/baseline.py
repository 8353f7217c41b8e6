"""The bare-Temporal yardstick for `bench.lifecycle`: the smallest workflow that is shaped like
a case (one Update that changes state and answers, a run loop that wakes on every change).

Run with its own in-process Worker on its own task queue and the default data converter, so
the ratios in the benchmark measure what OneFamily adds on top of Temporal itself. Only
temporalio is imported here: the workflow sandbox re-imports this module.
"""

from __future__ import annotations

from temporalio import workflow


@workflow.defn
class CounterWorkflow:
    def __init__(self) -> None:
        self.count = 0

    @workflow.run
    async def run(self) -> int:
        while True:  # like the case workflow: sleep until the state changes, then look again
            await self._wait_for_change(self.count)

    async def _wait_for_change(self, seen: int) -> None:
        await workflow.wait_condition(lambda: self.count != seen)

    @workflow.update
    def increment(self) -> int:
        self.count += 1
        return self.count
