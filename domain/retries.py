"""Safe retries of commands (issue 13 point 3): pure rules the case workflow applies.

A command sent again after a crash, a timeout or a lost answer must not be applied twice,
nor refused (409) because its first try already moved the case. Two rules:

1. **A keyless repeat of the case's last command is its retry.** The same actor sending the
   same command with the same body (and item) without an Idempotency-Key, with no other
   command accepted in between, gets the case as it is (the first try's answer), and nothing
   is applied again. With a key Temporal already gives the exact first answer (the key is the
   Update id), and a new key means a new command; this rule covers commands sent WITHOUT a
   key, which the issue's crash runs retried. A
   genuinely repeated identical command with nothing in between is the same fact twice (the
   same contact at the same instant, the same vote, the same closing), so nothing is lost.
   Facts only the API computes (the coordinator's load, a suggestion, the page's version, the
   seal) are left out of the comparison: they change between a try and its retry.
2. **A plan draft equal to the pending draft is that draft** (`PUT /plan` twice with the
   same content makes one version, answered with it).

And registrations of the same person at the same time flag each other (`note_possible_
duplicates`, driven by api/duplicates.py).
"""

from __future__ import annotations

import hashlib
import json
import uuid

from domain.lifecycle import pending_draft
from models.case import CaseState, PlanDraft, Stage
from models.commands import CommandInput

PLAN_CONTENT = ("family_goals", "goals", "actions", "services")


def keyless(update_id: str | None) -> bool:
    """Was the command sent without an Idempotency-Key? The API makes a keyed command's Update
    id `<caller>:<key>`; without a key the SDK names the Update with a bare UUID. Rule 1 is for
    keyless commands only: with a key Temporal answers the same key exactly, and another key
    is a command sent again on purpose (a form shown again), checked like any other."""
    if not update_id or len(update_id) != 36:
        return False
    try:
        uuid.UUID(update_id)
    except ValueError:
        return False
    return True


def fingerprint(name: str, inp: CommandInput) -> str:
    """What makes two commands the same command (rule 1), as a short digest."""
    text = json.dumps([name, inp.actor.id, inp.item_id, inp.body], sort_keys=True, default=str,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def same_as_pending_draft(state: CaseState, body: dict | None) -> bool:
    """Rule 2: does this `put_plan` body hold exactly the pending draft's content?"""
    draft = pending_draft(state)
    if draft is None or body is None:
        return False
    try:
        wanted = PlanDraft.model_validate(body)
    except ValueError:
        return False
    have = draft.model_dump(mode="json", include=set(PLAN_CONTENT))
    return wanted.model_dump(mode="json", include=set(PLAN_CONTENT)) == have


# ---------------------------------------------------------------- concurrent registrations

DUPLICATE_FLAG = "possible_duplicate"
DUPLICATE_DETAIL = "A family member is already on an open case: link it or confirm a new case."


def note_possible_duplicates(state: CaseState, case_ids: list[str]) -> bool:
    """Add `case_ids` to the case's possible-duplicate flag (made if missing). Registrations
    of the same person that ran at the same time tell each other afterwards (api/duplicates.py),
    so each names the other. Returns whether anything changed (a closed case: nothing)."""
    new = sorted({c for c in case_ids if c and c != state.id})
    if not new or state.stage is Stage.closed:
        return False
    # New list and dict, never changed in place: copies of the state share them.
    flag = next((f for f in state.flags if f.get("kind") == DUPLICATE_FLAG), None)
    have = list(flag.get("case_ids") or []) if flag else []
    if not set(new) - set(have):
        return False
    merged = {**(flag or {"kind": DUPLICATE_FLAG, "detail": DUPLICATE_DETAIL}),
              "case_ids": sorted({*have, *new})}
    state.flags = [merged if f is flag else f for f in state.flags] if flag else [*state.flags, merged]
    return True
