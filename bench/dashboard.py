"""Benchmark: the manager dashboard over 10,000 open cases (DESIGN §7: < 100 ms p95).

    python -m bench.dashboard [--cases 10000] [--requests 200]

Seeds a temporary SQLite read model directly (no Temporal): realistic case documents built
with the real domain rules (`domain.lifecycle`) in every open stage, some overdue, some
escalated, some active with joint funding; indexes them once as the API's background task
would (`api.watch.reconcile`), then times the overview page `/` and the stuck list (page and
JSON) through FastAPI's TestClient (the whole ASGI stack, no network) and prints p50/p95.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.lifecycle import Ctx, execute, new_case
from domain.policy import DK
from models.case import Actor, CaseCreate, CaseState, Stage
from models.commands import CommandInput

ADMIN = Actor(id="admin", roles=["admin"])
COORDINATORS = [f"coord{i:03d}" for i in range(40)]
TEAM = ["ole", "lise"]

_BODY = {
    "referral": {"source": "school", "kind": "application", "received_at": "2026-01-05T09:00:00Z",
                 "reason": "Needs coordinated support at home and school"},
    "family": {"name": "Family Jensen", "language": "da", "members": [
        {"name": "Emil", "role": "child", "birth_date": "2015-03-02", "diagnoses": ["ADHD"]},
        {"name": "Mette", "role": "parent", "birth_date": "1985-01-10"}]},
    "existing_contacts": [{"department": "adult_services"}, {"department": "school"}],
    "consent": {"coordinated_handling": True},
    "contact_preference": "normal",
}

PLAN = {
    "family_goals": ["Emil goes to school every day"],
    "goals": [{"id": "g1", "text": "Emil attends school 5 days a week", "owner": "COORD"}],
    "actions": [{"id": "a1", "goal_id": "g1", "text": "School adapts the timetable", "owner": "school"},
                {"id": "a2", "goal_id": "g1", "text": "Parent course", "owner": "adult_services"}],
    "services": [{"name": "Family therapy", "paragraph": "BL § 32", "department": "children_disability",
                  "monthly_cost": 6000, "funding": [{"department": "children_disability", "share": 0.5},
                                                    {"department": "adult_services", "share": 0.5}]},
                 {"name": "Mentor", "paragraph": "BL § 32", "department": "children_disability",
                  "monthly_cost": 2500, "funding": []}],
}


def _create_body(name: str, received_at: datetime, preference: str) -> CaseCreate:
    body = copy.deepcopy(_BODY)
    body["family"]["name"] = name
    body["family"]["members"][0]["name"] = f"Child of {name}"
    body["referral"]["received_at"] = received_at.isoformat()
    body["contact_preference"] = preference
    return CaseCreate.model_validate(body)


def build_case(stage: Stage, received_at: datetime, *, coordinator: str = "coord000",
               name: str = "Family Jensen", case_id: str | None = None, preference: str = "normal",
               escalate: bool = False, step: timedelta = timedelta(days=3),
               contact: bool = True) -> CaseState:
    """A case walked through the real domain rules up to `stage`, with `step` between
    commands starting at `received_at` (so a case can be made as late as needed)."""
    clock = [received_at]

    def run(state: CaseState, name_: str, who: Actor, body: dict | None = None, **extra) -> CaseState:
        clock[0] = clock[0] + step
        ctx = Ctx(actor=who, now=clock[0], policy=DK)
        return execute(state, name_, CommandInput(actor=who, body=body, **extra), ctx)

    coord = Actor(id=coordinator, roles=["coordinator"])
    state = new_case(case_id or str(uuid.uuid4()), _create_body(name, received_at, preference),
                     Ctx(actor=ADMIN, now=received_at, policy=DK))
    order = [Stage.coordinator_assigned, Stage.team_formed, Stage.assessment, Stage.planning,
             Stage.escalated, Stage.active]
    if stage is Stage.referred:
        return state
    state = run(state, "assign_coordinator", ADMIN, {"coordinator_id": coordinator})
    if contact:
        state = run(state, "record_contact", coord, {"kind": "phone", "at": clock[0].isoformat()})
    if order.index(stage) < 1:
        return state
    state = run(state, "form_team", coord, {"members": [
        {"staff_id": t, "discipline": "adult_services", "department": "adult_services"} for t in TEAM]})
    if order.index(stage) < 2:
        return state
    state = run(state, "schedule_assessment_meeting", coord, {
        "at": (clock[0] + step * 2).isoformat(), "location": "Town hall",
        "participants": [coordinator, *TEAM]})
    if order.index(stage) < 3:
        return state
    state = run(state, "put_assessment", coord, {
        "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
        "child_views": "Wants to go to school."})
    state = run(state, "complete_assessment", coord)
    plan = copy.deepcopy(PLAN)
    plan["goals"][0]["owner"] = coordinator
    if escalate or stage is Stage.escalated:
        plan["services"][0]["monthly_cost"] = 16000  # joint funding over the team's limit
    state = run(state, "put_plan", coord, plan)
    if stage is Stage.planning:
        return state
    for voter in [coordinator, *TEAM]:
        state = run(state, "vote", Actor(id=voter, roles=["team_member"]),
                    {"staff_id": voter, "vote": "agree"})
    state = run(state, "family_response", coord, {"approved": True, "comment": "Our plan"})
    if stage is Stage.escalated:
        return state
    if state.stage is Stage.escalated:
        item = state.escalations[-1]
        state = run(state, "committee_decision", Actor(id="board", roles=["committee"]),
                    {"decision": "approved", "notes": "ok", "funding": [
                        {"department": "children_disability", "share": 0.6},
                        {"department": "adult_services", "share": 0.4}]}, item_id=item.id)
    return state


def seed_cases(engine, n: int, now: datetime, seed: int = 7, templates: int = 60) -> list[str]:
    """`n` open cases straight into the read model. Walking the domain rules for every case
    would take minutes, so `templates` cases are walked and then cloned with fresh ids,
    names, coordinators and shifted dates."""
    from sqlalchemy import insert
    from sqlmodel import Session

    from models.projection import case_row
    from models.tables import CaseRow, CommitteeItemRow

    rng = random.Random(seed)
    stages = [Stage.referred, Stage.coordinator_assigned, Stage.team_formed, Stage.assessment,
              Stage.planning, Stage.escalated, Stage.active, Stage.active, Stage.active]
    bases: list[CaseState] = []
    for t in range(templates):
        stage = stages[t % len(stages)]
        age = timedelta(days=rng.randint(2, 400))
        bases.append(build_case(stage, now - age, coordinator="coord000",
                                preference=rng.choice(["close", "normal", "space"]),
                                escalate=(t % 7 == 0), step=timedelta(days=rng.randint(1, 6))))
    ids = []
    rows, items = [], []
    for i in range(n):
        base = bases[i % templates]
        shift = timedelta(hours=rng.randint(-240, 240))
        doc = base.model_dump(mode="json")
        case_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        text = _shift_json(doc, shift)
        text = text.replace(base.id, case_id)
        coordinator = COORDINATORS[i % len(COORDINATORS)] if base.coordinator_id else None
        if coordinator:
            text = text.replace("coord000", coordinator)
        state = CaseState.model_validate_json(text)
        state.family.name = f"Family {i:05d}"
        row = case_row(state, now)
        rows.append(row.model_dump())
        for item in state.escalations:
            items.append({"id": item.id, "case_id": case_id, "plan_version": item.plan_version,
                          "reasons": item.reasons, "escalated_at": item.escalated_at,
                          "meeting_at": item.meeting_at, "status": item.status,
                          "decision": item.decision.value if item.decision else None,
                          "decided_at": item.decided_at})
        ids.append(case_id)
    with Session(engine) as session:
        for start in range(0, len(rows), 1000):
            session.execute(insert(CaseRow.__table__), rows[start:start + 1000])
        if items:
            session.execute(insert(CommitteeItemRow.__table__), items)
        session.commit()
    return ids


def _shift_json(doc: dict, shift: timedelta) -> str:
    """Move every timestamp of a case document by `shift` (keeps the case consistent)."""
    import json

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
            try:
                return (datetime.fromisoformat(value.replace("Z", "+00:00")) + shift).isoformat()
            except ValueError:
                return value
        return value

    return json.dumps(walk(doc))


def seed_staff(engine) -> None:
    from sqlmodel import Session

    from models.tables import StaffRow

    with Session(engine) as session:
        for cid in COORDINATORS:
            session.add(StaffRow(id=cid, name=f"Coordinator {cid}", discipline="social_worker",
                                 department="children_disability", roles=["coordinator"],
                                 created_at=datetime.now(UTC)))
        session.add(StaffRow(id="mia", name="Mia Lund", discipline="manager",
                             department="children_disability", roles=["manager"],
                             created_at=datetime.now(UTC)))
        session.add(StaffRow(id="admin", name="Administrator", discipline="other",
                             department="administration", roles=["admin"], created_at=datetime.now(UTC)))
        session.commit()


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95, ordered[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import dashboard, pages, watch
    from models.db import get_engine, init_read_model, migrate
    from settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(ONEFAMILY_DATA_DIR=str(Path(tmp) / "data"))
        migrate(settings.db_url)
        init_read_model(settings)
        engine = get_engine(settings.db_url)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        seed_staff(engine)
        seed_cases(engine, args.cases, now)
        t1 = time.perf_counter()
        watch.forget_watermarks()
        indexed = watch.reconcile(engine)
        watch.catch_up(engine)
        t2 = time.perf_counter()
        print(f"seeded {args.cases} open cases in {t1 - t0:.1f} s; indexed {indexed} in {t2 - t1:.1f} s")

        from sqlmodel import Session

        from api.auth import AuthMiddleware
        from api.credentials import create_token

        with Session(engine) as s:
            _, token = create_token(s, "mia", "bench", 1)  # the dashboard as mia signs in
        app = FastAPI()
        app.state.settings, app.state.engine, app.state.temporal = settings, engine, None
        app.add_middleware(AuthMiddleware)
        app.include_router(dashboard.router)
        app.include_router(pages.router, )
        with TestClient(app) as client:
            from sqlmodel import Session, func, select

            from models.tables_reporting import CaseWatchRow
            with Session(engine) as s:
                stuck_now = dashboard.stuck_list(s, watch.utcnow(), limit=1)["total"]
                watch_rows = s.exec(select(func.count()).select_from(CaseWatchRow)).one()
            print(f"stuck cases now: {stuck_now}; watch rows: {watch_rows}")
            targets = [
                ("overview page  GET /", "/", {}),
                ("stuck page     GET /stuck", "/stuck", {}),
                ("stuck page, filtered", "/stuck?reason=overdue&stage=assessment&sort=stage", {}),
                ("cases page     GET /cases?sort=age", "/cases?sort=age", {}),
                ("stuck JSON     GET /api/v1/dashboard/stuck", "/api/v1/dashboard/stuck", {}),
            ]
            print(f"{'what':45} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for label, url, _ in targets:
                headers = {"Authorization": f"Bearer {token}"}
                for _ in range(5):  # warm up
                    assert client.get(url, headers=headers).status_code == 200
                samples = []
                for _ in range(args.requests):
                    start = time.perf_counter()
                    response = client.get(url, headers=headers)
                    samples.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.text[:300]
                p50, p95, worst = _percentiles(samples)
                print(f"{label:45} {p50:8.1f} {p95:8.1f} {worst:8.1f}")


if __name__ == "__main__":
    main()
