"""Structured logs (DESIGN §12, issue 12 point 5): one JSON object per line on stderr, for the
API processes and the workers alike, and never personal data.

Every line: {"at", "level", "logger", "process", "pid", "msg"} plus, when the record carries
an exception, "exc_type", "exc" (its message, scrubbed) and "trace" (file:line function of
each frame, never local variables). A message that is itself a JSON object (the access log
of api/hardening.py) is merged into the line instead of being quoted.

What keeps names and notes out:
- our own loggers log ids, counts, kinds and durations only (case ids are random UUIDs);
- the access log never holds a query string, a body or a header (api/hardening.py);
- this formatter scrubs what a third-party message could carry: SQLAlchemy's bound
  `[parameters: ...]`, pydantic's `input_value=...`, e-mail addresses, and long messages
  are cut (MAX_MESSAGE).

`configure(process)` is called by `worker.main()` and when `api.main` is imported (uvicorn's
workers). It leaves logging alone when something configured the root logger already (pytest,
a deployer's `--log-config`), and is idempotent. uvicorn's supervisor (`--workers N`) never
imports the app: for its few lines to be JSON too, start uvicorn with `--log-config` and a
file holding `json.dumps(logjson.uvicorn_log_config())` (tests/test_topology.py does).

Environment: ONEFAMILY_LOG_FORMAT (`json`, or `text` for a human at a terminal),
ONEFAMILY_LOG_LEVEL (INFO; applies to the `onefamily.*` loggers, third-party ones stay at INFO).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime

MAX_MESSAGE = 2000
_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\s*(\(Background|\[SQL|$))", re.S)
_INPUT_VALUE = re.compile(r"input_value=(?:'[^']*'|\"[^\"]*\"|\{.*?\}|\[.*?\]|[^,\]\s]+)", re.S)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def scrub(text: str) -> str:
    """Remove what could be personal data from a third-party message."""
    text = _PARAMETERS.sub("[parameters hidden]", text)
    text = _INPUT_VALUE.sub("input_value=<hidden>", text)
    text = _EMAIL.sub("<email>", text)
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "..."
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = str(record.msg)
        line: dict = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "pid": record.process,
        }
        merged = _json_object(message)
        if merged is not None:
            line.update({k: v for k, v in merged.items() if k not in line})
        else:
            line["msg"] = scrub(message)
        # Structured extras given with `extra={...}` (ids, counts), JSON-safe ones only.
        for key, value in vars(record).items():
            if (key not in _STANDARD and key not in line and key != "color_message"
                    and isinstance(value, str | int | float | bool)):
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            kind, error, tb = record.exc_info
            line["exc_type"] = f"{kind.__module__}.{kind.__qualname__}"
            line["exc"] = scrub(str(error))
            line["trace"] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)][-15:]
        return json.dumps(line, ensure_ascii=True, default=str)


def _json_object(message: str) -> dict | None:
    if not (message.startswith("{") and message.endswith("}")):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _level(name: str | None) -> int:
    value = logging.getLevelName((name or "INFO").upper())
    return value if isinstance(value, int) else logging.INFO


def configure(process: str, environ: dict | None = None) -> bool:
    """Root logging as JSON lines on stderr for this process; False when left alone."""
    env = os.environ if environ is None else environ
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return True
    if root.handlers:
        return False  # configured by someone else (pytest, a --log-config): theirs
    handler = logging.StreamHandler(sys.stderr)
    if env.get("ONEFAMILY_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(logging.Formatter(f"%(asctime)s {process} %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(process))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("onefamily").setLevel(_level(env.get("ONEFAMILY_LOG_LEVEL")))
    # uvicorn's own lines through ours (it set up plain handlers before importing the app);
    # its access log prints query strings (names): off, api/hardening.py logs instead.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a no-op migration at every start
    return True


def uvicorn_log_config(process: str = "api", level: str = "INFO") -> dict:
    """A `logging.config.dictConfig` for `uvicorn --log-config` (a .json file): everything,
    uvicorn's own loggers included, as JSON lines on stderr; uvicorn's access log off."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "logjson.JsonFormatter", "process": process}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": "INFO"},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": "INFO"},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "alembic": {"level": "WARNING"},
            "onefamily": {"level": level.upper()},
        },
    }
