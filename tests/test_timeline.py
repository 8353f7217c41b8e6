"""domain/timeline.py: every event the domain records, every deadline kind, every stuck reason
and every message purpose has a plain sentence in Danish, Swedish and English — and no
sentence shows a machine key."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.pages import i18n
from domain import stuck, timeline
from models.case import DeadlineKind, DeadlineStatus, HistoryEntry, Stage
from tests import test_workbench as wb

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("da", "sv", "en")
NAMES = {"anna": "Anna Berg", "ole": "Ole Dam", "sif": "Sif Lund", "maria": "Maria Krog"}
# What a machine key looks like: snake_case words, `#n`, `word:word`, a placeholder left over.
RAW = re.compile(r"[A-Za-z]+_[A-Za-z_]+|#|\b[a-z_]+:[a-z_]+|[{}]|\b(?:timeline|case)\.[a-z]")
AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def say(term: object, lang: str) -> str:
    return timeline.render(term, lambda key, **v: i18n.translate(lang, key, **v),
                           when=lambda at: i18n.format_datetime(lang, at, "Europe/Copenhagen"),
                           day=lambda at: i18n.format_date(lang, at, "Europe/Copenhagen"))


def plain(text: str) -> bool:
    return bool(text.strip()) and not RAW.search(text)


def recorded_events() -> set[str]:
    """Every event name the domain writes into a case's history, read from the source."""
    names: set[str] = set()
    for path in (ROOT / "domain").glob("*.py"):
        src = path.read_text(encoding="utf-8")
        for call in re.finditer(r"_record\(\s*state,\s*ctx,\s*(.+?),", src, re.S):
            names |= set(re.findall(r'"([a-z_]+)"', call.group(1)))
        names |= set(re.findall(r'event="([a-z_]+)"', src))
        names |= {f"deadline_{k}" for k in re.findall(r'event=f"deadline_\{event\.kind\}"', src)
                  and ("reminder", "overdue", "escalation")}
    return names


def recorded_purposes() -> set[str]:
    """The literal purposes in the code (the numbered ones are patterns: see PURPOSE_SAMPLES)."""
    found: set[str] = set()
    for folder in ("domain", "activities", "api", "workflows"):
        for path in (ROOT / folder).rglob("*.py"):
            src = path.read_text(encoding="utf-8")
            found |= set(re.findall(r'purpose="([a-z_]+)"', src))
            found |= set(re.findall(r'purpose = "([a-z_]+)"', src))
    return found


# Details as the domain records them, one per sentence variant.
SAMPLES: list[tuple[str, str, dict]] = [
    ("referral_registered", "anna", {"source": "school", "kind": "concern_report",
                                     "received_at": AT.isoformat()}),
    ("coordinator_assigned", "maria", {"coordinator_id": "anna", "previous": None, "override": False}),
    ("coordinator_assigned", "maria", {"coordinator_id": "anna", "previous": None, "override": True}),
    ("coordinator_assigned", "anna", {"coordinator_id": "anna", "previous": None, "override": False}),
    ("coordinator_assigned", "anna", {"coordinator_id": "anna", "previous": None, "override": True}),
    ("coordinator_reassigned", "maria", {"coordinator_id": "bo", "previous": "anna", "override": False}),
    ("coordinator_reassigned", "maria", {"coordinator_id": "bo", "previous": "anna", "override": True}),
    ("stage_changed", "anna", {"from": "planning", "to": "escalated"}),
    ("team_formed", "anna", {"members": ["ole", "sif"]}),
    ("contact_recorded", "ole", {"kind": "home_visit", "at": AT.isoformat()}),
    ("case_paused", "anna", {"waiting_for_family": False, "clocks_paused": []}),
    ("case_paused", "anna", {"waiting_for_family": True, "clocks_paused": ["first_contact"]}),
    ("case_resumed", "anna", {"clocks_resumed": ["first_contact"]}),
    ("provisional_assessment_recorded", "anna", {}),
    ("assessment_extended", "karen", {"new_due_at": AT.isoformat(), "decision_ref": "N-7"}),
    ("concern_triaged", "anna", {"child_in_danger": False, "urgent_action": ""}),
    ("concern_triaged", "anna", {"child_in_danger": True, "urgent_action": "Police"}),
    ("assessment_meeting_scheduled", "anna", {"at": AT.isoformat(), "participants": ["anna"]}),
    ("assessment_meeting_rescheduled", "anna", {"at": AT.isoformat(), "participants": ["anna"]}),
    ("status_meeting_scheduled", "anna", {"number": 2, "at": AT.isoformat()}),
    ("status_meeting_rescheduled", "anna", {"number": 2, "at": AT.isoformat()}),
    ("status_meeting_recorded", "anna", {"number": 2, "at": AT.isoformat()}),
    ("assessment_recorded", "ole", {"dimensions": 3}),
    ("assessment_completed", "anna", {}),
    ("plan_drafted", "anna", {"version": 2, "services": 1}),
    ("vote_cast", "ole", {"version": 1, "staff_id": "ole", "vote": "agree"}),
    ("vote_cast", "ole", {"version": 1, "staff_id": "ole", "vote": "disagree"}),
    ("escalated", "ole", {"item_id": "case-1-1", "plan_version": 1,
                          "reasons": ["disagreement: ole", "committee_only_paragraph: BL § 52",
                                      "joint_funding_over_limit: 12000 > 10000"]}),
    ("plan_decided", "sif", {"version": 1, "by": "team"}),
    ("family_approved", "anna", {"version": 1}),
    ("family_rejected", "anna", {"version": 1}),
    ("escalation_withdrawn", "anna", {"item_id": "case-1-1"}),
    ("committee_decided", "karen", {"item_id": "case-1-1", "decision": "approved_with_changes"}),
    ("plan_activated", "anna", {"version": 1, "decided_by": "team"}),
    ("plan_activated", "karen", {"version": 1, "decided_by": "committee"}),
    ("followup_cadence_set", "anna", {"months": 6, "reason": "policy default"}),
    ("case_closed", "anna", {"reason": "transferred_to_adult_services"}),
    ("policy_changed", "anna", {"from": "DK-v1", "to": "DK-v2", "reason": "new rules"}),
    *[(f"deadline_{clock}", "system",
       {"kind": "first_contact", "occurrence": 1, "step": step, "to_role": role,
        "due_at": AT.isoformat(), "skipped": skipped})
      for clock, step, role in (("reminder", 0, "owner"), ("overdue", 0, "coordinator"),
                                ("escalation", 1, "manager"))
      for skipped in (False, True)],
    ("consent_given", "anna", {"consent_id": "c2", "member_id": "m1", "staff_ids": ["ole"]}),
    ("consent_given", "anna", {"consent_id": "c2", "no_longer_covered": ["ole"]}),
    ("consent_changed", "family:m2", {"consent_id": "c1", "changed": ["staff_ids"],
                                      "no_longer_covered": []}),
    ("consent_changed", "family:m2", {"consent_id": "c1", "no_longer_covered": ["sif"]}),
    ("consent_revoked", "family:m2", {"consent_id": "c1", "no_longer_covered": []}),
    ("consent_revoked", "family:m2", {"consent_id": "c1", "no_longer_covered": ["ole", "sif"]}),
    ("consent_expired", "system", {"consent_id": "c1"}),
    ("consent_expired", "system", {"consent_id": "c1", "no_longer_covered": ["ole"]}),
    ("contact_preference_changed", "family:m2", {"from": "normal", "to": "space"}),
    ("family_focus_points", "family:m2", {"number": 1, "meeting_number": 2}),
    ("focus_points_confirmed", "anna", {"number": 1}),
    ("pause_requested", "family:m2", {"number": 1}),
    ("outcomes_recorded", "anna", {"occasion": "assessment",
                                   "measurements": ["sdq:child", "sdq:mother"]}),
    ("something_unheard_of", "anna", {"x": 1}),
]


def test_every_recorded_event_is_known_and_sampled() -> None:
    recorded = recorded_events()
    assert {"referral_registered", "vote_cast", "deadline_overdue", "consent_expired"} <= recorded
    assert recorded <= set(timeline.EVENTS), sorted(recorded - set(timeline.EVENTS))
    assert set(timeline.EVENTS) <= {name for name, _, _ in SAMPLES}


@pytest.mark.parametrize("lang", LANGS)
def test_every_event_is_a_plain_sentence_in_every_language(lang: str) -> None:
    state = wb.escalated()
    keys = set()
    for event, actor, detail in SAMPLES:
        term = timeline.entry(HistoryEntry(at=AT, actor=actor, event=event, detail=detail),
                              NAMES, state)
        keys.add(term.key)
        text = say(term, lang)
        assert plain(text), f"{event} {detail}: {text!r}"
        named = set(re.findall(r"\b(anna|ole|sif|maria)\b", json.dumps(detail, default=str)))
        if event.startswith("assessment_meeting"):
            named.clear()  # the participants are on the invitation, not in the sentence
        if "{who}" in i18n.catalogue(lang)[term.key]:
            named |= {actor} & set(NAMES)
        for staff_id in named:
            assert NAMES[staff_id] in text and staff_id not in text.split(), text
    assert "timeline.event.coordinator_taken_override" in keys
    assert "timeline.event.other" in keys  # an unknown event still reads as a sentence


def test_names_not_ids_and_family_members_by_name() -> None:
    state = wb.escalated()
    text = say(timeline.entry(HistoryEntry(at=AT, actor="maria", event="coordinator_reassigned",
                                           detail={"coordinator_id": "ole", "previous": "anna"}),
                              NAMES, state), "en")
    assert text == "Maria Krog made Ole Dam the coordinator instead of Anna Berg."
    member = state.family.members[1]
    text = say(timeline.entry(HistoryEntry(at=AT, actor=f"family:{member.id}",
                                           event="pause_requested"), NAMES, state), "da")
    assert text.startswith(member.name)
    overdue = say(timeline.entry(HistoryEntry(
        at=AT, actor="system", event="deadline_overdue",
        detail={"kind": "first_contact", "occurrence": 1, "step": 0, "to_role": "coordinator",
                "due_at": AT.isoformat()}), NAMES, state), "en")
    assert overdue == ("First contact with the family is overdue (due 3 December 2026, 10:00); "
                       "Anna Berg was told.")


@pytest.mark.parametrize("lang", LANGS)
def test_every_deadline_kind_and_status_in_words(lang: str) -> None:
    state = wb.referred()
    for kind in DeadlineKind:
        d = state.deadlines[0].model_copy(update={"kind": kind})
        for status in ("open", "overdue", "met", "cancelled", "paused"):
            d2 = d.model_copy(update={"status": DeadlineStatus(
                status if status in ("met", "cancelled") else "open"),
                "met_at": AT if status == "met" else None,
                "paused_since": AT if status == "paused" else None})
            now = d.due_at + timedelta(days=1) if status == "overdue" else d.due_at - timedelta(days=1)
            assert timeline.deadline_status(d2, now) == status
            text = say(timeline.deadline_line(d2, now), lang)
            assert plain(text), text
            assert " — " in text


def test_the_deadline_line_reads_as_the_issue_asks() -> None:
    state = wb.referred()
    d = next(x for x in state.deadlines if x.kind is DeadlineKind.first_contact)
    d = d.model_copy(update={"due_at": datetime(2026, 12, 3, 9, 0, tzinfo=UTC)})
    text = say(timeline.deadline_line(d, datetime(2026, 12, 4, tzinfo=UTC)), "en")
    assert text == "First contact with the family — due 3 December 2026, 10:00 — overdue"
    rows = timeline.deadlines(wb.drafted(), datetime(2030, 1, 1, tzinfo=UTC))
    statuses = [status for _, status, _ in rows]
    running = [s for s in statuses if s in ("open", "overdue", "paused")]
    assert statuses[:len(running)] == running  # running first, then the ones met or cancelled


@pytest.mark.parametrize("lang", LANGS)
def test_every_stuck_reason_in_words(lang: str) -> None:
    kinds = (["overdue"] + [f"{stuck.OVERDUE_PREFIX}{k.value}" for k in DeadlineKind]
             + list(stuck.BUSINESS_KINDS) + list(stuck.TECHNICAL_KINDS))
    assert set(stuck.BUSINESS_KINDS) | set(stuck.TECHNICAL_KINDS) <= set(timeline.REASON_KINDS)
    for kind in kinds:
        text = say(timeline.reason(kind), lang)
        assert plain(text), f"{kind}: {text}"
    assert say(timeline.reason("overdue:first_contact"), "en") == "Overdue: First contact with the family"


@pytest.mark.parametrize("lang", LANGS)
def test_every_message_purpose_in_words(lang: str) -> None:
    literal = recorded_purposes()
    assert {"manager_nudge", "monthly_report"} <= literal
    for purpose in set(timeline.PURPOSE_SAMPLES) | literal:
        text = say(timeline.purpose(purpose), lang)
        assert plain(text), f"{purpose}: {text}"
        if purpose != "something_new":
            assert timeline.purpose(purpose).key != "timeline.purpose.other", purpose
    for kind in DeadlineKind:
        for clock in ("reminder#0", "overdue#0", "escalation#2"):
            assert plain(say(timeline.purpose(f"deadline:{kind.value}#1:{clock}"), lang))
    assert (say(timeline.purpose("deadline:first_contact#1:escalation#1"), "en")
            == "First contact with the family is overdue — escalation, step 1")
    for value in (*timeline.CHANNELS, "fax"):
        assert plain(say(timeline.channel(value), lang))
    for value in (*timeline.STATUSES, "weird"):
        assert plain(say(timeline.message_status(value), lang))


@pytest.mark.parametrize("build", [wb.referred, wb.assigned, wb.formed, wb.in_assessment,
                                   wb.in_planning, wb.drafted, wb.escalated, wb.active, wb.paused,
                                   wb.decided_waiting_for_family, wb.closed])
@pytest.mark.parametrize("lang", LANGS)
def test_who_has_the_ball_in_words(build, lang: str) -> None:
    state = build()
    ball = timeline.ball(state, NAMES, wb.NOW)
    if state.stage is Stage.closed:
        assert ball is None
        return
    assert ball.what.key != "timeline.ball.other", state.blocked_on.what
    for part in (ball.what, ball.owner, ball.since, ball.next):
        if part is not None:
            text = say(part, lang)
            assert plain(text), text
    if state.blocked_on.owner not in (None, "manager", "committee", "family"):
        assert "Anna Berg" in say(ball.owner, lang) or "Ole Dam" in say(ball.owner, lang)


def test_what_changed_since_a_page_was_loaded() -> None:
    state = wb.formed()
    loaded = state.history[-1].at
    later = wb.do(state, "record_contact", wb.OLE, {"kind": "phone", "at": wb.NOW.isoformat()},
                  now=wb.NOW + timedelta(minutes=5))
    changes = [say(t, "en") for t in timeline.changes_since(later, loaded, NAMES)]
    assert changes == [f"Ole Dam recorded a contact with the family: by phone, "
                       f"{i18n.format_datetime('en', wb.NOW, 'Europe/Copenhagen')}."]


@pytest.mark.parametrize("area", ["timeline", "case"])
def test_every_english_text_exists_in_danish_and_swedish(area: str) -> None:
    folder = ROOT / "templates" / "pages" / "i18n"
    english = json.loads((folder / f"{area}.en.json").read_text(encoding="utf-8"))
    for lang in ("da", "sv"):
        other = json.loads((folder / f"{area}.{lang}.json").read_text(encoding="utf-8"))
        assert set(english) == set(other), (lang, set(english) ^ set(other))
        for key, text in other.items():
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", english[key])), key
