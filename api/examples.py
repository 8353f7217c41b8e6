"""OpenAPI examples: the DESIGN §5 bodies, so /docs shows a working request."""

CASE_CREATE = {
    "application": {
        "summary": "An application from a school",
        "value": {
            "referral": {"source": "school", "kind": "application",
                         "received_at": "2026-11-20T09:00:00Z",
                         "reason": "Needs coordinated support at home and school"},
            "family": {"name": "Family Jensen", "language": "da",
                       "members": [{"name": "Emil", "role": "child", "birth_date": "2015-03-02",
                                    "diagnoses": ["ADHD"]},
                                   {"name": "Mette", "role": "parent", "birth_date": "1985-01-10",
                                    "phone": "+4521111111"}]},
            "existing_contacts": [{"department": "adult_services", "caseworker": "Ole"}],
            "consent": {"coordinated_handling": True},
            "contact_preference": "normal",
        },
    }
}

ASSESSMENT = {
    "ics": {
        "summary": "ICS triangle",
        "value": {
            "ics": {"child_development": [{"dimension": "health", "strengths": "Good sleep",
                                           "concerns": "Stomach aches", "family_view": "Worried"}],
                    "parenting_capacity": [{"dimension": "safe_caring_environment",
                                            "strengths": "Warm", "concerns": "Tired"}],
                    "family_and_network": [{"dimension": "housing_employment_finances",
                                            "strengths": "Stable housing", "concerns": "Debt"}]},
            "child_views": "Emil wants to go to school without stomach aches.",
            "investigations": ["child_investigation"],
        },
    }
}

PLAN = {
    "plan": {
        "summary": "A joint plan",
        "value": {
            "family_goals": ["Emil goes to school every day"],
            "goals": [{"id": "g1", "text": "Emil attends school 5 days a week by March",
                       "owner": "anna"}],
            "actions": [{"id": "a1", "goal_id": "g1", "text": "School adapts the timetable",
                         "owner": "school", "due": "2027-01-15"}],
            "services": [{"name": "Family therapy", "paragraph": "BL § 32",
                          "department": "children_disability", "monthly_cost": 12000,
                          "funding": [{"department": "children_disability", "share": 0.5},
                                      {"department": "adult_services", "share": 0.5}]}],
        },
    }
}
