"""The access policy (domain/access.py) applied to the read model: one case's facts, and the
SQL form of a list scope. The only place that turns need-to-know into SQL."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from domain.access import CaseFacts, CaseScope
from models.projection import uncovered_of_row
from models.tables import CaseRow, CommitteeItemRow


def _team(text: str | None) -> frozenset[str]:
    return frozenset(t for t in (text or "").split(",") if t)


def facts_from_row(row: CaseRow | _FactsRow, session: Session, now: datetime | None = None) -> CaseFacts:
    """`now`: the family's consent as of this instant (default: the wall clock)."""
    not_consented, documents_not_consented = uncovered_of_row(row, now or datetime.now(UTC))
    items = session.exec(
        select(CommitteeItemRow.status, CommitteeItemRow.decided_by)
        .where(CommitteeItemRow.case_id == row.id)
    ).all()
    return CaseFacts(
        id=row.id,
        unit=row.unit,
        coordinator_id=row.coordinator_id,
        team_ids=_team(row.team_text),
        open_escalation=any(status == "waiting" for status, _ in items),
        decided_by=frozenset(by for _, by in items if by),
        not_consented=not_consented,
        documents_not_consented=documents_not_consented,
    )


# What the facts need of a case's row: no sealed column (the family's name, the document).
_FACT_COLUMNS = (CaseRow.id, CaseRow.unit, CaseRow.coordinator_id, CaseRow.team_text,
                 CaseRow.uncovered_text, CaseRow.uncovered_documents_text, CaseRow.consent_until)


class _FactsRow:
    """The facts' columns of a case's row; its sealed document (a decrypt and a parse of the
    whole case) is read only when an ended consent needs it (uncovered_of_row)."""

    def __init__(self, session: Session, values) -> None:
        self._session = session
        (self.id, self.unit, self.coordinator_id, self.team_text, self.uncovered_text,
         self.uncovered_documents_text, self.consent_until) = values

    @cached_property
    def document(self) -> dict | None:
        return self._session.execute(
            select(CaseRow.document).where(CaseRow.id == self.id)).scalar_one_or_none()


def load_facts(session: Session, case_id: str, now: datetime | None = None) -> CaseFacts | None:
    """The case's facts from the read model; None for an unknown case. Every command and read
    asks for them: a plain SELECT of seven columns, not the ORM row with its sealed name
    (issue 13, speed)."""
    values = session.exec(select(*_FACT_COLUMNS).where(CaseRow.id == case_id)).first()
    return facts_from_row(_FactsRow(session, values), session, now) if values is not None else None


def contains_exactly(column, needle: str) -> ColumnElement[bool]:
    """`needle` occurs in `column`, compared byte for byte: no LIKE pattern (an id with `_`
    or `%` matches only itself) and case-sensitive on every database (SQLite's LIKE is not:
    staff id `Anna` would match `anna`). replace() is exact in SQLite and PostgreSQL."""
    return func.replace(column, needle, "") != column


def scope_clause(scope: CaseScope, id_col=None, unit_col=None, coordinator_col=None,
                 team_col=None, uncovered_col=None, consent_until_col=None,
                 now: datetime | None = None) -> ColumnElement[bool]:
    """A WHERE clause over case columns (defaults: the `cases` table) selecting exactly the
    cases `domain.access.in_scope` accepts. Team ids are matched as whole ids, never as a
    LIKE pattern (an id with `_` or `%` matches only itself), and case-sensitively. A team
    member needs the family's consent (DESIGN §11): not among the uncovered, and — once an
    active consent has ended (`consent_until`, as of `now`, default the wall clock) and until
    the workflow has projected that — the case is left out for every team member."""
    id_col = CaseRow.id if id_col is None else id_col
    unit_col = CaseRow.unit if unit_col is None else unit_col
    coordinator_col = CaseRow.coordinator_id if coordinator_col is None else coordinator_col
    team_col = CaseRow.team_text if team_col is None else team_col
    uncovered_col = CaseRow.uncovered_text if uncovered_col is None else uncovered_col
    consent_until_col = CaseRow.consent_until if consent_until_col is None else consent_until_col
    if scope.everything:
        return ~false()
    parts: list[ColumnElement[bool]] = []
    if scope.units:
        parts.append(unit_col.in_(sorted(scope.units)))
    if scope.unassigned_in_units:
        parts.append(and_(coordinator_col.is_(None), unit_col.in_(sorted(scope.unassigned_in_units))))
    if scope.staff_id is not None:
        parts.append(coordinator_col == scope.staff_id)
        member = f",{scope.staff_id},"
        parts.append(and_(
            contains_exactly(team_col, member),
            ~contains_exactly(func.coalesce(uncovered_col, ""), member),
            or_(consent_until_col.is_(None), consent_until_col > (now or datetime.now(UTC))),
        ))
    if scope.committee_member is not None:
        items = select(CommitteeItemRow.case_id).where(
            or_(CommitteeItemRow.status == "waiting",
                CommitteeItemRow.decided_by == scope.committee_member)
        )
        parts.append(id_col.in_(items))
    return or_(*parts) if parts else false()


def scoped_case_ids(scope: CaseScope):
    """SELECT the ids of the cases in `scope` (for `... .in_(scoped_case_ids(scope))`)."""
    return select(CaseRow.id).where(scope_clause(scope))
