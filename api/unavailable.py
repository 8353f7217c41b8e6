"""The read model's database down -> 503 with a sentence, never a 500 (issue 12, faults).

A pure ASGI middleware just inside the hardening one (so the answer still gets the security
headers and an access-log line) and outside authentication, which reads the database first.
Connection failures (server stopped, network gone, pool exhausted) become 503 with
`Retry-After`; any other error is left alone. Nothing is lost meanwhile: a command the case
workflow accepted is projected by its projection activity, which retries until the database
is back (workflows/case.py PROJECTION_RETRY).
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("onefamily.api")

DOWN = ("The case database is not reachable right now; try again in a moment. Commands the "
        "cases already accepted are kept and shown when it is back.")
BODY = json.dumps({"detail": DOWN}).encode()


def database_down(error: BaseException) -> bool:
    """A failure to reach the database (not a bad statement or a constraint)."""
    for e in _chain(error):
        if isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
    return False


def _chain(error: BaseException):
    seen = 0
    while error is not None and seen < 10:
        yield error
        if isinstance(error, BaseExceptionGroup) and error.exceptions:
            error = error.exceptions[0]
        else:
            error = error.__cause__ or error.__context__
        seen += 1


class DatabaseUnavailableMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as error:
            if started or not database_down(error):
                raise
            log.warning("database unreachable: answered 503", extra={
                "exc_type": f"{type(error).__module__}.{type(error).__qualname__}"})
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
                (b"retry-after", b"5")]})
            await send({"type": "http.response.body", "body": BODY})
