"""The stuck sweeper's activity (workflows/sweeper.py): the dashboard's background rounds
(api/watch.py `watch_rounds`: the stuck index and the technical sweep) for one span, in the
case worker that picked it up, heartbeating so that another case worker takes over when this
one dies. The knobs are read from this worker's environment at each attempt
(ONEFAMILY_STUCK_INDEX_SECONDS, _CHECK_SECONDS, _CHECK_BATCH, _CHECK_CONCURRENCY)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client

from api import watch

log = logging.getLogger("onefamily.sweep")
HEARTBEAT_EVERY = 2.0  # seconds; the workflow's heartbeat timeout is 10 s


class SweepActivities:
    def __init__(self, client: Client, engine: Engine) -> None:
        self.client = client
        self.engine = engine

    @activity.defn(name="watch_stuck")
    async def watch_stuck(self, span_seconds: float) -> dict:
        config = watch.WatchConfig.from_env()
        info = activity.info()
        log.info("stuck sweeper running here", extra={"attempt": info.attempt, "worker_pid": os.getpid(),
                                                      "index_every": config.index_every,
                                                      "check_every": config.check_every})
        latest: dict = {}

        async def beat() -> None:
            while True:
                activity.heartbeat(latest.get("rounds", 0))
                await asyncio.sleep(HEARTBEAT_EVERY)

        beating = asyncio.create_task(beat())
        try:
            if config.index_every <= 0:  # switched off: nothing to do this span
                return {"rounds": 0, "disabled": True}
            return await watch.watch_rounds(self.client, self.engine, config, duration=span_seconds,
                                            on_round=latest.update)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
