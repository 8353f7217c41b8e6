"""Backup and restore of the read model (backup.py, docs/backup.md): SQLite's online backup API
on a live read model while a writer keeps projecting, restored into a fresh data dir; and a
PostgreSQL read model through pg_dump -Fc / pg_restore (the throwaway server of
tests/postgres.py, its own binaries). The whole system's backup, restored and started again,
is in tests/test_rebuild.py (the real stack)."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

import backup
from api.audit import Entry, append, verify_chain
from bench.dashboard import build_case
from models.case import CaseState, Stage
from models.db import get_engine, init_read_model
from models.projection import write_case
from models.tables import CaseRow
from models.tables_outbox import DocumentRow
from settings import Settings

NOW = datetime.now(UTC)
ELSEWHERE = "127.0.0.1:7233"  # Temporal "at TEMPORAL_ADDRESS": the read model alone here


def cases(n: int, start: int = 0) -> list[CaseState]:
    stages = [Stage.referred, Stage.assessment, Stage.active, Stage.planning]
    return [build_case(stages[i % 4], NOW - timedelta(days=30 + i), name=f"Family Backup {i}",
                       escalate=i % 4 == 2, coordinator="coord001")
            for i in range(start, start + n)]


def project(engine, *states: CaseState) -> None:
    with Session(engine) as session:
        for state in states:
            write_case(session, state, NOW)
        session.commit()


def sqlite_rows(path: Path, table: str) -> dict:
    with sqlite3.connect(path) as conn:
        return {row[0]: row for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1")}


def test_an_online_sqlite_backup_while_writing_restores_into_a_fresh_data_dir(settings, tmp_path) -> None:
    engine = get_engine(settings.db_url)
    ready = cases(40)
    project(engine, *ready[:10])
    written, stop = [10], threading.Event()

    def writer() -> None:  # the projection goes on while the backup is taken
        while not stop.is_set() and written[0] < len(ready):
            project(engine, ready[written[0]])
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 15:
            threading.Event().wait(0.01)
        folder = backup.backup(settings.model_copy(update={"temporal_address": ELSEWHERE}), tmp_path / "b")
        at_backup = written[0]
        while written[0] < min(at_backup + 5, len(ready)):
            threading.Event().wait(0.01)
    finally:
        stop.set()
        thread.join()

    source = Path(settings.db_url.split("///", 1)[1])
    copied, live = sqlite_rows(folder / "onefamily.db", "cases"), sqlite_rows(source, "cases")
    assert 10 <= len(copied) < len(live), "a snapshot taken in the middle of the writes"
    assert all(live[cid] == row for cid, row in copied.items()), "every copied row as it is stored"
    with sqlite3.connect(folder / "onefamily.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
    assert not (folder / "onefamily.db-wal").exists()

    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"onefamily.db", "encryption.key"}
    assert any(ELSEWHERE in note for note in manifest["notes"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((folder / f).stat().st_mode) == 0o600 for f in manifest["files"])
    assert (tmp_path / "b" / ".gitignore").read_text() == "*\n"

    fresh = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "restored"))
    done = backup.restore(folder, fresh)
    assert len(done) == 2
    key = "encryption.key"
    assert (fresh.data_dir / key).read_bytes() == (settings.data_dir / key).read_bytes()
    assert sqlite_rows(fresh.data_dir / "onefamily.db", "cases") == copied
    init_read_model(fresh)  # the restored data dir's key opens the sealed columns
    with Session(get_engine(fresh.db_url)) as session:
        for state in ready[:10]:
            row = session.get(CaseRow, state.id)
            assert row.family_name == state.family.name
            assert CaseState.model_validate(row.document).model_dump() == state.model_dump()
    init_read_model(settings)
    with pytest.raises(backup.BackupError, match="not empty"):  # never over a live data dir
        backup.restore(folder, fresh)
    (folder / "onefamily.db").write_bytes(b"damaged")
    with pytest.raises(backup.BackupError, match="manifest"):
        backup.restore(folder, Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "other")))


def pg_tables(url: str) -> dict[str, list[tuple]]:
    engine = get_engine(url)
    with engine.connect() as conn:
        names = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                  "ORDER BY 1")).scalars().all()
        return {n: [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{n}" ORDER BY 1'))] for n in names}


def test_pg_dump_and_pg_restore_round_trip(postgres_server, settings, tmp_path) -> None:
    source = postgres_server.create_database(migrated=True)
    engine = get_engine(source)
    project(engine, *cases(12))
    append(engine, [Entry("anna", "read case", "GET", f"/api/v1/cases/{i}", None, 200) for i in range(5)])
    with Session(engine) as session:
        session.add(DocumentRow(id="d-1", case_id="c-1", kind="joint_plan", version=1, language="da",
                                content_hash="0" * 64, html="<p>plan</p>", pdf=b"%PDF-1.7\x00\xff",
                                created_at=NOW, created_by="anna"))
        session.commit()
    on_pg = settings.model_copy(update={"database_url": source, "temporal_address": ELSEWHERE})
    folder = backup.backup(on_pg, tmp_path / "b")
    assert set(json.loads((folder / "manifest.json").read_text())["files"]) == {"read-model.dump",
                                                                                "encryption.key"}

    target = postgres_server.create_database()  # empty: no schema at all
    fresh = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "restored"), DATABASE_URL=target)
    backup.restore(folder, fresh)
    before, after = pg_tables(source), pg_tables(target)
    assert after == before and len(after["cases"]) == 12 and len(after["audit"]) == 5
    assert after["alembic_version"] == before["alembic_version"]

    restored = get_engine(target)
    with Session(restored) as session:  # sealed columns open, bytes intact
        assert session.get(DocumentRow, "d-1").pdf == b"%PDF-1.7\x00\xff"
        assert verify_chain(session) == (True, None)
    append(restored, [Entry("mia", "read case", "GET", "/api/v1/cases/x", None, 200)])  # sequences go on
    with Session(restored) as session:
        assert verify_chain(session) == (True, None)
    with restored.connect() as conn, pytest.raises(DBAPIError, match="append-only"):  # triggers came along
        conn.execute(text("DELETE FROM audit"))
    for e in (engine, restored):
        e.dispose()
