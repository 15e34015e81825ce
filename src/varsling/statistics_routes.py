"""Statistics and compliance figures for auditors (metadata only, small counts hidden)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from varsling import statistics
from varsling.authz import AppSettings, Auditor
from varsling.request_transaction import DbSession

router = APIRouter(prefix="/api/v1/statistics", tags=["statistics"])

SUPPRESSED: Literal["suppressed"] = "suppressed"
Count = int | Literal["suppressed"]


class UnitRowOut(BaseModel):
    unit_id: int
    unit_name: str
    counts: dict[str, Count]
    total: Count


class QuarterOut(BaseModel):
    quarter: str
    units: list[UnitRowOut]
    category_totals: dict[str, Count]
    total: Count


class ShareOut(BaseModel):
    due: int
    met: int
    percent: int | None


class ComplianceOut(BaseModel):
    quarter: str
    unit_id: int
    unit_name: str
    acknowledgement: ShareOut | Literal["suppressed"]
    feedback: ShareOut | Literal["suppressed"]


class StatisticsOut(BaseModel):
    min_cell: int
    categories: list[str]
    quarters: list[QuarterOut]
    compliance: list[ComplianceOut]


def _count(value: int | None) -> Count:
    return SUPPRESSED if value is None else value


def _share(value: statistics.Share | None) -> ShareOut | Literal["suppressed"]:
    if value is None:
        return SUPPRESSED
    return ShareOut(due=value.due, met=value.met, percent=value.percent)


@router.get("", response_model=StatisticsOut)
def read_statistics(principal: Auditor, session: DbSession, settings: AppSettings) -> StatisticsOut:
    """Cases by category, unit and quarter, and deadline compliance per unit and quarter;
    every count under `statistics_min_cell`, and what would give it away, is "suppressed"."""
    figures = statistics.statistics(
        session, min_cell=settings.statistics_min_cell, actor=principal.actor
    )
    return StatisticsOut(
        min_cell=figures.min_cell,
        categories=list(figures.categories),
        quarters=[
            QuarterOut(
                quarter=q.quarter,
                units=[
                    UnitRowOut(
                        unit_id=u.unit_id,
                        unit_name=u.unit_name,
                        counts={k: _count(v) for k, v in u.counts.items()},
                        total=_count(u.total),
                    )
                    for u in q.units
                ],
                category_totals={k: _count(v) for k, v in q.category_totals.items()},
                total=_count(q.total),
            )
            for q in figures.quarters
        ],
        compliance=[
            ComplianceOut(
                quarter=c.quarter,
                unit_id=c.unit_id,
                unit_name=c.unit_name,
                acknowledgement=_share(c.acknowledgement),
                feedback=_share(c.feedback),
            )
            for c in figures.compliance
        ],
    )
