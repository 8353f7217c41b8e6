"""The joint plan on the case page (DESIGN §3.5, §10): the plan editor, the team's votes and
the family's response. Each form sends the JSON endpoint's own function (api/cases.py), so the
page and the API share one code path and the workflow's validators decide.

The plan editor's fields are the JSON paths of `PlanDraft` (`goals.0.text`,
`services.1.funding.0.share`) with three things a person needs and JSON does not:
- a funding share is typed in PERCENT (the split must add up to 100 %; refused with a
  sentence naming the service) and sent as a share 0..1;
- an action names its goal by the goal's ROW (`#2`: the goal in row 3), so a goal typed on the
  same page can be chosen before it has an id; a goal or action without an id gets the next
  free one (`g3`, `a4`);
- rows left empty are dropped, and a field error names the field as the form has it (not the
  position in the compacted list).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from api.pages import i18n
from api.pages.common import (
    FormState,
    current_user,
    error_page,
    language_of,
    read_form,
    send_form,
    valid_case_id,
)
from models.case import CastVote, FamilyResponse, PlanDraft

router = APIRouter(include_in_schema=False)

# Empty rows the editor shows under the filled ones; "More rows" adds this many each time.
EXTRA_ROWS = 2
MORE_ROWS = 3
MAX_EXTRA = 60
FUNDING_ROWS = 3  # funding lines per service (at least; one more than the service has)


# ---------------------------------------------------------------- the form's fields as rows


def subtree(values: dict[str, str], prefix: str = "") -> dict:
    """The fields under `prefix` (`plan_changes.` or ``) as a nested dict of stripped strings,
    keys as the form has them (list indices stay strings); empty fields left out."""
    root: dict = {}
    for name, raw in values.items():
        if not name.startswith(prefix) or name.startswith("_"):
            continue
        value = raw.strip() if isinstance(raw, str) else raw
        if value == "":
            continue
        parts = name[len(prefix):].split(".")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # `a` and `a.b` both sent: keep the deeper one
                child = node[part] = {}
            node = child
        node.setdefault(parts[-1], value)
    return root


def rows(node: object) -> list[tuple[int, Any]]:
    """A list field's rows as (the form's row index, the row), in row order."""
    if not isinstance(node, dict):
        return []
    return sorted(((int(k), v) for k, v in node.items() if k.isdigit()), key=lambda r: r[0])


def number(raw: object) -> float | None:
    """A number as people type it: `12000`, `12 000`, `12.000,50` (Danish), `12,5`."""
    if isinstance(raw, int | float):
        return float(raw)
    if not isinstance(raw, str):
        return None
    text = raw.replace("\u00a0", "").replace(" ", "").replace("%", "")
    if "," in text and "." in text:
        text = text.replace(".", "").replace(",", ".") if text.rfind(",") > text.rfind(".") \
            else text.replace(",", "")
    elif "," in text:
        text = text.replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def percent_text(share: float) -> str:
    """A share 0..1 as the percent the editor shows (`50`, `33.33`)."""
    return f"{round(share * 100, 2):g}"


# Row index maps: the compacted list's path -> the form's row index of each item.
IndexMap = dict[tuple, list[int]]


def remap(error: ValidationError, maps: IndexMap) -> ValidationError:
    """`error` with each list position turned back into the form's row index, so a field
    error names the field the person typed in; "must not be empty" reads as "missing"."""
    items = []
    for item in error.errors():
        loc, compact, out = tuple(item["loc"]), (), []
        for part in loc:
            if isinstance(part, int) and compact in maps and part < len(maps[compact]):
                out.append(maps[compact][part])
            else:
                out.append(part)
            compact = (*compact, part)
        kind, ctx = item["type"], item.get("ctx")
        if kind == "value_error" and str(item.get("msg", "")).endswith("must not be empty"):
            kind, ctx = "missing", None
        if kind == "too_short" and isinstance(item.get("input"), list) and not item["input"]:
            # An empty list that needs an item ("family_goals"): the error sits at its first row.
            out.append(maps[compact][0] if maps.get(compact) else 0)
            kind, ctx = "missing", None
        entry = {"type": kind, "loc": tuple(out), "input": item.get("input")}
        if ctx is not None:
            entry["ctx"] = ctx
        items.append(entry)
    return ValidationError.from_exception_data(error.title, items)


def field_errors(own: list[tuple[tuple, str]], error: ValidationError | None = None,
                 title: str = "form") -> ValidationError:
    """Our own field errors (`(loc, sentence)`), with pydantic's (`error`, already remapped),
    shown by the fields alike."""
    items = [{k: v for k, v in e.items() if k in ("type", "loc", "input", "ctx")}
             for e in (error.errors() if error is not None else [])]
    items += [{"type": "value_error", "loc": loc, "input": None, "ctx": {"error": ValueError(text)}}
              for loc, text in own]
    return ValidationError.from_exception_data(title, items)


def validate(model: type[BaseModel], body: dict, maps: IndexMap) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise remap(error, maps) from None


# ---------------------------------------------------------------- the plan editor's body


def _next_id(taken: set[str], letter: str) -> str:
    n = 1
    while f"{letter}{n}" in taken:
        n += 1
    taken.add(f"{letter}{n}")
    return f"{letter}{n}"


def plan_body(values: dict[str, str], prefix: str, lang: str, root: tuple = ()) -> tuple[dict, IndexMap]:
    """The plan editor's fields under `prefix` as a `PlanDraft` body, with the index maps for
    `remap` (paths under `root`). Raises ValueError with a sentence for what the model cannot
    say itself: a funding split that does not add up to 100 %, a share out of range, an action
    whose goal row is empty."""
    t = lambda key, **kw: i18n.translate(lang, key, **kw)  # noqa: E731
    tree = subtree(values, prefix)
    maps: IndexMap = {}

    family = [(i, v) for i, v in rows(tree.get("family_goals")) if isinstance(v, str)]
    maps[(*root, "family_goals")] = [i for i, _ in family]

    goals, goal_rows, ids_by_row = [], [], {}
    taken = {g["id"] for _, g in rows(tree.get("goals")) if isinstance(g, dict) and g.get("id")}
    for i, g in rows(tree.get("goals")):
        if not isinstance(g, dict) or not (g.get("text") or g.get("owner")):
            continue  # an empty row, or only an id left over: dropped
        g = {k: g[k] for k in ("id", "text", "owner") if k in g}
        g.setdefault("id", _next_id(taken, "g"))
        goals.append(g)
        goal_rows.append(i)
        ids_by_row[i] = g["id"]
    maps[(*root, "goals")] = goal_rows

    actions, action_rows = [], []
    taken = {a["id"] for _, a in rows(tree.get("actions")) if isinstance(a, dict) and a.get("id")}
    for i, a in rows(tree.get("actions")):
        if not isinstance(a, dict) or not any(a.get(k) for k in ("text", "owner", "due", "member")):
            continue  # nothing typed but the id, the goal or the status a copy carries
        a = {k: a[k] for k in ("id", "goal_id", "text", "owner", "due", "status", "member") if k in a}
        ref = a.get("goal_id")
        if isinstance(ref, str) and ref.startswith("#"):
            row = int(ref[1:]) if ref[1:].isdigit() else -1
            if row not in ids_by_row:
                raise ValueError(t("plan.error.goal_row", action=a.get("text") or a.get("id", ""),
                                   row=row + 1))
            a["goal_id"] = ids_by_row[row]
        a.setdefault("id", _next_id(taken, "a"))
        actions.append(a)
        action_rows.append(i)
    maps[(*root, "actions")] = action_rows

    services, service_rows = [], []
    for i, s in rows(tree.get("services")):
        if not isinstance(s, dict):
            continue
        funding_rows = [(j, f) for j, f in rows(s.get("funding"))
                        if isinstance(f, dict) and (f.get("department") or f.get("share"))]
        typed = any(s.get(k) for k in ("name", "paragraph", "department", "monthly_cost"))
        if not typed and not funding_rows:
            continue
        name = s.get("name") or t("plan.services.row", n=i + 1)
        service = {k: s[k] for k in ("name", "paragraph", "department", "monthly_cost") if k in s}
        cost = number(s.get("monthly_cost"))
        if cost is not None:
            service["monthly_cost"] = cost
        funding, percents = [], []
        for _j, f in funding_rows:
            line = {k: f[k] for k in ("department", "share") if k in f}
            p = number(f.get("share"))
            if p is not None:
                if not 0 < p <= 100:
                    raise ValueError(t("plan.error.share_range", service=name, share=f"{p:g}"))
                percents.append(p)
                line["share"] = p
            funding.append(line)
        total = sum(percents)
        if funding and len(percents) == len(funding) and abs(total - 100) > 0.05:
            raise ValueError(t("plan.error.funding_total", service=name, total=f"{round(total, 2):g}"))
        whole = total if funding and len(percents) == len(funding) else 100  # exactly 1 together
        for line in funding:
            if isinstance(line.get("share"), float):
                line["share"] = line["share"] / whole
        service["funding"] = funding
        services.append(service)
        service_rows.append(i)
        maps[(*root, "services", len(services) - 1, "funding")] = [j for j, _ in funding_rows]
    maps[(*root, "services")] = service_rows

    body = {"family_goals": [v for _, v in family], "goals": goals, "actions": actions,
            "services": services}
    return body, maps


def build_plan(values: dict[str, str], lang: str) -> Callable[[dict], PlanDraft]:
    def build(_data: dict) -> PlanDraft:
        body, maps = plan_body(values, "", lang)
        return validate(PlanDraft, body, maps)
    return build


# ---------------------------------------------------------------- the routes' frame


def done_redirect(case_id: str, text: str, anchor: str = "") -> RedirectResponse:
    """303 back to the case page with a plain sentence (post/redirect/get)."""
    return RedirectResponse(f"/cases/{case_id}?{urlencode({'ok': text})}" + (f"#{anchor}" if anchor else ""),
                            status_code=303)


async def command_form(
    request: Request, case_id: str, form_name: str,
    send: Callable, model: type[BaseModel] | None,
    done: Callable[[dict, str], str],
    build: Callable[[dict[str, str], str, Any], Callable[[dict], BaseModel]] | None = None,
    anchor: str = "",
    prepare: Callable[[dict[str, str], Any], None] | None = None,
) -> Response:
    """One command form of the case page: the signed-in user, the form's values, then
    `send_form` (refusal → the case page again with the form as typed; success → 303 to the
    case page with `done(result, lang)`)."""
    from api.pages.case import case_page_response

    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
    if user is None:
        return RedirectResponse(f"/login?{urlencode({'next': f'/cases/{case_id}'})}", status_code=303)
    if not valid_case_id(case_id):
        return error_page(request, user, 404, "No such case", "Case ids are UUIDs.")
    lang = language_of(request, user)
    values = await read_form(request)

    async def show_again(fs: FormState) -> Response:
        fs.labels = {name: label_of(name, lang) for name in fs.errors}
        return await case_page_response(request, case_id, fs)

    if any("\x00" in v for v in values.values()):  # multipart bodies pass the middleware's check
        return await show_again(FormState(form_name, values,
                                          message=i18n.translate(lang, "plan.error.nul")))
    if "_more" in values:  # "More rows": the same form again, longer, nothing applied
        extra = int(values["_extra"]) if (values.get("_extra") or "").isdigit() else EXTRA_ROWS
        values["_extra"] = str(min(extra + MORE_ROWS, MAX_EXTRA))
        return await show_again(FormState(form_name, values, status=200))
    if prepare is not None:
        prepare(values, user)
    return await send_form(
        request, form_name, values, send, model, show_again,
        lambda result: done_redirect(case_id, done(result, lang), anchor),
        build(values, lang, user) if build is not None else None)


def _t(lang: str, key: str, **kw: object) -> str:
    return i18n.translate(lang, key, **kw)


# The labels of the fields these forms have, for the refusal's summary of field errors.
_FIELDS = {
    "goals": ("plan.goals.row", {"id": "plan.goals.id", "text": "plan.goals.text",
                                 "owner": "plan.goals.owner"}),
    "actions": ("plan.actions.row", {"text": "plan.actions.text", "goal_id": "plan.actions.goal",
                                     "owner": "plan.actions.owner", "member": "plan.actions.member",
                                     "due": "plan.actions.due", "status": "plan.actions.status"}),
    "services": ("plan.services.row", {"name": "plan.services.name", "paragraph": "plan.services.paragraph",
                                       "department": "plan.services.department",
                                       "monthly_cost": "plan.services.monthly_cost"}),
    "goal_progress": ("plan.label.goal_progress", {"status": "plan.meeting.status",
                                                   "note": "plan.meeting.note"}),
    "sdq": ("plan.close.sdq_row", {"child": "plan.close.child", "informant": "plan.close.informant",
                                   "before": "plan.close.before", "after": "plan.close.after"}),
    "goal_attainment": ("plan.label.goal_attainment", {"status": "plan.close.attainment",
                                                       "score": "plan.close.gas"}),
}
_SIMPLE = {
    "at": "plan.meeting.at", "location": "plan.schedule.location",
    "participants": "plan.meeting.participants",
    "minutes": "plan.meeting.minutes", "concern_level": "plan.meeting.concern_level",
    "followup_months": "plan.meeting.followup_months", "followup_reason": "plan.meeting.followup_reason",
    "policy_version": "plan.meeting.policy_version", "policy_reason": "plan.meeting.policy_reason",
    "vote": "plan.label.vote", "staff_id": "plan.label.voter", "reason": "plan.label.reason",
    "note": "plan.close.note", "approved": "plan.label.approved", "comment": "plan.family.comment",
    "plan_changes": "plan.meeting.changes",
}


def label_of(name: str, lang: str) -> str:
    """A field's name (its JSON path) as the words its label has: `services.0.funding.1.share`
    → "Service 1: Share 2 in %"."""
    parts = name.split(".")
    head = ""
    if parts[0] == "plan_changes" and len(parts) > 1:
        head, parts = _t(lang, "plan.meeting.changes") + " — ", parts[1:]
    if parts[0] == "outcomes" and len(parts) > 1:
        parts = parts[1:]
    if parts[0] == "measurements" and len(parts) == 4:  # api/pages/outcomes.py
        return _t(lang, f"outcomes.scale.{parts[3]}")
    if parts[0] == "family_goals" and len(parts) == 2 and parts[1].isdigit():
        return head + _t(lang, "plan.family_goals.label", n=int(parts[1]) + 1)
    if parts[0] in _FIELDS and len(parts) >= 3 and parts[1].isdigit():
        row_key, fields = _FIELDS[parts[0]]
        row = _t(lang, row_key, n=int(parts[1]) + 1)
        if parts[0] == "services" and len(parts) == 5 and parts[2] == "funding" and parts[3].isdigit():
            field = _t(lang, f"plan.funding.{parts[4]}", n=int(parts[3]) + 1)
        else:
            field = _t(lang, fields[parts[2]]) if parts[2] in fields else parts[2]
        return f"{head}{row}: {field}"
    if parts[0] in _SIMPLE and len(parts) <= 2:
        return head + _t(lang, _SIMPLE[parts[0]])
    return head + name


# ---------------------------------------------------------------- the routes


@router.post("/cases/{case_id}/plan")
async def put_plan(request: Request, case_id: str) -> Response:
    from api import cases

    def done(result: dict, lang: str) -> str:
        plan = result.get("plan") or {}
        return _t(lang, "plan.done.saved", version=plan.get("version", "?"))

    return await command_form(
        request, case_id, "put_plan", lambda cmd, body: cases.put_plan(case_id, body, cmd),
        PlanDraft, done, lambda values, lang, _user: build_plan(values, lang))


@router.post("/cases/{case_id}/plan/votes")
async def vote(request: Request, case_id: str) -> Response:
    from api import cases

    def prepare(values: dict[str, str], user) -> None:
        values.setdefault("staff_id", user.id)  # one's own vote (an admin may name the voter)

    def done(result: dict, lang: str) -> str:
        text = _t(lang, "plan.done.voted")
        if result.get("stage") == "escalated":
            text += " " + _t(lang, "plan.done.to_committee")
        elif (result.get("plan") or {}).get("decision") == "team":
            text += " " + _t(lang, "plan.done.team_decided")
        return text

    return await command_form(
        request, case_id, "vote", lambda cmd, body: cases.vote(case_id, body, cmd),
        CastVote, done, prepare=prepare)


@router.post("/cases/{case_id}/plan/family-response")
async def family_response(request: Request, case_id: str) -> Response:
    from api import cases

    def done(result: dict, lang: str) -> str:
        plan = result.get("plan") or {}
        if plan.get("family_approved") is False or plan.get("status") == "rejected":
            return _t(lang, "plan.done.family_rejected", version=plan.get("version", "?"))
        if plan.get("status") == "active":
            return _t(lang, "plan.done.family_approved_active", version=plan.get("version", "?"))
        return _t(lang, "plan.done.family_approved", version=plan.get("version", "?"))

    return await command_form(
        request, case_id, "family_response",
        lambda cmd, body: cases.family_response(case_id, body, cmd), FamilyResponse, done)

