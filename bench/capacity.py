"""`python -m bench.capacity [--cases N] [--concurrency C]`: case-worker memory per cached case
(DESIGN §7 "one worker holds 10,000 open cases"; issue 13: <= 1.5x a bare workflow).

Starts the embedded stack (tests/e2e_stack.py) with the case worker's cache a little over N,
starts N cases straight at Temporal as the API does (sealed, encrypted, `CaseWorkflowInput`),
waits until the worker has run them all and gone quiet, and reads the worker process's RSS
(/proc). Then the same for N bare `CounterWorkflow`s (bench/baseline.py) in a worker process
of their own with the same cache size (bench/bare_worker.py). Per cached case = RSS growth / N.
Both workers run beside the same dev server; only the ratio is worth comparing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.policy import latest_policy
from bench.baseline import CounterWorkflow
from models import search
from models.case import Actor, CaseCreate, Stage
from models.commands import CASE_RULES, CaseWorkflowInput
from models.db import get_engine
from tests.e2e_stack import Stack
from tests.factories import case_create_body
from workflows.case import FamilyCaseWorkflow
from workflows.client import connect

WARM_UP = 50  # workflows started (and cached) before the "before" reading


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def quiet(pid: int, *, below: float = 0.03, seconds: int = 3, timeout: float = 900) -> float:
    """Wait until the process used < `below` of a core for `seconds` seconds in a row."""
    t0 = time.monotonic()
    calm, last = 0, cpu_s(pid)
    while calm < seconds and time.monotonic() - t0 < timeout:
        await asyncio.sleep(1)
        now = cpu_s(pid)
        calm = calm + 1 if now - last < below else 0
        last = now
    return time.monotonic() - t0


async def run_all(concurrency: int, n: int, job) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await job(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0


async def fill_cases(stack: Stack, n: int, concurrency: int) -> dict:
    settings = stack.settings
    client = await connect(settings)
    with Session(get_engine(settings.db_url)) as session:
        policy = latest_policy(session, settings.country)
    # Received an hour ago, as in bench.lifecycle (the factory's date is days old: every
    # case would start overdue, with notices to send).
    body = CaseCreate.model_validate(case_create_body(
        received_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat()))
    actor = Actor(id="admin", roles=["admin"])
    pid = stack.worker_proc.pid

    async def start(i: int) -> None:
        case_id = str(uuid.uuid4())
        inp = CaseWorkflowInput(case_id=case_id, policy=policy, actor=actor, create=body,
                                possible_duplicates=[], created_at=datetime.now(UTC),
                                rules=CASE_RULES)
        await client.start_workflow(
            FamilyCaseWorkflow.run, inp, id=f"case-{case_id}", task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(search.STAGE, Stage.referred.value)]),
        )

    # Warm-up, not counted: what the first cases load once (lazy imports, SQL and template
    # caches, schemas) is no cost per cached case.
    await run_all(concurrency, WARM_UP, start)
    await quiet(pid)
    before = rss_kb(pid)
    wall = await run_all(concurrency, n, start)
    settle = await quiet(pid)
    after = rss_kb(pid)
    return {"before_kb": before, "after_kb": after, "start_wall": wall, "settle": settle}


async def fill_bare(stack: Stack, n: int, concurrency: int) -> dict:
    task_queue = f"bench-bare-cache-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_worker", "--target", stack.temporal.target,
         "--namespace", stack.temporal.namespace, "--task-queue", task_queue,
         "--cache", str(n + WARM_UP + 50)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "polling"
        client = await Client.connect(stack.temporal.target, namespace=stack.temporal.namespace)

        async def start(i: int, prefix: str = "") -> None:
            await client.start_workflow(CounterWorkflow.run, id=f"bare-cache-{task_queue}-{prefix}{i}",
                                        task_queue=task_queue)

        await run_all(concurrency, WARM_UP, lambda i: start(i, "warm-"))
        await quiet(proc.pid)
        before = rss_kb(proc.pid)
        wall = await run_all(concurrency, n, start)
        settle = await quiet(proc.pid)
        after = rss_kb(proc.pid)
        return {"before_kb": before, "after_kb": after, "start_wall": wall, "settle": settle}
    finally:
        proc.terminate()
        proc.wait(10)


async def main_async(n: int, concurrency: int, bare_too: bool = True) -> tuple[dict, dict | None]:
    os.environ["ONEFAMILY_MAX_CACHED_WORKFLOWS"] = str(n + WARM_UP + 50)  # the worker inherits it
    with tempfile.TemporaryDirectory(prefix="onefamily-capacity-") as tmp:
        stack = Stack(Path(tmp) / "data")
        try:
            await stack.start()
            print(f"stack up; starting {n} cases...", flush=True)
            cases = await fill_cases(stack, n, concurrency)
            bare = None
            if bare_too:
                print(f"cases done; starting {n} bare workflows...", flush=True)
                bare = await fill_bare(stack, n, concurrency)
        finally:
            stack.stop()
    return cases, bare


def report(n: int, cases: dict, bare: dict | None) -> None:
    def per(d: dict) -> float:
        return (d["after_kb"] - d["before_kb"]) / n

    print()
    print(f"Worker memory per cached workflow, {n} cached (RSS growth / {n})")
    print(f"  {'':28} {'RSS before':>11} {'RSS after':>11} {'KiB/case':>9} {'starts/s':>9} {'settle s':>9}")
    for name, d in (("case worker (FamilyCase)", cases), ("bare worker (Counter)", bare)):
        if d is None:
            continue
        print(f"  {name:28} {d['before_kb'] / 1024:9.0f} M {d['after_kb'] / 1024:9.0f} M {per(d):9.1f} "
              f"{n / d['start_wall']:9.1f} {d['settle']:9.0f}")
    if bare is None:
        return
    ratio = per(cases) / per(bare) if per(bare) > 0 else float("nan")
    print(f"  ratio case / bare: {ratio:.2f}  (target <= 1.5)  {'PASS' if ratio <= 1.5 else 'MISS'}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="N: cached cases (and bare workflows)")
    parser.add_argument("--concurrency", type=int, default=20, help="starts in flight")
    parser.add_argument("--no-bare", action="store_true", help="only the case worker")
    args = parser.parse_args()
    cases, bare = asyncio.run(main_async(args.cases, args.concurrency, not args.no_bare))
    report(args.cases, cases, bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
