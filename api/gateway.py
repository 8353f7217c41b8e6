"""HTTP -> Temporal: one place that sends commands (Updates) and reads live state (Query).

Temporal allows 10 Updates in flight per workflow; the API queues per case so 20 concurrent
commands to one case all succeed instead of failing (DESIGN §7). The client seals every
command it sends (workflows/sealing.py, put on by `connect()`); the case refuses the rest.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from datetime import UTC, datetime

from fastapi import HTTPException
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.projection import write_case
from api.errors import rpc_failed, update_failed
from models.case import CaseState, Stage
from models.commands import CommandInput
from models.tables import CaseRow
from workflows.case import FamilyCaseWorkflow

IN_FLIGHT_PER_CASE = 5
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
        return CaseState.model_validate(row.document) if row else None


async def send(
    client: Client,
    engine: Engine,
    case_id: str,
    name: str,
    inp: CommandInput,
    idempotency_key: str | None = None,
) -> CaseState:
    handle = client.get_workflow_handle(workflow_id(case_id))
    sem = _queue(case_id)
    async with sem:
        for attempt in range(8):
            try:
                state = await handle.execute_update(
                    name, inp, id=idempotency_key, result_type=CaseState
                )
            except WorkflowUpdateFailedError as error:
                raise update_failed(error) from None
            except RPCError as error:
                if error.status == RPCStatusCode.RESOURCE_EXHAUSTED and attempt < 7:
                    await asyncio.sleep(0.05 * 2**attempt)  # another API process filled the slots
                    continue
                stored = await asyncio.to_thread(_stored, engine, case_id)
                raise rpc_failed(error, stored is not None and stored.stage is Stage.closed) from None
            await project(engine, state)
            return state
    raise HTTPException(503, "The case is busy; try again shortly.")


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
    try:
        return await client.get_workflow_handle(workflow_id(case_id)).query(
            FamilyCaseWorkflow.case, result_type=CaseState
        )
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
