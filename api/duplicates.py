"""Possible duplicates among registrations made at the same time (issue 13 point 3).

The check used to read `case_persons` before the new case was started, and the rows of a new
case were written only after its start: two concurrent registrations of the same family each
read before the other wrote, and neither was flagged. Now a registration

1. claims its persons first: its `case_persons` rows (keyed hashes, as the projection writes
   them) are committed before it looks for others, then it reads the other open cases naming
   them (those go into the new case's start input, as before);
2. after the start, looks once more: a registration that committed its rows meanwhile is
   added to the new case's flag by an Update (`note_duplicates`);
3. tells every case it found that the new case names the same person (the same Update).

Of two registrations, the one that claims later always sees the earlier in step 1 and tells
it in step 3; if the earlier's workflow did not exist yet at that moment, the earlier's own
step 2 (after its start) sees the later. So each names the other, whatever the timing.
Steps 2-3 cost an Update only when a duplicate exists, sent in the background: the answer
never waits for another case, and a failure is logged, never fails the registration. (An API
process that dies in that instant leaves one of the two unflagged; the other still is.)
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select
from temporalio.client import Client

from api.gateway import send  # the one place that sends Updates (queue, deadline, projection)
from models import sealed
from models.case import Actor, CaseCreate, CaseState
from models.commands import CommandInput
from models.projection import legacy_person_key, person_key
from models.tables import CasePersonRow

log = logging.getLogger("onefamily.api")


def _keys(body: CaseCreate) -> list[str]:
    """Every key a member may be stored under (models/projection.py: the keyed hashes
    and the legacy plaintext key), for one query over all members."""
    return sorted({k for m in body.family.members
                   for k in (*sealed.person_hashes(m.name, m.birth_date),
                             legacy_person_key(m.name, m.birth_date))})


def _others(session: Session, case_id: str, body: CaseCreate) -> set[str]:
    found = session.exec(select(CasePersonRow.case_id).where(
        CasePersonRow.person_key.in_(_keys(body)), CasePersonRow.case_id != case_id))
    return set(found)


def claim_persons(engine: Engine, case_id: str, body: CaseCreate, retry: bool = False) -> list[str]:
    """Step 1: commit this case's person rows, then the other open cases naming them.
    `retry`: the id may have rows already (a keyed registration sent again)."""
    with Session(engine) as session:
        if retry:
            session.exec(delete(CasePersonRow).where(CasePersonRow.case_id == case_id))
        for m in body.family.members:
            session.add(CasePersonRow(case_id=case_id, person_key=person_key(m.name, m.birth_date)))
        session.commit()
        return sorted(_others(session, case_id, body))


def others_now(engine: Engine, case_id: str, body: CaseCreate) -> set[str]:
    with Session(engine) as session:
        return _others(session, case_id, body)


def release_persons(engine: Engine, case_id: str) -> None:
    """The case was not created after all: its claim must not flag later registrations."""
    with Session(engine) as session:
        session.exec(delete(CasePersonRow).where(CasePersonRow.case_id == case_id))
        session.commit()


MAX_TOLD = 10  # other cases told of one registration
_in_flight = asyncio.Semaphore(8)  # background flag Updates at a time, per API process


async def _note(client: Client, engine: Engine, case_id: str, ids: list[str], actor: Actor,
                timeout: float) -> CaseState | None:
    try:
        async with _in_flight:
            return await send(client, engine, case_id, "note_duplicates",
                              CommandInput(actor=actor, body={"case_ids": ids}), None, timeout)
    except Exception as error:  # noqa: BLE001 - the registration stands; the flag is extra
        log.warning("could not flag a case as a possible duplicate (%s)", type(error).__name__,
                    extra={"event": "duplicate_flag_failed"})
        return None


_background: set[asyncio.Task] = set()  # kept referenced until done


async def tell_each_other(client: Client, engine: Engine, case_id: str, body: CaseCreate,
                          found: list[str], actor: Actor, timeout: float) -> list[str]:
    """Steps 2 and 3, after the new case was started: returns the registrations found only
    now. The Updates go in the background, so the registration's answer never waits for
    other cases (the new case's flag gets the late ones a moment after its answer)."""
    later = sorted(await asyncio.to_thread(others_now, engine, case_id, body) - set(found))
    # The concurrent ones (`later`) are always told; of the earlier ones at most MAX_TOLD, so
    # a person entered the same way on many cases (a placeholder) cannot make every
    # registration send an Update to each of them (N^2 Updates; docs/performance.md).
    for other in [*later, *found[:max(0, MAX_TOLD - len(later))]]:
        _spawn(_note(client, engine, other, [case_id], actor, timeout))
    if later:
        _spawn(_note(client, engine, case_id, later, actor, timeout))
    return later


def _spawn(coro) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
