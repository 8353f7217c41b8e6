"""Command seals: the workers obey only what OneFamily's own code sent (DESIGN §9, "The engine
is no back door").

Anyone who reaches the Temporal frontend can send an Update, a Signal or a workflow start with
any payload (plaintext payloads pass the codec, for cases written before encryption). So every
client of ours (`workflows.client.connect`, via `workflows.sealing.SealingInterceptor`) seals
what it sends, and the workflows check the seal before they act:

    seal = "v1.<key id>.<hex HMAC-SHA256>" over
           ["onefamily-command-seal-v1", kind, workflow id, name, update id] \\n canonical JSON

- `kind` is "update", "start" or "signal"; `name` the update, workflow type or signal name;
  the update id is the one Temporal deduplicates on (empty for starts and signals). A sealed
  command therefore cannot be replayed against another case, as another command, or (within a
  run) twice.
- the canonical JSON is the command input without its seal, fields at their default left out,
  keys sorted: what the worker decodes gives the same bytes as what the API encoded, also when
  a newer worker knows a field (with a default) that an older API did not send.
- the HMAC keys are derived from the payload-encryption keys (`workflows.codec.load_keys`:
  current and previous), domain-separated: sha256(b"onefamily-command-seal\\0" + key). They
  exist whether encryption is on or off, and a key kept to read old history also verifies the
  seals in that history.

The module is pure apart from one process-wide keyring that the worker installs at start
(`install`, from `worker.build_worker`): workflow code cannot do I/O, and `domain` is passed
through the sandbox, so the workflows read the keys from here. Cost: one canonical dump and one
HMAC per command (tens of microseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

VERSION = "v1"
KEY_LABEL = b"onefamily-command-seal\0"
MAC_LABEL = "onefamily-command-seal-v1"
# The signals that change what a workflow does; their seal travels as one extra argument.
SEALED_SIGNALS = frozenset({"item_changed"})
FORGED = "This command was not sent by OneFamily's API; refused."


class Target(NamedTuple):
    """What a seal is bound to besides the input itself."""

    kind: str  # "update" | "start" | "signal"
    workflow_id: str
    name: str
    update_id: str = ""


@dataclass(frozen=True)
class Keyring:
    current: str
    keys: Mapping[str, bytes]  # key id -> HMAC key (already derived)

    @classmethod
    def derive(cls, current: str, material: Mapping[str, bytes]) -> Keyring:
        """From the payload-encryption keys (id -> 32 bytes), as `load_keys` returns them."""
        if current not in material:
            raise ValueError(f"current key id {current!r} is not among the keys")
        return cls(current, {kid: hashlib.sha256(KEY_LABEL + key).digest() for kid, key in material.items()})

    def __repr__(self) -> str:  # never print keys
        return f"Keyring(current={self.current!r}, ids={sorted(self.keys)!r})"


def canonical(payload: Any) -> bytes:
    """The bytes a seal covers: the input without its `seal`, defaults left out, keys sorted."""
    return json.dumps(_data(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _data(payload: Any) -> Any:
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json", exclude={"seal"}, exclude_defaults=True)
    if isinstance(payload, list | tuple):  # a signal's arguments
        return [_data(p) for p in payload]
    return to_jsonable_python(payload)


def _mac(key: bytes, target: Target, payload: Any) -> str:
    # The target as a JSON array: unambiguous whatever characters the ids hold.
    head = json.dumps([MAC_LABEL, *target], ensure_ascii=False).encode()
    return hmac.new(key, head + b"\n" + canonical(payload), hashlib.sha256).hexdigest()


def seal(keyring: Keyring, target: Target, payload: Any) -> str:
    return f"{VERSION}.{keyring.current}.{_mac(keyring.keys[keyring.current], target, payload)}"


def verify(keyring: Keyring, target: Target, payload: Any, value: str | None) -> bool:
    """True only for a seal made by one of our keys over exactly this target and input."""
    if not isinstance(value, str):
        return False
    version, _, rest = value.partition(".")
    key_id, _, mac = rest.rpartition(".")
    key = keyring.keys.get(key_id)
    if version != VERSION or key is None or not mac:
        return False
    try:
        expected = _mac(key, target, payload)
    except (TypeError, ValueError):  # not JSON-able: nothing we sent
        return False
    return hmac.compare_digest(expected, mac)


# ---------------------------------------------------------------- the worker's keyring

_installed: Keyring | None = None


def install(keyring: Keyring | None) -> None:
    """Set the keys the workflows of this process verify with (worker start, tests)."""
    global _installed
    _installed = keyring


def installed() -> Keyring | None:
    return _installed


def admitted(target: Target, payload: Any, value: str | None, *, replaying: bool) -> bool:
    """The workflows' check. Without a keyring a live worker refuses everything (fail closed);
    only replay tooling (`Replayer` in CI) has none, and there the recorded history already
    tells what was accepted."""
    keyring = _installed
    if keyring is None:
        return replaying
    return verify(keyring, target, payload, value)
