"""A command's answer names the case's policy by digest (models.case.CaseAnswer, issue 13):
what the answer carries, and the API process that meets a digest for the first time asking
the case for its policy (api/gateway.py), against a real worker on the time-skipping server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from api import gateway
from domain import shared_policy
from domain.lifecycle import new_case
from domain.policy import DK
from models.case import CaseAnswer, CaseState
from models.commands import CommandInput
from models.db import get_engine
from models.policy import Policy
from models.tables import CaseRow
from tests.conftest import running_worker
from tests.factories import case_create, coordinator, ctx
from tests.test_workflow_lifecycle import ADMIN, start_case
from workflows.case import FamilyCaseWorkflow


def test_the_answer_carries_the_case_without_its_policy() -> None:
    state = new_case("c-1", case_create(), ctx(coordinator()), [])
    answer = CaseAnswer.model_construct(**{**state.__dict__, "policy": None},
                                        policy_digest=shared_policy.digest(state.policy))
    text = answer.model_dump_json()
    assert '"policy"' not in text and '"caseload_cap"' not in text
    assert len(text) < len(state.model_dump_json()) / 3
    back = CaseAnswer.model_validate_json(text)
    assert back.policy is None and back.policy_digest == shared_policy.digest(DK)
    whole = back.case(DK)
    assert type(whole) is CaseState and whole == state
    assert whole.model_dump_json() == state.model_dump_json()


def test_a_policy_has_the_same_digest_in_every_process() -> None:
    """The API digests the policy it starts a case with, the worker the copy it decodes."""
    decoded = Policy.model_validate_json(DK.model_dump_json())
    assert decoded is not DK and shared_policy.digest(decoded) == shared_policy.digest(DK)
    other = DK.model_copy(update={"caseload_cap": DK.caseload_cap + 1})
    assert shared_policy.digest(other) != shared_policy.digest(DK)
    assert shared_policy.by_digest(shared_policy.digest(other)) is other  # given out: resolvable


async def test_an_api_process_that_never_met_the_policy_asks_the_case(
    ts_env: WorkflowEnvironment, settings, started, monkeypatch
) -> None:
    asked: list[str] = []
    real_query = type(ts_env.client.get_workflow_handle("x")).query

    async def counting_query(self, query, *args, **kwargs):
        asked.append(getattr(query, "__name__", str(query)))
        return await real_query(self, query, *args, **kwargs)

    monkeypatch.setattr(type(ts_env.client.get_workflow_handle("x")), "query", counting_query)
    # This process's policies are the worker's too (it runs here): hide them from the API.
    monkeypatch.setattr(gateway.shared_policy, "by_digest", lambda _digest: None)
    engine = get_engine(settings.db_url)
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, (now - timedelta(hours=1)).isoformat())
        started.append(handle)
        case_id = handle.id.removeprefix("case-")
        state = await gateway.send(ts_env.client, engine, case_id, "assign_coordinator",
                                   CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}))
        assert asked == [FamilyCaseWorkflow.policy.__name__]
        assert type(state) is CaseState and state.coordinator_id == "anna"
        assert state.policy == DK
        live = await handle.query(FamilyCaseWorkflow.case)
        assert state == live
        with Session(engine) as session:  # the read model holds the whole case, policy and all
            stored = CaseState.model_validate(session.get(CaseRow, case_id).document)
        assert stored == live


async def test_an_answer_whose_policy_cannot_be_had_says_the_command_was_applied(
    ts_env: WorkflowEnvironment, settings, started, monkeypatch
) -> None:
    """The Update is applied before its policy is asked for: if the case does not give it, the
    answer is a 503 that says so (and that a keyed retry is safe), never a 500."""
    from fastapi import HTTPException
    from temporalio.service import RPCError, RPCStatusCode

    async def failing_query(self, query, *args, **kwargs):
        raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(gateway.shared_policy, "by_digest", lambda _digest: None)
    engine = get_engine(settings.db_url)
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, (now - timedelta(hours=1)).isoformat())
        started.append(handle)
        monkeypatch.setattr(type(ts_env.client.get_workflow_handle(handle.id)), "query",
                            failing_query)
        case_id = handle.id.removeprefix("case-")
        with pytest.raises(HTTPException) as refused:
            await gateway.send(ts_env.client, engine, case_id, "assign_coordinator",
                               CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}))
        assert refused.value.status_code == 503
        assert "was applied" in refused.value.detail
        assert "Idempotency-Key is safe" in refused.value.detail
        monkeypatch.undo()
        live = await handle.query(FamilyCaseWorkflow.case)
        assert live.coordinator_id == "anna"  # applied, as the answer said
