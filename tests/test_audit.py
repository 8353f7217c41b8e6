"""The audit log (DESIGN §9): hash-chained, append-only rows for every read of case content
and every command, written by `api.audit.AuditMiddleware` with the authenticated principal as
actor; `GET /api/v1/audit` for the admin and the manager of the case's unit.

The app runs in trusted-header mode (the proxy's `X-User` from TestClient's peer) over a real
read model, SQLite and PostgreSQL (`db_url`, tests/postgres.py), seeded directly; Temporal is a
stand-in whose Query fails (the API falls back on the read model) and whose Update answers the
stored state.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, select
from temporalio.service import RPCError, RPCStatusCode

import api.main
from api import audit
from api.audit import AuditMiddleware, Entry, append, describe, verify_chain
from bench.dashboard import build_case
from models.case import Actor, CaseAnswer, Stage
from models.db import alembic_config, get_engine, init_read_model, migrate
from models.projection import write_case
from models.tables import AUDIT_GENESIS, AuditRow, CaseRow, StaffRow
from models.tables_outbox import DocumentRow
from settings import Settings

T0 = datetime.now(UTC) - timedelta(days=20)
UNIT = "children_disability"
STAFF = [  # id, roles, unit
    ("admin", ["admin"], "administration"),
    ("mia", ["manager"], UNIT),
    ("max", ["manager"], "adult_services"),
    ("anna", ["coordinator"], UNIT),
    ("ole", [], UNIT),  # on the case's team
]


class _Handle:
    def __init__(self, engine, case_id: str) -> None:
        self.engine, self.case_id = engine, case_id

    async def query(self, *args, **kwargs):
        raise RPCError("not here", RPCStatusCode.NOT_FOUND, b"")

    async def execute_update(self, *args, **kwargs) -> CaseAnswer:
        with Session(self.engine) as session:  # answered as a worker from before would
            return CaseAnswer.model_validate(session.get(CaseRow, self.case_id).document)


class FakeTemporal:
    def __init__(self, engine) -> None:
        self.engine = engine

    def get_workflow_handle(self, workflow_id: str) -> _Handle:
        return _Handle(self.engine, workflow_id.removeprefix("case-"))


def seed(engine) -> dict[str, str]:
    with Session(engine) as session:
        for staff_id, roles, unit in STAFF:
            session.add(StaffRow(id=staff_id, name=staff_id.title(), discipline="social_worker",
                                 department=unit, unit=unit, roles=roles, created_at=T0))
        session.commit()
        case = build_case(Stage.team_formed, T0, coordinator="anna", name="Family Hansen")
        assert "ole" in case.team_ids
        write_case(session, case, datetime.now(UTC))
        session.add(DocumentRow(id="doc-1", case_id=case.id, kind="assessment", version=1, language="da",
                                content_hash="h1", html="<p>Assessment</p>", pdf=b"%PDF-1.4",
                                created_at=T0, created_by="anna"))
        session.commit()
    return {"case": case.id}


def rows(engine) -> list[AuditRow]:
    with Session(engine) as session:
        return list(session.exec(select(AuditRow).order_by(AuditRow.id)))


@pytest.fixture
def env(tmp_path, monkeypatch, db_url) -> Iterator[tuple[TestClient, object, dict[str, str]]]:
    monkeypatch.setenv("ONEFAMILY_STUCK_INDEX_SECONDS", "0")  # no background indexer
    settings = Settings(ONEFAMILY_AUTH="trusted-header", ONEFAMILY_TRUSTED_PROXIES="127.0.0.1,::1,testclient",
                        ONEFAMILY_ALLOWED_HOSTS="testserver", ONEFAMILY_DATA_DIR=str(tmp_path / "data"),
                        DATABASE_URL=db_url)
    migrate(settings.db_url)
    init_read_model(settings)  # seed with the keys the app will search with
    engine = get_engine(settings.db_url)
    ids = seed(engine)

    async def connect(_settings):
        return FakeTemporal(engine)

    monkeypatch.setattr(api.main, "connect", connect)
    app = api.main.create_app(settings)
    if not any(getattr(r, "path", None) == "/api/v1/audit" for r in app.routes):
        app.include_router(audit.router)  # until api/main.py includes it
    with TestClient(app) as client:
        yield client, engine, ids


def get(client: TestClient, user: str, path: str, **params):
    return client.get(path, headers={"X-User": user}, params=params, follow_redirects=False)


def raw(engine, statement: str, **params):
    """One statement straight to the database, outside the app, committed (an attacker with
    the file, or with the owner's database credentials)."""
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return result.fetchall() if result.returns_rows else None


def drop_guard(engine, event: str) -> None:
    """Drop the trigger that refuses `event` (UPDATE or DELETE) on audit rows."""
    if engine.dialect.name == "sqlite":
        raw(engine, f"DROP TRIGGER audit_no_{event.lower()}")
    else:  # one trigger refuses both on PostgreSQL
        raw(engine, "DROP TRIGGER IF EXISTS audit_no_change ON audit")


# ---------------------------------------------------------------- what is written


def test_reads_lists_searches_commands_pages_and_documents_are_audited(env) -> None:
    client, engine, ids = env
    cid = ids["case"]
    assert get(client, "anna", f"/api/v1/cases/{cid}").status_code == 200
    assert get(client, "anna", "/api/v1/cases").status_code == 200
    r = get(client, "anna", "/api/v1/cases", q="Hansen")
    assert r.status_code == 200 and r.json()["total"] == 1
    r = client.post(f"/api/v1/cases/{cid}/resume", headers={"X-User": "anna"})
    assert r.status_code == 200, r.text
    assert get(client, "anna", f"/cases/{cid}").status_code == 200
    assert get(client, "anna", "/").status_code == 200
    assert get(client, "anna", "/api/v1/documents/doc-1").status_code == 200
    assert get(client, "max", f"/api/v1/cases/{cid}").status_code == 403

    got = [(r.actor, r.action, r.method, r.path, r.case_id, r.outcome) for r in rows(engine)]
    assert got == [
        ("anna", "read case", "GET", f"/api/v1/cases/{cid}", cid, 200),
        ("anna", "list cases", "GET", "/api/v1/cases", None, 200),
        ("anna", "search cases", "GET", "/api/v1/cases", None, 200),
        ("anna", "command resume", "POST", f"/api/v1/cases/{cid}/resume", cid, 200),
        ("anna", "read case", "GET", f"/cases/{cid}", cid, 200),
        ("anna", "read overview", "GET", "/", None, 200),
        ("anna", "read document", "GET", "/api/v1/documents/doc-1", cid, 200),
        ("max", "read case", "GET", f"/api/v1/cases/{cid}", cid, 403),
    ]
    with Session(engine) as session:
        assert verify_chain(session) == (True, None)


def test_a_search_term_is_in_no_column(env) -> None:
    client, engine, _ = env
    assert get(client, "mia", "/api/v1/cases", q="Hansen").status_code == 200
    assert get(client, "mia", "/cases", q="Hansen").status_code == 200
    found = rows(engine)
    assert [r.action for r in found] == ["search cases", "search cases"]
    for row in found:
        for value in row.model_dump().values():
            assert "hansen" not in str(value).lower()


def test_the_actor_is_the_authenticated_principal_never_a_header(env) -> None:
    client, engine, ids = env
    assert get(client, "ghost", f"/api/v1/cases/{ids['case']}").status_code == 401
    assert get(client, "ole", f"/api/v1/cases/{ids['case']}").status_code == 200
    assert [(r.actor, r.case_id) for r in rows(engine)] == [("ole", ids["case"])]


def test_a_nul_character_is_a_422_on_both_databases(env) -> None:
    """PostgreSQL refuses NUL in text (SQLite stores it): refused before any SQL, with a
    sentence, instead of a 500 or an unwritable audit row (503)."""
    client, engine, ids = env
    for path, params in [(f"/api/v1/cases/{ids['case']}%00", None), ("/api/v1/cases", {"q": "a\x00"}),
                         ("/api/v1/cases", {"coordinator_id": "anna\x00"}),
                         ("/api/v1/dashboard/stuck", {"coordinator_id": "\x00"})]:
        r = client.get(path, params=params, headers={"X-User": "mia"})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], (path, r.text)
    r = client.post("/api/v1/staff", headers={"X-User": "admin"}, json={
        "id": "nul", "name": "Nul\u0000l", "discipline": "other", "department": "x", "roles": ["manager"]})
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    r = client.post("/api/v1/staff", headers={"X-User": "admin"}, json={  # an escaped backslash is text
        "id": "bs", "name": "Back\\u0000slash", "discipline": "other", "department": "x",
        "roles": ["manager"]})
    assert r.status_code == 201, r.text
    assert get(client, "mia", "/api/v1/cases").status_code == 200  # nothing left broken behind


def test_principal_kind_appended_case_ids_and_the_unauthenticated() -> None:
    """The middleware's contract alone: `principal` and `principal_kind` come from the
    authentication in front of it; endpoints append the other cases they served."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    AuditRow.__table__.create(engine)
    DocumentRow.__table__.create(engine)
    app = FastAPI()
    app.state.engine = engine
    a, b = str(uuid.uuid4()), str(uuid.uuid4())

    @app.post("/codec/decode")
    def decode(request: Request) -> dict:
        request.state.audit_case_ids.extend([a, b, a])
        return {"payloads": []}

    @app.get("/api/v1/cases/{case_id}")
    def read(case_id: str) -> dict:
        return {}

    app.add_middleware(AuditMiddleware)

    class StandInAuth:  # what api/auth.py does, reduced to the contract
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send) -> None:
            headers = dict(scope.get("headers", []))
            state = scope.setdefault("state", {})
            who = headers.get(b"x-principal")
            state["principal"] = Actor(id=who.decode(), roles=["admin"]) if who else None
            if headers.get(b"x-kind"):
                state["principal_kind"] = headers[b"x-kind"].decode()
            await self.inner(scope, receive, send)

    app.add_middleware(StandInAuth)
    with TestClient(app) as client:
        client.post("/codec/decode", headers={"X-Principal": "admin", "X-User": "mia"})
        client.get(f"/api/v1/cases/{a}", headers={"X-Principal": "f1", "X-Kind": "family"})
        client.get(f"/api/v1/cases/{b}", headers={"X-User": "admin"})
        client.options("/codec/decode")
    got = [(r.actor, r.action, r.case_id) for r in rows(engine)]
    assert got == [("admin", "decrypt", a), ("admin", "decrypt", b), ("family:f1", "read case", a),
                   ("-", "read case", b)]


def test_the_action_table() -> None:
    cid = str(uuid.uuid4())
    assert describe("GET", f"/api/v1/cases/{cid}").action == "read case"
    assert describe("GET", "/api/v1/cases", "q=&stage=referred").action == "list cases"
    assert describe("GET", "/api/v1/cases", "q=Emil+Hansen").action == "search cases"
    assert describe("POST", f"/api/v1/cases/{cid}/close") == audit.Described("command close", (cid,))
    assert describe("POST", f"/api/v1/committee/items/{cid}-2/decision").case_ids == (cid,)
    assert describe("GET", "/api/v1/notifications", f"case_id={cid}").case_ids == (cid,)
    assert describe("GET", "/api/v1/documents/doc-9").doc_id == "doc-9"
    assert describe("GET", "/api/v1/cases/not-a-uuid").case_ids == ()
    assert describe("GET", "/reports/2026-11").action == "read report"
    assert describe("POST", "/api/v1/staff/x/password").action == "command set password"
    assert describe("POST", "/api/v1/other/x", route_path="/api/v1/other/{thing}") \
        .action == "command POST /api/v1/other/{thing}"
    assert audit.audited("GET", "/cases") and audit.audited("GET", "/")
    assert audit.audited("POST", "/codec/decode")
    for path in ("/api/v1/auth/session", "/api/v1/health", "/healthz", "/metrics", "/login", "/assets/x.css"):
        assert not audit.audited("GET", path), path
    assert not audit.audited("OPTIONS", "/codec/decode")


# ---------------------------------------------------------------- append-only, tamper-evident


def test_the_database_refuses_update_and_delete(env) -> None:
    from sqlalchemy.exc import DBAPIError

    client, engine, ids = env
    get(client, "anna", f"/api/v1/cases/{ids['case']}")
    for statement in ("UPDATE audit SET actor = 'nobody'", "DELETE FROM audit"):
        with pytest.raises(DBAPIError, match="append-only"):
            raw(engine, statement)
    if engine.dialect.name == "sqlite":  # also through the sqlite3 module itself
        db = sqlite3.connect(engine.url.database)
        try:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute("DELETE FROM audit")
        finally:
            db.close()
    assert [r.actor for r in rows(engine)] == ["anna"]


def test_tampering_with_a_row_is_detected(env) -> None:
    client, engine, ids = env
    for user in ("anna", "ole", "mia", "anna"):
        get(client, user, f"/api/v1/cases/{ids['case']}")
    with Session(engine) as session:
        assert verify_chain(session) == (True, None)
    drop_guard(engine, "UPDATE")  # an attacker with the file drops the trigger
    raw(engine, "UPDATE audit SET actor = 'admin' WHERE id = 2")
    with Session(engine) as session:
        assert verify_chain(session) == (False, 2)
    r = get(client, "admin", "/api/v1/audit/verify")
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["first_bad_id"] == 2


def test_a_removed_row_and_a_recomputed_row_are_detected(env) -> None:
    client, engine, ids = env
    for _ in range(4):
        get(client, "anna", f"/api/v1/cases/{ids['case']}")
    drop_guard(engine, "DELETE")
    raw(engine, "DELETE FROM audit WHERE id = 2")
    with Session(engine) as session:
        assert verify_chain(session) == (False, 3)
    # Rewriting a row with a correct own hash still breaks the link to the next row.
    drop_guard(engine, "UPDATE")
    (row,) = raw(engine, "SELECT id, at, actor, action, method, path, case_id, outcome, prev_hash "
                         "FROM audit WHERE id = 3")
    from models.tables import audit_hash

    at = row[1] if isinstance(row[1], datetime) else datetime.fromisoformat(row[1])  # SQLite: text
    forged = audit_hash(row[8], id=3, at=at, actor="admin", action=row[3],
                        method=row[4], path=row[5], case_id=row[6], outcome=row[7])
    raw(engine, "UPDATE audit SET actor = 'admin', hash = :forged WHERE id = 3", forged=forged)
    raw(engine, "DELETE FROM audit WHERE id = 1")
    with Session(engine) as session:
        assert verify_chain(session) == (False, 3)  # its prev_hash is no longer the genesis


def test_concurrent_writers_never_fork_the_chain(tmp_path) -> None:
    """Several engines stand for several API processes: each has its own connections."""
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    migrate(url)
    engines = [create_engine(url, connect_args={"timeout": 30}) for _ in range(4)]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                append(engines[n], [Entry(f"w{n}", "read case", "GET", f"/x/{i}", None, 200)])
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engines[0]) as session:
        assert verify_chain(session) == (True, None)
        found = list(session.exec(select(AuditRow.id, AuditRow.prev_hash).order_by(AuditRow.id)))
    assert [i for i, _ in found] == list(range(1, 161))
    assert found[0][1] == AUDIT_GENESIS


def test_existing_rows_are_chained_by_the_migration(tmp_path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    get_engine(url)
    command.upgrade(alembic_config(url), "0001")
    with get_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO audit (at, actor, method, path, case_id, status) VALUES "
                          "('2026-01-05 10:00:00.000001', 'anna', 'GET', '/api/v1/cases/c1', 'c1', 200), "
                          "('2026-01-05 10:00:02.000000', '-', 'POST', '/codec/decode', NULL, 401)"))
    migrate(url)
    append(get_engine(url), [Entry("mia", "read case", "GET", "/cases/c1", "c1", 200)])
    with Session(get_engine(url)) as session:
        assert verify_chain(session) == (True, None)
        found = session.exec(select(AuditRow).order_by(AuditRow.id))
        got = [(r.id, r.actor, r.action, r.outcome) for r in found]
    assert got == [(1, "unverified:anna", "read case", 200), (2, "-", "decrypt", 401),
                   (3, "mia", "read case", 200)]


# ---------------------------------------------------------------- GET /api/v1/audit


def test_the_audit_of_a_case_is_for_its_units_manager_and_the_admin(env) -> None:
    client, engine, ids = env
    cid = ids["case"]
    get(client, "anna", f"/api/v1/cases/{cid}")
    get(client, "anna", "/api/v1/cases")
    r = get(client, "mia", "/api/v1/audit", case_id=cid)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 1 and body["items"][0]["actor"] == "anna"
    assert {"at", "action", "path", "outcome", "prev_hash", "hash"} <= set(body["items"][0])
    for user in ("max", "ole", "anna"):  # another unit's manager, a team member, the coordinator
        r = get(client, user, "/api/v1/audit", case_id=cid)
        assert r.status_code == 403 and r.json()["detail"].endswith("."), (user, r.text)
    assert get(client, "mia", "/api/v1/audit", case_id=str(uuid.uuid4())).status_code == 404
    assert get(client, "mia", "/api/v1/audit").status_code == 403  # the whole log: admin only
    whole = get(client, "admin", "/api/v1/audit", limit=2).json()
    assert whole["total"] >= 7 and len(whole["items"]) == 2
    assert whole["items"][0]["id"] > whole["items"][1]["id"]  # newest first
    assert get(client, "mia", "/api/v1/audit/verify").status_code == 403
    verified = get(client, "admin", "/api/v1/audit/verify").json()
    assert verified["ok"] is True and verified["first_bad_id"] is None and verified["rows"] >= 9
    # Reading the audit log is audited too, with the case asked for.
    reads = [r for r in rows(engine) if r.action == "read audit log" and r.actor == "mia"]
    assert {(r.case_id, r.outcome) for r in reads} >= {(cid, 200), (None, 403)}


def test_postgresql_triggers_and_advisory_lock(postgres_url: str) -> None:
    from sqlalchemy.exc import DBAPIError

    url = postgres_url  # an empty database: the migrations make the triggers
    migrate(url)
    engines = [create_engine(url) for _ in range(3)]

    def writer(n: int) -> None:
        for i in range(20):
            append(engines[n], [Entry(f"w{n}", "read case", "GET", f"/x/{i}", None, 200)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engines[0]) as session:
        assert verify_chain(session) == (True, None)
    for statement in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
        with engines[0].connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement))
    for engine in engines:
        engine.dispose()


def test_no_content_leaves_when_the_row_cannot_be_written() -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    app = FastAPI()
    app.state.engine = engine  # no audit table: every write fails

    @app.get("/api/v1/cases/{case_id}")
    def read(case_id: str) -> dict:
        return {"diagnosis": "secret"}

    app.add_middleware(AuditMiddleware)
    with TestClient(app) as client:
        r = client.get(f"/api/v1/cases/{uuid.uuid4()}")
    assert r.status_code == 503 and "secret" not in r.text and "audit" in r.json()["detail"]
