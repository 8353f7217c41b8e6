"""The audit log (DESIGN §9): every read of case content and every command, append-only and
hash-chained, and `GET /api/v1/audit` to read it.

What is written: one row per request and case touched — `{at, actor, action, method, path,
case_id, outcome}` — never a body and never the query string (bodies hold health data, `q`
holds children's names: a search is recorded as "search cases", not what was searched for).

- actor: the authenticated principal that api/auth.py put on `request.state.principal`
  (never a header the caller sent); a family is written `family:<id>`; "-" when nobody.
- action: from the method and the route, in words, by the one table `ROUTES` below.
- case ids: the case in the path (UUIDs only), the `case_id` query parameter of the audit
  and notification lists, the case of a committee item, the case a document belongs to
  (`/api/v1/documents/{id}`: looked up here, so the endpoint need not cooperate), plus every
  id an endpoint appended to `request.state.audit_case_ids` (the codec, lists that serve
  content of other cases). A list without case ids is one row with `case_id` NULL.
- outcome: the answer's status code, or `request.state.audit_outcome` when an endpoint sets
  it (the dashboard's forms answer 303 whether their command succeeded or not).

Audited: every `/api/v1/*` request (but `/api/v1/auth/session` and health), `/codec/*`, and
the pages `/`, `/cases*`, `/stuck*`, `/reports*`, `/dashboard*`, `/committee*`, `/staff*`.
CORS preflights (OPTIONS) serve nothing and are not written.

The row is written when the answer starts, before any byte of the body leaves: if it cannot
be written the caller gets 503 and nothing of the case (fail closed). One INSERT per request,
in a thread. Rows are chained: `hash = sha256(prev_hash + canonical fields)`
(`models.tables.audit_hash`), the first row's `prev_hash` is `AUDIT_GENESIS`. Writers in
several processes serialise "read the last hash, insert" (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: a transaction-scoped advisory lock), and a unique index on `prev_hash` makes a
fork impossible even for a writer that skips the lock. The database refuses UPDATE and DELETE
of audit rows (triggers, alembic 0006). `verify_chain()` finds the first row that was changed,
inserted or removed in the middle; removing rows at the end leaves a shorter valid chain, so
`/api/v1/audit/verify` answers the last hash for keeping outside the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_session
from api.scope import load_facts
from domain.access import may_read_audit
from models.case import Actor
from models.tables import AUDIT_GENESIS, AuditRow, audit_hash

log = logging.getLogger("onefamily.audit")

AUDIT = AuditRow.__table__

# ---------------------------------------------------------------- what is audited, in words


@dataclass(frozen=True)
class Rule:
    method: str
    template: str  # `{case}` a case id, `{item}` a committee item ("<case id>-<n>"), `{doc}` a document
    action: str
    searched: str | None = None  # the action when the query has a non-empty `q`
    case_query: bool = False  # the `case_id` query parameter names the case


ROUTES: tuple[Rule, ...] = (
    # cases (DESIGN §5)
    Rule("GET", "/api/v1/cases", "list cases", searched="search cases"),
    Rule("POST", "/api/v1/cases", "command register referral"),
    Rule("GET", "/api/v1/cases/{case}", "read case"),
    Rule("POST", "/api/v1/cases/{case}/coordinator", "command assign coordinator"),
    Rule("POST", "/api/v1/cases/{case}/team", "command form team"),
    Rule("POST", "/api/v1/cases/{case}/contacts", "command record contact"),
    Rule("POST", "/api/v1/cases/{case}/triage", "command triage"),
    Rule("POST", "/api/v1/cases/{case}/assessment/meeting", "command schedule assessment meeting"),
    Rule("PUT", "/api/v1/cases/{case}/assessment", "command write assessment"),
    Rule("POST", "/api/v1/cases/{case}/assessment/complete", "command complete assessment"),
    Rule("POST", "/api/v1/cases/{case}/assessment/provisional", "command provisional assessment"),
    Rule("POST", "/api/v1/cases/{case}/assessment/extension", "command extend assessment"),
    Rule("PUT", "/api/v1/cases/{case}/plan", "command write plan"),
    Rule("POST", "/api/v1/cases/{case}/plan/votes", "command vote"),
    Rule("POST", "/api/v1/cases/{case}/plan/family-response", "command family response"),
    Rule("POST", "/api/v1/cases/{case}/status-meetings", "command record status meeting"),
    Rule("POST", "/api/v1/cases/{case}/status-meetings/schedule", "command schedule status meeting"),
    Rule("POST", "/api/v1/cases/{case}/pause", "command pause"),
    Rule("POST", "/api/v1/cases/{case}/resume", "command resume"),
    Rule("POST", "/api/v1/cases/{case}/close", "command close"),
    # documents and notifications
    Rule("GET", "/api/v1/cases/{case}/documents", "list documents"),
    Rule("GET", "/api/v1/documents/{doc}", "read document"),
    Rule("GET", "/api/v1/notifications", "list notifications", case_query=True),
    # committee, dashboard, staff, policy
    Rule("GET", "/api/v1/committee/agenda", "read committee agenda"),
    Rule("GET", "/api/v1/committee/meetings", "list committee meetings"),
    Rule("GET", "/api/v1/committee/funding", "read committee funding"),
    Rule("POST", "/api/v1/committee/items/{item}/decision", "command committee decision"),
    Rule("GET", "/api/v1/dashboard/stuck", "list stuck cases"),
    Rule("GET", "/api/v1/dashboard/caseload", "read caseload"),
    Rule("GET", "/api/v1/reports/{month}", "read report"),
    Rule("GET", "/api/v1/staff", "list staff"),
    Rule("POST", "/api/v1/staff", "command register staff"),
    Rule("POST", "/api/v1/staff/{staff}/password", "command set password"),
    Rule("POST", "/api/v1/staff/{staff}/deactivate", "command deactivate staff"),
    Rule("GET", "/api/v1/policy", "read policy"),
    Rule("PUT", "/api/v1/policy", "command change policy"),
    # identity (the session endpoint is not audited: every page load asks it)
    Rule("POST", "/api/v1/auth/tokens", "command create token"),
    Rule("GET", "/api/v1/auth/tokens", "list tokens"),
    Rule("DELETE", "/api/v1/auth/tokens/{token}", "command revoke token"),
    # the audit log itself
    Rule("GET", "/api/v1/audit", "read audit log", case_query=True),
    Rule("GET", "/api/v1/audit/verify", "verify audit log"),
    # the codec (the case ids it decrypted: appended by the endpoint)
    Rule("POST", "/codec/decode", "decrypt"),
    Rule("POST", "/codec/encode", "encrypt"),
    # pages
    Rule("GET", "/", "read overview"),
    Rule("GET", "/stuck", "list stuck cases"),
    Rule("GET", "/cases", "list cases", searched="search cases"),
    Rule("GET", "/cases/{case}", "read case"),
    Rule("GET", "/cases/{case}/documents/{doc}", "read document"),
    Rule("POST", "/cases/{case}/coordinator", "command assign coordinator"),
    Rule("POST", "/cases/{case}/nudge", "command nudge"),
    Rule("POST", "/cases/{case}/acknowledge", "command acknowledge"),
    Rule("GET", "/reports", "list reports"),
    Rule("GET", "/reports/go", "read page"),
    Rule("GET", "/reports/{month}", "read report"),
    Rule("POST", "/reports/{month}", "command recompute report"),
    Rule("GET", "/reports/{month}/document", "read report"),
    Rule("GET", "/dashboard", "read page"),
    Rule("GET", "/committee", "read page"),
    Rule("GET", "/staff", "read page"),
)

AUDITED = re.compile(r"^(/api/v1/|/codec/|/$|/(cases|stuck|reports|dashboard|committee|staff)(/|$))")
NOT_AUDITED = re.compile(r"^/api/v1/(auth/session|health[a-z]*)(/|$)")
MAX_PATH = 1000
MAX_ID = 200


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}/?$" if template != "/" else "^/$")


_COMPILED = tuple((rule, _compile(rule.template)) for rule in ROUTES)


def audited(method: str, path: str) -> bool:
    return method != "OPTIONS" and bool(AUDITED.match(path)) and not NOT_AUDITED.match(path)


def _uuid(value: str | None) -> str | None:
    if not value or len(value) > 36:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _query(query_string: str, names: tuple[str, ...] = ("q", "case_id")) -> dict[str, list[str]]:
    """The values of the few parameters the audit looks at (split as Starlette splits: on `&`)."""
    out: dict[str, list[str]] = {}
    for part in query_string.split("&") if query_string else ():
        name, _, value = part.partition("=")
        name = unquote_plus(name)
        if name in names:
            out.setdefault(name, []).append(unquote_plus(value))
    return out


@dataclass(frozen=True)
class Described:
    action: str
    case_ids: tuple[str, ...] = ()
    doc_id: str | None = None  # a document whose case the writer looks up


def describe(method: str, path: str, query_string: str = "", route_path: str | None = None) -> Described:
    """The action in words and the case ids a request names (path and query only)."""
    method = "GET" if method == "HEAD" else method
    for rule, pattern in _COMPILED:
        if rule.method != method:
            continue
        match = pattern.match(path)
        if match is None:
            continue
        params = match.groupdict()
        query = _query(query_string)
        action = rule.searched if rule.searched and any(query.get("q", [])) \
            else rule.action
        cases: list[str] = []
        if "case" in params:
            cases.append(_uuid(params["case"]))
        if "item" in params:
            cases.append(_uuid(params["item"].rpartition("-")[0]))
        if rule.case_query:
            cases.extend(_uuid(v) for v in query.get("case_id", [])[:1])
        doc = params.get("doc") if "case" not in params else None
        return Described(action, tuple(c for c in cases if c), doc[:MAX_ID] if doc else None)
    verb = "read" if method == "GET" else "command"
    return Described(f"{verb} {method + ' ' if verb == 'command' else ''}{route_path or 'unknown path'}")


# ---------------------------------------------------------------- the chain

# One advisory lock key for the audit chain (PostgreSQL): the first 8 bytes of a fixed hash.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"onefamily.audit.chain").digest()[:8], "big", signed=True)
ATTEMPTS = 5


@dataclass(frozen=True)
class Entry:
    actor: str
    action: str
    method: str
    path: str
    case_id: str | None
    outcome: int


def _document_case(conn, doc_id: str) -> str | None:
    from models.tables_outbox import DocumentRow

    t = DocumentRow.__table__
    return conn.execute(select(t.c.case_id).where(t.c.id == doc_id)).scalar()


def _with_case(entries: list[Entry], case_id: str | None) -> list[Entry]:
    """The entries with one more case touched (the row without a case becomes its row)."""
    if not case_id or any(e.case_id == case_id for e in entries):
        return entries
    base = entries[0]
    extra = Entry(base.actor, base.action, base.method, base.path, case_id[:MAX_ID], base.outcome)
    return [e for e in entries if e.case_id is not None] + [extra]


def append(engine: Engine, entries: list[Entry], doc_id: str | None = None) -> None:
    """Append rows to the chain in one transaction (blocking: run in a thread). `doc_id`: a
    document, whose case is added to the rows."""
    sqlite = engine.dialect.name == "sqlite"
    if doc_id is not None:
        with engine.connect() as conn:
            entries = _with_case(entries, _document_case(conn, doc_id))
    for attempt in range(ATTEMPTS):
        with engine.connect() as conn:
            try:
                if sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, held to COMMIT
                else:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
                last = conn.execute(select(AUDIT.c.id, AUDIT.c.hash).order_by(AUDIT.c.id.desc())
                                    .limit(1)).first()
                next_id, prev = (last.id + 1, last.hash) if last else (1, AUDIT_GENESIS)
                at = datetime.now(UTC)
                rows = []
                for e in entries:
                    fields = dict(id=next_id, at=at, actor=e.actor, action=e.action, method=e.method,
                                  path=e.path, case_id=e.case_id, outcome=e.outcome)
                    digest = audit_hash(prev, **fields)
                    rows.append({**fields, "prev_hash": prev, "hash": digest})
                    next_id, prev = next_id + 1, digest
                conn.execute(AUDIT.insert(), rows)
                conn.commit()
                return
            except IntegrityError:  # another writer took this place in the chain: again
                conn.rollback()
                if attempt == ATTEMPTS - 1:
                    raise


def chain_status(session: Session) -> tuple[bool, int | None, int, str]:
    """(ok, first bad id, rows, last hash), walking the chain in id order."""
    prev, count, bad = AUDIT_GENESIS, 0, None
    result = session.connection().execution_options(yield_per=2000).execute(
        select(AUDIT).order_by(AUDIT.c.id))
    for row in result:
        count += 1
        if bad is not None:
            continue  # counted only
        expected = audit_hash(row.prev_hash, id=row.id, at=row.at, actor=row.actor, action=row.action,
                              method=row.method, path=row.path, case_id=row.case_id,
                              outcome=row.outcome)
        if row.prev_hash != prev or row.hash != expected:
            bad = row.id
            continue
        prev = row.hash
    return bad is None, bad, count, prev


def verify_chain(session: Session) -> tuple[bool, int | None]:
    """(True, None) if every row is as written; else (False, id of the first row that is not:
    changed, inserted, or following a removed one)."""
    ok, bad, _, _ = chain_status(session)
    return ok, bad


# ---------------------------------------------------------------- the middleware


def _actor_text(state: dict) -> str:
    principal = state.get("principal")
    actor_id = getattr(principal, "id", None)
    if not actor_id:
        return "-"
    kind = state.get("principal_kind") or "staff"
    actor_id = str(actor_id)
    return (actor_id if kind == "staff" or actor_id.startswith(f"{kind}:")
            else f"{kind}:{actor_id}")[:MAX_ID]


def entries_for(scope: Scope, status: int) -> tuple[list[Entry], str | None]:
    state = scope.get("state") or {}
    route = scope.get("route")
    path = scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    described = describe(scope["method"], path, query, getattr(route, "path", None))
    case_ids = list(described.case_ids)
    for extra in state.get("audit_case_ids") or []:
        if isinstance(extra, str) and extra:
            case_ids.append(extra[:MAX_ID])
    case_ids = list(dict.fromkeys(case_ids))
    outcome = state.get("audit_outcome")  # a page's form: its command's status, not the redirect's
    base = dict(actor=_actor_text(state), action=described.action, method=scope["method"],
                path=path[:MAX_PATH], outcome=outcome if isinstance(outcome, int) else status)
    entries = [Entry(case_id=c, **base) for c in case_ids] or [Entry(case_id=None, **base)]
    return entries, described.doc_id


AUDIT_FAILED = b'{"detail":"The audit log could not be written, so nothing was served; try again."}'


class AuditMiddleware:
    """Pure ASGI middleware; must run INSIDE the authentication middleware (add it to the
    app before `AuthMiddleware`: Starlette runs the middleware added last first)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["audit_case_ids"] = []  # endpoints append what they served
        if not audited(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        engine = scope["app"].state.engine
        written = failed = False

        async def write(status: int) -> None:
            entries, doc_id = entries_for(scope, status)
            await asyncio.to_thread(append, engine, entries, doc_id)

        async def send_audited(message: Message) -> None:
            nonlocal written, failed
            if failed:
                return  # the answer was replaced by the 503
            if message["type"] == "http.response.start" and not written:
                written = True
                try:
                    await write(message["status"])
                except Exception:  # noqa: BLE001 - fail closed: no audit row, no content
                    log.exception("audit row not written; answering 503")
                    failed = True
                    await send({"type": "http.response.start", "status": 503, "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(AUDIT_FAILED)).encode())]})
                    await send({"type": "http.response.body", "body": AUDIT_FAILED})
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception:
            if not written:
                written = True
                try:
                    await write(500)
                except Exception:  # noqa: BLE001 - the original error matters more
                    log.exception("audit row of a failed request not written")
            raise


# ---------------------------------------------------------------- GET /api/v1/audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

WHOLE_LOG = ("Only an administrator reads the whole audit log; a manager asks for the cases of "
             "their unit with ?case_id=.")
CASE_LOG = "Only an administrator or a manager of the case's unit reads its audit trail."


def _reader(request: Request) -> Actor:
    actor = getattr(request.state, "principal", None)
    if actor is None:
        raise HTTPException(401, getattr(request.state, "auth_error", None)
                            or "Log in, or send Authorization: Bearer <token>.")
    if (getattr(request.state, "principal_kind", None) or "staff") != "staff":
        raise HTTPException(403, "The audit log is for staff; a family sees who read its case in "
                                 "the family view.")
    return actor


def _item(row) -> dict:
    return {"id": row.id, "at": row.at, "actor": row.actor, "action": row.action,
            "method": row.method, "path": row.path, "case_id": row.case_id,
            "outcome": row.outcome, "prev_hash": row.prev_hash, "hash": row.hash}


@router.get("")
def read_audit(
    request: Request,
    session: Session = Depends(get_session),
    case_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict:
    """Audit rows, newest first: of one case for the admin or a manager of the case's unit;
    the whole log for the admin."""
    actor = _reader(request)
    facts = None
    if case_id is not None:
        facts = load_facts(session, case_id) if case_id.isprintable() else None
        if facts is None:
            raise HTTPException(404, "No such case.")
    if not may_read_audit(actor, facts):
        raise HTTPException(403, CASE_LOG if facts is not None else WHOLE_LOG)
    query = select(AUDIT)
    if case_id is not None:
        query = query.where(AUDIT.c.case_id == case_id)
    conn = session.connection()
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(query.order_by(AUDIT.c.id.desc()).offset(offset).limit(limit)).all()
    return {"items": [_item(r) for r in rows], "total": total}


@router.get("/verify")
def verify_audit(request: Request, session: Session = Depends(get_session)) -> dict:
    """Walk the whole chain (admin). `last_hash`: note it outside the database to detect rows
    removed at the end later."""
    actor = _reader(request)
    if not may_read_audit(actor, None):
        raise HTTPException(403, "Only an administrator verifies the audit log.")
    ok, bad, rows, last = chain_status(session)
    return {"ok": ok, "rows": rows, "first_bad_id": bad, "last_hash": last}
