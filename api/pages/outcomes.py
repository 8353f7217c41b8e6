"""Outcome measures on the case page (DESIGN §3.8, §10): the `record_outcomes` form, and the
measurement rows the close form shares with it.

The form has one row per instrument and informant of the case's policy (per goal of the plan
for goal attainment), each with a number field per scale: field names
`measurements.<row>.scores.<scale>` beside hidden `instrument`, `informant` and `goal_id`. A
row with nothing typed is left out (that informant did not answer); numbers as people type
them (`7,8`). Totals are never typed: the workflow computes them. What the instrument refuses
(out of range, a scale left empty) comes back as the workflow's sentence.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.pages import i18n
from api.pages.plan import command_form, field_errors, number, rows, subtree
from models.outcomes import RecordOutcomes

router = APIRouter(include_in_schema=False)

PREFIX = "measurements."


def measurements_of(values: dict[str, str], lang: str
                    ) -> tuple[list[dict], list[tuple[tuple, str]]]:
    """The typed rows as `OutcomeIn` dicts, and the field errors of what is not a number."""
    out: list[dict] = []
    errors: list[tuple[tuple, str]] = []
    for i, row in rows(subtree(values, PREFIX)):
        if not isinstance(row, dict) or not isinstance(row.get("scores"), dict):
            continue
        typed = {k: v for k, v in row["scores"].items() if isinstance(v, str) and v}
        if not typed:
            continue  # nothing typed: this informant did not answer
        scores: dict[str, float] = {}
        for scale, raw in typed.items():
            n = number(raw)
            if n is None:
                errors.append((("measurements", i, "scores", scale),
                               i18n.translate(lang, "outcomes.form.not_a_number")))
            else:
                scores[scale] = n
        item = {"instrument": row.get("instrument", ""), "informant": row.get("informant", ""),
                "scores": scores}
        if row.get("goal_id"):
            item["goal_id"] = row["goal_id"]
        out.append(item)
    return out, errors


def build_record_outcomes(values: dict[str, str], lang: str,
                          _user=None) -> Callable[[dict], RecordOutcomes]:
    def build(data: dict) -> RecordOutcomes:
        measurements, own = measurements_of(values, lang)
        if own:
            raise field_errors(own)
        if not measurements:  # a builder's own sentence, shown at the top of the form
            raise ValueError(i18n.translate(lang, "outcomes.form.nothing"))
        body = {"measurements": measurements}
        if data.get("occasion"):
            body["occasion"] = data["occasion"]
        try:
            return RecordOutcomes.model_validate(body)
        except ValidationError as error:
            raise field_errors([], error) from None

    return build


@router.post("/cases/{case_id}/outcomes")
async def record_outcomes(request: Request, case_id: str) -> Response:
    from api import cases

    def done(result: dict, lang: str) -> str:
        return i18n.translate(lang, "outcomes.form.done")

    return await command_form(
        request, case_id, "record_outcomes",
        lambda cmd, body: cases.record_outcomes(case_id, body, cmd),
        RecordOutcomes, done, build_record_outcomes, anchor="outcomes")
