"""The performance pass's changes on a command's hot path (issue 13 point 7, docs/performance.md):
equal policies shared per worker process, the read-model write that skips what is already
there, and the facts of a case read without its sealed document. Pure / SQLite, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import event, select
from sqlmodel import Session

from api.scope import load_facts
from domain import shared_policy
from domain.lifecycle import execute, new_case
from domain.policy import current_policy
from models.case import CaseState
from models.commands import CommandInput
from models.db import get_engine
from models.policy import Policy
from models.projection import case_from_document, open_case_ids_for_person, write_case
from models.tables import CasePersonRow, CaseRow
from settings import Settings
from tests.factories import case_create, ctx, manager

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def test_equal_policies_share_one_object_and_others_do_not() -> None:
    # A version no other test uses: the cache is process-wide, and another test's case may
    # already have shared the national policy.
    first = current_policy("DK").model_copy(update={"version": 987_654})
    copy = Policy.model_validate_json(first.model_dump_json())  # as the data converter decodes
    assert copy is not first and copy == first
    assert shared_policy.shared(first) is first
    assert shared_policy.shared(copy) is first
    other = first.model_copy(update={"version": first.version + 1000})
    assert shared_policy.shared(other) is other


def test_a_document_reads_back_as_its_case_its_policy_validated_once_per_content() -> None:
    import json

    state = _case()
    document = json.loads(state.model_dump_json())
    first = case_from_document(json.loads(state.model_dump_json()))
    again = case_from_document(document)
    assert first == again == CaseState.model_validate(document)
    assert again.policy is first.policy  # the same content: the policy validated before
    # A running case's own copy under the same key, but another content (an older default):
    # its own policy, not the one cached under the key.
    changed = {**document, "policy": {**document["policy"], "caseload_cap": 99}}
    assert changed["policy_key"] == document["policy_key"]
    own = case_from_document(changed)
    assert own.policy.caseload_cap == 99 and own == CaseState.model_validate(changed)
    assert case_from_document(document).policy.caseload_cap == state.policy.caseload_cap


def _case() -> CaseState:
    return new_case("3f1c6a52-0000-4000-8000-000000000001", case_create(), ctx(manager()), [])


def _statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement.split()[0].upper()))
    return seen


def test_write_case_skips_a_version_already_stored_and_keeps_person_rows(settings: Settings) -> None:
    engine = get_engine(settings.db_url)
    state = _case()
    with Session(engine) as session:
        assert write_case(session, state, NOW)
        session.commit()
    member = state.family.members[0]
    with Session(engine) as session:
        assert open_case_ids_for_person(session, member.name, member.birth_date) == [state.id]
        keys = sorted(session.exec(select(CasePersonRow.id, CasePersonRow.person_key)).all())

    seen = _statements(engine)
    with Session(engine) as session:  # the same version again (the activity after the API)
        assert not write_case(session, state, NOW)
        session.commit()
    assert seen == ["SELECT"]  # one indexed SELECT, nothing built, sealed or written

    boss = manager()
    newer = execute(state.model_copy(deep=True), "assign_coordinator",
                    CommandInput(actor=boss, body={"coordinator_id": "anna"}), ctx(boss))
    assert newer.version > state.version
    seen.clear()
    with Session(engine) as session:
        assert write_case(session, newer, NOW)
        session.commit()
        row = session.get(CaseRow, state.id)
        assert row.version == newer.version and CaseState.model_validate(row.document) == newer
        # The family did not change: its person rows stay as they were (no delete + insert).
        assert sorted(session.exec(select(CasePersonRow.id, CasePersonRow.person_key)).all()) == keys
    assert "DELETE" not in seen and seen.count("INSERT") == 0

    with Session(engine) as session:  # an older version never wins
        assert not write_case(session, state, NOW)
        assert session.get(CaseRow, state.id).version == newer.version


def test_the_facts_of_a_case_leave_its_document_unread(settings: Settings) -> None:
    engine = get_engine(settings.db_url)
    state = _case()
    with Session(engine) as session:
        write_case(session, state, NOW)
        session.commit()
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement))
    with Session(engine) as session:
        facts = load_facts(session, state.id)
    assert facts is not None and facts.id == state.id and facts.unit == (state.unit or facts.unit)
    case_reads = [s for s in seen if "FROM cases" in s]
    assert case_reads and all("cases.document" not in s for s in case_reads)
