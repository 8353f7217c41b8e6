"""Codec server for the Temporal UI and CLI: `POST /codec/decode` and `POST /codec/encode`.

The protocol (Temporal's remote codec protocol): the body is `{"payloads": [...]}`, proto3
JSON of `temporal.api.common.v1.Payload`, and the answer has the same shape. The UI calls it
*from the browser* (cross-origin, with `X-Namespace` and possibly `Authorization`), so the
endpoints answer CORS preflights for the Temporal UI origin. The dev server is started with
`--ui-codec-endpoint http://127.0.0.1:<api_port>/codec` (launcher.py); the CLI can use
`temporal workflow show --codec-endpoint ... --codec-header 'Authorization: Bearer <token>'`.

Who may decrypt (the data is health data, DESIGN §9): an authenticated caller (a token, a
session, or the trusted header of trusted-header mode; api/auth.py) whom the access policy
lets decrypt (`domain.access.may_decrypt`: administrators). Nobody else: no caller is 401, a
caller without the right 403. There is no free pass for the Temporal UI's `Origin` or for
loopback peers: a local process can forge both. The UI sends the admin's token
(`Authorization`) or runs behind the SSO proxy of trusted-header mode.

Every decoded payload that names a case (a `case_id`, a committee item id, or a case state
`{"id": ..., "stage": ...}`) is checked against the policy's read rule for that case, and its
id is handed to the audit (`request.state.audit_case_ids`). Encode is guarded like decode: it
lets a caller forge payloads.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from sqlmodel import Session
from temporalio.api.common.v1 import Payloads

from api.deps import Caller, get_caller, get_settings_dep
from api.scope import load_facts
from domain.access import CaseFacts, may_decrypt, read_refusal
from models.case import Actor
from settings import Settings
from workflows.codec import EncryptionCodec, EncryptionKeyError, make_codec

router = APIRouter(prefix="/codec", tags=["codec"])

ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization, X-CSRF-Token"
JSON_ENCODINGS = {b"json/plain", b"json/protobuf"}
MAX_DEPTH = 8


def ui_origins(settings: Settings) -> set[str]:
    return {f"http://127.0.0.1:{settings.temporal_ui_port}", f"http://localhost:{settings.temporal_ui_port}"}


def _cors_headers(request: Request, settings: Settings) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin not in ui_origins(settings):
        return {}  # no CORS headers: the browser blocks any other site
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",  # the UI may send cookies/credentials
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _authorize(caller: Caller) -> Actor:
    actor = caller.require()  # 401: no or invalid credentials
    if not may_decrypt(actor):
        raise HTTPException(403, f"Only an administrator may decrypt case data ('{actor.id}' may not).")
    return actor


def _as_case_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _collect(value: Any, out: dict[str, None], depth: int = 0) -> None:
    """Case ids named anywhere in a decoded JSON value: `case_id`, committee `item_id`s
    ("<case uuid>-<n>") and case states ({"id": <uuid>, "stage": ...})."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        found = [_as_case_id(value.get("case_id"))]
        if isinstance(value.get("item_id"), str):
            found.append(_as_case_id(value["item_id"].rpartition("-")[0]))
        if "stage" in value:
            found.append(_as_case_id(value.get("id")))
        for case_id in found:
            if case_id is not None:
                out[case_id] = None
        for child in value.values():
            if isinstance(child, dict | list):
                _collect(child, out, depth + 1)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, dict | list):
                _collect(child, out, depth + 1)


def named_cases(payloads: list) -> list[str]:
    """The cases a list of decoded payloads names, in order of appearance."""
    out: dict[str, None] = {}
    for payload in payloads:
        if payload.metadata.get("encoding") not in JSON_ENCODINGS:
            continue
        try:
            _collect(json.loads(payload.data), out)
        except (ValueError, RecursionError):
            continue
    return list(out)


def _check_cases(request: Request, actor: Actor, case_ids: list[str]) -> None:
    """The policy's read rule for every case the answer would show; each is audited."""
    audited = getattr(request.state, "audit_case_ids", None)
    if audited is None:
        audited = request.state.audit_case_ids = []
    audited.extend(case_ids)
    if not case_ids:
        return
    with Session(request.app.state.engine) as session:
        for case_id in case_ids:
            # A case the read model does not know: no unit, no staff; only admin reads it.
            facts = load_facts(session, case_id) or CaseFacts(id=case_id, unit="")
            refusal = read_refusal(actor, facts)
            if refusal:
                raise HTTPException(403, f"A payload names case {case_id}: {refusal}")


def get_codec(request: Request) -> EncryptionCodec | None:
    """One codec per app, built on first use (loading keys reads the data dir)."""
    state = request.app.state
    if getattr(state, "codec", None) is None:
        state.codec = make_codec(state.settings)
    return state.codec


async def _run(request: Request, caller: Caller, settings: Settings, decode: bool) -> Response:
    cors = _cors_headers(request, settings)
    try:
        actor = _authorize(caller)
        try:
            body: Any = await request.json()
            payloads = json_format.ParseDict(body, Payloads())
        except Exception as error:  # noqa: BLE001 - any malformed body is the caller's error
            raise HTTPException(400, f'Expected {{"payloads": [...]}} (proto3 JSON): {error}') from None
        codec = get_codec(request)
        items = list(payloads.payloads)
        if codec is not None:
            try:
                items = await (codec.decode(items) if decode else codec.encode(items))
            except EncryptionKeyError as error:  # the message names key ids, never keys
                raise HTTPException(400, str(error)) from None
        if decode:
            _check_cases(request, actor, named_cases(items))
    except HTTPException as error:
        # Errors need the CORS headers too, or the UI only sees an opaque network error.
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=cors)
    return JSONResponse(json_format.MessageToDict(Payloads(payloads=items)), headers=cors)


@router.post("/decode")
async def decode(
    request: Request,
    caller: Caller = Depends(get_caller),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """Decrypt payloads (Temporal remote codec protocol)."""
    return await _run(request, caller, settings, decode=True)


@router.post("/encode")
async def encode(
    request: Request,
    caller: Caller = Depends(get_caller),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """Encrypt payloads (Temporal remote codec protocol)."""
    return await _run(request, caller, settings, decode=False)


@router.options("/{operation}", include_in_schema=False)
async def preflight(
    operation: str, request: Request, settings: Settings = Depends(get_settings_dep)
) -> Response:
    # Preflights carry no credentials; the POST that follows is checked.
    return Response(status_code=204, headers=_cors_headers(request, settings))
