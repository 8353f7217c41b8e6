"""The stuck sweeper (issue 12 point 6): the dashboard's background rounds once per deployment.

- StuckSweeperWorkflow runs its spans and outlives a span that failed for good (time-skipping
  server); its history is kept for the replay test.
- `watch_rounds` indexes, reconciles and survives rounds that fail (the database gone).
- the API processes no longer start any background task: the pages router has no lifespan;
- writers of the index in several processes take turns on PostgreSQL (advisory lock).
The deployment-level proof (two API processes, two case workers, one sweep, the sweeper moving
to the other worker when its worker is killed) is in tests/test_topology.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api import watch
from models.db import get_engine, migrate
from tests.conftest import save_history
from worker import RUNNER
from workflows.sweeper import StuckSweeperWorkflow, SweeperInput, workflow_id


async def test_sweeper_runs_its_spans_and_outlives_a_failed_one(ts_env: WorkflowEnvironment) -> None:
    calls: list[float] = []

    @activity.defn(name="watch_stuck")
    async def watch_stuck(span_seconds: float) -> dict:
        calls.append(span_seconds)
        if len(calls) == 1:
            raise ApplicationError("no database for 15 minutes", non_retryable=True)
        return {"rounds": 3}

    queue = f"test-sweeper-{uuid.uuid4().hex[:8]}"
    async with Worker(ts_env.client, task_queue=queue, workflows=[StuckSweeperWorkflow],
                      activities=[watch_stuck], workflow_runner=RUNNER):
        handle = await ts_env.client.start_workflow(
            StuckSweeperWorkflow.run, SweeperInput(span_seconds=60, spans=3), id=workflow_id(queue),
            task_queue=queue)
        result = await handle.result()
    assert result == {"spans": 2, "failed_spans": 1, "rounds": 6}
    assert calls == [60, 60, 60]
    await save_history(handle, "stuck_sweeper")


async def test_rounds_index_reconcile_and_survive_a_missing_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rm' / 'onefamily.db'}"
    migrate(url)
    watch.forget_watermarks()
    config = watch.WatchConfig(index_every=0.05, check_every=0, reconcile_every=0.12)
    seen: list[int] = []
    totals = await watch.watch_rounds(None, get_engine(url), config, duration=0.3,
                                      on_round=lambda t: seen.append(t["rounds"]))
    assert totals["rounds"] >= 3 and totals["reconciles"] >= 2 and totals["failed_rounds"] == 0
    assert seen == list(range(1, totals["rounds"] + 1))
    assert totals["technical_rounds"] == 0  # no client, and switched off

    gone = f"sqlite:///{tmp_path / 'gone' / 'nothing-here' / 'onefamily.db'}"
    engine = get_engine(gone)
    (tmp_path / "gone" / "nothing-here").rmdir()  # the engine made it; now there is no database
    totals = await watch.watch_rounds(None, engine, config, duration=0.15)
    assert totals["rounds"] >= 2 and totals["failed_rounds"] == totals["rounds"]

    off = await watch.watch_rounds(None, get_engine(url), watch.WatchConfig(index_every=0), duration=5)
    assert off["rounds"] == 0


def test_the_api_starts_no_background_work() -> None:
    import pkgutil
    from importlib import import_module

    import api.pages

    # Including the pages router used to start the rounds in every API process (its lifespan):
    # no page router has a lifespan of its own.
    for info in pkgutil.iter_modules(api.pages.__path__):
        module = import_module(f"api.pages.{info.name}")
        router = getattr(module, "router", None)
        if router is not None:
            assert type(router.lifespan_context).__name__ == "_DefaultLifespan", info.name
    assert not hasattr(watch, "watch_loop")


def test_index_writers_of_several_processes_take_turns_on_postgresql(postgres_server) -> None:
    """The sweeper (a case worker) and every API process's catch_up() write the same index
    rows: on PostgreSQL they take an advisory lock, so two never delete-and-insert at once."""
    import threading

    from sqlalchemy import create_engine, text

    url = postgres_server.create_database(migrated=True)
    watch.forget_watermarks()
    other_process = create_engine(url)
    with other_process.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": watch.INDEX_LOCK_KEY})
        writer = threading.Thread(target=watch.catch_up, args=(get_engine(url),), daemon=True)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive(), "catch_up() did not wait for the other writer"
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": watch.INDEX_LOCK_KEY})
    writer.join(10)
    assert not writer.is_alive()
    other_process.dispose()
    get_engine(url).dispose()
