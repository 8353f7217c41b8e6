"""HTTP -> Temporal: one place that sends commands (Updates) and reads live state (Query).

Temporal allows 10 Updates in flight per workflow; the API queues per case so 20 concurrent
commands to one case all succeed instead of failing (DESIGN §7). The client seals every
command it sends (workflows/sealing.py, put on by `connect()`); the case refuses the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from api.errors import (
    RETRY_AFTER,
    command_timed_out,
    registration_timed_out,
    rpc_failed,
    update_failed,
)
from domain import shared_policy
from models.case import CaseAnswer, CaseState, Stage
from models.commands import CommandInput
from models.policy import Policy
from models.projection import case_from_document, write_case
from models.tables import CaseRow
from settings import get_settings
from workflows.case import FamilyCaseWorkflow

IN_FLIGHT_PER_CASE = 5
QUERY_TIMEOUT = 5.0  # s: a live read falls back on the read model after this
log = logging.getLogger("onefamily.api")
_queues: weakref.WeakValueDictionary[str, asyncio.Semaphore] = weakref.WeakValueDictionary()


def workflow_id(case_id: str) -> str:
    return f"case-{case_id}"


def _queue(case_id: str) -> asyncio.Semaphore:
    sem = _queues.get(case_id)
    if sem is None:
        sem = asyncio.Semaphore(IN_FLIGHT_PER_CASE)
        _queues[case_id] = sem
    return sem


def _stored(engine: Engine, case_id: str) -> CaseState | None:
    with Session(engine) as session:
        row = session.get(CaseRow, case_id)
        return case_from_document(row.document) if row else None


def command_timeout(timeout: float | None = None) -> float:
    return timeout if timeout is not None else get_settings().command_timeout


async def send(
    client: Client,
    engine: Engine,
    case_id: str,
    name: str,
    inp: CommandInput,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> CaseState:
    """One command, answered within `timeout` (ONEFAMILY_COMMAND_TIMEOUT) or a 503 saying
    whether it may still be applied (api/errors.py `command_timed_out`): the wait for the
    case's queue, the Update and its retries all count against the one deadline."""
    timeout = command_timeout(timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    handle = client.get_workflow_handle(workflow_id(case_id))
    sem = _queue(case_id)
    try:
        await asyncio.wait_for(sem.acquire(), timeout)
    except TimeoutError:
        raise command_timed_out(timeout, sent=False, keyed=idempotency_key is not None) from None
    try:
        state = await _update(handle, engine, case_id, name, inp, idempotency_key, deadline, timeout)
    finally:
        sem.release()
    await project(engine, state)
    return state


async def _update(handle: WorkflowHandle, engine: Engine, case_id: str, name: str, inp: CommandInput,
                  update_id: str | None, deadline: float, timeout: float) -> CaseState:
    loop = asyncio.get_running_loop()
    keyed = update_id is not None
    for attempt in range(8):
        remaining = deadline - loop.time()
        if remaining <= 0:  # only refused tries so far (the slots were full): not applied
            raise command_timed_out(timeout, sent=False, keyed=keyed)
        try:
            # wait_for runs the Update in a task of its own and cancels that task at the
            # deadline (the SDK retries UpdateWorkflowExecution on its own, so an RPC timeout
            # alone bounds one try, not the command). The Update stays with the server.
            answer = await asyncio.wait_for(
                handle.execute_update(name, inp, id=update_id, result_type=CaseAnswer,
                                      rpc_timeout=timedelta(seconds=remaining)),
                remaining,
            )
            return await _with_policy(handle, answer, deadline - loop.time())
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            log.warning("command %s on a case got no answer within %g s", name, timeout,
                        extra={"event": "command_timeout", "command": name})
            raise command_timed_out(timeout, sent=True, keyed=keyed) from None
        except WorkflowUpdateFailedError as error:
            raise update_failed(error) from None
        except RPCError as error:
            if error.status == RPCStatusCode.RESOURCE_EXHAUSTED and attempt < 7:
                # Another API process filled the case's 10 Update slots: refused, not applied.
                await asyncio.sleep(min(0.05 * 2**attempt, max(0.0, deadline - loop.time())))
                continue
            stored = await asyncio.to_thread(_stored, engine, case_id)
            raise rpc_failed(error, stored is not None and stored.stage is Stage.closed) from None
    raise HTTPException(503, "The case is busy: the command was refused and has not been applied. "
                        "Try again shortly; a retry is safe.", headers=RETRY_AFTER)


async def _with_policy(handle: WorkflowHandle, answer: CaseAnswer, remaining: float) -> CaseState:
    """The whole case of a command's answer (models.case.CaseAnswer): its policy by digest from
    this process's policies, or, the first time this process meets the digest, from the case
    itself (a Query; the command is applied by then, so a failure here says so)."""
    if answer.policy is not None:  # a worker from before answers with the whole case
        return answer.case(answer.policy)
    policy = shared_policy.by_digest(answer.policy_digest)
    if policy is None:
        try:
            fetched = await asyncio.wait_for(
                handle.query(FamilyCaseWorkflow.policy, result_type=Policy,
                             rpc_timeout=timedelta(seconds=max(remaining, 1.0))),
                max(remaining, 1.0))
        except (TimeoutError, RPCError, WorkflowQueryFailedError):
            log.warning("a command's answer named a policy the case did not give in time",
                        extra={"event": "answer_policy_unknown"})
            raise HTTPException(503, "The command was applied, but its answer could not be "
                                "completed in time: reload the case. Sending it again with the "
                                "same Idempotency-Key is safe.", headers=RETRY_AFTER) from None
        policy = shared_policy.shared(fetched)
        # A command moved the case to another policy in between: the one it holds now.
    return answer.case(policy)


async def start_case(client: Client, run, inp, *, timeout: float | None = None, keyed: bool,
                     **options) -> None:
    """`start_workflow` for a new case within the command deadline (503 with a sentence)."""
    timeout = command_timeout(timeout)
    try:
        await asyncio.wait_for(
            client.start_workflow(run, inp, rpc_timeout=timedelta(seconds=timeout), **options), timeout
        )
    except TimeoutError:
        raise registration_timed_out(timeout, keyed=keyed) from None
    except RPCError as error:
        if error.status == RPCStatusCode.DEADLINE_EXCEEDED:
            raise registration_timed_out(timeout, keyed=keyed) from None
        raise HTTPException(503, "The case engine is not reachable, so the case has not been "
                            "created. Try again shortly; registering it again with the same "
                            "Idempotency-Key is safe.", headers=RETRY_AFTER) from None


def _project(engine: Engine, state: CaseState) -> None:
    with Session(engine) as session:
        write_case(session, state, utcnow())
        session.commit()


async def project(engine: Engine, state: CaseState) -> None:
    """Lists read the new state at once: the API writes the read model from the command's
    answer (version-checked; the workflow's projection activity is the safety net)."""
    try:
        await asyncio.to_thread(_project, engine, state)
    except Exception:  # noqa: BLE001 - the command is done; the activity will catch up
        log.warning("read model write failed for a case; the workflow projects it later")


async def live_state(client: Client, engine: Engine, case_id: str) -> CaseState:
    """The live case from its workflow; a finished case from the read model."""
    # A Query needs a worker: with none (or a wedged case) it would wait; the read model's copy
    # is the answer then (it lags at most the commands of the last moments).
    wait = min(command_timeout(), QUERY_TIMEOUT)
    try:
        return await asyncio.wait_for(
            client.get_workflow_handle(workflow_id(case_id)).query(
                FamilyCaseWorkflow.case, result_type=CaseState, rpc_timeout=timedelta(seconds=wait)
            ),
            wait,
        )
    except TimeoutError:
        stored = await asyncio.to_thread(_stored, engine, case_id)
        if stored is not None:
            return stored
        raise HTTPException(503, "The case engine did not answer in time; try again shortly.",
                            headers=RETRY_AFTER) from None
    except WorkflowQueryFailedError:
        # The latest run refused its own start (not sealed by us, DESIGN §9): it is no case,
        # though it may sit on a closed case's id. The read model knows the real one, if any.
        stored = await asyncio.to_thread(_stored, engine, case_id)
        if stored is not None:
            return stored
        raise HTTPException(404, "No such case.") from None
    except RPCError as error:
        stored = await asyncio.to_thread(_stored, engine, case_id)
        if stored is not None:
            return stored
        if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise HTTPException(404, "No such case.") from None
        raise HTTPException(503, "The case engine is not reachable; try again shortly.") from None


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- readiness: does a worker poll?

# An idle worker's long poll lasts up to a minute before it polls again, and the server records
# a poller when its poll begins (measured on the dev server: ages up to 58 s with a healthy
# idle worker), so only an age past a minute means nobody polls.
WORKER_SEEN_WITHIN = 70.0
READY_CACHE_SECONDS = 5.0  # /readyz stays cheap: one DescribeTaskQueue per few seconds
UNREADY_CACHE_SECONDS = 1.0  # ... and notices a worker that comes back at once
_readiness: weakref.WeakKeyDictionary[Client, tuple[float, str, dict]] = weakref.WeakKeyDictionary()


def poller_verdict(task_queue: str, ages: list[float], within: float = WORKER_SEEN_WITHIN,
                   who: str = "case worker") -> str | None:
    """Why nobody polls `task_queue` (None: somebody does), from the ages in seconds of the
    pollers DescribeTaskQueue lists."""
    if not ages:
        return f"no {who} has polled task queue {task_queue} (the case engine lists none)"
    youngest = min(ages)
    if youngest > within:
        return f"no {who} has polled task queue {task_queue} for {int(youngest)} s"
    return None


async def poller_ages(client: Client, task_queue: str, kind: int) -> list[float]:
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,  # type: ignore[arg-type]
        ),
        timeout=timedelta(seconds=3),
    )
    now = datetime.now(UTC)
    return [max(0.0, (now - p.last_access_time.ToDatetime(tzinfo=UTC)).total_seconds())
            for p in resp.pollers if p.HasField("last_access_time")]


async def worker_readiness(client: Client, task_queue: str, document_task_queue: str) -> dict:
    """{"workers": bool, "why": str (when false), "documents_worker": bool}, cached.

    Only the case queue's workflow pollers decide: without them no command is answered. A
    missing documents worker only delays documents (it is reported, it does not fail)."""
    now = time.monotonic()
    hit = _readiness.get(client)
    if hit is not None and hit[0] > now and hit[1] == task_queue:
        return hit[2]
    try:
        cases, documents = await asyncio.wait_for(asyncio.gather(
            poller_ages(client, task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
            poller_ages(client, document_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        ), timeout=4)
        why = poller_verdict(task_queue, cases)
        answer: dict = {"workers": why is None,
                        "documents_worker": poller_verdict(document_task_queue, documents) is None}
        if why is not None:
            answer["why"] = why
    except Exception as error:  # noqa: BLE001 - any failure to ask is "not known to be ready"
        answer = {"workers": False, "documents_worker": False,
                  "why": f"the case engine did not describe task queue {task_queue} "
                         f"({type(error).__name__})"}
    ttl = READY_CACHE_SECONDS if answer["workers"] else UNREADY_CACHE_SECONDS
    _readiness[client] = (now + ttl, task_queue, answer)
    return answer
