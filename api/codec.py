"""Codec server for the Temporal UI and CLI: `POST /codec/decode` and `POST /codec/encode`.

The protocol (Temporal's remote codec protocol): the body is `{"payloads": [...]}`, proto3
JSON of `temporal.api.common.v1.Payload`, and the answer has the same shape. The UI calls it
*from the browser* (cross-origin, with `X-Namespace` and possibly `Authorization`), so the
endpoints answer CORS preflights for the Temporal UI origin. The dev server is started with
`--ui-codec-endpoint http://127.0.0.1:<api_port>/codec` (launcher.py); the CLI can use
`temporal workflow show --codec-endpoint ... --codec-header 'X-User: <manager id>'`.

Who may decrypt (the data is health data, DESIGN §7 "Privacy"):
- a request with `X-User` of an active staff member with role manager or admin; a known
  user without that role gets 403, an unknown one 401. Use: CLI, scripts, other tools.
- or, without `X-User`, a request whose `Origin` is the configured Temporal UI
  (http://127.0.0.1:<ui_port> or http://localhost:<ui_port>) *and* whose peer address is
  loopback. The UI cannot send `X-User`, and the embedded UI has no login of its own: anyone
  who can open it already sits on this machine, where the data dir with the key file is.
  Browsers set `Origin` themselves, so another website open in the same browser cannot pass
  as the UI; a local process can forge it, but such a process can read the key file anyway.
  Behind a reverse proxy the peer address must be the real client's (uvicorn takes it from
  X-Forwarded-For sent by a proxy on 127.0.0.1), or every request would look local.
  In production the Temporal UI should sit behind SSO and send its token (`Authorization`);
  checking that token here is the place to extend.
Anything else gets 401. Encode is guarded like decode: it lets a caller forge payloads.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import Caller, get_caller, get_settings_dep
from settings import Settings
from workflows.codec import EncryptionCodec, EncryptionKeyError, make_codec

router = APIRouter(prefix="/codec", tags=["codec"])

DECRYPT_ROLES = {"manager", "admin"}
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization, X-User"


def ui_origins(settings: Settings) -> set[str]:
    return {f"http://127.0.0.1:{settings.temporal_ui_port}", f"http://localhost:{settings.temporal_ui_port}"}


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an IP (e.g. a unix socket path)
        return False


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


def _authorize(request: Request, caller: Caller, settings: Settings) -> None:
    if caller.user_id:
        actor = caller.require()  # 401 for an unknown or inactive user
        if not DECRYPT_ROLES & set(actor.roles):
            raise HTTPException(
                403, f"Only a manager or an admin may decrypt case data ('{actor.id}' may not)."
            )
        return
    host = request.client.host if request.client else None
    if request.headers.get("origin") in ui_origins(settings) and _is_loopback(host):
        return
    raise HTTPException(
        401, "Send the header X-User of a manager or admin, or use the Temporal UI on this machine."
    )


def get_codec(request: Request) -> EncryptionCodec | None:
    """One codec per app, built on first use (loading keys reads the data dir)."""
    state = request.app.state
    if getattr(state, "codec", None) is None:
        state.codec = make_codec(state.settings)
    return state.codec


async def _run(request: Request, caller: Caller, settings: Settings, decode: bool) -> Response:
    cors = _cors_headers(request, settings)
    try:
        _authorize(request, caller, settings)
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
