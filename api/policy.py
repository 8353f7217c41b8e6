"""Policy versions: the national defaults, overridden by a municipality in a file or via the
API (administrators, DESIGN §9). Versions are immutable; new cases start on the newest,
running cases keep theirs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlmodel import Session, select

from api.deps import Caller, get_caller, get_session, get_settings_dep
from domain.access import may_change_policy
from domain.policy import current_policy
from models.case import DeadlineKind
from models.policy import Policy
from models.tables import PolicyRow
from settings import Settings

router = APIRouter(prefix="/api/v1/policy", tags=["policy"])


def _stored(body: dict, base: Policy) -> Policy:
    """A stored version. A field added to Policy after it was stored takes the national
    default of today (e.g. `deadline_rules`: a municipality's override from before it still
    starts new cases on the statutory deadline rules) -- not the field's bare default, which
    for those fields means "the old arithmetic" and is kept for running cases' own copies."""
    return Policy.model_validate({**base.model_dump(mode="json"), **body})


# Policy fields that are objects of their own: an override changes the keys it names and keeps
# the others (a municipality adds `{"non_working_days": {"extra_dates": [...]}}`, not the list
# of weekdays and holidays again). A list inside is replaced whole.
MERGED_FIELDS = ("non_working_days", "deadline_rules")


def latest_policy(session: Session, country: str) -> Policy:
    base = current_policy(country)
    row = session.exec(
        select(PolicyRow).where(PolicyRow.country == base.country).order_by(PolicyRow.version.desc())
    ).first()
    return _stored(row.body, base) if row else base


def policy_version(session: Session, country: str, version: int) -> Policy | None:
    base = current_policy(country)
    if version == base.version:
        row = session.get(PolicyRow, base.key)
        return _stored(row.body, base) if row else base
    row = session.get(PolicyRow, f"{base.country}-v{version}")
    return _stored(row.body, base) if row else None


def save_override(session: Session, country: str, overrides: dict, by: str, note: str) -> Policy:
    """Validate overrides against the newest version and store them as the next version."""
    current = latest_policy(session, country)
    overrides = dict(overrides)
    for name in MERGED_FIELDS:
        now, new = getattr(current, name), overrides.get(name)
        if isinstance(new, dict) and now is not None:
            overrides[name] = {**now.model_dump(), **new}
    merged = {**current.model_dump(), **overrides, "version": current.version + 1,
              "country": current.country}
    policy = Policy.model_validate(merged)
    unknown = sorted(set(policy.deadline_rules.kinds if policy.deadline_rules else [])
                     - {k.value for k in DeadlineKind})
    if unknown:
        raise UnknownDeadlineKind(f"Invalid policy value at deadline_rules.kinds: "
                                  f"{', '.join(unknown)} is not a deadline kind.")
    session.add(PolicyRow(key=policy.key, country=policy.country, version=policy.version,
                          body=policy.model_dump(mode="json"), created_at=datetime.now(UTC),
                          created_by=by, note=note))
    session.commit()
    return policy


class UnknownDeadlineKind(ValueError):
    """A refusal whose message is already a sentence for the administrator."""


def load_policy_file(session: Session, settings: Settings) -> None:
    """ONEFAMILY_POLICY_FILE: a JSON object of overrides; stored as a new version if it changes
    anything (so restarts do not pile up versions)."""
    if not settings.policy_file:
        return
    overrides = json.loads(Path(settings.policy_file).read_text())
    current = latest_policy(session, settings.country)
    if _changes(current, overrides):
        try:
            save_override(session, settings.country, overrides, "policy-file", settings.policy_file)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"ONEFAMILY_POLICY_FILE {settings.policy_file}: invalid policy value "
                             f"at {where}: {_message(first)}.") from None
        except UnknownDeadlineKind as error:
            raise ValueError(f"ONEFAMILY_POLICY_FILE {settings.policy_file}: {error}") from None


def _changes(current: Policy, overrides: dict) -> bool:
    """Whether the overrides change anything (a merged field compares only the keys named)."""
    now = current.model_dump(mode="json")
    for name, value in overrides.items():
        old = now.get(name)
        if name in MERGED_FIELDS and isinstance(value, dict) and isinstance(old, dict):
            old = {k: v for k, v in old.items() if k in value}
        if old != value:
            return True
    return False


def _message(error: dict) -> str:
    return str(error["msg"]).removeprefix("Value error, ").rstrip(".")


class PolicyOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: dict
    note: str = ""


@router.get("")
def get_policy(caller: Caller = Depends(get_caller), session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> dict:
    caller.require()
    return latest_policy(session, settings.country).model_dump(mode="json")


@router.put("")
def override_policy(body: PolicyOverride, caller: Caller = Depends(get_caller),
                    session: Session = Depends(get_session),
                    settings: Settings = Depends(get_settings_dep)) -> dict:
    actor = caller.require()
    if not may_change_policy(actor):
        raise HTTPException(403, "Only an administrator changes the municipality's policy.")
    unknown = set(body.overrides) - set(Policy.model_fields) - {"version", "country"}
    if unknown:
        raise HTTPException(422, f"Unknown policy field(s): {', '.join(sorted(unknown))}.")
    if {"version", "country"} & set(body.overrides):
        raise HTTPException(422, "version and country are set by the system.")
    try:
        policy = save_override(session, settings.country, body.overrides, actor.id, body.note)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HTTPException(422, f"Invalid policy value at {where}: {_message(first)}.") from None
    except UnknownDeadlineKind as error:
        raise HTTPException(422, str(error)) from None
    return policy.model_dump(mode="json")
