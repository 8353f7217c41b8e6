"""Messages that the family's consent and requests cause (DESIGN §11), derived from the case
state like every other effect (domain/effects.py calls these): pure and deterministic.

- `consent_renewal`: the family is asked to renew a consent `consent_renewal_days` before it
  expires (the consent_renewal deadline's reminder);
- `family_update#<n>`: the coordinator (the unit's managers while the case has none) is told
  of a notice: a consent revoked, narrowed or expired, focus points, a request for a pause;
- `silenced`: team members the family's consent does not cover hear nothing of the case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain import consent as cs
from models.case import CaseState, Deadline
from models.messaging import (
    NotificationRequest,
    Recipient,
    RecipientQuery,
    RecipientRole,
    family_recipients,
    notification_key,
    staff_recipient,
)

if TYPE_CHECKING:
    from domain.effects import Effect


def silenced(state: CaseState) -> frozenset[str]:
    """Staff who get no message about the case: team members no active consent covers. (Rows
    already in the outbox are cancelled there: activities/projection.py.)"""
    return cs.uncovered(state) if state.consent_rules else frozenset()


def renewal_effects(state: CaseState, d: Deadline, done: set[str], language: str) -> list[Effect]:
    """A consent about to expire: the parents are asked to renew it. Its end reaches the
    coordinator as a notice, never as an overdue deadline."""
    from domain.effects import Effect

    consent = next((c for c in state.consents if c.id == d.ref), None)
    out: list[Effect] = []
    if consent is None or consent.expires_at is None:
        return out
    for sent in d.reminders_sent:
        if sent.get("skipped") or sent["kind"] != "reminder":
            continue
        purpose = f"consent_renewal:{consent.id}#{d.occurrence}:{sent['step']}"
        for recipient in family_recipients(state):
            key = notification_key(state.id, purpose, recipient.id)
            if key in done:
                continue
            request = NotificationRequest(
                key=key, case_id=state.id, purpose=purpose, recipient=recipient,
                template="consent_renewal", language=language,
                context={"valid_until": consent.expires_at.isoformat(), "consent_id": consent.id},
            )
            out.append(Effect(key=request.key, notification=request))
    return out


def notice_effects(state: CaseState, done: set[str]) -> list[Effect]:
    from domain.effects import Effect

    out: list[Effect] = []
    for notice in state.notices:
        purpose = f"family_update#{notice.number}"
        to_managers = notice.to == "manager"
        recipient = (Recipient(role=RecipientRole.manager, id="role:manager") if to_managers
                     else staff_recipient(RecipientRole.coordinator, notice.to))
        key = notification_key(state.id, purpose, recipient.id)
        if key in done:
            continue
        request = NotificationRequest(
            key=key, case_id=state.id, purpose=purpose, recipient=recipient,
            template="family_update", context={"event": notice.event, **notice.detail},
        )
        out.append(Effect(key=request.key, notification=request,
                          fan_out=RecipientQuery(role="manager", case_id=state.id)
                          if to_managers else None))
    return out
