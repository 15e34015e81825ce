"""API shapes of the handler side."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from varsling.cases.models import Status
from varsling.reports.schemas import FileOut, IntegrityOut, MessageIn, MessageOut, StrictModel


class CaseSummaryOut(BaseModel):
    id: str
    status: str
    unit_id: int
    category: str
    received_on: str
    acknowledged_on: str | None
    acknowledgement_due: str
    feedback_due: str
    overdue: list[str]


class CaseListOut(BaseModel):
    items: list[CaseSummaryOut]


class NoteOut(BaseModel):
    body: str
    written_on: str
    author_id: int | None


class CaseOut(CaseSummaryOut):
    report: dict[str, object] | None
    has_identity: bool
    messages: list[MessageOut]
    notes: list[NoteOut]
    outcome: str | None
    files: list[FileOut]
    integrity: IntegrityOut


class StatusIn(StrictModel):
    status: Status
    outcome: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
        | None
    ) = None


NoteIn = MessageIn
