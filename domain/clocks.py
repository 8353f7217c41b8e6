"""The one mechanism behind every deadline (DESIGN §3.9): reminders before it is due, the
overdue mark when it passes, and the escalation ladder after that — all computed from data.

The workflow asks `next_instant()` to know how long to sleep and `fire()` when it wakes. What
fired is recorded on the deadline (`reminders_sent`), so nothing fires twice and a restarted
worker, replaying the history, computes exactly the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.calendar import add_days
from models.case import CaseState, Deadline, DeadlineStatus, HistoryEntry


@dataclass(frozen=True)
class ClockEvent:
    deadline: Deadline
    kind: str  # "reminder" | "overdue" | "escalation"
    step: int
    at: datetime
    to_role: str

    @property
    def key(self) -> str:
        """Business key of this event: case + deadline occurrence + step."""
        d = self.deadline
        return f"{d.kind.value}#{d.occurrence}:{self.kind}#{self.step}"


def _events(deadline: Deadline, interval_days: int, tz: str) -> list[ClockEvent]:
    owner_role = "owner"
    events = [
        ClockEvent(deadline, "reminder", i, at, owner_role)
        for i, at in enumerate(deadline.remind_at)
        if at < deadline.due_at
    ]
    ladder = deadline.ladder or ["coordinator"]
    events.append(ClockEvent(deadline, "overdue", 0, deadline.due_at, ladder[0]))
    for step, role in enumerate(ladder[1:], start=1):
        # Calendar days in the municipality's zone: the same instant before and after the
        # state has been through JSON (which keeps only the UTC offset).
        at = add_days(deadline.due_at, interval_days * step, tz)
        events.append(ClockEvent(deadline, "escalation", step, at, role))
    return events


def _fired(deadline: Deadline) -> set[tuple[str, int]]:
    return {(r["kind"], r["step"]) for r in deadline.reminders_sent}


def pending(state: CaseState) -> list[ClockEvent]:
    """Events not yet fired, of deadlines that still run (open or overdue, not paused)."""
    out: list[ClockEvent] = []
    for d in state.deadlines:
        if not d.is_open() or d.paused_since is not None:
            continue
        interval = state.policy.clock(d.kind.value).ladder_interval_days
        fired = _fired(d)
        events = _events(d, interval, state.policy.timezone)
        out.extend(e for e in events if (e.kind, e.step) not in fired)
    return sorted(out, key=lambda e: e.at)


def next_instant(state: CaseState) -> datetime | None:
    events = pending(state)
    return events[0].at if events else None


def fire(state: CaseState, now: datetime) -> list[tuple[ClockEvent, bool]]:
    """Record every event due by `now`; returns them with a `skipped` flag. A reminder whose
    deadline has already passed (a backdated referral) is recorded as skipped, never sent late."""
    recorded: list[tuple[ClockEvent, bool]] = []
    for event in pending(state):
        if event.at > now:
            break
        d = event.deadline
        skipped = event.kind == "reminder" and d.due_at <= now
        d.reminders_sent.append(
            {"kind": event.kind, "step": event.step, "at": now.isoformat(),
             "to_role": event.to_role, "skipped": skipped}
        )
        if event.kind == "overdue":
            d.status = DeadlineStatus.overdue
        state.history.append(
            HistoryEntry(
                at=now,
                actor="system",
                event=f"deadline_{event.kind}",
                detail={"kind": d.kind.value, "occurrence": d.occurrence, "step": event.step,
                        "to_role": event.to_role, "due_at": d.due_at.isoformat(),
                        "skipped": skipped},
            )
        )
        recorded.append((event, skipped))
    return recorded


def pause(state: CaseState, now: datetime) -> list[str]:
    """Stop the clocks the policy pauses while waiting for the family."""
    paused = []
    for d in state.deadlines:
        if (d.status is DeadlineStatus.open and d.paused_since is None
                and state.policy.clock(d.kind.value).pauses_for_family):
            d.paused_since = now
            paused.append(d.kind.value)
    return paused


def resume(state: CaseState, now: datetime) -> list[str]:
    """Restart paused clocks: their due time and reminders move on by the time paused."""
    resumed = []
    for d in state.deadlines:
        if d.paused_since is None:
            continue
        if not d.is_open():
            d.paused_since = None
            continue
        shift = now - d.paused_since
        d.due_at += shift
        d.remind_at = [at + shift for at in d.remind_at]
        d.paused_seconds += shift.total_seconds()
        d.paused_since = None
        resumed.append(d.kind.value)
    return resumed
