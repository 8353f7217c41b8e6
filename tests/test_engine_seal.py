"""The engine is no back door (DESIGN §9, issue 8 point 3): the workers obey only commands
sealed with the system's key, whoever reaches the Temporal frontend and whatever they send.

The worker runs as in production: its client encrypts (`data_converter(settings)`) and seals
(`SealingInterceptor`), as `connect()` builds it. Forgers build their own clients.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import HTTPException
from pydantic import ValidationError
from sqlmodel import Session
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from api.gateway import live_state, send
from domain import command_seal
from domain.command_seal import Keyring, Target
from domain.policy import DK
from models.case import Actor, CaseAnswer, CaseCreate, EscalationItem
from models.commands import CaseWorkflowInput, CommandInput
from models.db import get_engine
from models.tables import CaseRow
from settings import Settings
from tests.conftest import running_worker, save_history
from tests.factories import case_create_body
from worker import RUNNER, WORKFLOWS
from workflows.case import FamilyCaseWorkflow
from workflows.codec import data_converter
from workflows.committee import CommitteeState, VisitationCommitteeWorkflow
from workflows.sealing import SealingInterceptor, seal_keyring

ADMIN = Actor(id="admin", roles=["admin"])
GHOST = {"id": "ghost", "roles": ["admin"]}  # nobody OneFamily knows, claiming admin


def onefamily_client(env: WorkflowEnvironment, settings: Settings) -> Client:
    """What `workflows.client.connect(settings)` builds, on the test server."""
    return Client(env.client.service_client, namespace="default",
                  data_converter=data_converter(settings),
                  interceptors=[SealingInterceptor(seal_keyring(settings))])


def forger(env: WorkflowEnvironment, converter=pydantic_data_converter) -> Client:
    """Someone who reached the frontend: plaintext, or (given the codec) encrypted, no seal."""
    return Client(env.client.service_client, namespace="default", data_converter=converter)


def assert_forbidden(error: BaseException) -> None:
    cause = error.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == "forbidden" and cause.message == command_seal.FORGED, cause


async def start_case(client: Client, settings: Settings, started: list[WorkflowHandle],
                     **extra: Any) -> WorkflowHandle:
    case_id = str(uuid.uuid4())
    handle = await client.start_workflow(
        FamilyCaseWorkflow.run,
        CaseWorkflowInput(case_id=case_id, policy=DK, actor=ADMIN,
                          create=CaseCreate.model_validate(case_create_body()), **extra),
        id=f"case-{case_id}", task_queue=settings.task_queue,
    )
    started.append(handle)
    return handle


def escalation_item(name: str) -> EscalationItem:
    return EscalationItem(id=name, case_id=str(uuid.uuid4()), plan_version=1,
                          reasons=["disagreement: ole"], escalated_at=datetime(2026, 11, 23, tzinfo=UTC))


async def agenda_items(handle: WorkflowHandle, until: str) -> list[str]:
    """The committee's item ids once `until` is among them (signals are applied in order)."""
    for _ in range(200):
        items = sorted((await handle.query(VisitationCommitteeWorkflow.agenda)).items)
        if until in items:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"{until} never reached the committee")


async def replay(history: WorkflowHistory, keys: Keyring | None) -> BaseException | None:
    """Replay with today's code, the workflows verifying with `keys` (None: replay tooling)."""
    command_seal.install(keys)
    try:
        replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                            workflow_runner=RUNNER)
        return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure
    finally:
        command_seal.install(None)


def patch_markers(history: WorkflowHistory) -> list[str]:
    return [json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
            for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]


def update_events(events: list) -> int:
    kinds = {EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
             EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED}
    return sum(1 for e in events if e.event_type in kinds)


# ---------------------------------------------------------------- the seal itself (no server)


def test_a_seal_survives_the_wire_a_newer_worker_and_a_key_rotation(tmp_path) -> None:
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    old = Keyring.derive("k1", {"k1": k1})
    rotated = Keyring.derive("k2", {"k2": k2, "k1": k1})  # k1 kept to read (and verify) old data
    target = Target("update", "case-1", "record_contact", "u-1")
    inp = CommandInput(actor=ADMIN, body={"kind": "phone", "at": datetime(2026, 11, 23, 10, tzinfo=UTC),
                                          "note": "Ærø ✓"})
    sealed = inp.model_copy(update={"seal": command_seal.seal(old, target, inp)})
    # What the worker decodes from the JSON the API sent.
    [payload] = pydantic_data_converter.payload_converter.to_payloads([sealed])
    [received] = pydantic_data_converter.payload_converter.from_payloads([payload], [CommandInput])
    assert command_seal.verify(rotated, target, received, received.seal)

    class NewerCommandInput(CommandInput):  # a worker that knows a field the API did not send
        urgent: bool = False

    assert command_seal.verify(rotated, target, NewerCommandInput.model_validate_json(payload.data),
                               received.seal)
    assert not command_seal.verify(Keyring.derive("k2", {"k2": k2}), target, received, received.seal)
    for tampered in ("v2" + received.seal[2:], received.seal[:-1] + "0", "", None, 42):
        assert not command_seal.verify(rotated, target, received, tampered)
    assert repr(old) == "Keyring(current='k1', ids=['k1'])"  # keys are never printed

    # Encryption switched off: sealing still has a key (created once, kept).
    off = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "off"), ONEFAMILY_ENCRYPT_PAYLOADS="false")
    assert seal_keyring(off) == seal_keyring(off)


# ---------------------------------------------------------------- commands (Updates)


async def test_forged_updates_are_refused_and_leave_the_case_unchanged(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    client = onefamily_client(ts_env, settings)
    engine = get_engine(settings.db_url)
    async with running_worker(client, settings):
        handle = await start_case(client, settings, started)
        case_id = handle.id.removeprefix("case-")
        # The normal path: the API's gateway, its client sealing every command.
        state = await send(client, engine, case_id, "assign_coordinator",
                           CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}))
        assert state.coordinator_id == "anna"
        before = await handle.query(FamilyCaseWorkflow.case)
        events_before = (await handle.fetch_history()).events

        keys = seal_keyring(settings)
        other = Keyring.derive("k-other", {"k-other": b"\x01" * 32})
        close = CommandInput(actor=ADMIN, body={"reason": "duplicate"})

        def sealed(target: Target, inp: CommandInput = close, ring: Keyring = keys) -> CommandInput:
            return inp.model_copy(update={"seal": command_seal.seal(ring, target, inp)})

        uid = str(uuid.uuid4())
        genuine_here = sealed(Target("update", handle.id, "close", uid))
        forgeries: dict[str, tuple[str, Any, str | None]] = {
            # Plaintext, an invented admin, no seal: the finding of issue 8.
            "plaintext, invented admin": ("close", {"actor": GHOST, "body": {"reason": "duplicate"}}, None),
            "a made-up seal": ("close", {"actor": GHOST, "body": {"reason": "duplicate"},
                                         "seal": "v1.k-0000.deadbeef"}, None),
            "sealed with another key": ("close", sealed(Target("update", handle.id, "close", uid),
                                                        ring=other), uid),
            "a genuine seal for another case": (
                "close", sealed(Target("update", "case-x", "close", uid)), uid),
            "a genuine seal for another command": ("pause", genuine_here, uid),
            "a genuine seal under another update id": ("close", genuine_here, str(uuid.uuid4())),
            "a genuine seal, actor changed": (
                "close", genuine_here.model_copy(update={"actor": Actor(id="ghost", roles=["admin"])}), uid),
        }
        plain = forger(ts_env)
        for what, (name, payload, update_id) in forgeries.items():
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await plain.get_workflow_handle(handle.id).execute_update(
                    name, payload, id=update_id, result_type=dict)
            assert_forbidden(refused.value), what

        after = await handle.query(FamilyCaseWorkflow.case)
        assert after == before  # version, history, stage: nothing moved
        events_after = (await handle.fetch_history()).events
        assert update_events(events_after) == update_events(events_before)  # not even accepted
        with Session(engine) as session:
            assert session.get(CaseRow, case_id).version == before.version

        # The one genuine command among them is applied, under the update id it was sealed for
        # (sent as it is: the client seals only what has no seal yet).
        state = await client.get_workflow_handle(handle.id).execute_update(
            "close", genuine_here, id=uid, result_type=CaseAnswer)
        assert state.stage.value == "closed" and state.version == before.version + 1


async def test_an_encrypted_but_unsealed_update_is_refused(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    """Holding the encryption codec is not enough: the seal binds the command to its case,
    its name and its update id, which AES-GCM alone does not."""
    client = onefamily_client(ts_env, settings)
    async with running_worker(client, settings):
        handle = await start_case(client, settings, started)
        before = await handle.query(FamilyCaseWorkflow.case)
        encrypted = forger(ts_env, data_converter(settings))
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await encrypted.get_workflow_handle(handle.id).execute_update(
                "assign_coordinator", CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}),
                result_type=CaseAnswer)
        assert_forbidden(refused.value)
        assert await handle.query(FamilyCaseWorkflow.case) == before
        # The same command through a OneFamily client is applied.
        state = await client.get_workflow_handle(handle.id).execute_update(
            "assign_coordinator", CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}),
            result_type=CaseAnswer)
        assert state.coordinator_id == "anna" and state.version == before.version + 1


# ---------------------------------------------------------------- workflow starts


async def test_a_forged_start_creates_no_case(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    client = onefamily_client(ts_env, settings)
    engine = get_engine(settings.db_url)
    plain = forger(ts_env)
    async with running_worker(client, settings):
        genuine = await start_case(client, settings, started)
        genuine_input = (await client.get_workflow_handle(genuine.id).fetch_history()).events[0]
        [sealed_start] = await data_converter(settings).decode(
            genuine_input.workflow_execution_started_event_attributes.input.payloads, [CaseWorkflowInput])
        assert sealed_start.seal is not None
        carried = await genuine.query(FamilyCaseWorkflow.case)

        def forged_input(case_id: str) -> dict[str, dict]:
            return {
                "unsealed, invented admin": {"case_id": case_id, "policy": DK.model_dump(mode="json"),
                                             "actor": GHOST, "create": case_create_body()},
                # As if continued as new: a whole state carried in, made up by the forger.
                "a carried state": {"case_id": case_id, "policy": DK.model_dump(mode="json"),
                                    "actor": GHOST, "state": carried.model_copy(
                                        update={"id": case_id}).model_dump(mode="json")},
                # Another case's genuine start, seal and all, under a new id.
                "another case's seal": sealed_start.model_copy(
                    update={"case_id": case_id}).model_dump(mode="json"),
            }

        for what in forged_input("-"):
            case_id = str(uuid.uuid4())
            handle = await plain.start_workflow(
                "FamilyCaseWorkflow", forged_input(case_id)[what], id=f"case-{case_id}",
                task_queue=settings.task_queue)
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(handle.result(), 30)
            assert_forbidden(failed.value), what
            events = (await handle.fetch_history()).events
            assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
            with Session(engine) as session:
                assert session.get(CaseRow, case_id) is None, what
            # Nor does the API show the forger's state as a case.
            with pytest.raises(WorkflowQueryFailedError):
                await client.get_workflow_handle(handle.id).query(FamilyCaseWorkflow.case)
            with pytest.raises(HTTPException) as missing:
                await live_state(client, engine, case_id)
            assert missing.value.status_code == 404, what

        # The genuine case next to them is untouched and reads as ever.
        assert (await live_state(client, engine, genuine.id.removeprefix("case-"))).id == carried.id


# ---------------------------------------------------------------- the committee


async def test_the_committee_takes_only_sealed_starts_and_item_signals(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    client = onefamily_client(ts_env, settings)
    plain = forger(ts_env)
    wf_id = f"committee-{settings.committee_id}"

    item = escalation_item

    async with running_worker(client, settings):
        # Signal-with-start as activities/committee.py does it: the start and the signal sealed.
        handle = await client.start_workflow(
            VisitationCommitteeWorkflow.run, CommitteeState(committee_id=settings.committee_id, policy=DK),
            id=wf_id, task_queue=settings.task_queue, start_signal="item_changed",
            start_signal_args=[item("genuine-1")])
        await handle.signal(VisitationCommitteeWorkflow.item_changed, item("genuine-2"))
        # Forged: plaintext, a made-up seal, another committee's genuine seal.
        forged_signals = [
            [item("forged-1").model_dump(mode="json")],
            [item("forged-2").model_dump(mode="json"), "v1.k-0000.deadbeef"],
            [item("forged-3"), command_seal.seal(seal_keyring(settings),
                                                 Target("signal", "committee-other", "item_changed"),
                                                 [item("forged-3")])],
        ]
        for args in forged_signals:
            await plain.get_workflow_handle(wf_id).signal("item_changed", args=args)
        await handle.signal(VisitationCommitteeWorkflow.item_changed, item("genuine-3"))
        assert await agenda_items(handle, "genuine-3") == ["genuine-1", "genuine-2", "genuine-3"]

        # A forged committee start fails before its first meeting.
        forged = await plain.start_workflow(
            "VisitationCommitteeWorkflow", {"committee_id": "ghosts", "policy": DK.model_dump(mode="json")},
            id=f"committee-ghosts-{uuid.uuid4().hex[:8]}", task_queue=settings.task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(forged.result(), 30)
        assert_forbidden(failed.value)


# ---------------------------------------------------------------- replay


async def test_sealed_histories_replay_with_the_keys_and_without_any(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    """The start check runs in workflow code, so on replay too: with the keys it agrees with
    the history; the replay tooling (no keys) trusts the history; a worker that lost the key
    fails loudly (as it would to decrypt that history). Update validators never replay."""
    async with running_worker(ts_env.client, settings):  # plaintext, sealed: a keepable history
        handle = await start_case(ts_env.client, settings, started)
        await handle.execute_update("assign_coordinator",
                                    CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}),
                                    result_type=CaseAnswer)
        await handle.execute_update("pause", CommandInput(actor=ADMIN, body={"reason": "family abroad"}),
                                    result_type=CaseAnswer)
        forged_id = f"case-{uuid.uuid4()}"
        forged = await forger(ts_env).start_workflow(
            "FamilyCaseWorkflow", {"case_id": forged_id[5:], "policy": DK.model_dump(mode="json"),
                                   "actor": GHOST, "create": case_create_body()},
            id=forged_id, task_queue=settings.task_queue)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(forged.result(), 30)
        history = await handle.fetch_history()
        refused = await forged.fetch_history()
    await save_history(handle, "case_sealed_start_and_commands")

    assert patch_markers(history).count("sealed-input") == 1  # new cases record the patch, once

    keys = seal_keyring(settings)
    assert await replay(history, keys) is None
    assert await replay(history, None) is None
    assert await replay(refused, keys) is None  # refused again, at the same point
    assert await replay(history, Keyring.derive("k-lost", {"k-lost": b"\x02" * 32})) is not None


async def test_a_committee_run_from_before_seals_checks_every_signal_after_the_upgrade(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    """The committee runs for a year between continue-as-new: a run started by yesterday's
    code must not stay a back door until then. Yesterday's code is today's with the patches
    never activated (`patch_activation_callback`)."""
    plain = forger(ts_env)
    wf_id = f"committee-{settings.committee_id}"
    with ThreadPoolExecutor(max_workers=2) as executor:
        yesterday = Worker(
            plain, task_queue=settings.task_queue, workflows=[VisitationCommitteeWorkflow],
            workflow_runner=RUNNER, activity_executor=executor, max_cached_workflows=0,
            workflow_failure_exception_types=[ValidationError],
            patch_activation_callback=lambda patch: not patch.patch_id.startswith("sealed-input"))
        async with yesterday:
            handle = await plain.start_workflow(
                "VisitationCommitteeWorkflow", CommitteeState(committee_id=settings.committee_id, policy=DK),
                id=wf_id, task_queue=settings.task_queue, start_signal="item_changed",
                start_signal_args=[escalation_item("before-upgrade")])
            assert await agenda_items(handle, "before-upgrade") == ["before-upgrade"]

    async with running_worker(ts_env.client, settings):
        await plain.get_workflow_handle(wf_id).signal("item_changed", escalation_item("forged"))
        await ts_env.client.get_workflow_handle(wf_id).signal(
            VisitationCommitteeWorkflow.item_changed, escalation_item("sealed"))
        assert await agenda_items(handle, "sealed") == ["before-upgrade", "sealed"]
        history = await handle.fetch_history()
        keys = seal_keyring(settings)
    # One patch marker per signal taken after the upgrade; none for the run-wide patch.
    assert patch_markers(history) == ["sealed-input-signal-2", "sealed-input-signal-3"]
    assert await replay(history, keys) is None
    assert await replay(history, None) is None
