"""Outcome measures as rules (DESIGN §3.8, issue 11 point 2): validate, total, band, compare.

Plain functions over models/outcomes.py. The instruments come from the case's policy, so a
municipality changes cut-offs or norms by a new policy version, not by code. Refusal sentences
name the instrument, informant and scale, never the score itself (scores are personal data and
a refusal may end up in a log).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel

from models.outcomes import (
    ANY_INFORMANT,
    Band,
    Instrument,
    Occasion,
    OutcomeIn,
    OutcomeMeasurement,
)


class OutcomeRefusal(ValueError):
    """Bad outcome input: a sentence a coordinator understands (the command maps it to 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _names(keys: Iterable[str]) -> str:
    return ", ".join(sorted(keys))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def instrument(instruments: Mapping[str, Instrument], key: str) -> Instrument:
    found = instruments.get(key)
    if found is None:
        raise OutcomeRefusal(
            f"Unknown outcome instrument '{key}'; this municipality uses: {_names(instruments)}."
        )
    return found


def validate(instruments: Mapping[str, Instrument], m: OutcomeIn,
             goal_ids: set[str] | None = None) -> Instrument:
    """Refuse what does not fit the instrument: unknown instrument, informant or scale, a
    total sent as a score, a missing scale, a score out of range, a goal that is not in the
    plan. Returns the instrument."""
    ins = instrument(instruments, m.instrument)
    if m.informant not in ins.informants:
        raise OutcomeRefusal(
            f"Unknown informant '{m.informant}' for {ins.key}; "
            f"allowed: {_names(ins.informants)}."
        )
    sent_totals = [k for k in m.scores if k in ins.totals]
    if sent_totals:
        parts = ", ".join(ins.totals[sent_totals[0]])
        raise OutcomeRefusal(
            f"{ins.key} '{sent_totals[0]}' is computed from the scales ({parts}); "
            "send those scales, not the total."
        )
    unknown = [k for k in m.scores if ins.scale(k) is None]
    if unknown:
        raise OutcomeRefusal(
            f"Unknown {ins.key} scale(s) {_names(unknown)}; the scales are: "
            f"{', '.join(ins.scale_keys)}."
        )
    missing = [k for k in ins.scale_keys if k not in m.scores and k not in ins.optional_scales]
    if missing:
        raise OutcomeRefusal(
            f"The {ins.key} from the {m.informant} is missing the scale(s) {', '.join(missing)}; "
            "every scale is needed to compare and to compute the totals."
        )
    for key, value in m.scores.items():
        scale = ins.scale(key)
        assert scale is not None
        if not math.isfinite(value) or not scale.min <= value <= scale.max:
            raise OutcomeRefusal(
                f"The {ins.key} scale '{key}' from the {m.informant} must be between "
                f"{_number(scale.min)} and {_number(scale.max)}."
            )
    if ins.per_goal:
        if not m.goal_id:
            raise OutcomeRefusal(f"{ins.key} is recorded per goal: say which goal (goal_id).")
        if goal_ids is not None and m.goal_id not in goal_ids:
            raise OutcomeRefusal(f"Goal '{m.goal_id}' is not in the case's plan.")
    elif m.goal_id:
        raise OutcomeRefusal(f"{ins.key} is not recorded per goal; leave goal_id out.")
    return ins


def compute_totals(ins: Instrument, scores: Mapping[str, float]) -> dict[str, float]:
    """Each total is the sum of its scales (SDQ total difficulties = the four difficulty
    subscales, prosocial not included). Rounded to 2 decimals: means like 7.8 stay exact."""
    return {name: round(sum(scores[k] for k in parts), 2)
            for name, parts in ins.totals.items() if all(k in scores for k in parts)}


def measure(instruments: Mapping[str, Instrument], items: Iterable[OutcomeIn],
            occasion: Occasion, at: datetime, by: str,
            goal_ids: set[str] | None = None) -> list[OutcomeMeasurement]:
    """Validate every item (all or nothing) and build the measurements with their totals."""
    out: list[OutcomeMeasurement] = []
    seen: set[tuple[str, str, str | None]] = set()
    for m in items:
        ins = validate(instruments, m, goal_ids)
        key = (m.instrument, m.informant, m.goal_id)
        if key in seen:
            raise OutcomeRefusal(
                f"The {m.instrument} from the {m.informant} is given twice in one command."
            )
        seen.add(key)
        scores = {k: float(v) for k, v in m.scores.items()}
        out.append(OutcomeMeasurement(
            instrument=m.instrument, informant=m.informant, occasion=occasion, recorded_at=at,
            recorded_by=by, scores=scores, totals=compute_totals(ins, scores), goal_id=m.goal_id,
        ))
    return out


def bands_for(ins: Instrument, key: str, informant: str) -> list[Band]:
    per_informant = ins.bands.get(key) or {}
    return per_informant.get(informant) or per_informant.get(ANY_INFORMANT) or []


def band(ins: Instrument, key: str, informant: str, value: float) -> str | None:
    """The band of a scale or total for this informant's form, or None when the instrument
    has no bands for it. Cut-offs are whole points: a mean such as 7.8 is rounded half up
    first (7.5 counts as 8)."""
    whole = math.floor(value + 0.5)
    for b in bands_for(ins, key, informant):
        if b.min <= whole <= b.max:
            return b.key
    return None


def values_of(m: OutcomeMeasurement) -> dict[str, float]:
    """Scales and totals of one measurement, in one mapping (totals last)."""
    return {**m.scores, **m.totals}


def norm_differences(ins: Instrument, m: OutcomeMeasurement) -> dict[str, float]:
    """Score minus norm, per scale with a norm value (family climate)."""
    return {k: round(m.scores[k] - norm, 2) for k, norm in ins.norms.items() if k in m.scores}


class Comparison(BaseModel):
    """One instrument from one informant (and goal): the first measurement against the
    latest. Comparisons are never made across informants (DESIGN §3.8)."""

    instrument: str
    informant: str
    goal_id: str | None = None
    first: OutcomeMeasurement
    latest: OutcomeMeasurement | None = None  # None: measured once so far
    # latest - first, per scale and total.
    change: dict[str, float] = {}
    # scale-or-total -> (band of first, band of latest)
    bands: dict[str, tuple[str | None, str | None]] = {}
    # scale -> (first - norm, latest - norm)
    norms: dict[str, tuple[float, float | None]] = {}
    # per scale and total: "better", "worse" or "same" (direction from the instrument)
    direction: dict[str, str] = {}


def compare(ins: Instrument, series: list[OutcomeMeasurement]) -> Comparison:
    first = series[0]
    latest = series[-1] if len(series) > 1 else None
    before = values_of(first)
    after = values_of(latest) if latest else {}
    change = {k: round(after[k] - v, 2) for k, v in before.items() if k in after}
    bands = {k: (band(ins, k, first.informant, before[k]),
                 band(ins, k, first.informant, after[k]) if k in after else None)
             for k in before if bands_for(ins, k, first.informant)}
    first_norm = norm_differences(ins, first)
    latest_norm = norm_differences(ins, latest) if latest else {}
    norms = {k: (v, latest_norm.get(k)) for k, v in first_norm.items()}
    direction = {}
    for k, d in change.items():
        good = d > 0 if k in ins.higher_is_better else d < 0
        direction[k] = "same" if d == 0 else "better" if good else "worse"
    return Comparison(instrument=first.instrument, informant=first.informant,
                      goal_id=first.goal_id, first=first, latest=latest, change=change,
                      bands=bands, norms=norms, direction=direction)


def comparisons(instruments: Mapping[str, Instrument],
                measurements: Iterable[OutcomeMeasurement]) -> list[Comparison]:
    """Per instrument, informant and goal, in the policy's instrument order: first vs latest."""
    series: dict[tuple[str, str, str | None], list[OutcomeMeasurement]] = {}
    for m in measurements:
        series.setdefault((m.instrument, m.informant, m.goal_id), []).append(m)
    order = list(instruments)
    out = []
    for key in sorted(series, key=lambda k: (order.index(k[0]) if k[0] in order else len(order),
                                             k[1], k[2] or "")):
        ins = instruments.get(key[0])
        if ins is not None:  # an instrument a newer policy dropped: kept, not compared
            out.append(compare(ins, series[key]))
    return out


# ------------------------------------------------------------------ the old close body


LEGACY_BEFORE = ("before", "at_assessment", "assessment")
LEGACY_AFTER = ("after", "at_closing", "closing")


def _legacy_number(value: object, what: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutcomeRefusal(f"{what} must be a number.")
    return float(value)


def legacy_outcomes(instruments: Mapping[str, Instrument], outcomes: Mapping[str, object],
                    at: datetime, by: str, goal_ids: set[str] | None = None
                    ) -> list[OutcomeMeasurement]:
    """The close body's free-form `outcomes` object (the page's form and older clients):
    validated, and mapped to measurements where it can be. Kept shapes:
      {"sdq": [{"child", "informant", "before", "after"}]}  before/after a total difficulties
        number (0-40; stays in `closure.outcomes`, checked), or an object of all the scales
        (mapped: before -> occasion assessment, after -> closing);
      {"sdq": {"mother": {"before": ..., "after": ...}}}  the same, keyed by informant;
      {"goal_attainment": {"g1": "achieved" | {"score": -2..2, "status": ...} | n}}  a score
        is mapped to a goal_attainment measurement by the team at closing.
    Other instruments of the policy are accepted in the same shapes (scale objects only).
    Anything else is refused: nothing of the close is applied."""
    out: list[OutcomeMeasurement] = []
    for name, raw in outcomes.items():
        key = name.lower()
        if key == "goal_attainment" and isinstance(raw, Mapping):
            out.extend(_legacy_goals(instruments, raw, at, by, goal_ids))
            continue
        ins = instrument(instruments, key)
        entries: list[Mapping] = []
        if isinstance(raw, Mapping):
            for informant, value in raw.items():
                if not isinstance(value, Mapping):
                    raise OutcomeRefusal(f"outcomes.{name}.{informant} must be an object "
                                         "with before and after.")
                entries.append({"informant": informant, **value})
        elif isinstance(raw, list):
            for i, value in enumerate(raw):
                if not isinstance(value, Mapping):
                    raise OutcomeRefusal(f"outcomes.{name}[{i}] must be an object.")
                entries.append(value)
        else:
            raise OutcomeRefusal(f"outcomes.{name} must be a list or an object.")
        for e in entries:
            informant = str(e.get("informant") or "")
            if informant not in ins.informants:
                raise OutcomeRefusal(
                    f"Unknown informant '{informant}' for {ins.key}; "
                    f"allowed: {_names(ins.informants)}."
                )
            for words, occasion in ((LEGACY_BEFORE, "assessment"), (LEGACY_AFTER, "closing")):
                value = next((e[w] for w in words if w in e), None)
                if isinstance(value, Mapping):
                    item = OutcomeIn(instrument=ins.key, informant=informant,
                                     scores={str(k): _legacy_scale(v, ins.key, str(k))
                                             for k, v in value.items()})
                    out.extend(measure(instruments, [item], occasion, at, by, goal_ids))
                    continue
                total = _legacy_number(value, f"The {ins.key} {words[0]} from the {informant}")
                if total is None:
                    continue
                if len(ins.totals) != 1:
                    raise OutcomeRefusal(f"Give the {ins.key} from the {informant} as its scales.")
                top = sum(ins.scale(k).max for k in next(iter(ins.totals.values())))  # type: ignore[union-attr]
                low = sum(ins.scale(k).min for k in next(iter(ins.totals.values())))  # type: ignore[union-attr]
                if not low <= total <= top:
                    raise OutcomeRefusal(
                        f"The {ins.key} total {words[0]} from the {informant} must be between "
                        f"{_number(low)} and {_number(top)}."
                    )
    return out


def _legacy_scale(value: object, instrument_key: str, scale: str) -> float:
    number = _legacy_number(value, f"The {instrument_key} scale '{scale}'")
    if number is None:
        raise OutcomeRefusal(f"The {instrument_key} scale '{scale}' has no value.")
    return number


LEGACY_ATTAINMENT = ("achieved", "partly_achieved", "not_achieved")


def _legacy_goals(instruments: Mapping[str, Instrument], raw: Mapping, at: datetime, by: str,
                  goal_ids: set[str] | None) -> list[OutcomeMeasurement]:
    items = []
    for goal_id, value in raw.items():
        status = value.get("status") if isinstance(value, Mapping) else value
        score = value.get("score") if isinstance(value, Mapping) else None
        if isinstance(status, int | float) and not isinstance(status, bool):
            status, score = None, status
        if status is not None and status not in LEGACY_ATTAINMENT:
            raise OutcomeRefusal(
                f"Goal '{goal_id}': attainment must be one of {', '.join(LEGACY_ATTAINMENT)}."
            )
        number = _legacy_number(score, f"The goal attainment score of goal '{goal_id}'")
        if number is not None:
            items.append(OutcomeIn(instrument="goal_attainment", informant="team",
                                   scores={"attainment": number}, goal_id=str(goal_id)))
    if not items:
        return []
    return measure(instruments, items, "closing", at, by, goal_ids)


# ------------------------------------------------------------------ for pages and documents


def summary(instruments: Mapping[str, Instrument],
            measurements: Iterable[OutcomeMeasurement]) -> list[dict]:
    """JSON-safe rows for the case page and the documents: per instrument, informant and goal,
    first -> latest for every total and scale (totals first), with bands, the direction of the
    change and the family-climate norms. Keys only: the reader's language names them."""
    out = []
    for c in comparisons(instruments, measurements):
        ins = instruments[c.instrument]
        before, after = values_of(c.first), values_of(c.latest) if c.latest else {}
        rows = []
        for key in [*ins.totals, *ins.scale_keys]:
            if key not in before:
                continue
            first_band, latest_band = c.bands.get(key, (None, None))
            rows.append({
                "key": key, "total": key in ins.totals,
                "first": before[key], "latest": after.get(key),
                "change": c.change.get(key), "direction": c.direction.get(key),
                "band_first": first_band, "band_latest": latest_band,
                "norm": ins.norms.get(key),
            })
        out.append({
            "instrument": c.instrument, "informant": c.informant, "goal_id": c.goal_id,
            "first_at": c.first.recorded_at.isoformat(), "first_occasion": c.first.occasion,
            "latest_at": c.latest.recorded_at.isoformat() if c.latest else None,
            "latest_occasion": c.latest.occasion if c.latest else None,
            "rows": rows,
        })
    return out


def snapshot(instruments: Mapping[str, Instrument],
             measurements: Iterable[OutcomeMeasurement]) -> list[dict]:
    """JSON-safe rows of single measurements (the assessment report, a meeting's minutes):
    every total and scale with its band and norm, in the policy's instrument order."""
    order = list(instruments)
    out = []
    for m in sorted(measurements, key=lambda m: (
            order.index(m.instrument) if m.instrument in order else len(order))):
        ins = instruments.get(m.instrument)
        if ins is None:
            continue
        values = values_of(m)
        out.append({
            "instrument": m.instrument, "informant": m.informant, "goal_id": m.goal_id,
            "recorded_at": m.recorded_at.isoformat(),
            "rows": [{"key": k, "total": k in ins.totals, "value": values[k],
                      "band": band(ins, k, m.informant, values[k]),
                      "norm": ins.norms.get(k)}
                     for k in [*ins.totals, *ins.scale_keys] if k in values],
        })
    return out
