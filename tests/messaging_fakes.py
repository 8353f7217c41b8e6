"""Real servers on 127.0.0.1 for the notification tests: an SMTP server (aiosmtpd) that keeps
what it receives, and a small HTTP SMS gateway that can fail on demand."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from launcher import free_port


@dataclass
class MailSink:
    """aiosmtpd handler: `messages` are the parsed mails; set `fail_data` to an SMTP reply
    (e.g. "451 4.3.0 try later") to refuse the next DATA commands, `refuse_rcpt` to refuse
    recipients."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list = field(default_factory=list)
    fail_data: str | None = None
    refuse_rcpt: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.fail_data:
            return self.fail_data
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"


class SmtpServer:
    def __init__(self) -> None:
        self.sink = MailSink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        return self.sink.messages


class SmsGateway:
    """POST {to, text, reference} with a bearer token. Every request is kept in `requests`;
    `accepted` holds one entry per reference (a real gateway de-duplicates by reference and
    answers 409 for a reference it already has). `fail_with` = an HTTP status to answer with."""

    TOKEN = "test-token"

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.accepted: dict[str, dict] = {}
        self.fail_with: int | None = None
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with gateway.lock:
                    gateway.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    if gateway.fail_with:
                        status, answer = gateway.fail_with, {"error": "unavailable"}
                    elif self.headers.get("Authorization") != f"Bearer {SmsGateway.TOKEN}":
                        status, answer = 401, {"error": "bad token"}
                    elif body.get("reference") in gateway.accepted:
                        status, answer = 409, {"error": "duplicate reference"}
                    else:
                        gateway.accepted[body["reference"]] = body
                        status, answer = 202, {"id": f"sms-{len(gateway.accepted)}"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SmsGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
