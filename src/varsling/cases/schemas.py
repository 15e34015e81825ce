"""API shapes of the handler side."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StringConstraints, model_validator

from varsling.cases.models import Risk, Status
from varsling.cases.retention import DiscardReason
from varsling.reports.schemas import (
    FileOut,
    Id,
    IntegrityOut,
    MessageIn,
    MessageOut,
    StrictModel,
)


class CaseSummaryOut(BaseModel):
    id: str
    status: str
    unit_id: int
    handling_unit_id: int
    category: str
    priority: str
    linked_case_id: str | None
    received_on: str
    acknowledged_on: str | None
    acknowledgement_due: str
    feedback_due: str
    overdue: list[str]
    escalated_on: str | None = Field(
        description="The day the reporter sent the unacknowledged case to the level above "
        "(handling_unit_id is then that unit)."
    )


class CaseListItemOut(CaseSummaryOut):
    declared: bool


class CaseListOut(BaseModel):
    items: list[CaseListItemOut]
    next: str | None = Field(
        description="Where the next page starts: pass it as `after`. Null on the last page."
    )
    total: int = Field(
        description="How many cases the filters let through, on all pages (you hold a key to each)."
    )


class NoteOut(BaseModel):
    body: str
    written_on: str
    author_id: int | None


class RecusalOut(BaseModel):
    user_id: int | None
    reason: str
    written_on: str


class CheckInAnswerOut(BaseModel):
    round: int
    sent_on: str | None
    answered_on: str
    negative_consequences: bool
    details: str | None


class HoldOut(BaseModel):
    review_on: str
    reason: str | None
    placed_on: str | None


class HoldStateOut(BaseModel):
    """A case's retention: the hold in force, if any, and the day it will be deleted."""

    hold: HoldOut | None
    deletion_due: str | None


class CaseOut(CaseSummaryOut):
    report: dict[str, object] | None
    has_identity: bool
    messages: list[MessageOut]
    notes: list[NoteOut]
    outcome: str | None
    files: list[FileOut]
    recusals: list[RecusalOut]
    risk: str | None
    retaliation_cases: list[str] = Field(
        description="Ids of the retaliation cases the reporter opened on this case."
    )
    checkin_answers: list[CheckInAnswerOut]
    hold: HoldOut | None
    deletion_due: str | None
    integrity: IntegrityOut


class StatusIn(StrictModel):
    status: Status
    outcome: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
        | None
    ) = None


NoteIn = MessageIn


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000)]


class DeclarationIn(StrictModel):
    """No conflict opens the case (with a risk assessment); a conflict recuses."""

    conflict: StrictBool
    risk: Risk | None = None
    reason: Reason | None = None

    @model_validator(mode="after")
    def _fits(self) -> DeclarationIn:
        if not self.conflict and self.risk is None:
            raise ValueError("risk (low, medium or high) is needed when there is no conflict")
        if self.conflict and self.reason is None:
            raise ValueError("reason is needed when there is a conflict")
        if not self.conflict and self.reason is not None:
            raise ValueError("reason is only given with a conflict")
        return self


class DeclarationOut(BaseModel):
    conflict: bool
    risk: str | None
    routed_to_unit_id: int | None = None
    handlers_added: int = 0


class GrantIn(StrictModel):
    user_id: Id


class IdentityRequestIn(StrictModel):
    """Why you need to know who the reporter is: read by the custodians who decide."""

    justification: Reason


class IdentityRequestCreatedOut(BaseModel):
    id: int
    status: str


class IdentityRequestOut(BaseModel):
    id: int
    case_id: str
    requester_id: int
    status: str  # pending, approved, refused
    requested_on: str
    decided_on: str | None
    justification: str | None  # None where the caller cannot open it
    reason: str | None  # the custodian's reason, once decided


class IdentityRequestListOut(BaseModel):
    items: list[IdentityRequestOut]


class CustodianRequestOut(IdentityRequestOut):
    category: str
    unit_id: int
    decided_by_me: bool


class CustodianRequestListOut(BaseModel):
    items: list[CustodianRequestOut]


class IdentityDecisionIn(StrictModel):
    approve: StrictBool
    reason: Reason


class IdentityDecisionOut(BaseModel):
    id: int
    status: str
    decided_on: str


class IdentityOut(BaseModel):
    identity: dict[str, object]


class HoldIn(StrictModel):
    """Keep a closed case past retention until the review day (a reason is required)."""

    reason: Reason
    review_on: dt.date


class DiscardIn(StrictModel):
    reason: DiscardReason


class DiscardOut(BaseModel):
    status: str
    reason: str


class FilesAddedOut(BaseModel):
    files: list[FileOut]


class AccessStaffEventOut(BaseModel):
    actor: str  # "user:<id>" or "system"
    actor_name: str | None  # a staff member's display name; None for the service
    action: str
    occurred: str  # UTC, to the second


class AccessReporterEventOut(BaseModel):
    action: str
    day: str  # the day only: the reporter's events never carry a time


class AccessHistoryOut(BaseModel):
    staff_events: list[AccessStaffEventOut] = Field(
        description="Staff and service events on the case, newest first, one page of them."
    )
    reporter_events: list[AccessReporterEventOut] = Field(
        description="The reporter's report, messages, files, answers and send-up, by day; "
        "never their logins, reads or downloads."
    )
    page: int
    pages: int
