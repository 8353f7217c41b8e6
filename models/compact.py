"""Less memory per cached case: one "fields set" per model class (issue 13 point 7).

Every pydantic model instance carries `__pydantic_fields_set__`, a `set` of the names given at
construction: 216 bytes for up to four names, 700-2,300 for more. A new case's state and input
hold some twenty models, so their sets alone were ~10 KiB of every cached case, more than the
rest of its fields together.

Nothing here reads those sets (no `exclude_unset`, no `model_fields_set`; `exclude_defaults`,
which domain.command_seal uses, compares values, not the set). So every instance of a class
gets the class's one set of ALL its field names: serialisation and equality do not look at
it, and the only way pydantic changes it in place, `set.add(name)` on assignment of a field,
adds a name that is already there. Copies (`model_copy`, deep or not) copy the set as pydantic
always does, so a copy never changes the shared one.
"""

from __future__ import annotations

import io
import pickle
import threading
import zlib
from dataclasses import dataclass

from pydantic import BaseModel

_FULL: dict[type, set[str]] = {}
# The shared sets by index, for `freeze`: append-only, so an index names the same set for the
# life of the process. Workflow tasks run on several threads: sets are made under the lock.
_SETS: list[set[str]] = []
_SET_INDEX: dict[int, int] = {}
_making = threading.Lock()


def class_fields_set(cls: type[BaseModel]) -> set[str]:
    """The one set of all field names every instance of `cls` gets."""
    names = _FULL.get(cls)
    if names is None:
        with _making:
            names = _FULL.get(cls)
            if names is None:
                names = set(cls.model_fields)
                _SET_INDEX[id(names)] = len(_SETS)
                _SETS.append(names)
                _FULL[cls] = names
    return names


def share_fields_sets(root: object, skip: tuple[type, ...] = ()) -> None:
    """Give every model reachable from `root` (through fields, lists, tuples and dict values)
    its class's shared fields set. Instances of `skip` are not entered (shared objects such as
    the policy, already one per process)."""
    stack = [root]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, BaseModel):
            if id(obj) in seen or isinstance(obj, skip):
                continue
            seen.add(id(obj))
            full = class_fields_set(type(obj))
            if obj.__pydantic_fields_set__ is not full:
                object.__setattr__(obj, "__pydantic_fields_set__", full)
            stack.extend(v for v in obj.__dict__.values() if not isinstance(v, _LEAF))
        elif isinstance(obj, (list, tuple)):
            stack.extend(v for v in obj if not isinstance(v, _LEAF))
        elif isinstance(obj, dict):
            stack.extend(v for v in obj.values() if not isinstance(v, _LEAF))


_LEAF = (str, int, float, bool, type(None), bytes)


# ---------------------------------------------------------------- an idle case's state, frozen
#
# An idle cached case's state is ~11 KB of Python objects (model dicts, lists, datetimes) for a
# new case, more as it grows. While the case waits it is kept as a compressed pickle (~1.5 KB
# for a new case), and thawed at the first touch. Pickle, not JSON: it gives back the very
# same values (a ZoneInfo stays a ZoneInfo, an enum member the same member) without validating
# again, so a thawed state behaves exactly as the frozen one. The policy and the class fields
# sets are not copied into the bytes: they are passed by reference (the shared objects).

_POLICY = "policy"


class _Freezer(pickle.Pickler):
    def __init__(self, file: io.BytesIO, policy: object) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._policy = policy

    def persistent_id(self, obj: object) -> object:
        if obj is self._policy:
            return _POLICY
        if type(obj) is set:
            return _SET_INDEX.get(id(obj))  # a shared fields set: by its index
        return None


class _Thawer(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, policy: object) -> None:
        super().__init__(file)
        self._policy = policy

    def persistent_load(self, pid: object) -> object:
        if pid == _POLICY:
            return self._policy
        return _SETS[pid]  # type: ignore[index]


@dataclass(frozen=True, slots=True)
class Frozen:
    """A model frozen by `freeze`: its bytes and the shared policy it refers to."""

    data: bytes
    policy: object


def freeze(model: BaseModel, policy: object) -> Frozen:
    """`model` as compressed bytes; `policy` (an object inside it, shared) stays a reference."""
    share_fields_sets(model, skip=(type(policy),))
    buffer = io.BytesIO()
    _Freezer(buffer, policy).dump(model)
    return Frozen(zlib.compress(buffer.getvalue(), 1), policy)


def thaw(frozen: Frozen) -> BaseModel:
    return _Thawer(io.BytesIO(zlib.decompress(frozen.data)), frozen.policy).load()
