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

from pydantic import BaseModel

_FULL: dict[type, set[str]] = {}


def class_fields_set(cls: type[BaseModel]) -> set[str]:
    """The one set of all field names every instance of `cls` gets."""
    names = _FULL.get(cls)
    if names is None:
        names = _FULL[cls] = set(cls.model_fields)
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
