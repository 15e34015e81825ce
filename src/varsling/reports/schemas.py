"""API shapes of the reporter side."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from varsling.cases.models import Category

# The longest texts accepted; the report form's `maxlength` attributes say the same.
SHORT_TEXT_CHARS = 500
LONG_TEXT_CHARS = 20_000
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=SHORT_TEXT_CHARS)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=LONG_TEXT_CHARS)]


# Database ids: refused (422) before they could overflow a column (500).
Id = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(v) or _has_nul(k) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class StrictModel(BaseModel):
    """Unknown fields refused, no silent type coercion, no NUL characters."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: object) -> object:
        if _has_nul(data):
            raise ValueError("text may not contain NUL characters")
        return data


class RecipientOut(BaseModel):
    id: int
    display_name: str


class UnitOut(BaseModel):
    id: int
    name: str
    parent_id: int | None
    kind: str
    recipients: list[RecipientOut]
    custodians: list[RecipientOut] = Field(
        description="The identity custodians who would hold the identity key of a report made "
        "here (this unit's and every unit's above). Each may be named in excluded_recipients."
    )
    identity_custodian: bool = Field(
        description="Whether anyone on this unit's chain can ever be granted a reporter's identity."
    )


class IdentityIn(StrictModel):
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=SHORT_TEXT_CHARS)
    ]
    contact: ShortText = ""


class ReportIn(StrictModel):
    unit_id: Id
    category: Category
    description: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=LONG_TEXT_CHARS)
    ]
    identity: IdentityIn | None = None
    excluded_recipients: list[Id] = Field(
        default_factory=list,
        max_length=100,
        description="Case handlers and identity custodians to leave out (conflict of interest): "
        "they never receive a key to the case.",
    )
    # Optional details the reporter pages ask for; the API accepts them too.
    when: ShortText | None = None
    where: ShortText | None = None
    involved: LongText | None = None
    witnesses: LongText | None = None
    reported_before: LongText | None = None
    desired_outcome: LongText | None = None
    on_behalf_of_someone_else: StrictBool = False
    wants_meeting: StrictBool = False


# The report's own fields, sealed together as the report entry (identity apart).
REPORT_TEXT_FIELDS = (
    "description",
    "when",
    "where",
    "involved",
    "witnesses",
    "reported_before",
    "desired_outcome",
)
REPORT_FLAGS = ("on_behalf_of_someone_else", "wants_meeting")
REPORT_FIELDS = (*REPORT_TEXT_FIELDS, *REPORT_FLAGS)


class CaseCodeOut(BaseModel):
    case_code: str = Field(
        description="The only way back to the case: shown once, never stored. Keep it private."
    )
    receipt: str = Field(
        description="A signed receipt, a short text block to keep apart from the case code: "
        "it proves that this installation received a report on that day, without revealing "
        "the content or the case. It holds the day, an HMAC-SHA256 of what was submitted "
        "keyed from the case key, the signing key's fingerprint and an Ed25519 signature. "
        "Check it offline with `varsling receipt verify FILE --public-key FILE`."
    )


class ReporterSessionIn(StrictModel):
    case_code: Annotated[str, StringConstraints(max_length=100)]


class TokenOut(BaseModel):
    token: str


class MessageIn(StrictModel):
    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class ReporterMessageIn(MessageIn):
    retaliation: StrictBool = False


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


class IntegrityOut(BaseModel):
    """Whether every entry and file of the case is there as written (cases/manifest.py)."""

    ok: bool
    problem: str | None = Field(
        description="What was found wrong, e.g. entry_missing, file_changed, "
        "manifest_rolled_back; not_yet_protected for a case from before manifests "
        "until its next write."
    )


class LinkedCaseOut(BaseModel):
    """A case the reporter opened from this one (a retaliation case)."""

    reference: str = Field(
        description="The reporter's own name for the case: GET /api/v1/reporter/cases/{reference}."
    )
    category: str
    status: str
    received_on: str
    acknowledgement_due: str
    feedback_due: str


class CheckInOut(BaseModel):
    """A question after the case was concluded: any negative consequences since?"""

    id: int
    round: int = Field(description="Months after the case was concluded.")
    sent_on: str
    answered_on: str | None


class IdentityNoticeOut(BaseModel):
    """A case handler was allowed to see the reporter's identity: when, and why."""

    decided_on: str
    reason: str


class ReporterCaseOut(BaseModel):
    status: str
    category: str
    received_on: str
    acknowledgement_due: str
    feedback_due: str
    report: dict[str, object]
    messages: list[MessageOut]
    outcome: str | None
    files: list[FileOut]
    identity_notices: list[IdentityNoticeOut]
    integrity: IntegrityOut
    linked_cases: list[LinkedCaseOut] = Field(
        description="Retaliation cases opened from this case (empty when reading a linked case)."
    )
    checkins: list[CheckInOut]
    can_send_up: bool = Field(
        description="Whether the case may be sent to the level above now: the acknowledgement "
        "deadline has passed unacknowledged and a unit above has handlers who can receive it."
    )
    sent_up_on: str | None


class RetaliationIn(StrictModel):
    body: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=LONG_TEXT_CHARS)
    ]


class RetaliationOut(BaseModel):
    status: Literal["opened"]
    reference: str = Field(description="The new case's reference among the reporter's cases.")


class CheckInAnswerIn(StrictModel):
    negative_consequences: StrictBool
    details: LongText | None = None


class CheckInAnswerOut(BaseModel):
    status: Literal["answered"]
    retaliation_reference: str | None = Field(
        description="The retaliation case a yes opened, among the reporter's cases."
    )


class SendUpOut(BaseModel):
    status: Literal["sent_up"]
