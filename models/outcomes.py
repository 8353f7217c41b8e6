"""Outcome instruments and measurements (DESIGN §3.8, issue 11 point 2): plain pydantic models.

The instruments are policy data (a copy travels in the case's policy); the measurements live in
`CaseState.outcome_measurements`. The rules over them (validation, totals, bands, before/after,
norms) are in domain/outcomes.py. Stdlib types only: imported inside the workflow sandbox.

Sources of the numbers below (see docs/outcomes.md):
- SDQ: five subscales 0-10, total difficulties = emotional + conduct + hyperactivity + peer
  (0-40). Four-band cut-offs from youthinmind, "Scoring the Strengths & Difficulties
  Questionnaire for age 4-17" (sdqinfo.org), for self-report (our informant `child`),
  parent (`mother`, `father`) and teacher forms. Used for DK and SE alike until a
  municipality configures national norms.
- Family climate: Hansson's Familjeklimat (Hansson 1989, Lund University), four scales; the
  range and norm values are provisional (docs/outcomes.md).
- ASI extract: Addiction Severity Index (McLellan et al. 1980; Swedish ASI, Andréasson et al.),
  days with problems in the last 30 days (0-30) and the interviewer-read 0-4 ratings.
- Goal attainment: Goal Attainment Scaling (Kiresuk & Sherman 1968), -2..+2 per goal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Occasion = Literal["assessment", "status_meeting", "closing"]
OCCASIONS: tuple[str, ...] = ("assessment", "status_meeting", "closing")
ANY_INFORMANT = "*"
MAX_MEASUREMENTS = 50  # measurements in one command
MAX_SCORES = 30  # scores in one measurement


class Scale(BaseModel):
    key: str
    min: float
    max: float


class Band(BaseModel):
    """A band of a scale or total, inclusive on both ends (cut-offs are whole points)."""

    key: str
    min: float
    max: float


class Instrument(BaseModel):
    key: str
    informants: list[str]
    scales: list[Scale]
    # A total is the sum of the listed scales, computed by the domain, never sent by a client.
    totals: dict[str, list[str]] = {}
    # Scale-or-total key -> informant ("*" = any informant) -> bands.
    bands: dict[str, dict[str, list[Band]]] = {}
    # Norm values per scale (family climate), to compare a family against.
    norms: dict[str, float] = {}
    # Scales a measurement may leave out (none: every scale is required).
    optional_scales: list[str] = []
    # One measurement per goal of the plan (goal attainment): `goal_id` is required.
    per_goal: bool = False
    # Higher is better on these scales/totals (SDQ prosocial, family-climate closeness and
    # spontaneity, goal attainment); lower is better on every other one.
    higher_is_better: list[str] = []
    source: str = ""

    def scale(self, key: str) -> Scale | None:
        return next((s for s in self.scales if s.key == key), None)

    @property
    def scale_keys(self) -> list[str]:
        return [s.key for s in self.scales]


class OutcomeMeasurement(BaseModel):
    """One instrument filled in by one informant on one occasion (state, not a request body)."""

    instrument: str
    informant: str
    occasion: Occasion
    recorded_at: datetime
    recorded_by: str
    scores: dict[str, float]
    # Computed by domain/outcomes.py from `scores`, never taken from the client.
    totals: dict[str, float] = {}
    goal_id: str | None = None


# ------------------------------------------------------------------ request bodies


class OutcomeIn(BaseModel):
    """One measurement as a client sends it (no totals: the domain computes them)."""

    model_config = ConfigDict(extra="forbid")

    instrument: Annotated[str, Field(min_length=1, max_length=64)]
    informant: Annotated[str, Field(min_length=1, max_length=64)]
    scores: Annotated[dict[Annotated[str, Field(max_length=64)], float],
                      Field(min_length=1, max_length=MAX_SCORES)]
    goal_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


Measurements = Annotated[list[OutcomeIn], Field(max_length=MAX_MEASUREMENTS)]


class RecordOutcomes(BaseModel):
    """`POST /api/v1/cases/{id}/outcomes`: measurements outside a meeting or the closing, e.g.
    the teacher's SDQ that came back after the assessment meeting."""

    model_config = ConfigDict(extra="forbid")

    occasion: Literal["assessment", "status_meeting"] | None = None  # None: from the stage
    measurements: Annotated[list[OutcomeIn], Field(min_length=1, max_length=MAX_MEASUREMENTS)]


# ------------------------------------------------------------------ the default instruments


def _bands(*rows: tuple[str, float, float]) -> list[Band]:
    return [Band(key=k, min=lo, max=hi) for k, lo, hi in rows]


def _difficulty(a: float, b: float, c: float, top: float) -> list[Band]:
    """Four bands of a difficulty scale: close to average 0..a, slightly raised ..b, high ..c,
    very high ..top."""
    return _bands(("close_to_average", 0, a), ("slightly_raised", a + 1, b),
                  ("high", b + 1, c), ("very_high", c + 1, top))


def _prosocial(a: float, b: float, c: float) -> list[Band]:
    """Prosocial is a strength: very low 0..a, low ..b, slightly lowered ..c, else average."""
    return _bands(("very_low", 0, a), ("low", a + 1, b), ("slightly_lowered", c, c),
                  ("close_to_average", c + 1, 10))


def _per_form(self_report: list[Band], parent: list[Band], teacher: list[Band]
              ) -> dict[str, list[Band]]:
    # The parent form's bands for every other informant (mother, father): one copy, since
    # the policy travels in every case's state.
    return {"child": self_report, "teacher": teacher, ANY_INFORMANT: parent}


# youthinmind four-band categorisation (self-report / parent / teacher).
SDQ = Instrument(
    key="sdq",
    informants=["child", "mother", "father", "teacher"],
    scales=[Scale(key=k, min=0, max=10)
            for k in ("emotional", "conduct", "hyperactivity", "peer", "prosocial")],
    totals={"total_difficulties": ["emotional", "conduct", "hyperactivity", "peer"]},
    bands={
        "total_difficulties": _per_form(_difficulty(14, 17, 19, 40), _difficulty(13, 16, 19, 40),
                                        _difficulty(11, 15, 18, 40)),
        "emotional": _per_form(_difficulty(4, 5, 6, 10), _difficulty(3, 4, 6, 10),
                               _difficulty(3, 4, 5, 10)),
        "conduct": _per_form(_difficulty(2, 3, 4, 10), _difficulty(2, 3, 5, 10),
                             _difficulty(2, 3, 4, 10)),
        "hyperactivity": _per_form(_difficulty(5, 6, 7, 10), _difficulty(5, 7, 8, 10),
                                   _difficulty(5, 7, 8, 10)),
        "peer": _per_form(_difficulty(2, 3, 4, 10), _difficulty(2, 3, 4, 10),
                          _difficulty(2, 4, 5, 10)),
        "prosocial": _per_form(_prosocial(4, 5, 6), _prosocial(5, 6, 7), _prosocial(3, 4, 5)),
    },
    higher_is_better=["prosocial"],
    source="SDQ (Goodman 1997); four-band cut-offs: youthinmind, sdqinfo.org",
)

# Hansson's Family Climate (Familjeklimat: 85 adjectives, the informant marks at least 15; the
# scale scores are computed from the marked adjectives). The 1-4 range and the norm values are
# PROVISIONAL, not yet checked against Hansson's publications: see docs/outcomes.md before
# relying on the norm comparison; a municipality corrects them by a new policy version.
FAMILY_CLIMATE = Instrument(
    key="family_climate",
    informants=["child", "mother", "father"],
    scales=[Scale(key=k, min=1, max=4) for k in ("closeness", "distance", "spontaneity", "chaos")],
    norms={"closeness": 3.1, "distance": 1.7, "spontaneity": 2.8, "chaos": 1.8},
    higher_is_better=["closeness", "spontaneity"],
    source="Familjeklimat (Hansson 1989); range and norms provisional: docs/outcomes.md",
)

ASI = Instrument(
    key="asi",
    informants=["mother", "father"],
    scales=[
        Scale(key="alcohol_days", min=0, max=30),
        Scale(key="drug_days", min=0, max=30),
        Scale(key="relationship_days", min=0, max=30),
        Scale(key="troubled", min=0, max=4),
        Scale(key="help_importance", min=0, max=4),
    ],
    source="ASI extract (McLellan et al. 1980): last 30 days; 0-4 ratings",
)

GOAL_ATTAINMENT = Instrument(
    key="goal_attainment",
    informants=["family", "team"],
    scales=[Scale(key="attainment", min=-2, max=2)],
    bands={"attainment": {ANY_INFORMANT: _bands(
        ("much_less_than_expected", -2, -2), ("less_than_expected", -1, -1),
        ("expected", 0, 0), ("more_than_expected", 1, 1), ("much_more_than_expected", 2, 2))}},
    per_goal=True,
    higher_is_better=["attainment"],
    source="Goal Attainment Scaling (Kiresuk & Sherman 1968), -2..+2 per goal",
)

DEFAULT_INSTRUMENTS: dict[str, Instrument] = {
    i.key: i for i in (SDQ, FAMILY_CLIMATE, ASI, GOAL_ATTAINMENT)
}


def default_instruments() -> dict[str, Instrument]:
    """For `Policy.outcome_instruments`: a case whose stored policy predates the field gets
    the standard instruments (recording them is new behaviour behind a patch anyway)."""
    return dict(DEFAULT_INSTRUMENTS)
