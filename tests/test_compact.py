"""models.compact: one fields set per model class, and nothing a case does can tell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from domain.lifecycle import Ctx, execute, new_case, working_copy
from domain.policy import current_policy
from models.case import Actor, CaseCreate, CaseState
from models.commands import CommandInput
from models.compact import class_fields_set, freeze, share_fields_sets, thaw
from models.policy import Policy
from tests.factories import case_create_body

ADMIN = Actor(id="admin", roles=["admin"])
MIA = Actor(id="mia", roles=["manager"])


NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)


def _state() -> CaseState:
    body = CaseCreate.model_validate(case_create_body(
        received_at=(NOW - timedelta(hours=1)).isoformat()))
    return new_case("c1", body, Ctx(actor=ADMIN, now=NOW, policy=current_policy("DK")), [],
                    consent_rules=True)


def _models(root: object) -> list[BaseModel]:
    found, stack, seen = [], [root], set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, BaseModel) and id(obj) not in seen and not isinstance(obj, Policy):
            seen.add(id(obj))
            found.append(obj)
            stack.extend(obj.__dict__.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    return found


def test_every_model_of_two_cases_shares_its_class_set() -> None:
    a, b = _state(), _state()
    assert a.family.members[0].__pydantic_fields_set__ is not b.family.members[0].__pydantic_fields_set__
    share_fields_sets(a, skip=(Policy,))
    share_fields_sets(b, skip=(Policy,))
    models = _models(a) + _models(b)
    assert len(models) > 10
    by_class: dict[type, set[int]] = {}
    for m in models:
        by_class.setdefault(type(m), set()).add(id(m.__pydantic_fields_set__))
        assert m.__pydantic_fields_set__ == set(type(m).model_fields)
    assert all(len(ids) == 1 for ids in by_class.values())


def test_shared_sets_change_nothing_a_case_shows() -> None:
    state = _state()
    before = state.model_dump_json()
    copy = state.model_copy(deep=True)
    share_fields_sets(state, skip=(Policy,))
    assert state.model_dump_json() == before
    assert state == copy
    assert CaseState.model_validate_json(state.model_dump_json()) == state


def test_assignment_and_copies_leave_the_shared_set_as_it_was() -> None:
    state = _state()
    share_fields_sets(state, skip=(Policy,))
    shared = state.__pydantic_fields_set__
    names = set(shared)
    state.version += 1  # pydantic adds the name to the set: it is there already
    copied = state.model_copy(update={"coordinator_id": "c1"})
    deep = working_copy(state)
    assert shared == names and state.__pydantic_fields_set__ is shared
    assert copied.__pydantic_fields_set__ is not shared
    assert deep.__pydantic_fields_set__ is not shared


def test_a_command_on_a_shared_state_gives_the_same_case() -> None:
    plain, shared = _state(), _state()
    share_fields_sets(shared, skip=(Policy,))
    inp = CommandInput(actor=MIA, body={"coordinator_id": "c1"})
    at = datetime(2026, 12, 1, 10, tzinfo=UTC)
    results = []
    for state in (plain, shared):
        candidate = working_copy(state)
        execute(candidate, "assign_coordinator", inp, Ctx(actor=MIA, now=at, policy=state.policy))
        results.append(candidate.model_dump_json())
    assert results[0] == results[1]


def test_fifty_cases_keep_one_set_per_class() -> None:
    states = [_state() for _ in range(50)]
    models = [m for s in states for m in _models(s)]
    distinct = len({id(m.__pydantic_fields_set__) for m in models})
    assert distinct >= len(models) // 2  # about one set per model instance
    for s in states:
        share_fields_sets(s, skip=(Policy,))
    assert len({id(m.__pydantic_fields_set__) for m in models}) == len({type(m) for m in models})


def test_a_frozen_state_thaws_to_the_same_case() -> None:
    """Value for value (a deadline's ZoneInfo stays a ZoneInfo, an enum the same member), the
    policy the same shared object, the fields sets the shared ones, and the thawed state is a
    copy: changing it leaves the frozen bytes as they were."""
    state = _state()
    inp = CommandInput(actor=MIA, body={"coordinator_id": "c1"})
    execute(state, "assign_coordinator", inp, Ctx(actor=MIA, now=NOW, policy=state.policy))
    frozen = freeze(state, state.policy)
    assert len(frozen.data) < len(state.model_dump_json(exclude={"policy"}))
    thawed = thaw(frozen)
    assert thawed == state and thawed is not state
    assert thawed.model_dump_json() == state.model_dump_json()
    assert thawed.policy is state.policy
    zones = [(d.due_at.tzinfo, t.due_at.tzinfo) for d, t in zip(state.deadlines, thawed.deadlines,
                                                               strict=True)]
    assert zones and all(type(a) is type(b) and a == b for a, b in zones)
    assert thawed.stage is state.stage
    assert all(m.__pydantic_fields_set__ is class_fields_set(type(m)) for m in _models(thawed))
    thawed.version += 5
    assert thaw(frozen).version == state.version
