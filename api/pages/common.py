"""What every page needs: the signed-in user, rendering in the user's language, the case's
facts for the one access policy, redirects after a form (post/redirect/get)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader
from pydantic import BaseModel, ValidationError
from sqlalchemy import inspect, select
from sqlmodel import Session
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from activities import report as reports
from api import watch
from api.pages import i18n
from api.scope import load_facts
from domain.access import (
    CaseFacts,
    facts_from_state,
    may_manage_case,
    may_read_committee,
    may_read_reports,
)
from domain.lifecycle import STALE
from domain.policy import current_policy
from domain.stuck import BUSINESS_KINDS, OVERDUE_PREFIX, TECHNICAL_KINDS
from models.case import Actor, CaseState, DeadlineKind
from models.projection import case_from_document
from models.tables import CaseRow, StaffRow

STUCK_SORTS = [("age", "oldest first"), ("newest", "newest first"), ("stage", "stage"),
               ("coordinator", "coordinator"), ("reasons", "most reasons")]
CASE_SORTS = [("age", "longest in stage"), ("due", "next deadline"), ("newest", "newest referral"),
              ("received", "oldest referral"), ("stage", "stage"), ("coordinator", "coordinator")]
REASON_KINDS = (["overdue"] + [f"{OVERDUE_PREFIX}{k.value}" for k in DeadlineKind]
                + list(BUSINESS_KINDS) + list(TECHNICAL_KINDS))


# No lifespan: the index's background rounds and the technical sweep run once per


def settings_of(request: Request):
    return request.app.state.settings


def timezone_of(request: Request) -> str:
    return current_policy(settings_of(request).country).timezone


PAGES = Path(__file__).resolve().parent.parent.parent / "templates" / "pages"
OLD_PAGES = Path(__file__).resolve().parent.parent.parent / "templates" / "dashboard"

# The main menu: (key, address, text key, who sees it).
MENU: list[tuple[str, str, str, Callable[[Actor], bool]]] = [
    ("my_work", "/", "nav.my_work", lambda a: True),
    ("cases", "/cases", "nav.cases", lambda a: True),
    ("new_referral", "/cases/new", "nav.new_referral",
     lambda a: bool({"coordinator", "manager", "admin"} & set(a.roles))),
    ("committee", "/committee", "nav.committee", may_read_committee),
    ("dashboard", "/dashboard", "nav.dashboard", may_read_reports),
    ("stuck", "/stuck", "nav.stuck", may_read_reports),
    ("reports", "/reports", "nav.reports", may_read_reports),
    ("staff", "/staff", "nav.staff", lambda a: "admin" in a.roles),
]


@lru_cache(maxsize=4)
def page_env(timezone: str) -> Environment:
    """The pages' templates (templates/pages, then the older templates/dashboard), with the
    dashboard's filters and the pages' languages (api/pages/i18n.py)."""
    env = reports.make_env(timezone)
    env.loader = ChoiceLoader([FileSystemLoader(PAGES), FileSystemLoader(OLD_PAGES)])
    i18n.install(env)
    env.globals["form_key"] = lambda: uuid.uuid4().hex
    env.globals["loaded_at"] = lambda: datetime.now(UTC).isoformat()
    env.globals["languages"] = i18n.LANGUAGES
    return env


def language_of(request: Request, user: object | None = None) -> str:
    stored = getattr(user, "language", None) if user is not None else None
    return i18n.choose(stored, request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"),
                       settings_of(request).country)


def safe_next(target: str | None) -> str:
    """Only a relative path on this site: never `//host`, `/\\host` or a scheme."""
    if (not target or not target.startswith("/") or target.startswith("//")
            or target.startswith("/\\") or any(c in target for c in "\r\n\t")):
        return "/"
    return target


def render(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
    timezone = timezone_of(request)
    env = page_env(timezone)
    user = ctx.get("user")
    lang = ctx.get("lang") or language_of(request, user)
    actor = getattr(request.state, "principal", None)
    ctx.setdefault("lang", lang)
    ctx.setdefault("timezone", timezone)
    ctx.setdefault("flash_ok", request.query_params.get("ok"))
    ctx.setdefault("flash_error", request.query_params.get("error"))
    ctx.setdefault("technical_kinds", TECHNICAL_KINDS)
    ctx.setdefault("csrf_token", getattr(request.state, "csrf_token", None) or "")
    ctx.setdefault("form_state", None)
    ctx.setdefault("here", request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    ctx.setdefault("menu", [{"key": k, "href": h, "label": label} for k, h, label, shown in MENU
                            if actor is not None and user is not None and shown(actor)])
    html = env.get_template(template).render(**ctx)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store",
                                                           "Content-Language": lang})


def error_page(request: Request, user, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html.j2", status=status, user=user, status_code=status,
                  title=title, message=message, nav="")


def current_user(request: Request, session: Session) -> StaffRow | None:
    """The authenticated staff member (api/auth.py), as a plain row for the templates."""
    actor = getattr(request.state, "principal", None)
    if actor is None:
        return None
    row = session.get(StaffRow, actor.id)
    if row is None or not row.active:
        return None
    session.expunge(row)  # a plain value from here on: commits do not expire it
    return row


def actor_of(user: StaffRow) -> Actor:
    return Actor(id=user.id, roles=list(user.roles), unit=user.unit)


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def back(path: str, ok: str | None = None, error: str | None = None) -> RedirectResponse:
    params = {k: v for k, v in (("ok", ok), ("error", error)) if v}
    return RedirectResponse(path + (f"?{urlencode(params)}" if params else ""), status_code=303)


def cross_site(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return bool(origin)
    return origin.split("://", 1)[-1] != request.url.netloc


def staff_names(session: Session) -> dict[str, str]:
    return {s.id: s.name for s in session.execute(select(StaffRow)).scalars()}


def query_string(request: Request, drop: tuple[str, ...] = ("offset", "ok", "error")) -> str:
    return urlencode([(k, v) for k, v in request.query_params.multi_items() if k not in drop and v])


def table_exists(request: Request, name: str) -> bool:
    cache = getattr(request.app.state, "_dashboard_tables", None)
    if cache is None:
        cache = request.app.state._dashboard_tables = {}
    if name not in cache:
        cache[name] = inspect(request.app.state.engine).has_table(name)
    return cache[name]


async def catch_up(request: Request) -> None:
    await asyncio.to_thread(watch.catch_up, request.app.state.engine)



def valid_case_id(case_id: str) -> bool:
    try:
        uuid.UUID(case_id)
    except ValueError:
        return False
    return True


async def load_case(request: Request, case_id: str) -> tuple[CaseState | None, bool]:
    """(state, live): the live state from the case's workflow (a Query), else the read
    model's copy (Temporal down, or a case the workflow no longer holds)."""
    client = getattr(request.app.state, "temporal", None)
    if client is not None:
        from api.gateway import workflow_id
        from workflows.case import FamilyCaseWorkflow

        try:
            state = await asyncio.wait_for(
                client.get_workflow_handle(workflow_id(case_id)).query(
                    FamilyCaseWorkflow.case, result_type=CaseState), 5)
            return state, True
        except (RPCError, WorkflowQueryFailedError, TimeoutError, ValidationError):
            pass

    def stored() -> CaseState | None:
        with Session(request.app.state.engine) as session:
            row = session.get(CaseRow, case_id)
            return case_from_document(row.document) if row else None

    return await asyncio.to_thread(stored), False


def case_facts(request: Request, case_id: str, state: CaseState | None = None) -> CaseFacts | None:
    """The case's need-to-know facts from the read model (the policy's one source), or from
    the state when the read model does not have the case yet; None for an unknown case."""
    with Session(request.app.state.engine) as session:
        facts = load_facts(session, case_id)
    if facts is None and state is not None:
        facts = facts_from_state(state)
    return facts





def manager_or_error(request: Request, user: StaffRow | None, case_id: str | None = None):
    """None if `user` may take this manager action (on `case_id`: the manager of the case's
    unit or admin, `domain.access.may_manage_case`; else a reader of reports), or the page
    that says why not (login, another site, 404 unknown case, 403)."""
    if user is None:
        return login_redirect(request)
    if cross_site(request):
        return error_page(request, user, 403, "Refused", "This form was sent from another site.")
    actor = actor_of(user)
    if case_id is None:
        if not may_read_reports(actor):
            return error_page(request, user, 403, "Managers only", "Only a manager can do this.")
        return None
    facts = case_facts(request, case_id) if valid_case_id(case_id) else None
    if facts is None:
        return error_page(request, user, 404, "No such case", f"There is no case {case_id}.")
    if not may_manage_case(actor, facts):
        return error_page(request, user, 403, "Managers only",
                      "Only a manager of the case's unit can do this.")
    return None


# ---------------------------------------------------------------- forms that send a command

# A browser's <input type="datetime-local">: a local time without a zone.
_LOCAL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
_HIDDEN = frozenset({"csrf_token", "idempotency_key", "version", "loaded_at"})
_ERROR_KEYS = {"missing": "error.missing", "string_too_long": "error.too_long",
               "too_long": "error.too_long", "enum": "error.choice", "literal_error": "error.choice",
               "int_parsing": "error.number", "float_parsing": "error.number",
               "date_from_datetime_parsing": "error.date", "date_parsing": "error.date",
               "datetime_parsing": "error.datetime", "datetime_from_date_parsing": "error.datetime",
               "timezone_aware": "error.datetime"}


@dataclass
class FormState:
    """A refused form shown again: what was typed, each field's error, the API's sentence,
    and (a stale page) what changed since the page was loaded."""

    form: str
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    message: str = ""
    status: int = 422
    stale: bool = False
    loaded_at: datetime | None = None
    changes: list[str] = field(default_factory=list)


def unflatten(values: dict[str, str], timezone: str, rows: dict[str, str] | None = None) -> dict:
    """Form fields named by their JSON path (`members.0.staff_id`) as the body the API takes.
    Empty fields are left out (the model's default applies, or "required"); list rows left
    wholly empty are dropped; a datetime-local value gets the municipality's time zone.
    `rows`, when given, receives the body's list paths → the form's (`members.1` → `members.3`
    when rows 1 and 2 were left empty), so an error lands on the row the person typed in."""
    tz = ZoneInfo(timezone)
    root: dict = {}
    for name, raw in values.items():
        if name in _HIDDEN or name.startswith("_"):
            continue
        value: object = raw.strip() if isinstance(raw, str) else raw
        if value == "":
            continue
        if isinstance(value, str) and _LOCAL_DATETIME.match(value):
            value = datetime.fromisoformat(value).replace(tzinfo=tz).isoformat()
        node = root
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node: object, body_path: str, form_path: str) -> object:
        if not isinstance(node, dict):
            return node
        if node and all(k.isdigit() for k in node):
            kept = []
            for k in sorted(node, key=int):
                path = f"{body_path}.{len(kept)}" if body_path else str(len(kept))
                item = lists(node[k], path, f"{form_path}.{k}" if form_path else k)
                if item not in ({}, [], None):
                    if rows is not None:
                        rows[path] = f"{form_path}.{k}" if form_path else k
                    kept.append(item)
            return kept
        return {k: lists(v, f"{body_path}.{k}" if body_path else k,
                         f"{form_path}.{k}" if form_path else k) for k, v in node.items()}

    return lists(root, "", "")


def field_errors(error: ValidationError, lang: str, rows: dict[str, str] | None = None) -> dict[str, str]:
    """pydantic's errors by form field name (the JSON path), in the page's language; the
    model's own sentences (e.g. "the funding must add up to 100 %") as they are. `rows`: the
    map `unflatten` made, so a row's error names the row as the form numbered it."""
    out: dict[str, str] = {}
    for item in error.errors():
        parts = [str(p) for p in item["loc"] if not str(p).startswith("function-")]
        if rows:
            for i in range(len(parts), 0, -1):  # the longest list path that was renumbered
                mapped = rows.get(".".join(parts[:i]))
                if mapped is not None:
                    parts = mapped.split(".") + parts[i:]
                    break
        loc = ".".join(parts)
        key = _ERROR_KEYS.get(item["type"])
        if key:
            text = i18n.translate(lang, key)
        else:
            text = str(item.get("msg", "")).removeprefix("Value error, ")
        out.setdefault(loc or "_form", text)
    return out


async def read_form(request: Request) -> dict[str, str]:
    form = await request.form(max_fields=5000)
    return {k: v for k, v in form.multi_items() if isinstance(v, str)}


def _loaded_at(values: dict[str, str]) -> datetime | None:
    try:
        return datetime.fromisoformat(values.get("loaded_at", ""))
    except ValueError:
        return None


async def send_form(
    request: Request,
    form_name: str,
    values: dict[str, str],
    send: Callable[..., Awaitable[object]],
    model: type[BaseModel] | None,
    show_again: Callable[[FormState], Awaitable[Response]],
    done: Callable[[object], Response],
    build: Callable[[dict], BaseModel] | None = None,
) -> Response:
    """One form → one command through the API's own code path (`send(cmd, body)` is the JSON
    endpoint's function, so the same checks and the workflow's validators decide). A refusal
    shows the page again with what was typed and the API's sentence; success redirects."""
    from api.cases import Commands
    from api.deps import Caller

    with Session(request.app.state.engine) as session:
        lang = language_of(request, current_user(request, session))
    rows: dict[str, str] = {}
    try:
        body = None
        if model is not None:
            data = unflatten(values, timezone_of(request), rows)
            body = build(data) if build is not None else model.model_validate(data)
    except ValidationError as error:
        return await show_again(FormState(form_name, values, errors=field_errors(error, lang, rows)))
    except ValueError as error:  # a builder's own sentence
        return await show_again(FormState(form_name, values, message=str(error)))
    client = getattr(request.app.state, "temporal", None)
    if client is None:
        return await show_again(FormState(form_name, values, status=503,
                                          message=i18n.translate(lang, "error.engine")))
    key = (values.get("idempotency_key") or "")[:64] or None
    session = Session(request.app.state.engine)
    try:
        cmd = Commands(Caller(request=request, session=session), session, client,
                       request.app.state.engine, settings_of(request), key)
        version = values.get("version", "")
        cmd.expected_version = int(version) if version.isdigit() else None
        try:
            result = await send(cmd, body) if model is not None else await send(cmd)
        except HTTPException as error:
            request.state.audit_outcome = error.status_code  # the command's, not the page's
            detail = str(error.detail)
            stale = error.status_code == 409 and detail.startswith(STALE)
            return await show_again(FormState(form_name, values, message=detail, status=error.status_code,
                                              stale=stale, loaded_at=_loaded_at(values)))
    finally:
        session.close()
    return done(result)
