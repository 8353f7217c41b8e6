"""A worker process for bench/baseline.py's CounterWorkflow only (bench.capacity measures its
RSS per cached workflow): the default sandbox and data converter, an explicit cache size."""

from __future__ import annotations

import argparse
import asyncio

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline import CounterWorkflow


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--cache", type=int, default=10_000)
    args = parser.parse_args()
    client = await Client.connect(args.target, namespace=args.namespace)
    worker = Worker(client, task_queue=args.task_queue, workflows=[CounterWorkflow],
                    max_cached_workflows=args.cache)
    print("polling", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
