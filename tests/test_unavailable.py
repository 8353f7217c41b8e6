"""The read model's database down -> 503 with a sentence (api/unavailable.py). End to end, with
a real PostgreSQL stopped and started again: tests/test_topology.py."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from api.unavailable import DOWN, DatabaseUnavailableMiddleware, database_down


def test_connection_failures_are_told_apart_from_bad_statements() -> None:
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    assert database_down(refused)
    assert not database_down(IntegrityError("INSERT", {}, ValueError("duplicate key")))
    assert not database_down(ValueError("no"))
    try:
        try:
            raise refused
        except OperationalError as inner:
            raise RuntimeError("while reading the staff directory") from inner
    except RuntimeError as outer:
        assert database_down(outer)


def test_the_answer_is_a_503_with_a_sentence_and_other_errors_stay_errors(tmp_path) -> None:
    app = FastAPI()
    gone = create_engine(f"sqlite:///{tmp_path}/no/such/dir/db.sqlite")

    @app.get("/down")
    def down() -> dict:
        with gone.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {}

    @app.get("/bug")
    def bug() -> dict:
        raise KeyError("a bug, not an outage")

    app.add_middleware(DatabaseUnavailableMiddleware)
    client = TestClient(app, raise_server_exceptions=False)
    r = client.get("/down")
    assert r.status_code == 503 and r.json() == {"detail": DOWN} and r.headers["retry-after"] == "5"
    assert client.get("/bug").status_code == 500
