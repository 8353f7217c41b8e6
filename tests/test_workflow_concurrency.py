"""Many commands at once to one case: all accepted, none lost (Updates run one at a time)."""

from __future__ import annotations

import asyncio

from temporalio.testing import WorkflowEnvironment

from tests.conftest import running_worker
from tests.test_workflow_lifecycle import ADMIN, ANNA, cmd, start_case
from workflows.case import FamilyCaseWorkflow


async def test_concurrent_updates_to_one_case(ts_env: WorkflowEnvironment, settings) -> None:
    async with running_worker(ts_env.client, settings):
        handle = await start_case(ts_env, settings, "2026-11-20T09:00:00Z")
        await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        at = (await ts_env.get_current_time()).isoformat()
        states = await asyncio.wait_for(asyncio.gather(*[
            cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": at, "notes": str(n)})
            for n in range(8)]), timeout=30)
        versions = sorted(s.version for s in states)
        assert versions == list(range(versions[0], versions[0] + 8)), "one version per command"
        final = await handle.query(FamilyCaseWorkflow.case)
        assert sorted(c.notes for c in final.contacts) == sorted(str(n) for n in range(8))
        await handle.terminate()  # a leftover case would stop time-skipping for later tests
