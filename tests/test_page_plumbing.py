"""The pages' plumbing without a server: form fields → the API's body, the language a page
speaks, a stale page's command refused whole, family member ids."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from api.pages import i18n
from api.pages.common import field_errors, unflatten
from domain.lifecycle import STALE, Refusal, execute, new_case, working_copy
from models.case import Family, PlanDraft, RecordContact
from models.commands import CommandInput
from tests.factories import case_create, coordinator, ctx

ANNA = coordinator("anna")


def test_form_fields_named_by_json_path_become_the_body() -> None:
    body = unflatten({
        "csrf_token": "x", "idempotency_key": "k", "version": "3", "loaded_at": "…",
        "family_goals.0": " Emil goes to school ", "family_goals.1": "",
        "goals.0.id": "g1", "goals.0.text": "School every day",
        "goals.1.id": "", "goals.1.text": "",  # an empty row: dropped
        "services.0.name": "Support", "services.0.funding.0.department": "school",
        "services.0.funding.0.share": "1",
        "_more": "1",
    }, "Europe/Copenhagen")
    assert body == {"family_goals": ["Emil goes to school"],
                    "goals": [{"id": "g1", "text": "School every day"}],
                    "services": [{"name": "Support", "funding": [{"department": "school", "share": "1"}]}]}


def test_a_local_datetime_gets_the_municipality_s_zone_summer_and_winter() -> None:
    winter = unflatten({"at": "2026-12-01T10:00"}, "Europe/Copenhagen")["at"]
    summer = unflatten({"at": "2026-07-01T10:00"}, "Europe/Stockholm")["at"]
    assert datetime.fromisoformat(winter).utcoffset().total_seconds() == 3600
    assert datetime.fromisoformat(summer).utcoffset().total_seconds() == 7200


def test_field_errors_are_sentences_in_the_page_language_by_field_name() -> None:
    with pytest.raises(ValidationError) as caught:
        PlanDraft.model_validate(unflatten({"goals.0.id": "g1"}, "Europe/Copenhagen"))
    errors = field_errors(caught.value, "da")
    assert errors["family_goals"] == i18n.translate("da", "error.missing")
    assert errors["goals.0.text"] == "Udfyld feltet."
    with pytest.raises(ValidationError) as caught:
        RecordContact.model_validate({"kind": "nonsense", "at": "2026-12-01T10:00:00+01:00"})
    assert field_errors(caught.value, "sv") == {"kind": "Välj ett av alternativen."}


@pytest.mark.parametrize(("header", "expected"), [
    ("sv-SE,sv;q=0.9,en;q=0.8", "sv"), ("en-GB,en;q=0.9", "en"), ("de-DE,da;q=0.5", "da"),
    ("fr;q=1, sv;q=0.1, en;q=0.5", "en"), ("nb-NO", "da"), ("", None), ("*", None),
    ("sv;q=0", None), ("da;q=nonsense", None),
])
def test_accept_language(header: str, expected: str | None) -> None:
    assert i18n.from_accept_language(header) == expected


def test_the_chosen_language_comes_first_then_the_cookie_the_browser_and_the_country() -> None:
    assert i18n.choose("en", "sv", "da", "DK") == "en"
    assert i18n.choose(None, "sv", "da", "DK") == "sv"
    assert i18n.choose(None, "xx", "en-US", "DK") == "en"
    assert i18n.choose(None, None, None, "SE") == "sv"
    assert i18n.choose(None, None, None, "DK") == "da"


def test_dates_in_the_page_language_and_the_municipality_s_time_zone() -> None:
    at = "2026-12-01T23:30:00Z"  # already 2 December in Copenhagen
    assert i18n.format_datetime("da", at, "Europe/Copenhagen") == "2. december 2026 kl. 00:30"
    assert i18n.format_date("sv", at, "Europe/Stockholm") == "2 december 2026"
    assert i18n.format_date("en", "2026-06-05", "Europe/Copenhagen") == "5 June 2026"


def test_a_command_from_a_stale_page_is_refused_whole() -> None:
    state = new_case("case-1", case_create(), ctx(ANNA))
    state.coordinator_id = "anna"
    body = {"kind": "phone", "at": "2026-11-22T10:00:00+01:00", "notes": "called"}
    stale = CommandInput(actor=ANNA, body=body, expected_version=state.version + 1)
    candidate = working_copy(state)
    before = candidate.model_dump()
    with pytest.raises(Refusal) as caught:
        execute(candidate, "record_contact", stale, ctx(ANNA))
    assert caught.value.kind == "conflict" and caught.value.message == STALE
    assert candidate.model_dump() == before
    fresh = CommandInput(actor=ANNA, body=body, expected_version=state.version)
    assert execute(working_copy(state), "record_contact", fresh, ctx(ANNA)).version == state.version + 1


def test_family_members_get_stable_ids_that_are_never_reused() -> None:
    family = Family.model_validate({"name": "Berg", "members": [
        {"name": "Emil", "role": "child"}, {"id": "m1", "name": "Anna", "role": "parent"},
        {"name": "Ole", "role": "parent"}]})
    assert [m.id for m in family.members] == ["m2", "m1", "m3"]
    again = Family.model_validate(family.model_dump())
    assert [m.id for m in again.members] == ["m2", "m1", "m3"]
    with pytest.raises(ValidationError, match="same id"):
        Family.model_validate({"name": "Berg", "members": [
            {"id": "m1", "name": "Emil", "role": "child"}, {"id": "m1", "name": "A", "role": "parent"}]})


def test_an_error_in_a_row_after_empty_rows_names_the_row_as_typed() -> None:
    from models.case import FormTeam

    rows: dict[str, str] = {}
    values = {"members.0.staff_id": "ole", "members.0.discipline": "teacher",
              "members.0.department": "school",
              "members.3.staff_id": "sif", "members.3.department": "health"}  # rows 1, 2 left empty
    with pytest.raises(ValidationError) as caught:
        FormTeam.model_validate(unflatten(values, "Europe/Copenhagen", rows))
    assert rows == {"members.0": "members.0", "members.1": "members.3"}
    assert field_errors(caught.value, "en", rows) == {"members.3.discipline": "Fill in this field."}


def test_the_family_reads_their_coordinator_s_name_as_written() -> None:
    from domain.family_view import StaffInfo, who_has_the_ball
    from domain.lifecycle import execute
    from tests.factories import NOW, manager

    state = new_case("case-1", case_create(), ctx(ANNA))
    boss = manager("maria")
    state = execute(working_copy(state), "assign_coordinator",
                    CommandInput(actor=boss, body={"coordinator_id": "anna"}), ctx(boss))
    ball = who_has_the_ball(state, NOW, {"anna": StaffInfo("anna", "Anna Berg")}, lang="da")
    assert "Anna Berg" in ball["text"] and "anna berg" not in ball["text"]
