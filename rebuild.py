"""`make rebuild-read-model` (`python -m rebuild`): the read model's cases, rebuilt from the
workflows, which are the truth (DESIGN §4; docs/backup.md).

Lists every FamilyCaseWorkflow through Temporal visibility, open and closed, takes the newest
run of each case id (a run that continued as new is never the newest) and gets its state: the
`case` Query of a running case (a case worker must be running: `make run`, or the production
workers), the result of a completed one (its run returns the CaseState), the Query (replayed
by a worker) of a terminated or failed one. Each state is written with the projection's
version-checked upsert (`models.projection.write_case`): an older state never overwrites a
newer one, so this is safe while the system runs, and running it twice writes nothing new. The
committee items come with their cases; the committee's meetings from its `agenda` Query (the
last ten it keeps).

`--replace` (after a restore, before the API takes commands again): each case's rows are
replaced by its workflow's state even where the read model holds a newer version, i.e. one its
workflow no longer has because the read model's backup was taken after Temporal's.

Not in Temporal, so not rebuilt: staff accounts, passwords and tokens, rendered documents,
the notification outbox, the audit log, policy versions and monthly reports: those come back
from a backup of the read model (docs/backup.md). The stuck index follows by itself.

Needs the payload key of the data dir (`<data dir>/encryption.key`) or ONEFAMILY_ENCRYPTION_KEY:
without it nothing in Temporal is readable, and this refuses to start (it never makes a key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, delete
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError

from models.case import CaseState
from models.projection import write_case
from models.tables import CaseRow, CommitteeItemRow, CommitteeMeetingRow

CASE_WORKFLOW = "FamilyCaseWorkflow"
COMMITTEE_WORKFLOW = "VisitationCommitteeWorkflow"
BATCH = 200  # states fetched concurrently, then written in one transaction
CONCURRENCY = 16
QUERY_TIMEOUT = timedelta(seconds=30)
Status = WorkflowExecutionStatus


@dataclass
class Counts:
    cases: int = 0  # case ids found in visibility
    running: int = 0
    closed: int = 0
    written: int = 0
    current: int = 0  # the read model already had this version (or a newer one)
    meetings: int = 0  # committee meeting rows added
    skipped: list[str] = field(default_factory=list)  # no state to show: e.g. a refused start
    failed: list[str] = field(default_factory=list)  # a running case that did not answer

    def summary(self) -> str:
        lines = [f"rebuild: {self.cases} cases in Temporal ({self.running} running, {self.closed} closed); "
                 f"{self.written} written, {self.current} already current, {len(self.skipped)} skipped, "
                 f"{len(self.failed)} failed; {self.meetings} committee meetings added"]
        lines += [f"  skipped (no case state): {wid}" for wid in self.skipped]
        lines += [f"  FAILED (no answer; is a case worker running?): {wid}" for wid in self.failed]
        return "\n".join(lines)


def _newer(a: WorkflowExecution, b: WorkflowExecution | None) -> bool:
    """Is run `a` newer than run `b` of the same workflow id? A run that continued as new
    never is, when there is another."""
    if b is None:
        return True
    rank = lambda e: (e.status != Status.CONTINUED_AS_NEW, e.start_time, e.run_id)  # noqa: E731
    return rank(a) > rank(b)


async def newest_runs(client: Client) -> dict[str, WorkflowExecution]:
    """The newest run of every case workflow id, open and closed."""
    newest: dict[str, WorkflowExecution] = {}
    async for execution in client.list_workflows(f"WorkflowType = '{CASE_WORKFLOW}'"):
        if _newer(execution, newest.get(execution.id)):
            newest[execution.id] = execution
    return newest


async def case_state(client: Client, execution: WorkflowExecution) -> CaseState | None:
    """The state of this run: its result when completed, else the `case` Query. None when the
    run has no state to show (a start refused as forged, a run that failed before it began)."""
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id, result_type=CaseState)
    if execution.status == Status.COMPLETED:
        return await handle.result(follow_runs=False)
    if execution.status == Status.CONTINUED_AS_NEW:  # its next run is not listed (yet): follow
        handle = client.get_workflow_handle(execution.id, result_type=CaseState)
    try:
        return await handle.query("case", result_type=CaseState, rpc_timeout=QUERY_TIMEOUT)
    except WorkflowQueryFailedError:
        return None  # the workflow refused to answer (a forged start): not a case
    except RPCError:
        if execution.status == Status.RUNNING:
            raise
        return None  # a closed run nobody can replay


def write_states(engine: Engine, states: list[CaseState], now: datetime, replace: bool = False) -> int:
    written = 0
    with Session(engine) as session:
        for state in states:
            if replace:  # the workflow wins, whatever version the row has
                session.exec(delete(CaseRow).where(CaseRow.id == state.id))
            written += write_case(session, state, now)
        session.commit()
    return written


def write_meetings(engine: Engine, committee_id: str, meetings: list) -> int:
    """What `committee_meeting_held` writes, for the meetings the committee still keeps
    (the agendas' documents are in the documents table: a backup brings those back)."""
    added = 0
    with Session(engine) as session:
        for meeting in sorted(meetings, key=lambda m: m.number):
            at = datetime.fromisoformat(meeting.at)
            row_id = f"{committee_id}-{meeting.number}"
            if session.get(CommitteeMeetingRow, row_id) is None:
                session.add(CommitteeMeetingRow(id=row_id, committee_id=committee_id, number=meeting.number,
                                                at=at, item_ids=meeting.item_ids))
                added += 1
            for item_id in meeting.item_ids:
                row = session.get(CommitteeItemRow, item_id)
                if row is not None and row.status == "waiting":
                    row.meeting_at = at
        session.commit()
    return added


async def rebuild(client: Client, engine: Engine, replace: bool = False) -> Counts:
    counts = Counts()
    runs = list((await newest_runs(client)).values())
    counts.cases = len(runs)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def fetch(execution: WorkflowExecution) -> CaseState | None | Exception:
        async with limit:
            try:
                return await case_state(client, execution)
            except (TimeoutError, RPCError) as error:
                return error

    for start in range(0, len(runs), BATCH):
        batch = runs[start:start + BATCH]
        states = []
        for execution, got in zip(batch, await asyncio.gather(*map(fetch, batch)), strict=True):
            if isinstance(got, Exception):
                counts.failed.append(execution.id)
            elif got is None:
                counts.skipped.append(execution.id)
            else:
                states.append(got)
                counts.running += execution.status == Status.RUNNING
                counts.closed += execution.status != Status.RUNNING
        written = await asyncio.to_thread(write_states, engine, states, datetime.now(UTC), replace)
        counts.written += written
        counts.current += len(states) - written

    from workflows.committee import CommitteeState

    committees = f"WorkflowType = '{COMMITTEE_WORKFLOW}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(committees):
        try:
            agenda = await client.get_workflow_handle(execution.id).query(
                "agenda", result_type=CommitteeState, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError):
            counts.failed.append(execution.id)
            continue
        counts.meetings += await asyncio.to_thread(write_meetings, engine, agenda.committee_id,
                                                   agenda.meetings)
    return counts


def _has_key(settings) -> bool:
    import os

    from workflows.codec import ENV_KEY, KEY_FILE

    return bool(os.environ.get(ENV_KEY)) or (settings.data_dir / KEY_FILE).exists() \
        or not settings.encrypt_payloads


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rebuild", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replace", action="store_true",
                        help="after a restore: the workflows' state replaces newer rows too")
    args = parser.parse_args(argv)
    from models.db import get_engine, init_read_model, migrate, private_data_dir
    from settings import get_settings
    from workflows.client import connect

    settings = get_settings()
    if not _has_key(settings):
        print(f"ERROR: no payload key: neither {settings.data_dir / 'encryption.key'} nor "
              "ONEFAMILY_ENCRYPTION_KEY. Without the key nothing in Temporal can be read: restore the "
              "key first (docs/backup.md). Nothing was changed.", file=sys.stderr)
        return 2
    private_data_dir(settings.data_dir)  # umask 077; the data dir 0700, its files 0600
    migrate(settings.db_url)  # a lost read model: the schema first
    init_read_model(settings)
    try:
        client = await connect(settings)
    except RuntimeError as error:
        print(f"ERROR: cannot reach Temporal at {settings.temporal_target} ({error}). Start the system "
              "(`make run`) or set TEMPORAL_ADDRESS, then run this again.", file=sys.stderr)
        return 2
    counts = await rebuild(client, get_engine(settings.db_url), replace=args.replace)
    print(counts.summary(), flush=True)
    return 1 if counts.failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
