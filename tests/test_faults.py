"""The fault table (issue 13, "Bad input and faults"): the real launcher (`python -m launcher`,
supervising the dev server, the case worker, the documents worker and the API), a handful of
cases driven through commands that carry an Idempotency-Key, and while commands are in flight,
one fault at a time:

- the dev server, the case worker, the documents worker and the API are SIGKILLed (the
  launcher starts each again);
- the case worker is frozen (SIGSTOP for 15 s, then SIGCONT);
- the read model's database is locked (SQLite: an exclusive transaction held by another
  connection for 10 s).

Every command is retried with its key until it is answered (a client that sees a 503, or a
connection cut, and tries again). After each fault every key is sent once more. Four counts
per fault, all must be 0:

- lost: answered 2xx, but not in the case afterwards;
- applied twice: in the case more than once (after the fault and the replay of every key);
- hung: one try took longer than ONEFAMILY_COMMAND_TIMEOUT + SLACK to answer;
- notices twice: an e-mail received twice by the SMTP server (same Message-ID), or two outbox
  rows for the same notice (case, purpose, recipient, channel).

The table is printed and written to test-artifacts/faults.txt (the closing note of issue 13).
One launcher for all faults; the module takes about two minutes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from launcher import free_port, spawn, stop_process
from tests.factories import STAFF, case_create_body
from tests.messaging_fakes import SmtpServer
from tests.test_domain_lifecycle import ASSESSMENT
from tests.test_launcher import ROOT, _children, _until

TIMEOUT = 10.0  # ONEFAMILY_COMMAND_TIMEOUT of the launched API (the default)
SLACK = 5.0  # a loaded 2-core box: the API's own work around the engine's answer
POOL = 6  # cases that take commands during every fault
ARTIFACT = ROOT / "test-artifacts" / "faults.txt"
COLUMNS = ("lost", "applied twice", "hung", "notices twice")


@dataclass
class System:
    launcher: object
    base: str
    data: Path
    smtp: SmtpServer
    pool: list[str] = field(default_factory=list)  # case ids
    meetings: list[str] = field(default_factory=list)  # pool cases whose meeting is not planned yet
    assessed: list[str] = field(default_factory=list)  # cases ready to complete their assessment
    rows: dict[str, dict[str, object]] = field(default_factory=dict)  # the fault table

    @property
    def db(self) -> Path:
        return self.data / "onefamily.db"

    def child(self, kind: str) -> int:
        found = _children(self.launcher.pid)
        assert kind in found, f"no {kind} under the launcher: {found}"
        return found[kind]


def http(system: System, user: str) -> httpx.AsyncClient:
    # A generous client timeout: a command that hangs is measured, not cut off by us.
    return httpx.AsyncClient(base_url=system.base + "/api/v1", headers={"X-User": user}, timeout=90)


@pytest.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    tmp = Path(tmp_path_factory.mktemp("faults"))
    data, api_port = tmp / "data", free_port()
    with SmtpServer() as smtp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEFAMILY_", "TEMPORAL_"))}
        env.pop("DATABASE_URL", None)
        env.update(ONEFAMILY_DATA_DIR=str(data), ONEFAMILY_API_PORT=str(api_port),
                   ONEFAMILY_TEMPORAL_PORT=str(free_port()), ONEFAMILY_TEMPORAL_UI_PORT=str(free_port()),
                   ONEFAMILY_AUTH="trusted-header", ONEFAMILY_COMMAND_TIMEOUT=str(TIMEOUT),
                   ONEFAMILY_SMTP_HOST="127.0.0.1", ONEFAMILY_SMTP_PORT=str(smtp.port),
                   ONEFAMILY_SMTP_FROM="OneFamily <noreply@kommune.example>",
                   ONEFAMILY_SMS_QUIET_HOURS="none")
        with open(tmp / "launcher.out", "ab") as log:
            launched = spawn([sys.executable, "-m", "launcher"], env=env, cwd=ROOT, stdout=log, stderr=log)
        system = System(launched, f"http://127.0.0.1:{api_port}", data, smtp)
        try:
            await _until("the system to come up", lambda: _ready(system), 90)
            async with httpx.AsyncClient(base_url=system.base, timeout=30) as root:
                for person in STAFF:  # each with an e-mail address: notices go out by SMTP
                    r = await root.post("/api/v1/staff", headers={"X-User": "admin"},
                                        json={**person, "email": f"{person['id']}@kommune.example"})
                    assert r.status_code == 201, r.text
            await _prepare(system)
            yield system
        finally:
            stop_process(launched)
            _write_table(system)


async def _ready(system: System) -> bool:
    try:
        async with httpx.AsyncClient(base_url=system.base, timeout=5) as root:
            return (await root.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _prepare(system: System) -> None:
    """POOL cases with a coordinator and a team (their meetings are planned one per fault),
    and one case per fault ready to complete its assessment (a document for the documents
    worker). Backdated: their first-contact deadlines are overdue, so deadline notices go out
    while the faults happen."""
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()

    async def one(n: int, assessed: bool) -> str:
        # Sent as during the faults: with a key, tried again on a 503 (a loaded box).
        body = case_create_body(received_at=old)
        body["family"]["name"] = f"Family Fault {n}"
        created = Command("mia", "POST", "/cases", body, f"setup-{n}")
        await drive(system, created)
        assert created.acknowledged, f"setup {n}: {created.answers}"
        case_id = created.result["id"]
        steps = [("mia", "POST", "coordinator", {"coordinator_id": "anna"}),
                 ("anna", "POST", "team", {"members": [{"staff_id": "ole", "discipline": "adult_services",
                                                        "department": "adult_services"}]})]
        if assessed:
            steps += [("anna", "POST", "assessment/meeting", _meeting()),
                      ("anna", "PUT", "assessment", ASSESSMENT)]
        for i, (who, method, path, payload) in enumerate(steps):
            step = Command(who, method, f"/cases/{case_id}/{path}", payload, f"setup-{n}-{i}")
            await drive(system, step)
            assert step.acknowledged, f"setup {n} {path}: {step.answers}"
        return case_id

    ids = await asyncio.gather(*(one(n, n >= POOL) for n in range(POOL + len(FAULTS))))
    system.pool = list(ids[:POOL])
    system.meetings = list(ids[:POOL])
    system.assessed = list(ids[POOL:])


def _meeting() -> dict:
    return {"at": (datetime.now(UTC) + timedelta(days=2)).isoformat(), "location": "Town hall",
            "participants": ["anna", "ole", "family"]}


# ---------------------------------------------------------------- commands in flight


@dataclass
class Command:
    who: str
    method: str
    path: str
    body: dict | None
    key: str
    answers: list[int] = field(default_factory=list)  # the status of every try (0: cut off)
    slowest: float = 0.0
    result: dict | None = None
    answered_at: float | None = None  # time.monotonic() of the 2xx

    @property
    def acknowledged(self) -> bool:
        return bool(self.answers) and 200 <= self.answers[-1] < 300


async def drive(system: System, command: Command, give_up_after: float = 90) -> None:
    """Send until answered 2xx, with the same key, as a careful client does: a 503 (the
    deadline) or a cut connection (the API died) is tried again after a second."""
    began = time.monotonic()
    async with http(system, command.who) as client:
        while time.monotonic() - began < give_up_after:
            sent = time.monotonic()
            try:
                r = await client.request(command.method, command.path, json=command.body,
                                         headers={"Idempotency-Key": command.key})
                status = r.status_code
            except httpx.TransportError:
                status = 0
            took = time.monotonic() - sent
            command.slowest = max(command.slowest, took)
            command.answers.append(status)
            if 200 <= status < 300:
                command.result = r.json()
                command.answered_at = time.monotonic()
                return
            assert status in (0, 503), f"{command.method} {command.path}: {status} {r.text}"
            await asyncio.sleep(1)


def burst(system: System, fault: str) -> list[Command]:
    """What is in flight when the fault strikes: a contact on every pool case (each named by
    its key in `notes`), the assessment meeting of one pool case (e-mailed invitations), the
    completed assessment of another case (a PDF for the documents worker), and a new case."""
    commands = [Command("anna", "POST", f"/cases/{case_id}/contacts",
                        {"kind": "phone", "at": datetime.now(UTC).isoformat(), "notes": f"{fault}-{i}"},
                        f"{fault}-contact-{i}") for i, case_id in enumerate(system.pool)]
    commands.append(Command("anna", "POST", f"/cases/{system.meetings.pop()}/assessment/meeting",
                            _meeting(), f"{fault}-meeting"))
    commands.append(Command("anna", "POST", f"/cases/{system.assessed.pop()}/assessment/complete",
                            None, f"{fault}-complete"))
    body = case_create_body()
    body["family"]["name"] = f"Family Registered During {fault}"
    commands.append(Command("mia", "POST", "/cases", body, f"{fault}-register"))
    return commands


# ---------------------------------------------------------------- the faults


async def kill(system: System, kind: str) -> None:
    os.kill(system.child(kind), signal.SIGKILL)


async def freeze_worker(system: System) -> None:
    pid = system.child("worker")
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(15)
    finally:
        os.kill(pid, signal.SIGCONT)


async def lock_database(system: System) -> None:
    """An exclusive transaction from another connection for 10 s: every writer waits."""
    db = sqlite3.connect(system.db, timeout=5, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        await asyncio.sleep(10)
        db.execute("ROLLBACK")
    finally:
        db.close()


FAULTS: dict[str, Callable[[System], Awaitable[None]]] = {
    "dev server SIGKILL": lambda s: kill(s, "temporal"),
    "case worker SIGKILL": lambda s: kill(s, "worker"),
    "documents worker SIGKILL": lambda s: kill(s, "documents worker"),
    "API SIGKILL": lambda s: kill(s, "api"),
    "case worker SIGSTOP 15 s": freeze_worker,
    "database locked 10 s": lock_database,
}


# ---------------------------------------------------------------- counting


def outbox_duplicates(system: System) -> int:
    db = sqlite3.connect(f"file:{system.db}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT count(*) FROM notifications GROUP BY case_id, purpose, recipient_id, "
                          "channel HAVING count(*) > 1").fetchall()
    finally:
        db.close()
    return sum(n - 1 for (n,) in rows)


def smtp_duplicates(system: System) -> int:
    seen = Counter(str(m["Message-ID"]) for m in system.smtp.messages)
    return sum(n - 1 for n in seen.values())


async def settled(system: System, commands: list[Command]) -> dict[str, object]:
    """The fault's row: replay every key once, then count."""
    replayed = [Command(c.who, c.method, c.path, c.body, c.key) for c in commands]
    await asyncio.gather(*(drive(system, c, 60) for c in replayed))
    lost = twice = 0
    async with http(system, "mia") as mia:
        for first, again in zip(commands, replayed, strict=True):
            assert first.acknowledged, f"{first.key}: never answered 2xx: {first.answers}"
            assert again.acknowledged, f"{again.key} replayed: {again.answers}"
            if first.path == "/cases":  # the same key names the same case
                twice += first.result["id"] != again.result["id"]
                r = await mia.get("/cases", params={"q": first.body["family"]["name"], "limit": 10})
                assert r.status_code == 200, r.text
                named = [c for c in r.json()["items"] if c.get("family_name") == first.body["family"]["name"]]
                lost += not named
                twice += max(0, len(named) - 1)
                continue
            case = (await mia.get(first.path.split("/contacts")[0].split("/assessment")[0])).json()
            if first.path.endswith("/contacts"):
                found = [c for c in case["contacts"] if c.get("notes") == first.body["notes"]]
            elif first.path.endswith("/meeting"):
                found = [h for h in case["history"]
                         if h["event"] in ("assessment_meeting_scheduled", "assessment_meeting_rescheduled")]
            else:
                found = [h for h in case["history"] if h["event"] == "assessment_completed"]
                # ...and its report, rendered by the documents worker, arrives.
                lost += not await _document(system, case["id"], "assessment_report")
            lost += not found
            twice += max(0, len(found) - 1)
    return {"lost": lost, "applied twice": twice,
            "hung": sum(c.slowest > TIMEOUT + SLACK for c in commands + replayed)}


async def _document(system: System, case_id: str, kind: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(f"file:{system.db}?mode=ro", uri=True, timeout=30)
        try:
            if db.execute("SELECT count(*) FROM documents WHERE case_id = ? AND kind = ?",
                          (case_id, kind)).fetchone()[0]:
                return True
        finally:
            db.close()
        await asyncio.sleep(0.5)
    return False


async def _notices_settled(system: System, timeout: float = 30) -> None:
    """Until the outbox has nothing queued (the notices of the fault are out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db = sqlite3.connect(f"file:{system.db}?mode=ro", uri=True, timeout=30)
        try:
            waiting = db.execute("SELECT count(*) FROM notifications WHERE status IN ('queued', 'failed')"
                                 ).fetchone()[0]
        finally:
            db.close()
        if not waiting:
            return
        await asyncio.sleep(0.5)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_fault_loses_nothing_applies_nothing_twice_hangs_nothing(system: System, fault: str) -> None:
    began = time.monotonic()
    await _until("ready before the fault", lambda: _ready(system), 60)
    before = smtp_duplicates(system) + outbox_duplicates(system)
    mails = len(system.smtp.messages)
    commands = burst(system, fault)
    in_flight = [asyncio.create_task(drive(system, c)) for c in commands]
    await asyncio.sleep(0.2)  # the commands are on their way
    struck = time.monotonic()
    await FAULTS[fault](system)
    await asyncio.gather(*in_flight)
    await _until("ready after the fault", lambda: _ready(system), 60)
    row = await settled(system, commands)
    await _notices_settled(system)
    row["notices twice"] = smtp_duplicates(system) + outbox_duplicates(system) - before
    row["in flight"] = sum(c.answered_at is None or c.answered_at > struck for c in commands)
    row["commands"] = len(commands)
    row["mails"] = len(system.smtp.messages) - mails
    row["tries"] = sum(len(c.answers) for c in commands)
    row["503/cut"] = sum(1 for c in commands for a in c.answers if a in (0, 503))
    row["slowest s"] = round(max(c.slowest for c in commands), 1)
    row["took s"] = round(time.monotonic() - began, 1)
    system.rows[fault] = row
    print(f"\n{fault}: {row}")
    assert {k: row[k] for k in COLUMNS} == dict.fromkeys(COLUMNS, 0), row


def _write_table(system: System) -> None:
    if not system.rows:
        return
    extra = ("commands", "in flight", "tries", "503/cut", "slowest s", "mails", "took s")
    lines = [f"Fault table (tests/test_faults.py; ONEFAMILY_COMMAND_TIMEOUT={TIMEOUT:g} s, "
             f"hung = one try over {TIMEOUT + SLACK:g} s)", "",
             "| fault | " + " | ".join(COLUMNS + extra) + " |",
             "|---|" + "---|" * (len(COLUMNS) + len(extra))]
    for fault, row in system.rows.items():
        lines.append(f"| {fault} | " + " | ".join(str(row.get(k, "")) for k in COLUMNS + extra) + " |")
    text = "\n".join(lines) + "\n"
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(text)
    print("\n" + text)
