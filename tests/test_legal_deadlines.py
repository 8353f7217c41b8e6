"""Deadlines to the day (issue 11, point 1; docs/deadlines.md): the statute on computing time in
Denmark (Forældelsesloven § 27) and Sweden (lag (1930:173) om beräkning av lagstadgad tid), the
non-working days as policy data, no local time from the DST gap, and running cases keeping their
arithmetic. Pure domain functions and the policy API in-process: no Temporal, no clock."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from api import policy as policy_api
from api.staff import bootstrap_admin
from domain import deadlines as dl
from domain.calendar import (
    add_days,
    add_months,
    add_working_days,
    due_after_months,
    is_working_day,
    next_weekly_meeting,
)
from domain.lifecycle import Ctx, new_case
from domain.policy import DK, SE
from models.case import CaseState, DeadlineKind, DeadlineStatus
from models.db import get_engine, init_read_model, migrate
from models.deadline_rules import NonWorkingDays
from models.policy import Policy
from models.tables import PolicyRow
from settings import Settings
from tests.apps import router_client
from tests.factories import admin, case_create

CPH = ZoneInfo("Europe/Copenhagen")
STO = ZoneInfo("Europe/Stockholm")
POLICIES = {"DK": DK, "SE": SE}
NEW_FIELDS = ("non_working_days", "deadline_rules")


def months(country: str, start: date, n: int, kind: DeadlineKind = DeadlineKind.assessment) -> str:
    """The due time of a statutory deadline `n` months after a referral at 10:00 local."""
    policy = POLICIES[country]
    tz = ZoneInfo(policy.timezone)
    return dl.due_in_months(policy, kind, datetime.combine(start, datetime.min.time(), tz)
                            .replace(hour=10), n).isoformat()


def old_copy(policy: Policy) -> Policy:
    """A case's policy copy from before the deadline rules (as stored in its workflow state)."""
    body = {k: v for k, v in policy.model_dump(mode="json").items() if k not in NEW_FIELDS}
    return Policy.model_validate_json(json.dumps(body))


def new(received: datetime, policy: Policy = DK, **referral) -> CaseState:
    body = case_create(received_at=received.isoformat(), **referral)
    return new_case("case-l", body, Ctx(actor=admin(), now=received + timedelta(hours=1),
                                        policy=policy))


def deadline(state: CaseState, kind: DeadlineKind):
    return next(d for d in state.deadlines if d.kind is kind)


def exists(dt: datetime) -> bool:
    """The wall-clock time shown is one the local clock really shows at that instant."""
    again = dt.astimezone(UTC).astimezone(dt.tzinfo)
    return (again.replace(tzinfo=None), again.utcoffset()) == (dt.replace(tzinfo=None), dt.utcoffset())


# ================================================================ the cases named in issue 11


@pytest.mark.parametrize("country", ["SE", "DK"])
def test_a_deadline_on_a_sunday_moves_to_monday(country: str) -> None:
    # Referral 31 Oct 2026 + 4 months = Sunday 28 Feb 2027 -> Monday 1 Mar, to its end.
    assert months(country, date(2026, 10, 31), 4) == "2027-03-01T23:59:59+01:00"


@pytest.mark.parametrize("country", ["SE", "DK"])
def test_a_deadline_on_new_years_eve_moves_past_new_year_and_the_weekend(country: str) -> None:
    # 31 Aug 2026 + 4 months = Thursday 31 Dec (New Year's Eve); 1 Jan is a holiday, 2-3 Jan
    # the weekend: Monday 4 Jan 2027.
    assert months(country, date(2026, 8, 31), 4) == "2027-01-04T23:59:59+01:00"


def test_the_last_day_counts_whole_not_the_referrals_clock_time() -> None:
    # Issue 11: 30 Nov 2026 10:00 + 3 months used to be due 2027-02-28T10:00+01:00 and show
    # overdue 14 hours before the last day was over. Sunday 28 Feb -> Monday 1 Mar 2027.
    state = new(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    a = deadline(state, DeadlineKind.assessment)  # 4 months: Tuesday 30 Mar 2027
    assert a.due_at.isoformat() == "2027-03-30T23:59:59+02:00"
    assert a.status_at(datetime(2027, 3, 30, 21, 59, 58, tzinfo=UTC)) is DeadlineStatus.open
    assert a.status_at(datetime(2027, 3, 30, 21, 59, 59, tzinfo=UTC)) is DeadlineStatus.overdue


# ================================================================ Denmark, § 27 stk. 2


def test_dk_grundlovsdag_moves_a_deadline_and_is_no_working_day() -> None:
    # 5 Feb 2026 + 4 months = Friday 5 June (Grundlovsdag) -> Monday 8 June.
    assert months("DK", date(2026, 2, 5), 4) == "2026-06-08T23:59:59+02:00"
    # Monday 5 June 2028 -> Tuesday 6 June.
    assert months("DK", date(2028, 2, 5), 4) == "2028-06-06T23:59:59+02:00"
    # Sweden works on 5 June.
    assert months("SE", date(2026, 2, 5), 4) == "2026-06-05T23:59:59+02:00"
    # 5 working days from Monday 1 June 2026: Tue, Wed, Thu, [Fri 5 June], Mon, Tue 9 June.
    due = add_working_days(datetime(2026, 6, 1, 10, tzinfo=CPH), 5, "DK", "Europe/Copenhagen",
                           DK.non_working_days)
    assert due.isoformat() == "2026-06-09T23:59:59+02:00"


def test_dk_christmas_eve_and_new_years_eve_in_a_working_day_count() -> None:
    # Referral Wed 23 Dec 2026, first contact in 5 working days: [24, 25, weekend] Mon 28 (1),
    # Tue 29 (2), Wed 30 (3), [31, 1 Jan, weekend] Mon 4 (4), Tue 5 Jan (5).
    state = new(datetime(2026, 12, 23, 9, 0, tzinfo=UTC))
    assert deadline(state, DeadlineKind.first_contact).due_at.isoformat() == "2027-01-05T23:59:59+01:00"
    assert not is_working_day(date(2027, 12, 24), "DK", DK.non_working_days)
    assert not is_working_day(date(2027, 12, 31), "DK", DK.non_working_days)


def test_dk_christmas_eve_moves_a_month_deadline() -> None:
    # 24 Aug 2027 + 4 months = Friday 24 Dec -> [25, 26 weekend] Monday 27 Dec.
    assert months("DK", date(2027, 8, 24), 4) == "2027-12-27T23:59:59+01:00"


def test_dk_easter() -> None:
    # 25 Nov 2026 + 4 months = Maundy Thursday 25 Mar 2027: Good Friday, the weekend, Easter
    # Monday -> Tuesday 30 Mar, in summer time.
    assert months("DK", date(2026, 11, 25), 4) == "2027-03-30T23:59:59+02:00"


# ================================================================ Sweden, 2 §


def test_se_maundy_thursday_is_a_weekday_good_friday_is_not() -> None:
    assert months("SE", date(2026, 11, 25), 4) == "2027-03-25T23:59:59+01:00"
    # 26 Nov + 4 = Good Friday 26 Mar 2027 -> Tuesday 30 Mar.
    assert months("SE", date(2026, 11, 26), 4) == "2027-03-30T23:59:59+02:00"


def test_se_midsummer_eve_and_national_day() -> None:
    # 25 Feb 2027 + 4 months = Friday 25 June (Midsummer Eve) -> Monday 28 June.
    assert months("SE", date(2027, 2, 25), 4) == "2027-06-28T23:59:59+02:00"
    # 6 Feb 2028 + 4 = Tuesday 6 June 2028 (National Day) -> Wednesday 7 June.
    assert months("SE", date(2028, 2, 6), 4) == "2028-06-07T23:59:59+02:00"


def test_se_christmas_eve_and_a_saturday() -> None:
    # 24 Aug 2026 + 4 = Thursday 24 Dec 2026 -> [25, 26, 27 weekend] Monday 28 Dec.
    assert months("SE", date(2026, 8, 24), 4) == "2026-12-28T23:59:59+01:00"
    # 15 Jan 2027 + 4 = Saturday 15 May -> Monday 17 May.
    assert months("SE", date(2027, 1, 15), 4) == "2027-05-17T23:59:59+02:00"


# ================================================================ month clamp, days, hours


@pytest.mark.parametrize(
    ("start", "n", "due"),
    [
        # 31 Jan + 1 month = Sunday 28 Feb 2027 (clamped) -> Monday 1 Mar.
        (date(2027, 1, 31), 1, "2027-03-01T23:59:59+01:00"),
        # Leap year: Tuesday 29 Feb 2028 stays.
        (date(2028, 1, 31), 1, "2028-02-29T23:59:59+01:00"),
        # Clamped to Wednesday 28 Feb 2029, a working day.
        (date(2029, 1, 31), 1, "2029-02-28T23:59:59+01:00"),
        # 31 Dec + 4 = 30 Apr 2027 (Friday), summer time.
        (date(2026, 12, 31), 4, "2027-04-30T23:59:59+02:00"),
    ],
)
def test_month_clamp_then_shift(start: date, n: int, due: str) -> None:
    assert months("DK", start, n) == due
    assert months("SE", start, n) == due


@pytest.mark.parametrize("policy", [DK, SE], ids=["DK", "SE"])
def test_end_of_the_last_day_in_winter_and_summer(policy: Policy) -> None:
    tz = ZoneInfo(policy.timezone)
    winter = dl.due_in_months(policy, DeadlineKind.plan, datetime(2026, 9, 15, 10, tzinfo=tz), 4)
    summer = dl.due_in_months(policy, DeadlineKind.plan, datetime(2027, 3, 15, 10, tzinfo=tz), 4)
    assert winter.isoformat() == "2027-01-15T23:59:59+01:00"
    assert winter.astimezone(UTC) == datetime(2027, 1, 15, 22, 59, 59, tzinfo=UTC)
    assert summer.isoformat() == "2027-07-15T23:59:59+02:00"
    assert summer.astimezone(UTC) == datetime(2027, 7, 15, 21, 59, 59, tzinfo=UTC)


def test_reporter_receipt_in_days_moves_off_the_weekend_triage_in_hours_does_not() -> None:
    # A concern report from a school on Friday 4 Dec 2026 10:00: 6 days = Thursday 10 Dec
    # (the last day whole); 24 clock hours = Saturday 5 Dec 10:00 -- an hour clock never moves.
    state = new(datetime(2026, 12, 4, 9, 0, tzinfo=UTC), kind="concern_report", source="school")
    assert deadline(state, DeadlineKind.reporter_receipt).due_at.isoformat() == "2026-12-10T23:59:59+01:00"
    assert deadline(state, DeadlineKind.concern_triage).due_at.isoformat() == "2026-12-05T10:00:00+01:00"
    # 6 days from Monday 30 Nov = Sunday 6 Dec -> Monday 7 Dec.
    state = new(datetime(2026, 11, 30, 9, 0, tzinfo=UTC), kind="concern_report", source="school")
    assert deadline(state, DeadlineKind.reporter_receipt).due_at.isoformat() == "2026-12-07T23:59:59+01:00"


def test_the_methods_own_cadences_keep_their_clock_time_unless_the_policy_lists_them() -> None:
    start = datetime(2027, 3, 2, 10, tzinfo=CPH)  # Tuesday + 21 days = Tuesday 23 Mar
    kind = DeadlineKind.committee_decision
    assert dl.due_in_days(DK, kind, start, 21).isoformat() == "2027-03-23T10:00:00+01:00"
    rules = DK.deadline_rules.model_copy(update={"kinds": [*DK.deadline_rules.kinds, kind.value]})
    listed = DK.model_copy(update={"deadline_rules": rules})
    assert dl.due_in_days(listed, kind, start, 21).isoformat() == "2027-03-23T23:59:59+01:00"
    # 19 days = Sunday 21 Mar -> Monday 22 Mar.
    assert dl.due_in_days(listed, kind, start, 19).isoformat() == "2027-03-22T23:59:59+01:00"


def test_a_municipalitys_own_closing_day() -> None:
    # Friday 7 May 2027 (the day after Ascension) closed by the municipality.
    days = DK.non_working_days.model_copy(update={"extra_dates": [date(2027, 5, 7)]})
    policy = DK.model_copy(update={"non_working_days": days})
    # 4 months from 7 Jan = Friday 7 May -> Monday 10 May.
    assert dl.due_in_months(policy, DeadlineKind.assessment, datetime(2027, 1, 7, 10, tzinfo=CPH),
                            4).isoformat() == "2027-05-10T23:59:59+02:00"
    # Working days from Tuesday 4 May: Wed 5 (1), [Thu 6 Ascension, Fri 7], Mon 10 (2).
    due = add_working_days(datetime(2027, 5, 4, 10, tzinfo=CPH), 2, "DK", "Europe/Copenhagen", days)
    assert due.date() == date(2027, 5, 10)
    assert months("DK", date(2027, 1, 7), 4) == "2027-05-07T23:59:59+02:00"  # the national rule


# ================================================================ the DST gap


def test_no_local_time_from_the_dst_gap() -> None:
    # 28 Mar 2027: Copenhagen's clocks jump from 02:00 to 03:00; 02:30 does not exist.
    tz = "Europe/Copenhagen"
    at_0230 = datetime(2026, 11, 28, 2, 30, tzinfo=CPH)
    due = add_months(at_0230, 4, tz)  # the old arithmetic (a running case's copy)
    assert due.isoformat() == "2027-03-28T03:30:00+02:00"
    assert exists(due)
    day_before = add_days(datetime(2027, 3, 27, 2, 30, tzinfo=CPH), 1, tz)
    assert day_before.isoformat() == "2027-03-28T03:30:00+02:00"
    # A reminder two days before a deadline at 02:30 on 30 Mar.
    [reminder] = dl.reminders(datetime(2027, 3, 30, 2, 30, tzinfo=CPH), [2], tz)
    assert reminder.isoformat() == "2027-03-28T03:30:00+02:00"
    # A weekly meeting set at 02:30 on Sundays.
    meeting = next_weekly_meeting(datetime(2027, 3, 26, 12, tzinfo=CPH), 6, "02:30", tz)
    assert meeting.isoformat() == "2027-03-28T03:30:00+02:00"


def test_a_case_referred_at_0230_has_only_real_due_times_and_reminders() -> None:
    # An old policy copy keeps the referral's clock time: 02:30 on 28 Nov 2026 + 4 months.
    for policy in (old_copy(DK), DK):
        state = new(datetime(2026, 11, 28, 2, 30, tzinfo=CPH), policy=policy)
        for d in state.deadlines:
            assert exists(d.due_at), (d.kind, d.due_at)
            assert all(exists(r) for r in d.remind_at), (d.kind, d.remind_at)
    old = new(datetime(2026, 11, 28, 2, 30, tzinfo=CPH), policy=old_copy(DK))
    assert deadline(old, DeadlineKind.assessment).due_at.isoformat() == "2027-03-28T03:30:00+02:00"


def test_every_minute_of_the_gap_day_gives_a_real_time() -> None:
    tz = "Europe/Copenhagen"
    for minute in range(0, 24 * 60, 10):
        start = datetime(2026, 11, 28, minute // 60, minute % 60, tzinfo=CPH)
        for result in (add_months(start, 4, tz), add_days(start, 120, tz),
                       due_after_months(start, 4, "DK", tz, DK.non_working_days)):
            assert exists(result), (start, result)


# ================================================================ running cases, policy data


def test_an_old_policy_copy_keeps_the_old_arithmetic() -> None:
    old = old_copy(DK)
    assert (old.non_working_days, old.deadline_rules) == (None, None)
    state = new(datetime(2026, 12, 23, 9, 0, tzinfo=UTC), policy=old)
    # 24 and 31 Dec counted as working days, the referral's clock time kept, no shift.
    assert deadline(state, DeadlineKind.first_contact).due_at.isoformat() == "2026-12-31T23:59:59+01:00"
    state = new(datetime(2026, 10, 31, 9, 0, tzinfo=UTC), policy=old)
    assert deadline(state, DeadlineKind.assessment).due_at.isoformat() == "2027-02-28T10:00:00+01:00"
    # The copy survives the JSON of a workflow's state unchanged.
    again = CaseState.model_validate_json(state.model_dump_json())
    assert (again.policy.non_working_days, again.policy.deadline_rules) == (None, None)


def test_non_working_days_refuse_what_is_not_a_date() -> None:
    base = DK.non_working_days.model_dump()
    for bad, words in [({"extra_dates": ["not-a-date"]}, "'not-a-date' is not a date"),
                       ({"extra_dates": ["2027-02-30"]}, "'2027-02-30' is not a date"),
                       ({"extra_fixed": ["13-45"]}, "'13-45' is not a day of the year"),
                       ({"weekdays": [7]}, "7 is not a weekday"),
                       ({"weekdays": [0, 1, 2, 3, 4, 5, 6]}, "at least one weekday"),
                       ({"holiday_country": "NO"}, "not 'NO'"),
                       ({"holiday_categories": ["bank"]}, "'bank' is not a holiday category")]:
        with pytest.raises(ValueError, match=words):
            NonWorkingDays.model_validate({**base, **bad})
    assert NonWorkingDays.model_validate({**base, "extra_fixed": ["6-5"]}).extra_fixed == ["06-05"]


# ---------------------------------------------------------------- the policy API and file


@pytest.fixture(scope="module")
def policy_db(tmp_path_factory) -> Settings:
    """One migrated read model for the module (a migration per test costs ~1 s)."""
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path_factory.mktemp("policy") / "data"))
    migrate(settings.db_url)
    init_read_model(settings)
    with Session(get_engine(settings.db_url)) as session:
        bootstrap_admin(session)
    return settings


@pytest.fixture
def settings(policy_db: Settings) -> Settings:
    """Every test starts with no stored policy version."""
    with Session(get_engine(policy_db.db_url)) as session:
        for row in session.exec(select(PolicyRow)):
            session.delete(row)
        session.commit()
    return policy_db


@pytest.fixture
def client_and_engine(settings: Settings):
    engine = get_engine(settings.db_url)
    return router_client(engine, settings, policy_api.router), engine


ADMIN_H = {"X-User": "admin"}


def stored_versions(engine) -> list[int]:
    with Session(engine) as session:
        return sorted(r.version for r in session.exec(select(PolicyRow)))


def test_a_non_date_in_a_policy_override_is_a_422_and_nothing_is_stored(client_and_engine) -> None:
    client, engine = client_and_engine
    for bad in ({"non_working_days": {"extra_dates": ["not-a-date"]}},
                {"non_working_days": {"extra_fixed": ["31-12"]}},
                {"non_working_days": {"extra_date": ["2027-05-07"]}},
                {"deadline_rules": {"kinds": "assessment"}}):
        r = client.put("/api/v1/policy", json={"overrides": bad}, headers=ADMIN_H)
        assert r.status_code == 422, r.text
        assert isinstance(r.json()["detail"], str) and r.json()["detail"].startswith(
            "Invalid policy value at ")
    r = client.put("/api/v1/policy", json={"overrides": {"non_working_days": {
        "extra_dates": ["not-a-date"]}}}, headers=ADMIN_H)
    assert r.json()["detail"] == ("Invalid policy value at non_working_days.extra_dates: "
                                  "'not-a-date' is not a date (write YYYY-MM-DD, e.g. 2027-05-07).")
    r = client.put("/api/v1/policy", json={"overrides": {"deadline_rules": {
        "kinds": ["assessment", "assesment"]}}}, headers=ADMIN_H)
    assert (r.status_code, r.json()["detail"]) == (422, "Invalid policy value at deadline_rules.kinds: "
                                                        "assesment is not a deadline kind.")
    assert stored_versions(engine) == []
    assert client.get("/api/v1/policy", headers=ADMIN_H).json()["version"] == 1


def test_a_municipality_adds_a_closing_day_by_override(client_and_engine) -> None:
    client, engine = client_and_engine
    r = client.put("/api/v1/policy", json={"overrides": {"non_working_days": {
        "extra_dates": ["2027-05-07"]}}, "note": "Closed the day after Ascension"}, headers=ADMIN_H)
    assert r.status_code == 200, r.text
    days = r.json()["non_working_days"]
    # Only the named key changed; the statutory list stays.
    assert days == {**DK.non_working_days.model_dump(mode="json"), "extra_dates": ["2027-05-07"]}
    assert r.json()["version"] == 2 and stored_versions(engine) == [2]
    with Session(engine) as session:
        latest = policy_api.latest_policy(session, "DK")
    assert latest.non_working_days.extra_dates == [date(2027, 5, 7)]
    assert latest.deadline_rules == DK.deadline_rules
    assert not is_working_day(date(2027, 5, 7), "DK", latest.non_working_days)


def test_an_override_stored_before_the_rules_still_starts_cases_on_them(client_and_engine) -> None:
    _, engine = client_and_engine
    body = {k: v for k, v in DK.model_dump(mode="json").items() if k not in NEW_FIELDS}
    with Session(engine) as session:
        session.add(PolicyRow(key="DK-v2", country="DK", version=2, body={**body, "version": 2,
                              "caseload_cap": 6}, created_at=datetime.now(UTC), created_by="admin",
                              note="before the deadline rules"))
        session.commit()
        latest = policy_api.latest_policy(session, "DK")
        assert (latest.version, latest.caseload_cap) == (2, 6)
        assert latest.non_working_days == DK.non_working_days
        assert latest.deadline_rules == DK.deadline_rules
        assert policy_api.policy_version(session, "DK", 2).deadline_rules == DK.deadline_rules
        # The next override builds on it and keeps the rules.
        saved = policy_api.save_override(session, "DK", {"caseload_cap": 7}, "admin", "")
    assert saved.deadline_rules == DK.deadline_rules
    state = new(datetime(2026, 10, 31, 9, 0, tzinfo=UTC), policy=latest)
    assert deadline(state, DeadlineKind.assessment).due_at.isoformat() == "2027-03-01T23:59:59+01:00"


def test_the_policy_file_adds_a_date_once_and_refuses_a_non_date(settings: Settings, tmp_path) -> None:
    engine = get_engine(settings.db_url)
    good = tmp_path / "policy.json"
    good.write_text(json.dumps({"non_working_days": {"extra_dates": ["2027-05-07"]}}))
    with Session(engine) as session:
        for _ in range(2):  # a restart does not pile up versions
            policy_api.load_policy_file(session, settings.model_copy(update={"policy_file": str(good)}))
        assert stored_versions(engine) == [2]
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"non_working_days": {"extra_dates": ["not-a-date"]}}))
        with pytest.raises(ValueError, match=r"bad.json: invalid policy value at "
                                             r"non_working_days.extra_dates: 'not-a-date' is not a date"):
            policy_api.load_policy_file(session, settings.model_copy(update={"policy_file": str(bad)}))
    assert stored_versions(engine) == [2]
