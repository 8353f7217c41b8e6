"""One policy object per country: every duration, list and legal reference is data.

Laws get renumbered and municipalities differ, so nothing here is code. A case records the
policy version it started with (`Policy.key`) and keeps it.
"""

from __future__ import annotations

from models.deadline_rules import DeadlineRules, NonWorkingDays
from models.outcomes import default_instruments
from models.policy import ClockRule, Policy

__all__ = ["DK", "SE", "ClockRule", "Policy", "current_policy", "policy_by_key"]


_DK_ICS = {
    "child_development": [
        "health",
        "daycare_school_learning",
        "development_behaviour",
        "leisure_friendships",
    ],
    "parenting_capacity": [
        "safe_caring_environment",
        "stimulation_guidance",
        "support_for_relationships",
    ],
    "family_and_network": [
        "family_relations_background",
        "housing_employment_finances",
        "social_network",
    ],
}

# The deadline kinds whose time limit is set by statute and counted in days or months: the last
# day counts whole and moves off a non-working day (docs/deadlines.md). Working-day counts
# (first contact) always end on a working day; hour clocks (concern triage) never move; the
# method's own cadences (family approval, committee, status meetings, check-ins) keep their
# clock time -- a municipality may list them too, by policy override.
_STATUTORY_KINDS = ["assessment", "plan", "first_followup", "followup", "reporter_receipt"]

_DK_NON_WORKING = NonWorkingDays(
    weekdays=[5, 6],
    holiday_country="DK",
    holiday_categories=["public"],
    extra_fixed=["06-05", "12-24", "12-31"],
    legal_basis="Forældelsesloven § 27, stk. 2: lørdag, søndag, helligdag, grundlovsdag, "
                "juleaftensdag, nytårsaftensdag",
)

_SE_NON_WORKING = NonWorkingDays(
    weekdays=[5, 6],
    holiday_country="SE",
    # "de_facto": Midsummer Eve, Christmas Eve, New Year's Eve.
    holiday_categories=["public", "de_facto"],
    legal_basis="Lag (1930:173) om beräkning av lagstadgad tid 2 §: söndag eller annan allmän "
                "helgdag, lördag, midsommarafton, julafton, nyårsafton",
)

DK = Policy(
    country="DK",
    timezone="Europe/Copenhagen",
    default_language="da",
    legal_basis={
        "first_contact": "Én familie, én indgang: first contact within 5 working days",
        "concern_triage": "Barnets Lov §§ 136-137",
        "reporter_receipt": "Barnets Lov § 134",
        "pre_meeting_contact": "ICS method: the family meets the team prepared",
        "assessment": "Barnets Lov § 20, stk. 3 (formerly Serviceloven § 50, stk. 7)",
        "plan": "Barnets Lov § 91",
        "family_approval": "Én familie, én indgang: the plan is the family's plan",
        "first_followup": "Barnets Lov § 95 (formerly Serviceloven § 70)",
        "followup": "Barnets Lov § 95",
        "status_meeting": "Én familie, én indgang: status meetings by concern level",
        "family_checkin": "The family's contact preference",
        "committee_decision": "Visitation committee decision within 21 days",
        "consent_renewal": "Consent to share information (forvaltningsloven § 28; GDPR art. 7)",
    },
    ics_dimensions=_DK_ICS,
    non_working_days=_DK_NON_WORKING,
    deadline_rules=DeadlineRules(
        legal_basis="Forældelsesloven § 27: the last day counts whole; a last day that is not a "
                    "weekday moves to the following weekday",
        kinds=_STATUTORY_KINDS,
    ),
    # SDQ bands: the UK four-band cut-offs until a municipality configures Danish norms.
    outcome_instruments=default_instruments(),
)

SE = Policy(
    country="SE",
    timezone="Europe/Stockholm",
    default_language="sv",
    first_contact_working_days=3,
    committee_only_paragraphs=["LVU § 2", "LVU § 3", "SoL 4 kap. 1 § placering"],
    child_age_band=(6, 15),
    assessment_extension_allowed=True,
    non_working_days=_SE_NON_WORKING,
    deadline_rules=DeadlineRules(
        legal_basis="Lag (1930:173) om beräkning av lagstadgad tid 1-2 §§: the last day counts "
                    "whole; a last day that is not a weekday moves to the next weekday",
        kinds=_STATUTORY_KINDS,
    ),
    legal_basis={
        "first_contact": "SIP: work starts without delay (HSL 16 kap. 4 §, SoL 2 kap. 7 §)",
        "concern_triage": "SoL 11 kap. 1 a §",
        "reporter_receipt": "SoL 14 kap. 1 c §",
        "pre_meeting_contact": "BBIC: the family meets the team prepared",
        "assessment": "SoL 11 kap. 2 §",
        "plan": "SoL 2 kap. 7 § (SIP)",
        "family_approval": "SIP: the plan is made with the family",
        "first_followup": "SIP follow-up",
        "followup": "SIP follow-up",
        "status_meeting": "SIP follow-up meetings by concern level",
        "family_checkin": "The family's contact preference",
        "committee_decision": "Nämnd decision within 21 days",
        "consent_renewal": "Consent to share information (OSL 12 kap. 2 §; GDPR art. 7)",
    },
    ics_dimensions={
        "child_development": ["health", "education", "emotional_behavioural_development",
                              "identity", "family_social_relationships", "social_presentation",
                              "self_care_skills"],
        "parenting_capacity": ["basic_care", "ensuring_safety", "emotional_warmth",
                               "stimulation", "guidance_boundaries", "stability"],
        "family_and_network": ["family_history", "wider_family", "housing", "employment",
                               "income", "family_social_integration", "community_resources"],
    },
    # SDQ bands: the UK four-band cut-offs until a municipality configures Swedish norms.
    outcome_instruments=default_instruments(),
)

POLICIES: dict[str, Policy] = {p.key: p for p in (DK, SE)}
CURRENT: dict[str, Policy] = {"DK": DK, "SE": SE}


def current_policy(country: str) -> Policy:
    try:
        return CURRENT[country.upper()]
    except KeyError:
        raise ValueError(f"No policy for country {country!r}; known: DK, SE") from None


def policy_by_key(key: str) -> Policy:
    return POLICIES[key]
