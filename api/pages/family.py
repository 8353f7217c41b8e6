"""The family portal's pages (DESIGN §11): `/family` and its few sub-pages, server-rendered,
mobile first, in the family's language, for a family member signed in with a family session
(api/family_auth.py). The case is always the session's own (`Actor.case_id`): no address here
names a case, so no address can reach another family's.

Pages (each bookmarkable):
- `/family` — who has the ball now and what happens next, the coming meetings (with their
  calendar files), focus points before the next meeting;
- `/family/plan` — the plan (the family's own goals first, goals with progress, actions with
  who and by when) and the answer to a plan version waiting for the family;
- `/family/messages` — the documents meant for the family and the messages sent to it;
- `/family/consents` — the family's consents (give, narrow or extend, withdraw) and who of
  the staff read the case and when;
- `/family/contact` — how much contact the family wants, and asking for a pause;
- `/family/login`, `/family/welcome` — the sign-in pages in the portal's look (the forms post
  to api/family_auth.py, which spends the link or the code).

Every form sends the family's JSON endpoint's own function (`api.family.family_command`: the
case workflow's Update with the family member as the actor), so the page and the API share
one code path and the workflow's validators decide. A refusal shows the page again with the
sentence and what was typed; success redirects (post/redirect/get).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from api.family import FamilyConsentIn, RevokeIn, build_view, family_command, family_state
from api.pages import i18n
from api.pages.common import (
    FormState,
    back,
    cross_site,
    field_errors,
    language_of,
    read_form,
    render,
    timezone_of,
    unflatten,
)
from domain.access import is_family
from models.case import (
    Actor,
    CaseState,
    ConsentChanges,
    FamilyResponse,
    FocusPoints,
    PauseRequest,
    SetContactPreference,
)

router = APIRouter(include_in_schema=False)

LOGIN = "/family/login"
# The family's pages: (key, address, text key of the menu).
NAV = [("home", "/family", "family.nav.home"), ("plan", "/family/plan", "family.nav.plan"),
       ("messages", "/family/messages", "family.nav.messages"),
       ("consents", "/family/consents", "family.nav.consents"),
       ("contact", "/family/contact", "family.nav.contact")]
PREFERENCES = ("close", "normal", "space")


def t(lang: str, key: str, **values: object) -> str:
    return i18n.translate(lang, key, **values)


# ---------------------------------------------------------------- who, which language


def family_principal(request: Request) -> Actor | None:
    actor = getattr(request.state, "principal", None)
    if actor is not None and is_family(actor) and actor.case_id and actor.member_id:
        return actor
    return None


def page_language(request: Request, state: CaseState | None = None) -> str:
    """The language this person chose in this browser (the language switch's cookie), else the
    family's language, else the browser's / the municipality's."""
    chosen = request.cookies.get(i18n.COOKIE)
    if chosen in i18n.LANGUAGES:
        return chosen
    if state is not None and state.family.language in i18n.LANGUAGES:
        return state.family.language
    return language_of(request, None)


def in_language(state: CaseState, lang: str) -> CaseState:
    """The state as the family view's words should speak `lang` (domain.family_view takes the
    family's language from the state)."""
    if state.family.language == lang:
        return state
    return state.model_copy(update={"family": state.family.model_copy(update={"language": lang})})


def _words(lang: str, code: str, *areas: str) -> str:
    """A department's or discipline's name in plain words (a known one translated; any other
    as it is written, without underscores)."""
    for area in areas:
        key = f"{area}.{code}"
        text = i18n.translate(lang, key)
        if text != key:
            return text
    return code.replace("_", " ")


def frame(request: Request, template: str, lang: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """A family page: the family frame (no staff menu), the family's language."""
    ctx.setdefault("nav_items", NAV)
    ctx.setdefault("department", lambda code: _words(lang, code or "", "family.department"))
    ctx.setdefault("discipline", lambda code: _words(lang, code or "", "staff.discipline"))
    return render(request, template, status=status, user=None, lang=lang, **ctx)


def family_error(request: Request, status: int, message: str, lang: str | None = None,
                 signed_in: bool = True) -> HTMLResponse:
    lang = lang or page_language(request)
    title = {401: "family.error.signed_out", 403: "family.error.forbidden",
             404: "family.error.not_found"}.get(status, "family.error.other")
    return frame(request, "family/error.html.j2", lang, status=status, title=t(lang, title),
                 message=message, status_code=status, signed_in=signed_in, nav="")


def not_family(request: Request) -> Response:
    """Nobody signed in: the sign-in page. Staff (or anyone else): the family's pages are not
    theirs (403)."""
    if getattr(request.state, "principal", None) is None:
        return RedirectResponse(LOGIN, status_code=303)
    lang = page_language(request)
    return family_error(request, 403, t(lang, "family.error.staff"), lang, signed_in=False)


async def load(request: Request, actor: Actor) -> tuple[dict, CaseState, str]:
    """The family view (api/family.py's, the same dict as GET /api/v1/family/case) in the
    page's language, the live state and the language. Raises HTTPException (403/404/503)."""
    state = await family_state(request, actor)
    lang = page_language(request, state)
    view = await asyncio.to_thread(build_view, request.app.state.engine, in_language(state, lang),
                                   actor.member_id)
    return view, state, lang


def _next_steps(view: dict, lang: str, timezone: str) -> list[str]:
    """What happens next, as sentences with dates in the municipality's time zone."""
    out = []
    for step in view["next_steps"]:
        when = i18n.format_datetime(lang, step["at"], timezone)
        if step["kind"] == "meeting":
            title = next((m["title"] for m in view["meetings"] if m["at"] == step["at"]), "")
            out.append(t(lang, "family.next.meeting", title=title, when=when))
        elif step["kind"] == "plan_answer":
            out.append(t(lang, "family.next.plan_answer", when=when))
    return out


PageBuilder = Callable[[Request, Actor, FormState | None], Awaitable[Response]]


async def show(request: Request, actor: Actor, template: str, nav: str,
               form_state: FormState | None = None, **extra: Any) -> Response:
    try:
        view, state, lang = await load(request, actor)
    except HTTPException as error:
        return family_error(request, error.status_code, str(error.detail))
    me = view["you"]
    ctx = {
        "view": view, "state_version": state.version, "nav": nav, "form_state": form_state,
        "member_name": me["name"], "is_parent": me["role"] == "parent",
        "closed": view["closed"] is not None, "next_steps": _next_steps(view, lang, timezone_of(request)),
        "preferences": PREFERENCES, "signed_in": True,
    }
    ctx.update(extra)
    status = form_state.status if form_state is not None else 200
    return frame(request, template, lang, status=status, **ctx)


def page(template: str, nav: str) -> PageBuilder:
    async def build(request: Request, actor: Actor, form_state: FormState | None = None) -> Response:
        return await show(request, actor, template, nav, form_state)
    return build


HOME = page("family/home.html.j2", "home")
PLAN = page("family/plan.html.j2", "plan")
MESSAGES = page("family/messages.html.j2", "messages")
CONSENTS = page("family/consents.html.j2", "consents")
CONTACT = page("family/contact.html.j2", "contact")


# ---------------------------------------------------------------- pages


@router.get("/family")
async def family_home(request: Request) -> Response:
    actor = family_principal(request)
    return await HOME(request, actor) if actor else not_family(request)


@router.get("/family/plan")
async def family_plan(request: Request) -> Response:
    actor = family_principal(request)
    return await PLAN(request, actor) if actor else not_family(request)


@router.get("/family/messages")
async def family_messages_page(request: Request) -> Response:
    actor = family_principal(request)
    return await MESSAGES(request, actor) if actor else not_family(request)


@router.get("/family/consents")
async def family_consents(request: Request) -> Response:
    actor = family_principal(request)
    return await CONSENTS(request, actor) if actor else not_family(request)


@router.get("/family/contact")
async def family_contact(request: Request) -> Response:
    actor = family_principal(request)
    return await CONTACT(request, actor) if actor else not_family(request)


# ---------------------------------------------------------------- forms


def _dump(model: BaseModel) -> dict:
    return model.model_dump(mode="json", exclude_none=True)


async def submit(
    request: Request,
    form_name: str,
    command: str,
    model: type[BaseModel],
    shown_on: PageBuilder,
    done: Callable[[str], Response],
    build: Callable[[dict, dict[str, str]], dict] | None = None,
    check: Callable[[dict[str, str]], Awaitable[str | None]] | None = None,
) -> Response:
    """One family form → one family command (api.family.family_command, the JSON endpoints'
    own path). The body is built from the fields (named by their JSON path) and checked by the
    command's model; a refusal (the model's, `check`'s or the workflow's sentence) shows
    `shown_on` again with what was typed; success is `done(lang)` (a 303)."""
    actor = family_principal(request)
    if actor is None:
        return not_family(request)
    if cross_site(request):
        return family_error(request, 403, t(page_language(request), "family.error.cross_site"))
    values = await read_form(request)
    lang = page_language(request)

    async def again(**kw: Any) -> Response:
        return await shown_on(request, actor, FormState(form_name, values, **kw))

    try:
        data = unflatten(values, timezone_of(request))
        model.model_validate(data)  # field errors by the form's field names
        body = build(data, values) if build is not None else _dump(model.model_validate(data))
    except ValidationError as error:
        return await again(errors=field_errors(error, lang))
    except ValueError as error:
        return await again(message=str(error))
    if check is not None:
        refusal = await check(values)
        if refusal:
            return await again(message=refusal, status=409)
    key = (values.get("idempotency_key") or "")[:64] or None
    try:
        version = values.get("version", "")
        await family_command(request, command, body, key, actor,
                             expected_version=int(version) if version.isdigit() else None)
    except HTTPException as error:
        request.state.audit_outcome = error.status_code  # the command's, not the page's
        return await again(message=str(error.detail), status=error.status_code)
    return done(page_language(request))


@router.post("/family/plan/response")
async def answer_plan(request: Request) -> Response:
    """Approve or reject the plan version waiting for the family (the same Update as the
    coordinator's `plan/family-response`, the family member as the actor)."""
    actor = family_principal(request)

    async def same_version(values: dict[str, str]) -> str | None:
        """The version the page showed is still the one waiting: never approve a version
        the family has not seen."""
        shown = values.get("_plan_version", "")
        try:
            view, _, lang = await load(request, actor)
        except HTTPException as error:
            return str(error.detail)
        plan = view["plan"]
        if plan is not None and shown.isdigit() and int(shown) != plan["version"]:
            return t(lang, "family.plan.changed", shown=shown, version=plan["version"])
        return None

    def done(lang: str) -> Response:
        return back("/family/plan", ok=t(lang, "family.plan.answered"))

    return await submit(request, "family_response", "family_response", FamilyResponse, PLAN, done,
                        check=same_version if actor else None)


@router.post("/family/focus-points")
async def write_focus_points(request: Request) -> Response:
    return await submit(request, "family_focus_points", "family_focus_points", FocusPoints, HOME,
                        lambda lang: back("/family", ok=t(lang, "family.focus.sent")))


@router.post("/family/contact-preference")
async def change_contact_preference(request: Request) -> Response:
    return await submit(request, "set_contact_preference", "set_contact_preference",
                        SetContactPreference, CONTACT,
                        lambda lang: back("/family/contact", ok=t(lang, "family.contact.saved")))


@router.post("/family/pause-request")
async def ask_for_pause(request: Request) -> Response:
    return await submit(request, "request_pause", "request_pause", PauseRequest, CONTACT,
                        lambda lang: back("/family/contact", ok=t(lang, "family.pause.sent")))


@router.post("/family/consents")
async def give_consent(request: Request) -> Response:
    """A new consent, given by the signed-in member (as POST /api/v1/family/consents)."""
    actor = family_principal(request)

    def build(data: dict, values: dict[str, str]) -> dict:
        body = FamilyConsentIn.model_validate(data)
        return _dump(body) | {"member_id": actor.member_id}

    return await submit(request, "give_consent", "give_consent", FamilyConsentIn, CONSENTS,
                        lambda lang: back("/family/consents", ok=t(lang, "family.consent.given")),
                        build=build)


def _consent_id(consent_id: str) -> str:
    return consent_id[:200]


@router.post("/family/consents/{consent_id}")
async def change_consent(consent_id: str, request: Request) -> Response:
    """Narrow or extend a consent. The form shows every choice, so what it sends is the whole
    new scope: a list left with nothing ticked is an empty list (not "keep as it is")."""

    def build(data: dict, values: dict[str, str]) -> dict:
        body = ConsentChanges.model_validate(data)
        out = _dump(body)
        for name in ("staff_ids", "departments"):
            if values.get(f"_shown_{name}") and name not in data:
                out[name] = []
        return {"consent_id": _consent_id(consent_id), **out}

    return await submit(request, f"change_consent-{_consent_id(consent_id)}", "change_consent",
                        ConsentChanges, CONSENTS,
                        lambda lang: back("/family/consents", ok=t(lang, "family.consent.changed")),
                        build=build)


@router.post("/family/consents/{consent_id}/revoke")
async def revoke_consent(consent_id: str, request: Request) -> Response:
    """Withdraw a consent at once: whom it covered sees nothing of the case from the next read."""

    def build(data: dict, values: dict[str, str]) -> dict:
        return {"consent_id": _consent_id(consent_id), **_dump(RevokeIn.model_validate(data))}

    return await submit(request, f"revoke_consent-{_consent_id(consent_id)}", "revoke_consent", RevokeIn,
                        CONSENTS, lambda lang: back("/family/consents", ok=t(lang, "family.consent.revoked")),
                        build=build)


# ---------------------------------------------------------------- signing in


@router.get("/family/login")
def family_login_page(request: Request) -> Response:
    """Ask for the phone number or e-mail address on file; the form posts to
    api/family_auth.py, which sends a code (and shows the code form)."""
    if family_principal(request) is not None:
        return RedirectResponse("/family", status_code=303)
    lang = page_language(request)
    oidc = bool(getattr(request.app.state.settings, "family_oidc_enabled", False))
    return frame(request, "family/login.html.j2", lang, oidc=oidc, signed_in=False, nav="")


@router.get("/family/welcome")
def family_welcome_page(request: Request, token: str = "") -> Response:
    """The invitation link's page: a button that spends the link (POST /family/welcome). A GET
    spends nothing, so the link scanners of mail clients cannot burn it."""
    from api.family_auth import find_invitation, link_refusal

    token = token[:200]
    lang = page_language(request)
    with Session(request.app.state.engine) as session:
        refusal = link_refusal(find_invitation(session, token))
    oidc = bool(getattr(request.app.state.settings, "family_oidc_enabled", False))
    response = frame(request, "family/welcome.html.j2", lang, status=refusal.status if refusal else 200,
                     token=token, refusal=refusal.message if refusal else None, oidc=oidc,
                     signed_in=False, nav="")
    # The link's token is in this address: the site's `same-origin` Referrer-Policy keeps it from
    # other sites. Not `no-referrer`: a browser then sends `Origin: null` with the button's POST,
    # which the cross-site check refuses.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def sign_in_page(request: Request, status: int, title: str, inner_html: str) -> HTMLResponse:
    """The family frame around a sign-in answer rendered elsewhere (api/family_auth.py's code
    form and refusals): `inner_html` must be escaped HTML already."""
    lang = page_language(request)
    response = frame(request, "family/sign_in.html.j2", lang, status=status, title=title,
                     inner=Markup(inner_html), signed_in=False, nav="")  # noqa: S704 - escaped by the caller
    response.headers["Referrer-Policy"] = "same-origin"  # not no-referrer: see family_welcome_page
    return response
