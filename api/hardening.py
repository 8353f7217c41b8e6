"""The edge of the API (DESIGN §9, issue 8): one pure ASGI middleware, added last so it runs
first, around everything else (auth, audit, the routes, the error handlers).

- `Host` allow-list: only `ONEFAMILY_ALLOWED_HOSTS`, the host of `ONEFAMILY_PUBLIC_URL`, the
  host the API binds to and loopback (any port) are answered; anything else is a 400 — DNS
  rebinding then reaches nothing.
- Security headers on every answer (pages, JSON, errors, redirects, static files): a
  Content-Security-Policy without inline script or style, nosniff, Referrer-Policy,
  X-Frame-Options, HSTS when the public URL is https, and `Cache-Control: no-store` on `/api/`
  and `/codec` answers unless the route chose otherwise. Stored documents (HTML with their
  print stylesheet inline) get a policy of their own: inline style, still no script at all.
- Access log: one JSON line per request on the logger `onefamily.access` —
  {"at", "method", "path", "status", "ms"}. Never the query string (searches name children),
  never a body, never a header. uvicorn's own access log prints the query string: run uvicorn
  with `--no-access-log`; this module also switches the `uvicorn.access` logger off.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.text import mark_edge
from settings import Settings

access_log = logging.getLogger("onefamily.access")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
# Documents are rendered for print (WeasyPrint) with their stylesheet inline; nothing else.
DOCUMENT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                "form-action 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
DOCUMENT_PATHS = re.compile(
    r"^(/api/v1/documents/[^/]+|/cases/[^/]+/documents/[^/]+|/reports/[^/]+/document)$")
NO_STORE_PREFIXES = ("/api/", "/codec")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_LOGGED_PATH = 200


def host_name(value: str) -> str:
    """The host of a `Host` header (or of an allowed-hosts entry), lower case, without the
    port: "Example.org:8000" -> "example.org", "[::1]:8000" -> "::1", "::1" -> "::1"."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        value = value[1:end] if end > 0 else value
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def allowed_hosts(settings: Settings) -> frozenset[str]:
    names = set(LOOPBACK)
    names.update(host_name(h) for h in settings.allowed_hosts.split(",") if h.strip())
    if settings.public_url:
        public = urlsplit(settings.public_url).hostname
        if public:
            names.add(host_name(public))
    if settings.api_host not in ("", "0.0.0.0", "::"):
        names.add(host_name(settings.api_host))
    return frozenset(names)


def _shown(name: str, limit: int = 100) -> str:
    """A foreign host name fit to quote back: printable ASCII only, and not too long."""
    clean = "".join(c if c.isascii() and c.isprintable() else "?" for c in name[:limit])
    return clean + ("..." if len(name) > limit else "")


def _json(status: int, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"detail": detail}).encode()
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


def _setup_access_log() -> None:
    logging.getLogger("uvicorn.access").disabled = True
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.INFO)
    # Under uvicorn nothing handles our loggers (it configures only its own): print the lines.
    if not access_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)


class HardeningMiddleware:
    """Add with `app.add_middleware(HardeningMiddleware, settings=settings)` after every other
    middleware (Starlette runs the one added last first)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = allowed_hosts(settings)
        self.common: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
        ]
        if settings.secure_cookies:  # the public URL is https
            self.common.append((b"strict-transport-security", b"max-age=31536000"))
        _setup_access_log()

    def _refusal(self, scope: Scope) -> str | None:
        raw = next((v for k, v in scope.get("headers", ()) if k == b"host"), None)
        if raw is None:
            return "The request has no Host header."
        name = raw.decode("latin-1")
        if host_name(name) in self.hosts:
            return None
        return f"This server does not answer to the host name '{_shown(name)}'."

    def _headers(self, path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        have = {k.lower() for k, _ in headers}
        extra = [(k, v) for k, v in self.common if k not in have]
        if b"content-security-policy" not in have:
            csp = DOCUMENT_CSP if DOCUMENT_PATHS.match(path) else CSP
            extra.append((b"content-security-policy", csp.encode()))
        if b"cache-control" not in have and path.startswith(NO_STORE_PREFIXES):
            extra.append((b"cache-control", b"no-store"))
        return list(headers) + extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if self._refusal(scope) is not None:
                await send({"type": "websocket.close", "code": 1008})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mark_edge()  # a caller's input: the whole text rule applies (models/text.py)
        started = time.perf_counter()
        path = scope.get("path", "")
        status: int | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": self._headers(path, message.get("headers", []))}
            await send(message)

        async def reply(code: int, detail: str) -> None:
            headers, body = _json(code, detail)
            await send_with_headers({"type": "http.response.start", "status": code, "headers": headers})
            await send_with_headers({"type": "http.response.body", "body": body})

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await reply(400, refusal)
                return
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception:
                if status is None:  # nothing sent yet: a 500 with our headers, then re-raise
                    await reply(500, "Internal error; it has been logged.")
                raise
        finally:
            self._log(scope, path, status, started)

    @staticmethod
    def _log(scope: Scope, path: str, status: int | None, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info(json.dumps({
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": scope.get("method", ""),
            "path": path[:MAX_LOGGED_PATH],  # scope["path"] never holds the query string
            "status": status if status is not None else 499,  # 499: the client went away
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }, ensure_ascii=True))
