"""Statistics and compliance figures for auditors, from case metadata only.

Counted from the cases table's category, unit and dates; nothing is
decrypted. Each quarter (by the day a case was received) is one table: a
row per unit (the unit the case was reported in, not summed up the tree), a
column per category, with each unit's total, each category's total and the
quarter's total.

Small counts could point to a person, so every figure under
`statistics_min_cell` is suppressed (zero too), and then more figures are
suppressed until none of the hidden ones can be worked back from what is
shown and what the auditor knows anyway (secondary suppression, see
`suppress`): the audit trail tells each unit's number of cases per day, so
the units' totals are taken as known to the reader. A suppressed figure is
None here and "suppressed" in the API, never a number.

Compliance figures per unit and quarter are shown only for the units whose
total the statistics table shows, so they never reveal a count the table
hides.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import Unit
from varsling.cases import service as cases
from varsling.cases.models import Case, Category

CATEGORIES = tuple(c.value for c in Category)


# --------------------------------------------------------------------------
# Suppression: pure, on a table with its totals


def suppress(
    table: list[list[int]],
    min_cell: int,
    public: frozenset[tuple[int, int]] = frozenset(),
) -> list[list[bool]]:
    """Which figures of `table` to hide; its last row and column are the totals.

    `public` are the positions a reader knows anyway (an auditor counts each
    unit's cases in the audit trail): they are hidden when small, but never
    relied on to protect another figure.

    1. Primary: every figure under `min_cell` (zero too).
    2. Secondary, until nothing changes:
       - no line (a row or column with its total) leaves exactly one figure
         unknown, which its other figures would give away;
       - where a line's total is known, its unknown figures add up to at least
         `min_cell` if the line has any more to hide (a hidden sum of 0 would
         reveal every hidden figure in it as 0);
       - no unknown figure follows from the known ones through any
         combination of the table's sums (checked by Gaussian elimination).
       Each step hides the smallest shown figure of an offending line.
    Interval bounds beyond these rules are not analysed.
    """
    rows, cols = len(table), len(table[0])
    hidden = [[table[r][c] < min_cell for c in range(cols)] for r in range(rows)]
    lines = [[(r, c) for c in range(cols)] for r in range(rows)] + [
        [(r, c) for r in range(rows)] for c in range(cols)
    ]

    def unknown(p: tuple[int, int]) -> bool:
        return hidden[p[0]][p[1]] and p not in public

    def hideable(p: tuple[int, int]) -> bool:
        return not hidden[p[0]][p[1]] and p not in public

    def hide_smallest(line: list[tuple[int, int]]) -> bool:
        inner, total = line[:-1], line[-1]
        candidates = [p for p in inner if hideable(p)] or ([total] if hideable(total) else [])
        if not candidates:
            return False
        r, c = min(candidates, key=lambda p: (table[p[0]][p[1]], p))
        hidden[r][c] = True
        return True

    changed = True
    while changed:
        changed = False
        for line in lines:
            unknown_here = [p for p in line if unknown(p)]
            if not unknown_here:
                continue
            total = line[-1]
            unknown_sum = sum(table[r][c] for r, c in unknown_here if (r, c) != total)
            if len(unknown_here) == 1 or (not unknown(total) and unknown_sum < min_cell):
                changed = hide_smallest(line) or changed
        if changed:
            continue
        secret = [[unknown((r, c)) for c in range(cols)] for r in range(rows)]
        determined = _determined(table, secret)
        for r, c in determined:
            if hide_smallest(lines[r]) or hide_smallest(lines[rows + c]):
                changed = True
                break
        else:
            if determined:
                # Nothing in its lines is left to hide: hide everything.
                return [[True] * cols for _ in range(rows)]
    return hidden


def _determined(table: list[list[int]], hidden: list[list[bool]]) -> list[tuple[int, int]]:
    """The hidden figures the table's sums pin down exactly."""
    rows, cols = len(table), len(table[0])
    unknowns = [(r, c) for r in range(rows) for c in range(cols) if hidden[r][c]]
    if not unknowns:
        return []
    index = {p: i for i, p in enumerate(unknowns)}
    equations: list[list[Fraction]] = []
    for line, total in [([(r, c) for c in range(cols - 1)], (r, cols - 1)) for r in range(rows)] + [
        ([(r, c) for r in range(rows - 1)], (rows - 1, c)) for c in range(cols)
    ]:
        coefficients = [Fraction(0)] * len(unknowns)
        for p in line:
            if p in index:
                coefficients[index[p]] += 1
        if total in index:
            coefficients[index[total]] -= 1
        if any(coefficients):
            equations.append(coefficients)
    # Reduced row echelon form: an unknown is determined when its pivot row has
    # no other unknown left in it.
    pivot_rows: list[tuple[int, list[Fraction]]] = []
    row_at = 0
    for column in range(len(unknowns)):
        pivot = next((i for i in range(row_at, len(equations)) if equations[i][column] != 0), None)
        if pivot is None:
            continue
        equations[row_at], equations[pivot] = equations[pivot], equations[row_at]
        lead = equations[row_at][column]
        equations[row_at] = [value / lead for value in equations[row_at]]
        for i in range(len(equations)):
            if i != row_at and equations[i][column] != 0:
                factor = equations[i][column]
                equations[i] = [
                    a - factor * b for a, b in zip(equations[i], equations[row_at], strict=True)
                ]
        pivot_rows.append((column, equations[row_at]))
        row_at += 1
    return [
        unknowns[column] for column, row in pivot_rows if sum(1 for value in row if value != 0) == 1
    ]


# --------------------------------------------------------------------------
# Quarters


def quarter_of(day: dt.date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def _quarters(first: dt.date, last: dt.date) -> list[str]:
    quarters = []
    year, quarter = first.year, (first.month - 1) // 3
    while (year, quarter) <= (last.year, (last.month - 1) // 3):
        quarters.append(f"{year}-Q{quarter + 1}")
        year, quarter = (year + 1, 0) if quarter == 3 else (year, quarter + 1)
    return quarters


# --------------------------------------------------------------------------
# The figures


@dataclass(frozen=True)
class UnitRow:
    unit_id: int
    unit_name: str
    counts: dict[str, int | None]  # category -> count, None when suppressed
    total: int | None


@dataclass(frozen=True)
class QuarterTable:
    quarter: str
    units: list[UnitRow]
    category_totals: dict[str, int | None]
    total: int | None


@dataclass(frozen=True)
class Share:
    """Of `due` cases whose deadline has come (met or missed), `met` in time."""

    due: int
    met: int

    @property
    def percent(self) -> int | None:
        return round(100 * self.met / self.due) if self.due else None


@dataclass(frozen=True)
class ComplianceRow:
    quarter: str
    unit_id: int
    unit_name: str
    # None when the unit's count is suppressed in the statistics (or too few are due).
    acknowledgement: Share | None
    feedback: Share | None


@dataclass(frozen=True)
class Statistics:
    min_cell: int
    categories: tuple[str, ...]
    quarters: list[QuarterTable]
    compliance: list[ComplianceRow]


def _case_rows(session: Session) -> list[Case]:
    return list(session.scalars(select(Case).order_by(Case.received_on)))


def statistics(
    session: Session, *, min_cell: int, actor: str, today: dt.date | None = None
) -> Statistics:
    """Counts by category, unit and quarter, and compliance per unit and quarter,
    with small figures suppressed; the reading is audited in the same transaction."""
    today = today or dt.datetime.now(dt.UTC).date()
    units = list(session.scalars(select(Unit).order_by(Unit.name, Unit.id)))
    all_cases = _case_rows(session)
    quarters = _quarters(all_cases[0].received_on, today) if all_cases else []
    by_quarter: dict[str, list[Case]] = {q: [] for q in quarters}
    for case in all_cases:
        by_quarter.setdefault(quarter_of(case.received_on), []).append(case)

    tables: list[QuarterTable] = []
    compliance: list[ComplianceRow] = []
    for quarter in quarters:
        table = _table(units, by_quarter[quarter])
        hidden = suppress(table, min_cell, _unit_totals(len(units)))
        tables.append(_quarter_table(quarter, units, table, hidden))
        for index, unit in enumerate(units):
            unit_cases = [c for c in by_quarter[quarter] if c.unit_id == unit.id]
            acknowledgement, feedback = _shares(unit_cases, today)
            # A unit whose count the table hides shows no figures at all.
            told = not hidden[index][-1]
            compliance.append(
                ComplianceRow(
                    quarter,
                    unit.id,
                    unit.name,
                    acknowledgement if told and acknowledgement.due >= min_cell else None,
                    feedback if told and feedback.due >= min_cell else None,
                )
            )
    audit.record(
        session,
        actor=actor,
        action="statistics.read",
        details={"quarters": len(quarters), "min_cell": min_cell},
    )
    return Statistics(min_cell, CATEGORIES, tables, compliance)


def _unit_totals(unit_count: int) -> frozenset[tuple[int, int]]:
    """Each unit's total (and the quarter's): an auditor can count them in the trail,
    where case.submitted names the unit and case.deleted the deleted cases."""
    column = len(CATEGORIES)
    return frozenset((r, column) for r in range(unit_count + 1))


def _table(units: list[Unit], quarter_cases: list[Case]) -> list[list[int]]:
    position = {unit.id: i for i, unit in enumerate(units)}
    column = {category: j for j, category in enumerate(CATEGORIES)}
    table = [[0] * (len(CATEGORIES) + 1) for _ in range(len(units) + 1)]
    for case in quarter_cases:
        r = position.get(case.unit_id)
        c = column.get(case.category, column[Category.OTHER.value])
        if r is None:
            continue
        table[r][c] += 1
    for r in range(len(units)):
        table[r][-1] = sum(table[r][:-1])
    for c in range(len(CATEGORIES) + 1):
        table[-1][c] = sum(table[r][c] for r in range(len(units)))
    return table


def _quarter_table(
    quarter: str, units: list[Unit], table: list[list[int]], hidden: list[list[bool]]
) -> QuarterTable:
    def shown(r: int, c: int) -> int | None:
        return None if hidden[r][c] else table[r][c]

    rows = [
        UnitRow(
            unit.id,
            unit.name,
            {category: shown(r, c) for c, category in enumerate(CATEGORIES)},
            shown(r, len(CATEGORIES)),
        )
        for r, unit in enumerate(units)
    ]
    last = len(units)
    return QuarterTable(
        quarter,
        rows,
        {category: shown(last, c) for c, category in enumerate(CATEGORIES)},
        shown(last, len(CATEGORIES)),
    )


def _shares(unit_cases: list[Case], today: dt.date) -> tuple[Share, Share]:
    outcomes = [cases.deadline_outcomes(case, today) for case in unit_cases]
    acknowledgement = [a for a, _ in outcomes if a != cases.OPEN]
    feedback = [f for _, f in outcomes if f != cases.OPEN]
    return (
        Share(len(acknowledgement), acknowledgement.count(cases.MET)),
        Share(len(feedback), feedback.count(cases.MET)),
    )
