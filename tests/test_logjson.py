"""Structured JSON log lines without personal data (logjson.py, issue 12 point 5). The real
processes' lines are checked after a walk-through in tests/test_topology.py."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine, text

import logjson


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("onefamily.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_json_object_with_the_fields() -> None:
    line = json.loads(logjson.JsonFormatter("worker-cases").format(
        record("projection failed for version %s", 7, case_id="c-1", checked=3)))
    assert line["level"] == "warning" and line["logger"] == "onefamily.test"
    assert line["process"] == "worker-cases" and isinstance(line["pid"], int)
    assert line["msg"] == "projection failed for version 7"
    assert line["case_id"] == "c-1" and line["checked"] == 3
    assert line["at"].endswith("+00:00")


def test_the_access_log_line_is_merged_not_quoted() -> None:
    access = json.dumps({"method": "GET", "path": "/api/v1/cases", "status": 200, "ms": 3.1})
    line = json.loads(logjson.JsonFormatter("api").format(record(access)))
    assert line["path"] == "/api/v1/cases" and line["status"] == 200 and "msg" not in line


def test_bound_parameters_input_values_and_addresses_are_scrubbed() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (name TEXT UNIQUE)"))
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": "Emil Jensen"})
        with pytest.raises(Exception) as caught:
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": "Emil Jensen"})

    class Person(BaseModel):
        age: int

    with pytest.raises(Exception) as invalid:
        Person(age="Mette Jensen")
    formatter = logjson.JsonFormatter("api")
    for error in (caught.value, invalid.value):
        rec = record("failed", exc_info=(type(error), error, error.__traceback__))
        out = formatter.format(rec)
        line = json.loads(out)
        assert "Jensen" not in out, out
        assert line["exc_type"] and line["trace"]
    assert "[parameters hidden]" in logjson.scrub(str(caught.value))
    assert logjson.scrub("mail to anna@example.org failed") == "mail to <email> failed"
    assert len(logjson.scrub("x" * 5000)) <= logjson.MAX_MESSAGE + 3


def test_configure_leaves_a_configured_root_alone() -> None:
    root = logging.getLogger()
    assert root.handlers, "pytest has its capture handlers on the root logger"
    before = list(root.handlers)
    assert logjson.configure("api") is False
    assert root.handlers == before
