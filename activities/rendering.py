"""Jinja2 rendering shared by messages and documents, in Danish, Swedish and English.

- templates/messages/<lang>/<template>.txt.j2: one file per message and language; it extends
  messages/_message.txt.j2 and fills the blocks `subject`, `body` and (optionally) `sms`, the
  short text for an SMS (default: the body).
- templates/documents/<kind>.html.j2: one file per document kind; every fixed text comes from
  the catalogue templates/i18n/<lang>.json through `t("key")`.

Filters: `dt` (a localised date and time in the case's time zone), `d` (a date), `label`
(`value | label("stage")` looks up `stage.<value>` in the catalogue), `staff` (a staff id to
"Name (discipline)" when the activity supplied names), `money`, `pct`.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LANGUAGES = ("da", "sv", "en")
DEFAULT_TZ = "Europe/Copenhagen"


@lru_cache(maxsize=8)
def catalogue(language: str) -> dict[str, str]:
    """The flat message catalogue of one language, falling back to English key by key."""
    english = json.loads((TEMPLATES / "i18n" / "en.json").read_text(encoding="utf-8"))
    if language == "en":
        return english
    own = json.loads((TEMPLATES / "i18n" / f"{language}.json").read_text(encoding="utf-8"))
    return {**english, **own}


def _parse(value: object) -> datetime | date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return date.fromisoformat(text[:10])


def _month(cat: dict[str, str], month: int) -> str:
    return cat.get(f"month.{month}", str(month))


@pass_context
def _fmt_date(ctx, value: object) -> str:
    parsed = _parse(value)
    if parsed is None:
        return "–"
    if isinstance(parsed, datetime):
        parsed = parsed.astimezone(ZoneInfo(ctx.get("timezone") or DEFAULT_TZ)).date()
    cat = catalogue(ctx.get("language") or "en")
    return cat["format.date"].format(day=parsed.day, month=_month(cat, parsed.month), year=parsed.year)


@pass_context
def _fmt_datetime(ctx, value: object) -> str:
    parsed = _parse(value)
    if parsed is None:
        return "–"
    if not isinstance(parsed, datetime):
        return _fmt_date(ctx, parsed)
    local = parsed.astimezone(ZoneInfo(ctx.get("timezone") or DEFAULT_TZ))
    cat = catalogue(ctx.get("language") or "en")
    return cat["format.datetime"].format(
        day=local.day, month=_month(cat, local.month), year=local.year, time=local.strftime("%H:%M")
    )


@pass_context
def _time(ctx, value: object) -> str:
    parsed = _parse(value)
    if not isinstance(parsed, datetime):
        return "–"
    return parsed.astimezone(ZoneInfo(ctx.get("timezone") or DEFAULT_TZ)).strftime("%H:%M")


@pass_context
def _t(ctx, key: str, **values: object) -> str:
    cat = catalogue(ctx.get("language") or "en")
    text = cat.get(key, key)
    return text.format(**values) if values else text


@pass_context
def _label(ctx, value: object, group: str) -> str:
    if value is None or value == "":
        return "–"
    cat = catalogue(ctx.get("language") or "en")
    key = f"{group}.{value}"
    return cat.get(key, str(value).replace("_", " "))


@pass_context
def _staff(ctx, staff_id: object) -> str:
    if not staff_id:
        return "–"
    names = ctx.get("staff_names") or {}
    return names.get(str(staff_id), str(staff_id))


@pass_context
def _money(ctx, value: object) -> str:
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    lang = ctx.get("language") or "en"
    text = f"{amount:,.0f}"
    if lang in ("da", "sv"):
        text = text.replace(",", "." if lang == "da" else "\u00a0")
    return f"{text} {ctx.get('currency') or ''}".strip()


def _pct(value: object) -> str:
    try:
        return f"{float(value) * 100:.0f} %"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"


def _install(env: Environment) -> Environment:
    env.filters.update(dt=_fmt_datetime, d=_fmt_date, time=_time, label=_label, staff=_staff,
                       money=_money, pct=_pct)
    env.globals["t"] = _t
    return env


@lru_cache(maxsize=1)
def message_env() -> Environment:
    return _install(Environment(
        loader=FileSystemLoader(TEMPLATES / "messages"), undefined=StrictUndefined,
        autoescape=False, keep_trailing_newline=False, trim_blocks=False, lstrip_blocks=True,
        # A worker's templates are those it started with (a change ships with a restart, like
        # code): no stat() of every template file on every message (1.8 % of the case worker).
        auto_reload=False,
    ))


@lru_cache(maxsize=1)
def document_env() -> Environment:
    return _install(Environment(
        loader=FileSystemLoader(TEMPLATES / "documents"), undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        trim_blocks=True, lstrip_blocks=True, auto_reload=False,
    ))


class RenderedMessage:
    __slots__ = ("subject", "body", "sms")

    def __init__(self, subject: str, body: str, sms: str) -> None:
        self.subject, self.body, self.sms = subject, body, sms


def render_message(template: str, language: str, variables: dict) -> RenderedMessage:
    """Subject, e-mail body and SMS text of one message (the message template extends
    messages/_message.txt.j2, whose markers split the three apart). Raises jinja2 errors on a
    missing template or variable: a programming error, not a delivery failure."""
    text = message_env().get_template(f"{language}/{template}.txt.j2").render(
        **variables, language=language)
    subject, _, rest = text.partition("<<<body>>>")
    body, _, sms = rest.partition("<<<sms>>>")
    lines = [line.rstrip() for line in body.strip("\n").split("\n")]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    sms = " ".join(sms.split()) or " ".join(body.split())
    return RenderedMessage(" ".join(subject.split()), body + "\n", sms)


def render_document_html(kind: str, language: str, variables: dict) -> str:
    return document_env().get_template(f"{kind}.html.j2").render(**variables, language=language)


# ---------------------------------------------------------------- PDF (WeasyPrint)

# Every PDF is tagged and archival at once: WeasyPrint's `pdf/a-3a` variant writes the
# structure tree (H1, P, Table, L ... from the HTML), /MarkInfo, /Lang (from <html lang>), the
# title (from <title>, shown instead of the file name), embedded fonts, an sRGB output intent
# and a file identifier; PDF/A-3 level A is the level that requires the tagging. WeasyPrint
# writes one conformance claim per variant, so the PDF/UA-1 claim (`pdfuaid:part="1"`, the
# same PDF 1.7 and the same tags its `pdf/ua-1` variant writes) is added to the same XMP
# description. Decision and limits: docs/decisions.md "Documents are tagged PDF".
PDF_VARIANT = "pdf/a-3a"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_PDFUAID = "{http://www.aiim.org/pdfua/ns/id/}part"


def _claim_pdf_ua(metadata: object) -> None:
    """Add `pdfuaid:part="1"` to the conformance description WeasyPrint generates."""
    from xml.etree.ElementTree import fromstring, tostring

    original = getattr(metadata, "generate_rdf_metadata", None)
    if original is None:  # another WeasyPrint: still PDF/A-3a and tagged (tests/test_pdf_tagged.py)
        return

    def generate(variant: str, version: int, conformance: str | None) -> bytes:
        rdf = fromstring(original(variant, version, conformance))
        first = rdf.find(f"{_RDF}Description")
        if first is not None:
            first.set(_PDFUAID, "1")
        return tostring(rdf)

    metadata.generate_rdf_metadata = generate  # type: ignore[attr-defined]  # this document only


def html_to_pdf(html: str, base_url: Path = TEMPLATES / "documents") -> bytes:
    """A tagged PDF/A-3a + PDF/UA-1 of a document's HTML (which must carry <html lang> and a
    <title>: both end up in the PDF)."""
    from weasyprint import HTML  # lazy: needs Pango

    document = HTML(string=html, base_url=str(base_url)).render()
    _claim_pdf_ua(document.metadata)
    return document.write_pdf(pdf_variant=PDF_VARIANT)
