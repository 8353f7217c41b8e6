"""Active cooperation between an adult unit and a child unit: the Uppsala evaluation's key
figure (DESIGN §3.8), for the monthly report. Pure functions over plain strings.

Definition (docs/dashboard.md, "The monthly report"): a case cooperates actively in a month
when, during that month, BOTH sides take part in it, each through at least one of
- an active core-team member (not one waiting for the family's consent) whose department or
  discipline belongs to the side, or
- a department of that side funding (a share of) a service of a plan in force in the month;
the case's coordinator counts for the child side: OneFamily cases are coordinated from the
children and family unit. A department that only knew the family before (`existing_contacts`)
is no cooperation in the case, and neither is a planned service nobody on that side pays for.

Which side a department or discipline is on: child words win (`child_psychiatry` is a child
unit), then adult words; anything else (`administration`, `other`) is on neither side.
"""

from __future__ import annotations

from collections.abc import Iterable

CHILD_WORDS = ("child", "barn", "børn", "born", "youth", "unge", "ungdom", "school", "skole",
               "skola", "daycare", "dagtilbud", "forskola", "health_visitor", "sundhedspleje",
               "ppr")
ADULT_WORDS = ("adult", "voksen", "vuxen", "job_centre", "jobcentre", "jobcenter", "psychiatry",
               "psykiatri", "addiction", "misbrug", "beroende", "substance", "social_psychiatry")


def side_of(name: str) -> str | None:
    """'child', 'adult' or None for a department or discipline name."""
    text = name.strip().lower().replace("-", "_").replace(" ", "_")
    if not text:
        return None
    if any(word in text for word in CHILD_WORDS):
        return "child"
    if any(word in text for word in ADULT_WORDS):
        return "adult"
    return None


def sides(names: Iterable[str]) -> set[str]:
    return {side for side in map(side_of, names) if side is not None}


def cooperates(*, has_coordinator: bool, team: Iterable[tuple[str, str]],
               funding_departments: Iterable[str]) -> bool:
    """`team`: (department, discipline) of the active core-team members; `funding_departments`:
    the departments paying for services of the plans in force in the month."""
    found = sides(name for member in team for name in member) | sides(funding_departments)
    if has_coordinator:
        found.add("child")
    return {"adult", "child"} <= found
