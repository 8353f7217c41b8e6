"""The workers' workflow runner: the SDK's unsandboxed runner, with instances that let go of an
activation once it has been handled (issue 13: memory per cached case).

With upb protobuf (the SDK's default) a sub-message or repeated field keeps the whole arena of
the message it came from alive. The SDK's workflow instance (temporalio 1.35) keeps, per
cached run:

- its LAST activation, through `available_internal_flags` and
  `deployment_version_for_current_task`: with it the payloads that activation carried, both
  the encrypted ones and the decoded ones the codec wrote beside them;
- its LAST completion (`_current_completion`): the answer of the last Update or Query, as
  JSON and encrypted;
- its FIRST activation for the whole run, through `last_completion_result` and the headers:
  the start input, decoded and encrypted.

Measured on the dev server (bare workflow, 2,000 cached, a 14 KB start input): 142.8 KiB of
worker RSS per cached workflow with the SDK's instance, 52.8 KiB with this one; with a 10 byte
input 38.0 against 34.6. Everything kept is copied into messages of its own, so no arena
outlives its activation.

One smaller thing per run: its `random.Random` (2.9 KiB of Mersenne Twister state; workflow
code uses no randomness, tests/test_workflow_determinism.py, so it is made on first use). The
run's payload converter is the process's one (workflows/codec.py `SharedPayloadConverter`).

The names are the SDK's private ones: tests/test_workflow_runner.py fails when an upgrade
moves them (an activation or a generator stays alive again).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message
from temporalio.bridge.proto.workflow_activation import InitializeWorkflow, WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import ExecuteWorkflowInput, UnsandboxedWorkflowRunner, WorkflowInstance
from temporalio.worker._workflow_instance import WorkflowInstanceDetails, _WorkflowInstanceImpl

M = TypeVar("M", bound=Message)


def _own(message: M) -> M:
    """A copy in an arena of its own."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _own_all(messages: Mapping[str, M]) -> dict[str, M]:
    return {key: _own(value) for key, value in messages.items()}


class _RandomOnUse:
    """Stands for the run's `random.Random` until something uses it (a reseed included)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._real: random.Random | None = None

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            self._real = random.Random(self._seed)
        return getattr(self._real, name)


class _LeanInstance(_WorkflowInstanceImpl):
    def __init__(self, det: WorkflowInstanceDetails) -> None:
        super().__init__(det)
        self._random = _RandomOnUse(det.randomness_seed)

    def _make_workflow_input(self, init_job: InitializeWorkflow) -> ExecuteWorkflowInput:
        inp = super()._make_workflow_input(init_job)
        inp.headers = _own_all(inp.headers)
        return inp

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        completion = super().activate(act)
        # What `activate` took from `act` and keeps until the next activation.
        self._current_internal_flags = list(self._current_internal_flags)
        self._deployment_version_for_current_task = _own(self._deployment_version_for_current_task)
        # The worker encodes and sends the completion it was handed; the next activation
        # starts a new one, and nothing reads it in between.
        self._current_completion = None
        return completion


class LeanWorkflowRunner(UnsandboxedWorkflowRunner):
    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        info = dataclasses.replace(det.info, headers=_own_all(det.info.headers),
                                   raw_memo=_own_all(det.info.raw_memo))
        det = dataclasses.replace(
            det, info=info, last_completion_result=_own(det.last_completion_result),
            last_failure=_own(det.last_failure) if det.last_failure is not None else None,
        )
        return _LeanInstance(det)  # type: ignore[abstract]
