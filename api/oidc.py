"""OpenID Connect (ONEFAMILY_AUTH=oidc, DESIGN §9): the municipality's provider proves who
staff are; roles still come from our own staff directory.

- `OidcVerifier` (one per process: `get_verifier(settings)`): the provider's discovery document
  and JWKS, fetched with httpx and cached (the JWKS is fetched again for a key id it does not
  know, at most once a minute); `verify_access_token(token)` checks a JWT access token sent as
  `Authorization: Bearer` (signature, `iss`, `aud` = ONEFAMILY_OIDC_AUDIENCE or the client
  id, `exp`) and answers the staff id from ONEFAMILY_OIDC_STAFF_CLAIM. Any failure is an
  `OidcError` with a sentence (the auth middleware answers 401).
- Browsers: `GET /auth/oidc/login?next=/...` sends them to the provider (authorization code,
  PKCE S256, state, nonce; those and `next` travel in a short-lived HttpOnly cookie encrypted
  with the system's key); `GET /auth/oidc/callback` checks the state, exchanges the code,
  validates the ID token (signature, `iss`, `aud` = client id, `exp`, `nonce`) and starts a
  session for an active staff member — anyone else gets a 403 page with a sentence.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from joserfc import jws, jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet, import_key
from sqlmodel import Session

from models.tables import StaffRow
from settings import Settings

log = logging.getLogger("onefamily.oidc")

# Asymmetric signatures only: a shared-secret (HS*) or unsigned token is never accepted.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY_SECONDS = 30  # clock skew allowed on exp / nbf / iat
JWKS_REFETCH_SECONDS = 60.0  # an unknown `kid` fetches the JWKS again at most this often
RETRY_SECONDS = 5.0  # after a failed fetch (provider down), wait this long before trying again
HTTP_TIMEOUT = 5.0
MAX_TOKEN_CHARS = 16_384
MAX_DOCUMENT_BYTES = 1_000_000  # discovery document, JWKS, token response

LOGIN_COOKIE = "onefamily_oidc_login"
LOGIN_COOKIE_PATH = "/auth/oidc"
LOGIN_SECONDS = 600  # the provider round trip must finish within this


class OidcError(Exception):
    """The token or the login is refused; `message` is a sentence for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OidcUnavailable(OidcError):
    """The provider (discovery, JWKS or token endpoint) could not be reached or answered badly."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcVerifier:
    """Validates the provider's tokens; thread-safe (the auth middleware calls it from threads)."""

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None,
                 leeway: int = LEEWAY_SECONDS) -> None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            raise OidcError("ONEFAMILY_AUTH=oidc needs ONEFAMILY_OIDC_ISSUER and ONEFAMILY_OIDC_CLIENT_ID.")
        self.configured_issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self.client_secret = settings.oidc_client_secret
        self.audience = settings.oidc_audience or settings.oidc_client_id
        self.staff_claim = settings.oidc_staff_claim
        self.scopes = settings.oidc_scopes
        self.leeway = leeway
        self._http = http or httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False)
        self._lock = threading.RLock()  # _fetch_keys -> metadata() under the lock
        self._metadata: dict[str, Any] | None = None
        self._metadata_tried = -math.inf
        self._keys: KeySet | None = None
        self._keys_tried = -math.inf

    # ------------------------------------------------------------------ provider documents

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise OidcUnavailable(f"The identity provider's {what} could not be fetched "
                                  f"({type(error).__name__}).") from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise OidcUnavailable(f"The identity provider's {what} answered HTTP {response.status_code}.")
        try:
            data = response.json()
        except ValueError:
            raise OidcUnavailable(f"The identity provider's {what} is not JSON.") from None
        if not isinstance(data, dict):
            raise OidcUnavailable(f"The identity provider's {what} is not a JSON object.")
        return data

    def metadata(self) -> dict[str, Any]:
        """The discovery document (fetched once per process)."""
        if self._metadata is not None:
            return self._metadata
        with self._lock:
            if self._metadata is None:
                now = time.monotonic()
                if now - self._metadata_tried < RETRY_SECONDS:
                    raise OidcUnavailable("The identity provider is not reachable; try again shortly.")
                self._metadata_tried = now
                url = self.configured_issuer.rstrip("/") + "/.well-known/openid-configuration"
                data = self._get_json(url, "discovery document")
                issuer = data.get("issuer")
                # OpenID Connect Discovery §4.3: the document must name the issuer we asked.
                if not isinstance(issuer, str) or issuer.rstrip("/") != self.configured_issuer.rstrip("/"):
                    raise OidcUnavailable("The identity provider's discovery document names another "
                                          "issuer than ONEFAMILY_OIDC_ISSUER.")
                for field in ("jwks_uri", "authorization_endpoint", "token_endpoint"):
                    if not isinstance(data.get(field), str):
                        raise OidcUnavailable(f"The identity provider's discovery document lacks {field}.")
                self._metadata = data
        return self._metadata

    @property
    def issuer(self) -> str:
        """`iss` exactly as the provider writes it."""
        return self.metadata()["issuer"]

    def _fetch_keys(self) -> None:
        """Under the lock."""
        self._keys_tried = time.monotonic()
        data = self._get_json(self.metadata()["jwks_uri"], "key set (JWKS)")
        keys = []
        for item in data.get("keys") or []:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig" or item.get("kty") == "oct":
                continue
            try:
                keys.append(import_key(item))
            except (JoseError, ValueError, TypeError):
                continue  # a key type we do not use
        self._keys = KeySet(keys)

    def _signing_key(self, kid: str | None):
        with self._lock:
            now = time.monotonic()
            if self._keys is None:
                if now - self._keys_tried < RETRY_SECONDS:
                    raise OidcUnavailable("The identity provider is not reachable; try again shortly.")
                self._fetch_keys()
            assert self._keys is not None
            if kid is None:
                if len(self._keys.keys) == 1:
                    return self._keys.keys[0]
                raise OidcError("The token does not say which key signed it (no kid).")
            try:
                return self._keys.get_by_kid(kid)
            except InvalidKeyIdError:
                pass
            # Perhaps the provider rotated its keys: look again, but not on every bad token.
            if now - self._keys_tried >= JWKS_REFETCH_SECONDS:
                self._fetch_keys()
                try:
                    return self._keys.get_by_kid(kid)
                except InvalidKeyIdError:
                    pass
        raise OidcError("The token is signed by a key the identity provider does not publish.")

    # ------------------------------------------------------------------ tokens

    def _decode(self, token: str, audience: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(header, claims) of a JWT signed by the provider for `audience`, or OidcError."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise OidcError("The token is empty or too long.")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise OidcError("The token is not a signed JWT.") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise OidcError(f"The token's signature algorithm is not accepted ({str(alg)[:20]}).")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("The token's key id is malformed.")
        key = self._signing_key(kid)
        try:
            claims = jwt.decode(token, key, algorithms=ALGORITHMS).claims
        except (JoseError, ValueError, TypeError):
            raise OidcError("The token's signature does not verify.") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise OidcError("The token has expired.") from None
        except MissingClaimError as error:
            raise OidcError(f"The token lacks a required claim ({error.description}).") from None
        except InvalidClaimError as error:
            if error.claim == "aud":
                raise OidcError("The token is meant for another service (audience).") from None
            if error.claim == "iss":
                raise OidcError("The token was issued by another identity provider.") from None
            raise OidcError(f"The token has an invalid claim ({error.description}).") from None
        except JoseError as error:
            raise OidcError(f"The token is not valid ({error.description}).") from None
        except (ValueError, TypeError):
            raise OidcError("The token's claims are malformed.") from None
        return header, claims

    def _staff_id(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.staff_claim)
        if not isinstance(value, str) or not value.strip() or len(value) > 256:
            raise OidcError(f"The token does not name a staff member (claim {self.staff_claim}).")
        return value.strip()

    def verify_access_token(self, token: str) -> str:
        """The staff id of a valid JWT access token from the provider; OidcError otherwise."""
        header, claims = self._decode(token, self.audience)
        typ = str(header.get("typ", "")).lower()
        if typ not in ("", "jwt", "at+jwt", "application/at+jwt"):
            raise OidcError("The token is not an access token.")
        if "nonce" in claims:  # an ID token (ours always carry a nonce) is no bearer token
            raise OidcError("An ID token is not an access token.")
        return self._staff_id(claims)

    def verify_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        """The claims of a valid ID token from the login we started with `nonce`."""
        _, claims = self._decode(token, self.client_id)
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, nonce):
            raise OidcError("The ID token does not belong to this login (nonce).")
        audience = claims.get("aud")
        azp = claims.get("azp")
        if (isinstance(audience, list) and len(audience) > 1 or azp is not None) and azp != self.client_id:
            raise OidcError("The ID token was issued to another client (azp).")
        return claims

    def staff_id_from_id_token(self, claims: dict[str, Any]) -> str:
        return self._staff_id(claims)

    # ------------------------------------------------------------------ browser login

    def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        challenge = _b64url(hashlib.sha256(code_verifier.encode("ascii")).digest())
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        endpoint = self.metadata()["authorization_endpoint"]
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code (client_secret_basic, or
        client_secret_post when the provider supports only that)."""
        meta = self.metadata()
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}
        headers = {"Accept": "application/json"}
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if not self.client_secret:
            data["client_id"] = self.client_id  # a public client: PKCE alone
        elif "client_secret_basic" in methods or "client_secret_post" not in methods:
            # RFC 6749 §2.3.1: both parts form-encoded before Basic.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            data.update(client_id=self.client_id, client_secret=self.client_secret)
        try:
            response = self._http.post(meta["token_endpoint"], data=data, headers=headers)
        except httpx.HTTPError as error:
            raise OidcUnavailable(f"The identity provider's token endpoint could not be reached "
                                  f"({type(error).__name__}).") from None
        try:
            body = response.json() if len(response.content) <= MAX_DOCUMENT_BYTES else None
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            reason = body.get("error") if isinstance(body, dict) else None
            raise OidcError(f"The identity provider refused the login code (HTTP {response.status_code}"
                            + (f", {str(reason)[:60]}" if reason else "") + ").")
        if not isinstance(body.get("id_token"), str):
            raise OidcError("The identity provider sent no ID token; is the scope `openid` requested?")
        return body


_verifiers: dict[tuple, OidcVerifier] = {}
_verifiers_lock = threading.Lock()


def get_verifier(settings: Settings) -> OidcVerifier:
    """The process's verifier for these settings (its caches live as long as the process)."""
    key = (settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret,
           settings.oidc_audience, settings.oidc_staff_claim, settings.oidc_scopes)
    with _verifiers_lock:
        verifier = _verifiers.get(key)
        if verifier is None:
            verifier = _verifiers[key] = OidcVerifier(settings)
        return verifier


# ---------------------------------------------------------------- the login cookie

_cookie_keys: dict[str, AESGCM] = {}
_COOKIE_AAD = b"onefamily-oidc-login-v1"


def _cookie_cipher(settings: Settings) -> AESGCM:
    """AES-GCM with a key derived (HKDF) from the system's key (workflows/codec.py)."""
    from workflows.codec import load_keys

    cache_key = str(settings.data_dir.resolve())
    cipher = _cookie_keys.get(cache_key)
    if cipher is None:
        current, keys = load_keys(settings)
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"onefamily oidc login cookie").derive(keys[current])
        cipher = _cookie_keys[cache_key] = AESGCM(derived)
    return cipher


def seal_login(settings: Settings, data: dict[str, Any]) -> str:
    nonce = secrets.token_bytes(12)
    plain = json.dumps({**data, "exp": int(time.time()) + LOGIN_SECONDS}).encode()
    return _b64url(nonce + _cookie_cipher(settings).encrypt(nonce, plain, _COOKIE_AAD))


def open_login(settings: Settings, value: str | None) -> dict[str, Any] | None:
    if not value or len(value) > 4096:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        plain = _cookie_cipher(settings).decrypt(raw[:12], raw[12:], _COOKIE_AAD)
        data = json.loads(plain)
    except (ValueError, InvalidTag, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] < time.time():
        return None
    return data


# ---------------------------------------------------------------- routes

router = APIRouter(include_in_schema=False)


def _page(request: Request, status: int, title: str, message: str) -> Response:
    try:
        from api.pages.common import render

        return render(request, "error.html.j2", status=status, user=None, status_code=status,
                      title=title, message=message, nav="")
    except Exception:  # noqa: BLE001 - the page must never turn into a 500
        log.exception("could not render the error page")
        from html import escape

        return HTMLResponse(f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1>"
                            f"<p>{escape(message)}</p><p><a href=\"/login\">Sign in again</a></p>",
                            status_code=status, headers={"Cache-Control": "no-store"})


def _redirect_uri(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/auth/oidc/callback"
    return str(request.url_for("oidc_callback"))


def _clear_login_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_COOKIE_PATH, httponly=True, samesite="lax",
                           secure=settings.secure_cookies)


@router.get("/auth/oidc/login", name="oidc_login")
def oidc_login(request: Request, next: str = "/") -> Response:
    from api.login import safe_next

    settings: Settings = request.app.state.settings
    if settings.auth != "oidc":
        return _page(request, 404, "Not available", "This server does not sign in through OpenID Connect.")
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    redirect_uri = _redirect_uri(request, settings)
    try:
        url = get_verifier(settings).authorization_url(redirect_uri, state, nonce, verifier)
    except OidcError as error:
        log.warning("oidc login: %s", error.message)
        return _page(request, 503, "The municipality's login is not reachable",
                     "The identity provider could not be reached; try again in a moment.")
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    sealed = seal_login(settings, {"state": state, "nonce": nonce, "verifier": verifier,
                                   "next": safe_next(next[:500]), "redirect_uri": redirect_uri})
    response.set_cookie(LOGIN_COOKIE, sealed, max_age=LOGIN_SECONDS, path=LOGIN_COOKIE_PATH,
                        httponly=True, samesite="lax", secure=settings.secure_cookies)
    return response


@router.get("/auth/oidc/callback", name="oidc_callback")
def oidc_callback(request: Request) -> Response:
    from api.login import safe_next
    from api.sessions import start_session

    settings: Settings = request.app.state.settings
    if settings.auth != "oidc":
        return _page(request, 404, "Not available", "This server does not sign in through OpenID Connect.")
    params = request.query_params
    restart = "Start again from the sign-in page."

    def refuse(status: int, title: str, message: str) -> Response:
        response = _page(request, status, title, message)
        _clear_login_cookie(response, settings)
        return response

    login = open_login(settings, request.cookies.get(LOGIN_COOKIE))
    if login is None:
        return refuse(400, "Sign-in expired", "This sign-in took too long or was started in another "
                      "browser. " + restart)
    state = params.get("state", "")
    if not hmac.compare_digest(state.encode()[:200], str(login.get("state", "")).encode()):
        return refuse(400, "Sign-in not recognised", "This answer from the identity provider does not "
                      "belong to the sign-in started here (state). " + restart)
    if params.get("error"):
        return refuse(401, "Sign-in refused", "The identity provider did not sign you in ("
                      + params["error"][:60] + "). " + restart)
    try:
        verifier = get_verifier(settings)
        if "iss" in params and params["iss"] != verifier.issuer:  # RFC 9207: mix-up defence
            return refuse(400, "Sign-in not recognised", "The answer names another identity provider. "
                          + restart)
        code = params.get("code")
        if not code or len(code) > 2048:
            return refuse(400, "Sign-in not recognised", "The identity provider sent no code. " + restart)
        tokens = verifier.exchange_code(code, login["redirect_uri"], login["verifier"])
        claims = verifier.verify_id_token(tokens["id_token"], login["nonce"])
        staff_id = verifier.staff_id_from_id_token(claims)
    except OidcUnavailable as error:
        log.warning("oidc callback: %s", error.message)
        return refuse(502, "The municipality's login is not reachable", error.message + " " + restart)
    except OidcError as error:
        log.warning("oidc callback refused: %s", error.message)
        return refuse(401, "Sign-in refused", error.message + " " + restart)

    with Session(request.app.state.engine) as session:
        staff = session.get(StaffRow, staff_id) if len(staff_id) <= 64 else None
        active = staff is not None and staff.active
    if not active:
        log.info("oidc login of a person who is not active staff")
        return refuse(403, "No access to OneFamily", "You are signed in at the municipality, but you are "
                      "not an active member of OneFamily's staff directory. Ask an administrator to "
                      "add you.")
    response = RedirectResponse(safe_next(str(login.get("next") or "/")), status_code=303,
                                headers={"Cache-Control": "no-store"})
    _clear_login_cookie(response, settings)
    start_session(request, response, kind="staff", principal_id=staff_id)
    return response
