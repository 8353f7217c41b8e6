"""domain/policy.py: one policy object per country, all of it data."""

import pytest

from domain.policy import CURRENT, DK, POLICIES, SE, Policy, current_policy, policy_by_key
from models.case import DeadlineKind


def test_dk_and_se_exist_with_their_own_zone_and_language() -> None:
    assert (DK.country, DK.timezone, DK.default_language) == ("DK", "Europe/Copenhagen", "da")
    assert (SE.country, SE.timezone, SE.default_language) == ("SE", "Europe/Stockholm", "sv")
    assert DK.timezone != SE.timezone
    assert DK.default_language != SE.default_language


def test_country_defaults_differ_where_the_design_says() -> None:
    assert DK.first_contact_working_days == 5
    assert SE.first_contact_working_days == 3  # Sweden: SIP work starts without delay
    assert DK.child_age_band == (0, 17)
    assert SE.child_age_band == (6, 15)  # the Linköping team's band
    assert DK.committee_only_paragraphs == ["BL § 47"]
    assert DK.team_funding_limit == 10_000
    assert DK.caseload_cap == 8
    assert DK.assessment_months == 4
    assert DK.status_meeting_weeks == {"high": 2, "medium": 4, "low": 8}


@pytest.mark.parametrize("policy", [DK, SE], ids=["DK", "SE"])
def test_every_deadline_kind_has_a_legal_basis(policy: Policy) -> None:
    missing = [k.value for k in DeadlineKind if not policy.legal_basis.get(k.value)]
    assert missing == []


@pytest.mark.parametrize("policy", [DK, SE], ids=["DK", "SE"])
def test_ics_dimensions_cover_the_three_sides_of_the_triangle(policy: Policy) -> None:
    assert set(policy.ics_dimensions) == {"child_development", "parenting_capacity", "family_and_network"}
    assert all(policy.ics_dimensions.values())


def test_dk_uses_the_revised_danish_ics_list() -> None:
    assert DK.ics_dimensions["child_development"] == [
        "health",
        "daycare_school_learning",
        "development_behaviour",
        "leisure_friendships",
    ]
    assert len(DK.ics_dimensions["parenting_capacity"]) == 3
    assert len(DK.ics_dimensions["family_and_network"]) == 3


@pytest.mark.parametrize("country", ["DK", "dk", "Dk"])
def test_current_policy_is_case_insensitive(country: str) -> None:
    assert current_policy(country) is DK


def test_current_policy_for_se() -> None:
    assert current_policy("se") is SE


@pytest.mark.parametrize("country", ["xx", "", "NO", "DK-v1"])
def test_current_policy_unknown_country_raises_value_error(country: str) -> None:
    with pytest.raises(ValueError, match="No policy for country"):
        current_policy(country)


@pytest.mark.parametrize("policy", [DK, SE], ids=["DK", "SE"])
def test_policy_by_key_round_trips_the_key(policy: Policy) -> None:
    assert policy.key == f"{policy.country}-v{policy.version}"
    assert policy_by_key(policy.key) is policy
    assert policy_by_key(policy.key).key == policy.key


def test_policy_keys_are_versioned_and_distinct() -> None:
    assert DK.key == "DK-v1"
    assert SE.key == "SE-v1"
    assert set(POLICIES) == {"DK-v1", "SE-v1"}
    assert all(POLICIES[p.key] is p for p in CURRENT.values())


def test_policy_by_key_unknown_key_raises() -> None:
    with pytest.raises(KeyError):
        policy_by_key("DK-v99")


def test_policy_is_plain_data_that_round_trips_through_json() -> None:
    """A case keeps its policy version; the policy must survive serialisation unchanged."""
    for policy in (DK, SE):
        again = Policy.model_validate_json(policy.model_dump_json())
        assert again == policy
        assert again.key == policy.key
