"""The start backlog: cases created whose workflow has not run yet (issue 13 point 4).

`POST /cases` starts the case's workflow and answers at once; the workflow only *runs* when a
case worker completes its first workflow task. Creation can outrun the workers (42/s created
against 11/s started in the issue's run), and nothing showed it. The signal used here: the
first workflow task upserts the case's search attributes (`workflows/case.py`
`_upsert_search_attributes`, always on the first pass of the main loop), so a running case
workflow without `OneFamilyOverdue` has not completed its first task. The API's own
read-model row cannot tell: it is written from the API's copy of the new case, and the
workflow's first projection writes the same version (skipped by the version check).

Visibility is eventually consistent (about a second on the dev server): a count may miss the
newest cases; the limit is a bound on a runaway, not an exact gate. The figures are cached
per API process (START_BACKLOG_CACHE_SECONDS), so `POST /cases`, `/readyz` and `/metrics` cost
at most one pair of visibility calls per few seconds however busy they are.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException
from temporalio.client import Client

from models import search

log = logging.getLogger("onefamily.api")

START_BACKLOG_CACHE_SECONDS = 2.0
# A workflow that has not run this long after its start is "not started" (stuck, metric).
NOT_STARTED_AFTER = timedelta(seconds=60)
NOT_STARTED_QUERY = (f"WorkflowType = 'FamilyCaseWorkflow' AND ExecutionStatus = 'Running' "
                     f"AND {search.OVERDUE.name} IS NULL")
LIST_LIMIT = 500  # ids of old unstarted cases handed to the stuck sweep per round


@dataclass(frozen=True)
class Backlog:
    waiting: int  # created, first workflow task not completed
    over_limit_age: int  # ... of which started longer ago than NOT_STARTED_AFTER
    known: bool = True  # False: visibility did not answer (the figures are 0, not measured)
    error: str | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self, limit: int, after: timedelta = NOT_STARTED_AFTER) -> dict:
        out: dict = {"waiting": self.waiting, "not_started": self.over_limit_age,
                     "not_started_after_s": int(after.total_seconds()), "limit": limit}
        if not self.known:
            out["unknown"] = self.error or "visibility did not answer"
        return out


_cache: weakref.WeakKeyDictionary[Client, tuple[float, Backlog]] = weakref.WeakKeyDictionary()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def older_than_query(now: datetime, after: timedelta = NOT_STARTED_AFTER) -> str:
    return f"{NOT_STARTED_QUERY} AND StartTime < '{_iso(now - after)}'"


async def start_backlog(client: Client, after: timedelta = NOT_STARTED_AFTER) -> Backlog:
    """How many case workflows wait for their first run (cached per client)."""
    now_m = time.monotonic()
    hit = _cache.get(client)
    if hit is not None and hit[0] > now_m:
        return hit[1]
    now = datetime.now(UTC)
    try:
        waiting, old = await asyncio.wait_for(asyncio.gather(
            client.count_workflows(NOT_STARTED_QUERY),
            client.count_workflows(older_than_query(now, after)),
        ), timeout=3)
        backlog = Backlog(waiting=waiting.count, over_limit_age=old.count, checked_at=now)
    except Exception as error:  # noqa: BLE001 - unknown is reported as unknown, never a 500
        backlog = Backlog(0, 0, known=False, error=type(error).__name__, checked_at=now)
    _cache[client] = (now_m + START_BACKLOG_CACHE_SECONDS, backlog)
    return backlog


async def not_started_ids(client: Client, now: datetime, after: timedelta = NOT_STARTED_AFTER,
                          limit: int = LIST_LIMIT) -> dict[str, datetime]:
    """Case id -> workflow start time, of the cases whose workflow has not run for `after`."""
    found: dict[str, datetime] = {}
    try:
        async for wf in client.list_workflows(older_than_query(now, after), limit=limit):
            if wf.id.startswith("case-"):
                found[wf.id.removeprefix("case-")] = wf.start_time
    except Exception as error:  # noqa: BLE001 - the sweep says nothing rather than something wrong
        log.debug("listing unstarted case workflows failed: %s", type(error).__name__)
    return found


def note_created(client: Client) -> None:
    """A case this process just started counts at once (visibility shows it a second later),
    so one API process cannot run past the limit within the cache's lifetime."""
    hit = _cache.get(client)
    if hit is not None:
        figures = hit[1]
        _cache[client] = (hit[0], replace(figures, waiting=figures.waiting + 1))


def forget() -> None:
    """Tests: drop the cached figures."""
    _cache.clear()


async def refuse_when_over(client: Client | None, limit: int,
                           after: timedelta = NOT_STARTED_AFTER) -> None:
    """Back-pressure for `POST /cases`: past `limit` cases waiting for their first run, a 503
    with Retry-After and nothing created. 0 turns the check off."""
    if client is None or limit <= 0:
        return
    backlog = await start_backlog(client, after)
    if backlog.known and backlog.waiting >= limit:
        raise HTTPException(
            503,
            f"Too many new cases are waiting for the case engine ({backlog.waiting}, the limit is "
            f"{limit}): this referral has not been registered. Try again in a minute; nothing was "
            "created, so registering it again is safe.",
            headers={"Retry-After": "30"},
        )
