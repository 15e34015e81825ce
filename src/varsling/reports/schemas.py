"""API shapes of the reporter side."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from varsling.cases.models import Category

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class RecipientOut(BaseModel):
    id: int
    display_name: str


class UnitOut(BaseModel):
    id: int
    name: str
    parent_id: int | None
    kind: str
    recipients: list[RecipientOut]
    identity_custodian: bool = Field(
        description="Whether anyone on this unit's chain can ever be granted a reporter's identity."
    )


class IdentityIn(StrictModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    contact: ShortText = ""


class ReportIn(StrictModel):
    unit_id: int
    category: Category
    description: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)
    ]
    identity: IdentityIn | None = None
    excluded_recipients: list[int] = Field(default_factory=list, max_length=100)
    # Optional details the reporter pages ask for; the API accepts them too.
    when: ShortText | None = None
    where: ShortText | None = None
    involved: LongText | None = None
    witnesses: LongText | None = None
    reported_before: LongText | None = None
    desired_outcome: LongText | None = None
    on_behalf_of_someone_else: bool = False
    wants_meeting: bool = False


class CaseCodeOut(BaseModel):
    case_code: str


class ReporterSessionIn(StrictModel):
    case_code: Annotated[str, StringConstraints(max_length=100)]


class TokenOut(BaseModel):
    token: str


class MessageIn(StrictModel):
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class ReporterMessageIn(MessageIn):
    retaliation: bool = False


class MessageOut(BaseModel):
    author: Literal["reporter", "handler"]
    body: str
    sent_on: str
    retaliation: bool = False


class FileOut(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    added_on: str
    uploaded_by: str


class ReporterCaseOut(BaseModel):
    status: str
    received_on: str
    acknowledgement_due: str
    feedback_due: str
    report: dict[str, object]
    messages: list[MessageOut]
    outcome: str | None
    files: list[FileOut]
