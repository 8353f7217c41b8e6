"""No names, diagnoses or notes in plaintext in the read model (DESIGN §9 "Files at rest",
issue 8 point 5): sealed columns (models/sealed.py), keyed hashes for `q` and for duplicate
detection, legacy plaintext rows still readable. A real read model, read raw: SQLite (its
files on disk) and PostgreSQL (every row as the server stores it; `db_url`, tests/postgres.py)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from activities.report import notify_in_app
from api import dashboard
from domain.lifecycle import execute, new_case
from models import sealed
from models.case import CaseCreate, CaseState
from models.commands import CommandInput
from models.db import get_engine
from models.projection import open_case_ids_for_person, write_case
from models.tables import CaseRow
from models.tables_outbox import DocumentRow, NotificationRow
from settings import Settings
from tests.factories import NOW, case_create_body, coordinator, ctx, manager
from workflows.codec import load_keys

FAMILY = "Familien Kvistgaard"
CHILD = "Emilie Kvistgaard"
PARENT = "Mette Kvistgaard"
DIAGNOSIS = "Aspergers syndrom"
NOTE = "Mor fortalte om søvnproblemer og skolevægring"
PHONE = "+4529876543"
SECRETS = [FAMILY, CHILD, PARENT, "Kvistgaard", "Emilie", DIAGNOSIS, NOTE, PHONE]


def referral(family: str = FAMILY, child: str = CHILD, birth: str = "2015-03-02",
             parent: str = PARENT) -> CaseCreate:
    body = case_create_body()
    body["family"]["name"] = family
    body["family"]["members"] = [
        {"name": child, "role": "child", "birth_date": birth, "diagnoses": [DIAGNOSIS]},
        {"name": parent, "role": "parent", "birth_date": "1985-01-10", "phone": PHONE},
    ]
    return CaseCreate.model_validate(body)


def build(family: str = FAMILY, child: str = CHILD, birth: str = "2015-03-02",
          parent: str = PARENT) -> CaseState:
    """A referral, assigned, with a contact note: names, a diagnosis, a phone, free text."""
    boss, anna = manager(), coordinator("anna")
    state = new_case(str(uuid.uuid4()), referral(family, child, birth, parent), ctx(boss))
    state = execute(state, "assign_coordinator", CommandInput(actor=boss, body={"coordinator_id": "anna"}),
                    ctx(boss))
    at = (NOW - timedelta(hours=1)).isoformat()
    return execute(state, "record_contact",
                   CommandInput(actor=anna, body={"kind": "phone", "at": at, "notes": NOTE}), ctx(anna))


@pytest.fixture
def settings(settings: Settings, db_url: str) -> Settings:
    """The same data dir (its keys), the read model on SQLite and on PostgreSQL."""
    return settings.model_copy(update={"database_url": db_url})


@pytest.fixture
def engine(settings: Settings):
    return get_engine(settings.db_url)


def on_sqlite(settings: Settings) -> bool:
    return settings.db_url.startswith("sqlite")


def project(engine, *states: CaseState) -> None:
    with Session(engine) as session:
        for state in states:
            write_case(session, state, NOW)
        session.commit()


def db_path(settings: Settings) -> Path:
    return Path(settings.db_url.split("///", 1)[1])


def raw_bytes(settings: Settings) -> bytes:
    """Everything SQLite has on disk: the database file, its WAL and shared memory. On
    PostgreSQL: every row of every table as the server holds it (no ORM decoding)."""
    if not on_sqlite(settings):
        with get_engine(settings.db_url).connect() as conn:
            tables = conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return b"\n".join(row.encode() for (table,) in tables.all() for (row,) in conn.exec_driver_sql(
                f'SELECT row_to_json(t)::text FROM "{table}" t'))
    path = db_path(settings)
    return b"".join(Path(f"{path}{s}").read_bytes() for s in ("", "-wal", "-shm")
                    if Path(f"{path}{s}").exists())


def assert_no_secrets(data: bytes) -> None:
    lowered = data.lower()
    for secret in SECRETS:
        for form in {secret, secret.lower(), secret.casefold()}:
            assert form.encode() not in data and form.encode() not in lowered, f"{form!r} at rest"
            assert json.dumps(form).encode() not in data  # as JSON would escape it (ø)


def raw_query(settings: Settings, sql: str, *args) -> list[tuple]:
    """SQL with `?` placeholders straight to the driver (sqlite3 / psycopg), committed."""
    if on_sqlite(settings):
        with sqlite3.connect(db_path(settings)) as conn:
            return conn.execute(sql, args).fetchall()
    with get_engine(settings.db_url).begin() as conn:
        result = conn.exec_driver_sql(sql.replace("?", "%s"), args)
        return [tuple(row) for row in result] if result.returns_rows else []


def raw_json(settings: Settings, value):
    """A JSON column read raw: SQLite hands back its text, psycopg the decoded value."""
    return json.loads(value) if on_sqlite(settings) else value


def ids(engine, q: str) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(CaseRow.id).where(sealed.name_match(CaseRow.search_text, q))))


# ---------------------------------------------------------------- at rest


def test_a_projected_case_leaves_no_names_diagnoses_or_notes_on_disk(engine, settings) -> None:
    state = build()
    project(engine, state)
    assert_no_secrets(raw_bytes(settings))  # the WAL holds the fresh pages
    if on_sqlite(settings):
        with sqlite3.connect(db_path(settings)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert_no_secrets(raw_bytes(settings))  # ...and the main file once checkpointed

    (family_name, document, search_text), = raw_query(
        settings, "SELECT family_name, document, search_text FROM cases WHERE id = ?", state.id)
    assert family_name.startswith("v1:") and raw_json(settings, document).startswith("v1:")
    assert search_text.startswith(",") and all(len(h) == 32 for h in search_text.strip(",").split(","))
    keys = [k for (k,) in raw_query(settings, "SELECT person_key FROM case_persons WHERE case_id = ?",
                                    state.id)]
    assert len(keys) == 2 and all(len(k) == 32 and "|" not in k for k in keys)

    with Session(engine) as session:  # through the ORM: the plaintext
        row = session.get(CaseRow, state.id)
        assert row.family_name == FAMILY
        back = CaseState.model_validate(row.document)
        assert back.model_dump() == state.model_dump()
        assert back.contacts[0].notes == NOTE and back.family.members[0].diagnoses == [DIAGNOSIS]
        # Core selects of the column (the dashboard's) decrypt too.
        assert session.execute(sa_select(CaseRow.__table__.c.family_name)).scalar_one() == FAMILY


def test_the_seal_key_is_derived_from_the_codec_key_and_bound_to_its_column(engine, settings) -> None:
    state = build()
    project(engine, state)
    (stored,), = raw_query(settings, "SELECT family_name FROM cases WHERE id = ?", state.id)
    current, keys = load_keys(settings)
    _, key_id, blob = stored.split(":", 2)
    assert key_id == current  # the codec's key id: rotation works the same way
    data = base64.b64decode(blob)
    aad = f"v1:{key_id}:cases.family_name".encode()
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    with pytest.raises(InvalidTag):  # not the payload codec's key itself
        AESGCM(keys[current]).decrypt(data[:12], data[12:], aad)
    derived = sealed.derive_key(keys[current], sealed.SEAL_INFO)
    assert AESGCM(derived).decrypt(data[:12], data[12:], aad).decode() == FAMILY

    # A sealed value moved into another column (or row of another table) does not open.
    with pytest.raises(sealed.SealedValueError, match="failed authentication"):
        sealed.open_text("notifications.body", stored)
    # Nor does one sealed with a key this process never had (the message names the id only).
    foreign = "v1:k-unknown:" + base64.b64encode(os.urandom(40)).decode()
    with pytest.raises(sealed.SealedValueError, match="k-unknown"):
        sealed.open_text("cases.family_name", foreign)
    # A legacy text that merely starts like a sealed value is returned as it is.
    assert sealed.open_text("cases.family_name", "v1: first visit") == "v1: first visit"
    # Ciphertext cannot be compared in SQL: refused rather than never matching.
    with pytest.raises(TypeError, match="sealed column"):
        select(CaseRow.id).where(CaseRow.family_name == FAMILY)
    with pytest.raises(TypeError, match="sealed column"):
        select(CaseRow.id).order_by(CaseRow.family_name.desc())


# ---------------------------------------------------------------- q: exact, on keyed hashes


def test_search_matches_whole_names_and_words_exactly(engine, settings) -> None:
    mine, other = build(), build(family="Familien Holm-Larsen", child="Anne-Marie Holm-Larsen",
                         parent="Jonas Holm-Larsen")
    project(engine, mine, other)
    for q in (FAMILY, "kvistgaard", "KVISTGAARD", "  emilie   KVISTGAARD ", "Emilie", "mette",
              CHILD.upper()):
        assert ids(engine, q) == {mine.id}, q
    for q in ("holm-larsen", "Holm", "larsen", "anne-marie", "Anne", "familien holm-larsen"):
        assert ids(engine, q) == {other.id}, q
    assert ids(engine, "familien") == {mine.id, other.id}  # a whole word of both family names
    for q in ("kvist", "gaard", "milie", "Emilie Holm", "Kvistgaard Emilie", "%", "_", "%kvist%",
              "_____", "*", "'", "\\", "%_%", ",", "familien kvistgaard holm"):
        assert ids(engine, q) == set(), q
    assert ids(engine, "   ") == {mine.id, other.id}  # a blank search filters nothing

    with Session(engine) as session:  # the dashboard's case list uses the same matching
        listed = dashboard.case_list(session, NOW, q="Kvistgaard", include_closed=True)
        assert [i["id"] for i in listed["items"]] == [mine.id] and listed["total"] == 1
        assert listed["items"][0]["family_name"] == FAMILY
        assert dashboard.case_list(session, NOW, q="%", include_closed=True)["total"] == 0


def test_rotated_keys_still_read_and_find_older_rows(engine, settings) -> None:
    old = build()
    project(engine, old)
    current, keys = load_keys(settings)
    sealed.configure("k-next", {**keys, "k-next": os.urandom(32)})  # a new current key
    newer = build(family="Familien Kvist", child="Ida Kvist", parent="Ole Kvist")
    project(engine, newer)
    (stored,), = raw_query(settings, "SELECT family_name FROM cases WHERE id = ?", newer.id)
    assert stored.startswith("v1:k-next:")
    with Session(engine) as session:
        assert session.get(CaseRow, old.id).family_name == FAMILY
    assert ids(engine, "kvistgaard") == {old.id} and ids(engine, "ida") == {newer.id}
    with Session(engine) as session:
        assert open_case_ids_for_person(session, CHILD, "2015-03-02") == [old.id]


# ---------------------------------------------------------------- possible duplicates


def test_a_person_already_on_an_open_case_is_still_found(engine, settings) -> None:
    first = build()
    project(engine, first)
    with Session(engine) as session:
        assert open_case_ids_for_person(session, CHILD, "2015-03-02") == [first.id]
        assert open_case_ids_for_person(session, "  emilie KVISTGAARD", "2015-03-02") == [first.id]
        assert open_case_ids_for_person(session, CHILD, "2015-03-03") == []
        assert open_case_ids_for_person(session, "Emilie", "2015-03-02") == []
        assert open_case_ids_for_person(session, "%", "%") == []
    # The flag the API puts on a new referral naming her (api/cases.py register_referral).
    with Session(engine) as session:
        dupes = sorted({cid for m in referral().family.members
                        for cid in open_case_ids_for_person(session, m.name, m.birth_date)})
    second = new_case(str(uuid.uuid4()), referral(), ctx(manager()), dupes)
    assert [f["case_ids"] for f in second.flags if f["kind"] == "possible_duplicate"] == [[first.id]]
    # A closed case flags nobody.
    boss = manager()
    closed = execute(first, "close", CommandInput(actor=boss, body={"reason": "duplicate"}), ctx(boss))
    project(engine, closed)
    with Session(engine) as session:
        assert open_case_ids_for_person(session, CHILD, "2015-03-02") == []


# ---------------------------------------------------------------- legacy rows


def test_rows_written_before_sealing_are_still_read_and_sealed_on_the_next_projection(
        engine, settings) -> None:
    state = build()
    legacy_doc = state.model_dump(mode="json")
    utc = "" if on_sqlite(settings) else "+00"  # PostgreSQL: timestamptz, SQLite: naive UTC text
    raw_query(  # as an older version wrote it
        settings,
        "INSERT INTO cases (id, version, stage, coordinator_id, unit, family_name, search_text,"
        " team_text, received_at, created_at, stage_since, document, updated_at) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        state.id, state.version, state.stage.value, "anna", "children_disability", FAMILY,
        f"{FAMILY} {CHILD} {PARENT}".lower(), ",anna,", "2026-11-20 09:00:00.000000" + utc,
        "2026-11-23 10:00:00.000000" + utc, "2026-11-23 10:00:00.000000" + utc, json.dumps(legacy_doc),
        "2026-11-23 10:00:00.000000" + utc)
    raw_query(settings, "INSERT INTO case_persons (case_id, person_key) VALUES (?, ?)",
              state.id, "emilie kvistgaard|2015-03-02")
    raw_query(settings, "INSERT INTO notifications (id, key, case_id, channel, recipient_id,"
              " recipient_role, purpose, template, language, status, attempts, created_at,"
              " updated_at, subject, body) VALUES (?, ?, ?, 'in_app', 'anna', 'coordinator',"
              " 'x', 'x', 'da', 'sent', 1, ?, ?, ?, ?)",
              "n-legacy", "legacy", state.id, "2026-11-23 10:00:00" + utc, "2026-11-23 10:00:00" + utc,
              f"Om {FAMILY}", f"{CHILD}: {NOTE}")
    with Session(engine) as session:
        row = session.get(CaseRow, state.id)
        assert row.family_name == FAMILY
        assert CaseState.model_validate(row.document).model_dump() == state.model_dump()
        note = session.get(NotificationRow, "n-legacy")
        assert (note.subject, note.body) == (f"Om {FAMILY}", f"{CHILD}: {NOTE}")
        # The legacy plaintext person key still flags a duplicate.
        assert open_case_ids_for_person(session, CHILD, "2015-03-02") == [state.id]
        # (The legacy search text is not LIKE-searched any more: found again once re-projected.)
        assert ids(engine, "kvistgaard") == set()

    project(engine, _bump(state))
    (family_name, search_text), = raw_query(settings, "SELECT family_name, search_text FROM cases")
    assert family_name.startswith("v1:") and "kvistgaard" not in search_text
    assert [k for (k,) in raw_query(settings, "SELECT person_key FROM case_persons")
            if "|" in k] == []
    assert ids(engine, "kvistgaard") == {state.id}
    with Session(engine) as session:
        assert open_case_ids_for_person(session, CHILD, "2015-03-02") == [state.id]


def _bump(state: CaseState) -> CaseState:
    """The same case one version later (any command would do)."""
    return state.model_copy(update={"version": state.version + 1})


# ---------------------------------------------------------------- outbox and documents


def test_notifications_and_documents_are_stored_sealed(engine, settings) -> None:
    state = build()
    project(engine, state)
    core_id = notify_in_app(engine, key=f"nudge:{uuid.uuid4()}", case_id=state.id, recipient_id="anna",
                            recipient_role="coordinator", purpose="manager_nudge",
                            subject=f"Se på {FAMILY}", body=f"{CHILD} ({DIAGNOSIS}): {NOTE}")
    assert core_id
    pdf = b"%PDF-1.7 " + CHILD.encode() + bytes(range(256))
    with Session(engine) as session:
        session.add(NotificationRow(
            id="n-orm", key="k-orm", case_id=state.id, channel="email", recipient_id="family:1",
            recipient_role="family", purpose="invite", template="invite", language="da",
            status="queued", created_at=NOW, updated_at=NOW, subject=f"Møde om {CHILD}",
            body=f"Kære {PARENT}", ics=f"BEGIN:VCALENDAR\nSUMMARY:{FAMILY}\nEND:VCALENDAR"))
        session.add(DocumentRow(
            id="d-1", case_id=state.id, kind="joint_plan", version=1, language="da",
            content_hash="0" * 64, html=f"<h1>{FAMILY}</h1><p>{DIAGNOSIS}</p>", pdf=pdf,
            created_at=NOW, created_by="anna"))
        session.commit()

    assert_no_secrets(raw_bytes(settings))
    for subject, body in raw_query(settings, "SELECT subject, body FROM notifications"):
        assert subject.startswith("v1:") and body.startswith("v1:")
    (stored_pdf,), = raw_query(settings, "SELECT pdf FROM documents")
    assert stored_pdf.startswith(b"v1:") and b"%PDF" not in stored_pdf

    with Session(engine) as session:
        core = session.get(NotificationRow, core_id)
        assert (core.subject, core.body) == (f"Se på {FAMILY}", f"{CHILD} ({DIAGNOSIS}): {NOTE}")
        orm = session.get(NotificationRow, "n-orm")
        assert orm.body == f"Kære {PARENT}" and FAMILY in orm.ics
        doc = session.get(DocumentRow, "d-1")
        assert doc.pdf == pdf and doc.html == f"<h1>{FAMILY}</h1><p>{DIAGNOSIS}</p>"
        # An ORM update of a status leaves the sealed body readable.
        orm.status = "sent"
        session.commit()
        session.expire_all()
        assert session.get(NotificationRow, "n-orm").subject == f"Møde om {CHILD}"
    # The case page's outbox list reads the sealed table through Core.
    with Session(engine) as session:
        table = NotificationRow.__table__
        bodies = set(session.execute(sa_select(table.c.body)).scalars())
    assert f"Kære {PARENT}" in bodies
