"""Plain words for what the read model stores as keys: a stuck reason (`overdue:first_contact`),
who has the ball ("family approval of plan v2"), an escalation reason
("joint_funding_over_limit: 12000 > 10000"), an age, a stage — in the page's language.

Pass `**WORDS` to `render`: the templates call `ago(since, now)`, `stage_text(stage)`,
`reason_text(kind)`, `owner_text(owner, staff)`, `ball_text(what)`, `escalation_text(reason)`.
Texts: templates/pages/i18n/dashboard.<lang>.json (`dash.*`)."""

from __future__ import annotations

import re
from datetime import datetime

from jinja2 import pass_context

from api.pages import i18n
from domain.stuck import OVERDUE_PREFIX


def _lang(ctx) -> str:
    return ctx.get("lang") or "en"


def _known(lang: str, key: str, **values: object) -> str | None:
    text = i18n.translate(lang, key, **values)
    return None if text == key else text


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def age_words(lang: str, since: object, now: datetime) -> str:
    """'3 hours', '12 days', '5 months' in `lang`."""
    parsed = _parse(since)
    if parsed is None:
        return "—"
    seconds = (now - parsed).total_seconds()
    if seconds < 0:
        return i18n.translate(lang, "dash.age.not_yet")
    if seconds < 3600:
        return i18n.translate(lang, "dash.age.minutes", n=int(seconds // 60))
    if seconds < 86400:
        n = int(seconds // 3600)
        return i18n.translate(lang, "dash.age.hour" if n == 1 else "dash.age.hours", n=n)
    days = int(seconds // 86400)
    if days < 60:
        return i18n.translate(lang, "dash.age.day" if days == 1 else "dash.age.days", n=days)
    return i18n.translate(lang, "dash.age.months", n=days // 30)


def stage_words(lang: str, stage: object) -> str:
    value = str(stage or "")
    return _known(lang, f"dash.stage.{value}") or value.replace("_", " ")


def deadline_words(lang: str, kind: str) -> str:
    return _known(lang, f"dash.deadline.{kind}") or kind.replace("_", " ")


def reason_words(lang: str, kind: str) -> str:
    if kind == "overdue":
        return i18n.translate(lang, "dash.reason.overdue_any")
    if kind.startswith(OVERDUE_PREFIX):
        return i18n.translate(lang, "dash.reason.overdue",
                              deadline=deadline_words(lang, kind.removeprefix(OVERDUE_PREFIX)))
    return _known(lang, f"dash.reason.{kind}") or kind.replace("_", " ")


def owner_words(lang: str, owner: object, staff: dict[str, str] | None = None) -> str:
    if not owner:
        return "—"
    names = staff or {}
    parts = []
    for part in str(owner).split(","):
        part = part.strip()
        parts.append(names.get(part) or _known(lang, f"dash.owner.{part}") or part)
    return ", ".join(parts)


_BALL = [
    (re.compile(r"^committee decision on plan v(\d+)$"), "dash.ball.committee_plan"),
    (re.compile(r"^team votes on plan v(\d+)$"), "dash.ball.votes"),
    (re.compile(r"^family approval of plan v(\d+)$"), "dash.ball.family_approval"),
    (re.compile(r"^the family's consent"), "dash.ball.consent"),
    (re.compile(r"^coordinator assignment$"), "dash.ball.coordinator"),
    (re.compile(r"^core team$"), "dash.ball.team"),
    (re.compile(r"^assessment meeting to be scheduled$"), "dash.ball.assessment_meeting"),
    (re.compile(r"^ICS assessment$"), "dash.ball.assessment"),
    (re.compile(r"^next status meeting$"), "dash.ball.status_meeting"),
    (re.compile(r"^joint plan draft$"), "dash.ball.plan"),
    (re.compile(r"^committee$"), "dash.ball.committee"),
]


def ball_words(lang: str, what: object) -> str:
    """What the case waits for (`BlockedOn.what`) in words."""
    text = str(what or "")
    for pattern, key in _BALL:
        match = pattern.match(text)
        if match:
            return i18n.translate(lang, key, version=match.group(1) if match.groups() else "")
    return text


_ESCALATION = [
    (re.compile(r"^committee_only_paragraph:\s*(?P<paragraph>.+)$"), "dash.escalation.paragraph"),
    (re.compile(r"^joint_funding_over_limit:\s*(?P<amount>[\d.]+)\s*>\s*(?P<limit>[\d.]+)$"),
     "dash.escalation.funding"),
    (re.compile(r"^disagreement"), "dash.escalation.disagreement"),
]


def _money(text: str) -> str:
    try:
        return f"{float(text):,.0f}".replace(",", "\u202f")
    except ValueError:
        return text


def escalation_words(lang: str, reason: str) -> str:
    """An escalation reason as a sentence: why the committee decides this plan."""
    for pattern, key in _ESCALATION:
        match = pattern.match(reason)
        if match:
            values = {k: (_money(v) if k in ("amount", "limit") else v)
                      for k, v in match.groupdict().items()}
            return i18n.translate(lang, key, **values)
    return reason.replace("_", " ")


@pass_context
def ago(ctx, since: object, now: datetime | None = None) -> str:
    return age_words(_lang(ctx), since, now or ctx.get("now") or datetime.now().astimezone())


@pass_context
def stage_text(ctx, stage: object) -> str:
    return stage_words(_lang(ctx), stage)


@pass_context
def reason_text(ctx, kind: str) -> str:
    return reason_words(_lang(ctx), kind)


@pass_context
def deadline_text(ctx, kind: str) -> str:
    return deadline_words(_lang(ctx), kind)


@pass_context
def owner_text(ctx, owner: object, staff: dict[str, str] | None = None) -> str:
    return owner_words(_lang(ctx), owner, staff if staff is not None else ctx.get("staff"))


@pass_context
def ball_text(ctx, what: object) -> str:
    return ball_words(_lang(ctx), what)


@pass_context
def escalation_text(ctx, reason: str) -> str:
    return escalation_words(_lang(ctx), reason)


WORDS = {"ago": ago, "stage_text": stage_text, "reason_text": reason_text,
         "deadline_text": deadline_text, "owner_text": owner_text, "ball_text": ball_text,
         "escalation_text": escalation_text}
