"""Keeping the stuck list current without asking every workflow on every page load.

1. The index: every projected case version is turned into its potential business reasons
   (`domain.stuck.watch_points`, each with the instant it fires) and its funding lines, in
   `case_watch` / `case_funding`. `catch_up()` indexes what the projection wrote since the
   last call (by `cases.updated_at`, indexed); pages call it before reading (a no-op when
   nothing changed: read-your-writes), the background rounds call it every few seconds, and
   `reconcile()` compares versions of all cases now and then in case a write was missed.
2. The technical sweep: each background round asks Temporal (describe()) about a batch of
   open cases, oldest check first, plus every case that already has a technical issue and
   every case workflow that closed recently according to visibility. Results go to
   `technical_issues`. With 10,000 open cases and the defaults (200 per 30 s) a full sweep
   takes 25 minutes; a workflow someone terminated shows within one round.

The background rounds (`watch_rounds`) run ONCE per deployment, never in the API processes:
in the case worker that holds the stuck sweeper's activity (workflows/sweeper.py: a Temporal
Schedule, overlap SKIP, starts the sweeper; activities/sweep.py runs the rounds and
heartbeats, so another case worker takes over when that one dies). Writers of the index in
different processes (the sweeper, each API process's catch_up) are serialized: on PostgreSQL
by a transaction-scoped advisory lock, on SQLite by its single writer.

Configuration (environment of the case workers): ONEFAMILY_STUCK_INDEX_SECONDS (5; 0 turns
the background rounds off), ONEFAMILY_STUCK_CHECK_SECONDS (30; 0 turns the technical sweep
off), ONEFAMILY_STUCK_CHECK_BATCH (200), ONEFAMILY_STUCK_CHECK_CONCURRENCY (8).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, false, func, insert, or_, select, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.funding import funding_lines
from api import backlog
from domain import stuck
from domain.policy import POLICIES
from models import search
from models.case import Stage
from models.projection import case_from_document
from models.tables import CaseRow
from models.tables_reporting import (
    CaseFundingRow,
    CaseIndexRow,
    CaseWatchRow,
    StuckAckRow,
    StuckCaseRow,
    StuckKindCountRow,
    TechnicalIssueRow,
)

log = logging.getLogger("onefamily.watch")

CASES = CaseRow.__table__
INDEX = CaseIndexRow.__table__
WATCH = CaseWatchRow.__table__
FUNDING = CaseFundingRow.__table__
TECH = TechnicalIssueRow.__table__
STUCK = StuckCaseRow.__table__
KIND_COUNTS = StuckKindCountRow.__table__
ACKS = StuckAckRow.__table__

# Rows written less than this long before the newest one seen are looked at again: a slow
# projection transaction may commit an older updated_at after a newer one.
MARGIN = timedelta(seconds=10)

_lock = threading.Lock()
_watermarks: dict[str, datetime | None] = {}
# PostgreSQL: one advisory lock key for the writers of the index (8 bytes of a fixed hash).
INDEX_LOCK_KEY = int.from_bytes(hashlib.sha256(b"onefamily.watch").digest()[:8], "big", signed=True)


def _exclusive(session: Session) -> None:
    """First statement of a transaction that writes the index: waits for any other process's
    writer on PostgreSQL (released at commit/rollback). SQLite has one writer anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INDEX_LOCK_KEY})


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def utcnow() -> datetime:
    return datetime.now(UTC)


def stuck_policy() -> stuck.StuckPolicy:
    from settings import get_settings

    after = get_settings().not_started_seconds  # ONEFAMILY_NOT_STARTED_SECONDS (api/backlog.py)
    if after == stuck.DEFAULT_POLICY.workflow_not_started_seconds:
        return stuck.DEFAULT_POLICY
    return stuck.DEFAULT_POLICY.model_copy(update={"workflow_not_started_seconds": after})


# ---------------------------------------------------------------- the index


def _acked(session: Session, ids: list[str]) -> set[tuple[str, str, datetime]]:
    out: set[tuple[str, str, datetime]] = set()
    for chunk in _chunks(ids, 500):
        out |= {tuple(r) for r in session.execute(
            select(ACKS.c.case_id, ACKS.c.kind, ACKS.c.since).where(ACKS.c.case_id.in_(chunk))).all()}
    return out


def _case_policy(session: Session, key: str, cache: dict) -> object | None:
    """The policy version a case runs under (built in, or a stored override version)."""
    if key not in cache:
        found = POLICIES.get(key)
        if found is None and "-v" in key:
            try:
                from api.policy import policy_version

                country, version = key.rsplit("-v", 1)
                found = policy_version(session, country, int(version))
            except Exception:  # noqa: BLE001 - unknown key: the stuck defaults apply
                found = None
        cache[key] = found
    return cache[key]


def _index_documents(session: Session, rows: list, now: datetime) -> None:
    """(id, version, updated_at, document) rows -> case_index, case_watch, case_funding and
    the stuck summary."""
    if not rows:
        return
    ids = [r[0] for r in rows]
    policy = stuck_policy()
    policies: dict = {}
    acked = _acked(session, ids)
    watch, funding, index, closed = [], [], [], []
    for case_id, version, updated_at, document in rows:
        state = case_from_document(document)
        for r in stuck.watch_points(state, policy, _case_policy(session, state.policy_key, policies)):
            watch.append({"case_id": case_id, "kind": r.kind, "fires_at": r.fires_at, "since": r.since,
                          "owner": r.owner, "detail": r.detail, "stage": state.stage.value,
                          "coordinator_id": state.coordinator_id, "fired": r.fires_at <= now,
                          "acked": (case_id, r.kind, r.since) in acked})
        for line in funding_lines(state):
            funding.append({"case_id": case_id, "plan_version": line.plan_version,
                            "department": line.department, "monthly_amount": line.monthly_amount,
                            "joint": line.joint, "valid_from": line.valid_from,
                            "valid_until": line.valid_until})
        is_open = state.stage is not Stage.closed
        if not is_open:
            closed.append(case_id)
        index.append({"case_id": case_id, "version": version, "source_updated_at": updated_at,
                      "is_open": is_open, "indexed_at": now})
    for chunk in _chunks(ids, 500):
        session.execute(delete(WATCH).where(WATCH.c.case_id.in_(chunk)))
        session.execute(delete(FUNDING).where(FUNDING.c.case_id.in_(chunk)))
        session.execute(delete(INDEX).where(INDEX.c.case_id.in_(chunk)))
    for chunk in _chunks(closed, 500):
        session.execute(delete(TECH).where(TECH.c.case_id.in_(chunk)))
    if watch:
        session.execute(insert(WATCH), watch)
    if funding:
        session.execute(insert(FUNDING), funding)
    session.execute(insert(INDEX), index)
    refresh_summaries(session, ids)


def refresh_summaries(session: Session, ids: list[str]) -> None:
    """Rebuild the `stuck_cases` rows of these cases from their fired business reasons and
    their technical issues (the caller commits)."""
    reasons: dict[str, list[tuple[str, datetime, bool]]] = {}
    where: dict[str, tuple[str, str | None]] = {}
    delta: dict[str, int] = {}
    for chunk in _chunks(ids, 500):
        for kinds in session.execute(select(STUCK.c.kinds).where(STUCK.c.case_id.in_(chunk))).scalars():
            for kind in filter(None, kinds.split(",")):
                delta[kind] = delta.get(kind, 0) - 1
        session.execute(delete(STUCK).where(STUCK.c.case_id.in_(chunk)))
        for case_id, kind, since, acked, stage, coordinator, fired in session.execute(
            select(WATCH.c.case_id, WATCH.c.kind, WATCH.c.since, WATCH.c.acked, WATCH.c.stage,
                   WATCH.c.coordinator_id, WATCH.c.fired).where(WATCH.c.case_id.in_(chunk))
        ).all():
            if not fired:  # filtered here: SQLite would pick the `fired` index over case_id
                continue
            reasons.setdefault(case_id, []).append((kind, since, acked))
            where[case_id] = (stage, coordinator)
        for case_id, kind, since, acked, stage, coordinator in session.execute(
            select(TECH.c.case_id, TECH.c.kind, TECH.c.since, TECH.c.acked, CASES.c.stage,
                   CASES.c.coordinator_id).select_from(TECH.join(CASES, CASES.c.id == TECH.c.case_id))
            .where(TECH.c.case_id.in_(chunk), CASES.c.stage != Stage.closed.value)
        ).all():
            reasons.setdefault(case_id, []).append((kind, since, acked))
            where.setdefault(case_id, (stage, coordinator))
    rows = []
    for case_id, found in reasons.items():
        unacked = [r for r in found if not r[2]]
        rows.append({
            "case_id": case_id, "stage": where[case_id][0], "coordinator_id": where[case_id][1],
            "oldest": min(r[1] for r in found), "reasons": len(found),
            "kinds": "," + ",".join(sorted({r[0] for r in found})) + ",",
            "open_oldest": min((r[1] for r in unacked), default=None), "open_reasons": len(unacked),
            "open_kinds": "," + ",".join(sorted({r[0] for r in unacked})) + "," if unacked else "",
        })
        for kind in {r[0] for r in found}:
            delta[kind] = delta.get(kind, 0) + 1
    if rows:
        session.execute(insert(STUCK), rows)
    _add_kind_counts(session, {k: d for k, d in delta.items() if d})


def _add_kind_counts(session: Session, delta: dict[str, int]) -> None:
    if not delta:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    for kind, d in sorted(delta.items()):
        stmt = upsert(KIND_COUNTS).values(kind=kind, cases=d)
        session.execute(stmt.on_conflict_do_update(index_elements=["kind"],
                                                   set_={"cases": KIND_COUNTS.c.cases + d}))


def recount_kinds(session: Session) -> None:
    """Rebuild `stuck_kind_counts` from `stuck_cases` (repairs any drift)."""
    counts: dict[str, int] = {}
    for kinds in session.execute(select(STUCK.c.kinds)).scalars():
        for kind in filter(None, kinds.split(",")):
            counts[kind] = counts.get(kind, 0) + 1
    session.execute(delete(KIND_COUNTS))
    if counts:
        session.execute(insert(KIND_COUNTS), [{"kind": k, "cases": n} for k, n in sorted(counts.items())])


def advance(session: Session, now: datetime, limit: int = 5000) -> int:
    """Time passed: flip the watch points whose instant has come and refresh those cases'
    summaries. Cheap when nothing fired (one indexed query)."""
    ids = list(session.execute(
        select(WATCH.c.case_id).where(WATCH.c.fired == false(), WATCH.c.fires_at <= now)
        .distinct().limit(limit)
    ).scalars())
    if not ids:
        return 0
    for chunk in _chunks(ids, 500):
        session.execute(update(WATCH).where(WATCH.c.case_id.in_(chunk), WATCH.c.fires_at <= now)
                        .values(fired=True))
    refresh_summaries(session, ids)
    return len(ids)


def acknowledge(engine: Engine, case_id: str, kind: str, since: datetime, by: str, note: str,
                now: datetime | None = None) -> None:
    """Record a manager's acknowledgement of one reason occurrence and mark it everywhere."""
    now = now or utcnow()
    with _lock, Session(engine) as session:
        _exclusive(session)
        session.execute(insert(ACKS).values(case_id=case_id, kind=kind, since=since, acked_by=by,
                                            acked_at=now, note=note))
        match = (WATCH.c.case_id == case_id, WATCH.c.kind == kind, WATCH.c.since == since)
        session.execute(update(WATCH).where(*match).values(acked=True))
        session.execute(update(TECH).where(TECH.c.case_id == case_id, TECH.c.kind == kind,
                                           TECH.c.since == since).values(acked=True))
        refresh_summaries(session, [case_id])
        session.commit()


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _load(session: Session, ids: list[str]) -> list:
    out = []
    for chunk in _chunks(ids, 500):
        out += session.execute(
            select(CASES.c.id, CASES.c.version, CASES.c.updated_at, CASES.c.document)
            .where(CASES.c.id.in_(chunk))
        ).all()
    return out


def catch_up(engine: Engine, limit: int = 500, now: datetime | None = None) -> int:
    """Index the case versions projected since the last call; at most `limit` per call (the
    background loop does the rest). Returns how many cases were (re)indexed."""
    now = now or utcnow()
    key = str(engine.url)
    with _lock, Session(engine) as session:
        _exclusive(session)
        if key not in _watermarks:
            _watermarks[key] = session.execute(select(func.max(INDEX.c.source_updated_at))).scalar()
        mark = _watermarks[key]
        query = select(CASES.c.id, CASES.c.version, CASES.c.updated_at)
        if mark is not None:
            # Look back over the margin only while the newest write is recent: after that no
            # transaction that stamped an older time is plausibly still open (reconcile()
            # catches any that was).
            lower = mark - MARGIN if utcnow() - mark < MARGIN else mark
            query = query.where(CASES.c.updated_at > lower)
        seen = session.execute(query.order_by(CASES.c.updated_at)).all()
        fired = advance(session, now)
        if not seen:
            if fired:
                session.commit()
            return 0
        known: dict[str, int] = {}
        for chunk in _chunks([r[0] for r in seen], 500):
            known.update(session.execute(
                select(INDEX.c.case_id, INDEX.c.version).where(INDEX.c.case_id.in_(chunk))).all())
        todo, new_mark = [], mark
        for case_id, version, updated_at in seen:
            if known.get(case_id) != version:
                if len(todo) >= limit:
                    break
                todo.append(case_id)
            new_mark = updated_at if new_mark is None else max(new_mark, updated_at)
        if todo:
            _index_documents(session, _load(session, todo), now)
        if todo or fired:
            session.commit()
        _watermarks[key] = new_mark
        return len(todo)


def reconcile(engine: Engine, batch: int = 1000, now: datetime | None = None) -> int:
    """Index every case whose indexed version differs from the read model (a full pass)."""
    now = now or utcnow()
    done = 0
    while True:
        with _lock, Session(engine) as session:
            _exclusive(session)
            ids = list(session.execute(
                select(CASES.c.id).select_from(CASES.outerjoin(INDEX, INDEX.c.case_id == CASES.c.id))
                .where(or_(INDEX.c.version.is_(None), INDEX.c.version != CASES.c.version))
                .limit(batch)
            ).scalars())
            if not ids:
                advance(session, now)
                recount_kinds(session)
                session.commit()
                return done
            _index_documents(session, _load(session, ids), now)
            session.commit()
            done += len(ids)


def forget_watermarks() -> None:
    """Tests and the benchmark seed the read model behind the index's back."""
    with _lock:
        _watermarks.clear()


# ---------------------------------------------------------------- the technical sweep


def _ts(value) -> datetime | None:
    if value is None or (not value.seconds and not value.nanos):
        return None
    return value.ToDatetime(tzinfo=UTC)


async def workflow_facts(client: Client, workflow_id: str,
                         policy: stuck.StuckPolicy) -> stuck.WorkflowFacts:
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return stuck.WorkflowFacts(status="not_found")
        raise
    status = desc.status.name.lower() if desc.status is not None else "running"
    raw = desc.raw_description
    pending = []
    for pa in raw.pending_activities:
        failure = pa.last_failure.message if pa.HasField("last_failure") else None
        pending.append(stuck.PendingActivity(
            activity_type=pa.activity_type.name, attempt=pa.attempt, last_failure=failure or None,
            last_failed_at=_ts(pa.last_attempt_complete_time), scheduled_at=_ts(pa.scheduled_time),
        ))
    attempt, since, failure = 0, None, None
    if raw.HasField("pending_workflow_task"):
        task = raw.pending_workflow_task
        attempt = task.attempt
        since = _ts(task.original_scheduled_time) or _ts(task.scheduled_time)
        if attempt >= policy.workflow_task_failing_attempts:
            failure = await _last_workflow_task_failure(client, workflow_id)
    return stuck.WorkflowFacts(
        status=status, pending_activities=pending, workflow_task_attempt=attempt,
        workflow_task_since=since, workflow_task_failure=failure,
        close_time=desc.close_time,
        # The first workflow task upserts the search attributes (api/backlog.py): without
        # them no worker has run the case yet.
        first_task_done=desc.typed_search_attributes.get(search.OVERDUE) is not None,
        started_at=desc.start_time,
    )


async def _last_workflow_task_failure(client: Client, workflow_id: str) -> str | None:
    """The newest WorkflowTaskFailed event's message (e.g. a non-determinism error)."""
    try:
        resp = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id),
                maximum_page_size=50,
            )
        )
    except RPCError:
        return None
    for event in resp.history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attrs = event.workflow_task_failed_event_attributes
            message = attrs.failure.message if attrs.HasField("failure") else ""
            return (message or WorkflowTaskFailedCause.Name(attrs.cause))[:300]
    return None


async def _recently_closed(client: Client, since: datetime) -> set[str]:
    """Case workflow ids that closed since `since`, from visibility (cheap, eventually
    consistent); checked at once instead of waiting for their turn in the sweep."""
    query = (f"WorkflowType = 'FamilyCaseWorkflow' AND ExecutionStatus != 'Running' "
             f"AND CloseTime > '{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'")
    found: set[str] = set()
    try:
        async for wf in client.list_workflows(query, limit=1000):
            if wf.id.startswith("case-"):
                found.add(wf.id.removeprefix("case-"))
    except RPCError:
        pass
    return found


def _candidates(engine: Engine, batch: int, extra: set[str]) -> list[str]:
    with Session(engine) as session:
        with_issues = set(session.execute(select(TECH.c.case_id).distinct()).scalars())
        due = list(session.execute(
            select(INDEX.c.case_id).where(INDEX.c.is_open)
            .order_by(INDEX.c.tech_checked_at.is_not(None), INDEX.c.tech_checked_at)
            .limit(batch)
        ).scalars())
        if extra:
            open_extra = set(session.execute(
                select(CASES.c.id).where(CASES.c.id.in_(list(extra)),
                                         CASES.c.stage != Stage.closed.value)).scalars())
        else:
            open_extra = set()
    return list(dict.fromkeys([*with_issues, *open_extra, *due]))


def _store_technical(engine: Engine, results: dict[str, list[stuck.Reason]], now: datetime) -> None:
    ids = list(results)
    with _lock, Session(engine) as session:
        _exclusive(session)
        still_open = set()
        for chunk in _chunks(ids, 500):
            still_open |= set(session.execute(
                select(CASES.c.id).where(CASES.c.id.in_(chunk), CASES.c.stage != Stage.closed.value)
            ).scalars())
        first_seen: dict[tuple[str, str], datetime] = {}
        before: set[tuple[str, str]] = set()
        for chunk in _chunks(ids, 500):
            for case_id, kind, seen in session.execute(
                select(TECH.c.case_id, TECH.c.kind, TECH.c.first_seen_at).where(TECH.c.case_id.in_(chunk))
            ).all():
                first_seen[(case_id, kind)] = seen
                before.add((case_id, kind))
            session.execute(delete(TECH).where(TECH.c.case_id.in_(chunk)))
        acked = _acked(session, ids)
        rows = []
        for case_id, reasons in results.items():
            if case_id not in still_open:
                continue  # closed meanwhile: a closed case is not stuck
            for r in reasons:
                seen = first_seen.get((case_id, r.kind), now)
                since = min(r.since, seen)
                rows.append({"case_id": case_id, "kind": r.kind, "since": since,
                             "owner": r.owner, "detail": r.detail, "first_seen_at": seen,
                             "checked_at": now, "acked": (case_id, r.kind, since) in acked})
        if rows:
            session.execute(insert(TECH), rows)
        changed = before | {(r["case_id"], r["kind"]) for r in rows}
        if changed:
            refresh_summaries(session, sorted({case_id for case_id, _ in changed}))
        for chunk in _chunks(ids, 500):
            session.execute(update(INDEX).where(INDEX.c.case_id.in_(chunk)).values(tech_checked_at=now))
        session.commit()


async def technical_sweep(client: Client, engine: Engine, *, batch: int = 200, concurrency: int = 8,
                          closed_since: datetime | None = None) -> dict[str, list[stuck.Reason]]:
    """One round of technical checks; returns the reasons found per checked case."""
    now = utcnow()
    policy = stuck_policy()
    extra = await _recently_closed(client, closed_since) if closed_since else set()
    # Cases whose workflow no worker has run for a while (visibility): checked at once.
    extra |= set(await backlog.not_started_ids(
        client, now, timedelta(seconds=policy.workflow_not_started_seconds)))
    ids = await asyncio.to_thread(_candidates, engine, batch, extra)
    sem = asyncio.Semaphore(concurrency)
    results: dict[str, list[stuck.Reason]] = {}

    async def check(case_id: str) -> None:
        async with sem:
            try:
                facts = await asyncio.wait_for(workflow_facts(client, f"case-{case_id}", policy), 10)
            except (RPCError, TimeoutError) as error:
                log.debug("technical check of %s failed: %s", case_id, error)
                return  # Temporal unreachable: say nothing rather than something wrong
            results[case_id] = stuck.technical_reasons(facts, now, policy)

    await asyncio.gather(*(check(i) for i in ids))
    if results:
        await asyncio.to_thread(_store_technical, engine, results, now)
    return results


# ---------------------------------------------------------------- the background rounds


@dataclass(frozen=True)
class WatchConfig:
    index_every: float = 5
    check_every: float = 30
    batch: int = 200
    concurrency: int = 8
    reconcile_every: float = 300

    @classmethod
    def from_env(cls) -> WatchConfig:
        return cls(
            index_every=_env_float("ONEFAMILY_STUCK_INDEX_SECONDS", 5),
            check_every=_env_float("ONEFAMILY_STUCK_CHECK_SECONDS", 30),
            batch=max(1, int(_env_float("ONEFAMILY_STUCK_CHECK_BATCH", 200))),
            concurrency=max(1, int(_env_float("ONEFAMILY_STUCK_CHECK_CONCURRENCY", 8))),
        )


async def watch_rounds(client: Client | None, engine: Engine, config: WatchConfig, *,
                       duration: float, on_round: Callable[[dict], None] | None = None) -> dict:
    """The background work for `duration` seconds: every `index_every` seconds index what
    was projected (a full reconcile() every `reconcile_every`), and every `check_every` a
    technical sweep. Called by the stuck sweeper's activity (activities/sweep.py), in one
    process per deployment. A failing round (the database down) is logged and the next one
    tries again. Returns totals."""
    totals = {"rounds": 0, "indexed": 0, "reconciles": 0, "technical_rounds": 0, "checked": 0,
              "failed_rounds": 0}
    if config.index_every <= 0:
        return totals
    ends = time.monotonic() + duration
    last_reconcile = last_check = float("-inf")
    last_check_at: datetime | None = None
    while True:
        indexed = checked = 0
        technical = False
        try:
            if time.monotonic() - last_reconcile >= config.reconcile_every:
                indexed = await asyncio.to_thread(reconcile, engine)
                last_reconcile = time.monotonic()
                totals["reconciles"] += 1
            else:
                indexed = await asyncio.to_thread(catch_up, engine, 2000)
            if (config.check_every > 0 and client is not None
                    and time.monotonic() - last_check >= config.check_every):
                started = utcnow()
                closed_since = (last_check_at or started - timedelta(hours=1)) - timedelta(minutes=1)
                found = await technical_sweep(client, engine, batch=config.batch,
                                              concurrency=config.concurrency, closed_since=closed_since)
                last_check, last_check_at = time.monotonic(), started
                technical, checked = True, len(found)
                totals["technical_rounds"] += 1
                log.debug("technical sweep", extra={"checked": checked,
                                                    "with_issues": sum(1 for r in found.values() if r)})
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the rounds must survive a bad round (database down)
            totals["failed_rounds"] += 1
            log.exception("stuck watch round failed")
        totals["rounds"] += 1
        totals["indexed"] += indexed
        totals["checked"] += checked
        log.debug("stuck round", extra={"indexed": indexed, "technical": technical})
        if on_round is not None:
            on_round(totals)
        left = ends - time.monotonic()
        if left <= 0:
            return totals
        await asyncio.sleep(min(config.index_every, left))
