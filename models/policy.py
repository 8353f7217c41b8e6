"""The shape of a policy: every duration, list and legal reference is data (DESIGN §3.9).

Laws get renumbered and municipalities differ, so nothing here is code. A case keeps the policy
it started with (a copy travels in its state) and moves to a newer one only by a recorded
decision at a status meeting.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from models.deadline_rules import DeadlineRules, NonWorkingDays
from models.outcomes import Instrument, default_instruments


class ClockRule(BaseModel):
    """How one kind of deadline reminds and escalates."""

    # Reminders to the deadline's owner, this many days before it is due.
    remind_before_days: list[int] = []
    # Who is told once it is overdue, one step per interval: the ladder climbs by itself.
    ladder: list[str] = ["coordinator", "manager"]
    ladder_interval_days: int = 3
    # Clocks that stop while the case waits for the family (recorded pause and resume).
    pauses_for_family: bool = False


DEFAULT_CLOCKS: dict[str, ClockRule] = {
    "first_contact": ClockRule(remind_before_days=[2], ladder=["coordinator", "manager"],
                               ladder_interval_days=2),
    "concern_triage": ClockRule(ladder=["coordinator", "manager"], ladder_interval_days=1),
    "reporter_receipt": ClockRule(remind_before_days=[2], ladder=["coordinator", "manager"]),
    "pre_meeting_contact": ClockRule(remind_before_days=[3], ladder=["coordinator"],
                                     pauses_for_family=True),
    # The 3-month reminder of the 4-month assessment is computed from received_at.
    "assessment": ClockRule(remind_before_days=[14], ladder=["coordinator", "manager", "committee"],
                            ladder_interval_days=7),
    "plan": ClockRule(remind_before_days=[14], ladder=["coordinator", "manager"],
                      ladder_interval_days=7, pauses_for_family=True),
    "family_approval": ClockRule(remind_before_days=[3], ladder=["coordinator"],
                                 pauses_for_family=True),
    "first_followup": ClockRule(remind_before_days=[14], ladder=["coordinator", "manager"],
                                ladder_interval_days=7),
    "followup": ClockRule(remind_before_days=[14], ladder=["coordinator", "manager"],
                          ladder_interval_days=7),
    "status_meeting": ClockRule(remind_before_days=[5], ladder=["coordinator", "manager"],
                                ladder_interval_days=7, pauses_for_family=True),
    "family_checkin": ClockRule(remind_before_days=[2], ladder=["coordinator"],
                                pauses_for_family=True),
    "committee_decision": ClockRule(remind_before_days=[7], ladder=["committee", "manager"],
                                    ladder_interval_days=2),
    # A consent's expiry (DESIGN §11): the family is reminded `Policy.consent_renewal_days`
    # before; at the due time the consent expires and the coordinator is told.
    "consent_renewal": ClockRule(ladder=["coordinator"]),
}


class Policy(BaseModel):
    country: str
    version: int = 1
    timezone: str
    default_language: str
    caseload_cap: int = 8
    first_contact_working_days: int = 5
    concern_triage_hours: int = 24
    reporter_receipt_days: int = 6
    assessment_months: int = 4
    assessment_reminder_months: int = 3
    plan_months: int = 3
    first_followup_months: int = 3
    followup_months: int = 6
    committee_decision_days: int = 21
    family_approval_days: int = 14
    # The visitation committee meets weekly: weekday (0 = Monday) and local time.
    committee_weekday: int = 1
    committee_time: str = "13:00"
    pre_meeting_contact_window_days: int = 30
    status_meeting_weeks: dict[str, int] = Field(
        default_factory=lambda: {"high": 2, "medium": 4, "low": 8}
    )
    default_concern_level: str = "medium"
    team_funding_limit: float = 10_000
    committee_only_paragraphs: list[str] = Field(default_factory=lambda: ["BL § 47"])
    child_age_band: tuple[int, int] = (0, 17)
    min_sector_areas: int = 2
    legal_basis: dict[str, str] = Field(default_factory=dict)
    ics_dimensions: dict[str, list[str]] = Field(default_factory=dict)
    # Reminders and the escalation ladder per deadline kind (DESIGN §3.9).
    clocks: dict[str, ClockRule] = Field(default_factory=lambda: dict(DEFAULT_CLOCKS))
    # Days between the coordinator's check-ins with the family, by its contact preference.
    family_checkin_days: dict[str, int] = Field(
        default_factory=lambda: {"close": 14, "normal": 30, "space": 60}
    )
    # Sweden: the committee (nämnd) may extend the assessment deadline by a recorded decision.
    assessment_extension_allowed: bool = False
    # The family is asked to renew a consent this many days before it expires (DESIGN §11).
    consent_renewal_days: int = Field(30, ge=1, le=365)
    # The family's SMS reminder before each meeting (DESIGN §3.7, docs/notifications.md): this
    # many days before, at the meeting's local clock time (0 = none); never in the quiet hours
    # ("HH:MM-HH:MM" local, may cross midnight; "" = none): then at their end, if that is still
    # before the meeting.
    family_sms_reminder_days_before: int = Field(1, ge=0, le=7)
    family_sms_quiet_hours: str = Field(
        "21:00-08:00", pattern=r"^$|^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$")
    # How deadlines in days and months end (docs/deadlines.md). None -- a policy copy from
    # before these fields -- keeps the old arithmetic: the old holiday list, the start's
    # clock time, no move off a weekend. domain/policy.py sets them for DK and SE.
    non_working_days: NonWorkingDays | None = None
    deadline_rules: DeadlineRules | None = None
    # Outcome instruments (DESIGN §3.8, models/outcomes.py): a stored policy from before this
    # field gets the standard instruments.
    outcome_instruments: dict[str, Instrument] = Field(default_factory=default_instruments)

    @property
    def key(self) -> str:
        return f"{self.country}-v{self.version}"

    def clock(self, kind: str) -> ClockRule:
        return self.clocks.get(kind) or ClockRule()


