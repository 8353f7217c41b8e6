"""Every OneFamily client seals what it sends to a workflow (see `domain.command_seal`).

`connect()` puts `SealingInterceptor` on the API's and the workers' clients, so every Update
(`api.gateway.send`), every case start (`POST /cases`), the committee's signal-with-start
(`activities.committee`) and anything added later is sealed without the call site having to
remember. The actor in a command is the API's business (the authenticated caller); the seal
only proves that OneFamily's code, holding the system's key, sent it.

What gets sealed, by its shape:
- an Update or a start whose single input is a pydantic model with a `seal` field that is
  still empty: the seal goes into that field (update id bound; one is chosen here if the call
  did not name one, as the SDK would have);
- a signal named in `command_seal.SEALED_SIGNALS`: the seal is appended as one more argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Interceptor,
    OutboundInterceptor,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    StartWorkflowUpdateWithStartInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)

from domain import command_seal
from domain.command_seal import Keyring, Target
from settings import Settings
from workflows.codec import load_keys


def seal_keyring(settings: Settings) -> Keyring:
    """The seal keys of `settings`: derived from the payload-encryption keys, which are loaded
    (or the key file created) also when encryption is switched off."""
    return Keyring.derive(*load_keys(settings))


KeySource = Keyring | Callable[[], Keyring | None]


class SealingInterceptor(Interceptor):
    """`keys` is the keyring, or (tests) a function returning the keyring in force."""

    def __init__(self, keys: KeySource) -> None:
        self._keys = keys

    def keyring(self) -> Keyring | None:
        return self._keys if isinstance(self._keys, Keyring) else self._keys()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Sealing(next, self)


def _sealable(args: Sequence[Any]) -> bool:
    return (
        len(args) == 1
        and isinstance(args[0], BaseModel)
        and "seal" in type(args[0]).model_fields
        and args[0].seal is None  # type: ignore[attr-defined]
    )


def _sealed_model(keyring: Keyring, target: Target, model: BaseModel) -> BaseModel:
    return model.model_copy(update={"seal": command_seal.seal(keyring, target, model)})


def _sealed_signal_args(keyring: Keyring, workflow_id: str, name: str | None,
                        args: Sequence[Any]) -> Sequence[Any]:
    if name not in command_seal.SEALED_SIGNALS or len(args) != 1:
        return args
    target = Target("signal", workflow_id, name)
    return [*args, command_seal.seal(keyring, target, list(args))]


class _Sealing(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, owner: SealingInterceptor) -> None:
        super().__init__(next)
        self._owner = owner

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        keyring = self._owner.keyring()
        if keyring is not None:
            if _sealable(input.args):
                target = Target("start", input.id, input.workflow)
                input.args = [_sealed_model(keyring, target, input.args[0])]
            if input.start_signal:
                input.start_signal_args = _sealed_signal_args(
                    keyring, input.id, input.start_signal, input.start_signal_args)
        return await super().start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        keyring = self._owner.keyring()
        if keyring is not None:
            input.args = _sealed_signal_args(keyring, input.id, input.signal, input.args)
        await super().signal_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        keyring = self._owner.keyring()
        if keyring is not None and _sealable(input.args):
            input.update_id = input.update_id or str(uuid.uuid4())
            target = Target("update", input.id, input.update, input.update_id)
            input.args = [_sealed_model(keyring, target, input.args[0])]
        return await super().start_workflow_update(input)

    async def start_update_with_start_workflow(
        self, input: StartWorkflowUpdateWithStartInput
    ) -> WorkflowUpdateHandle[Any]:
        keyring = self._owner.keyring()
        if keyring is not None:
            start, update = input.start_workflow_input, input.update_workflow_input
            if _sealable(start.args):
                target = Target("start", start.id, start.workflow)
                start.args = [_sealed_model(keyring, target, start.args[0])]
            if _sealable(update.args):
                update.update_id = update.update_id or str(uuid.uuid4())
                target = Target("update", start.id, update.update, update.update_id)
                update.args = [_sealed_model(keyring, target, update.args[0])]
        return await super().start_update_with_start_workflow(input)
