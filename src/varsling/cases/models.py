"""Cases, their wrapped keys, exclusions and encrypted entries."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from varsling.db import Base


class Status(enum.StrEnum):
    RECEIVED = "received"
    ACKNOWLEDGED = "acknowledged"
    INVESTIGATING = "investigating"
    CONCLUDED = "concluded"
    CLOSED = "closed"


class Category(enum.StrEnum):
    SEXUAL_HARASSMENT = "sexual_harassment"
    HARASSMENT = "harassment"
    DISCRIMINATION = "discrimination"
    ABUSE_OF_POWER = "abuse_of_power"
    RETALIATION = "retaliation"
    OTHER = "other"


class Priority(enum.StrEnum):
    NORMAL = "normal"
    HIGH = "high"  # retaliation cases


class Risk(enum.StrEnum):
    """The retaliation-risk assessment a handler records at triage."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class KeyPurpose(enum.StrEnum):
    CASE = "case"  # the DEK: all case content but the identity
    IDENTITY = "identity"  # the IK: only the reporter's identity


class EntryKind(enum.StrEnum):
    REPORT = "report"
    IDENTITY = "identity"
    REPORTER_MESSAGE = "reporter_message"
    HANDLER_MESSAGE = "handler_message"
    NOTE = "note"
    OUTCOME = "outcome"
    # The report's `involved` field again, alone: what a handler reads to judge
    # a conflict of interest before declaring (cases/declarations.py).
    INVOLVED = "involved"
    RECUSAL = "recusal"  # why a handler stepped aside (a conflict of interest)
    HOLD = "hold"  # a retention hold's reason
    CHECKIN_ANSWER = "checkin_answer"  # the reporter's answer to a check-in
    # A handler's request to see the identity: its justification, for the case's handlers.
    IDENTITY_REQUEST = "identity_request"


# The case list's indexes on case_keys, each after (user_id, purpose, key_version):
# the list's order (priority, received_on, case_id) alone or behind one filter's
# column, then every other filter column, so that any mix of filters is answered
# from one index without reading a case or a key row.
LIST_INDEXES: dict[str, tuple[str, ...]] = {
    "ix_case_keys_list": (
        "priority",
        "received_on",
        "case_id",
        "status",
        "unit_id",
        "category",
        "late_from",
    ),
    "ix_case_keys_list_status": (
        "status",
        "priority",
        "received_on",
        "case_id",
        "unit_id",
        "category",
        "late_from",
    ),
    "ix_case_keys_list_unit": (
        "unit_id",
        "priority",
        "received_on",
        "case_id",
        "status",
        "category",
        "late_from",
    ),
    "ix_case_keys_list_category": (
        "category",
        "priority",
        "received_on",
        "case_id",
        "status",
        "unit_id",
        "late_from",
    ),
}


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    # A coarse code for statistics; all content is sealed in entries.
    category: Mapped[str] = mapped_column(String(30))
    received_on: Mapped[dt.date] = mapped_column(Date)
    acknowledged_on: Mapped[dt.date | None] = mapped_column(Date)
    concluded_on: Mapped[dt.date | None] = mapped_column(Date)
    closed_on: Mapped[dt.date | None] = mapped_column(Date)
    acknowledgement_due: Mapped[dt.date] = mapped_column(Date)
    feedback_due: Mapped[dt.date] = mapped_column(Date)
    # Every entry and file of the case, sealed as a set under the case key
    # (cases/manifest.py); None for a case from before manifests.
    sealed_manifest: Mapped[bytes | None] = mapped_column(LargeBinary)
    priority: Mapped[str] = mapped_column(
        String(10), default=Priority.NORMAL.value, server_default=Priority.NORMAL.value
    )
    # The unit whose handlers received the case (routing may go up from unit_id);
    # None for cases from before it was kept: then unit_id. No foreign key: adding
    # one would make SQLite rebuild the cases table, and the rebuild's DROP would
    # cascade into every table that refers to cases.
    handling_unit_id: Mapped[int | None] = mapped_column(Integer)
    # A retaliation case: the case it was reported on (no foreign key: that case
    # may be deleted while this one lives).
    linked_case_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # A retention hold keeps a closed case until this day; its reason is a sealed entry.
    hold_review_on: Mapped[dt.date | None] = mapped_column(Date)
    # The reporter sent the unacknowledged case to the level above on this day.
    escalated_on: Mapped[dt.date | None] = mapped_column(Date)


class CaseKey(Base):
    """A case key wrapped (HPKE) for one user's public key."""

    __tablename__ = "case_keys"
    __table_args__ = (
        UniqueConstraint("case_id", "user_id", "purpose"),
        # The case list (cases/service.list_cases) reads a page and its count from one
        # of these.
        *(
            Index(name, "user_id", "purpose", "key_version", *columns)
            for name, columns in LIST_INDEXES.items()
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    granted_on: Mapped[dt.date] = mapped_column(Date)
    # The recipient's key version this was wrapped for; bound into the HPKE `info`
    # (cases/keys.py), so changing it makes the row unreadable, not current. A row
    # for an older version than the user's certified one is access pending re-grant.
    key_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Copies of the case's list columns, kept by database triggers (migration 0015)
    # on every insert of a key and every update of its case; the application never
    # writes them. late_from: the earliest deadline not yet met (None: none open);
    # the case is overdue on any day after it.
    status: Mapped[str | None] = mapped_column(String(20))
    unit_id: Mapped[int | None] = mapped_column(Integer)
    category: Mapped[str | None] = mapped_column(String(30))
    priority: Mapped[str | None] = mapped_column(String(10))
    received_on: Mapped[dt.date | None] = mapped_column(Date)
    late_from: Mapped[dt.date | None] = mapped_column(Date)


class RecoveryKey(Base):
    """The organisation's recovery public key (the private half is kept offline).

    `certificate` is the installation signing key's signature over the id and
    the key (its own domain): nothing is wrapped for a key whose certificate fails.
    """

    __tablename__ = "recovery_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    created_on: Mapped[dt.date] = mapped_column(Date)


class RecoveryWrap(Base):
    """A case's key (DEK or IK) wrapped (HPKE) for the recovery public key."""

    __tablename__ = "recovery_wraps"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(String(20), primary_key=True)
    recovery_key_id: Mapped[int] = mapped_column(ForeignKey("recovery_keys.id"), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)


class CaseExclusion(Base):
    """The users named as involved in a case: never given a key to it, now or later.

    One row per case, written when the case is made (also when nobody is left
    out). `digests` holds a keyed hash per excluded user, HMAC(key, case id,
    user id), so the row does not name them; `tag` is a keyed MAC over the
    case id and all digests, so a database writer can neither drop an
    exclusion nor the row without it being noticed (see cases/exclusions.py).
    """

    __tablename__ = "case_exclusions"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    digests: Mapped[bytes] = mapped_column(LargeBinary)
    tag: Mapped[bytes] = mapped_column(LargeBinary)


class ReporterAccess(Base):
    """The case's keys sealed under the key derived from the reporter's case code."""

    __tablename__ = "reporter_access"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    lookup: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    code_params: Mapped[str] = mapped_column(String(100), index=True)
    sealed_keys: Mapped[bytes] = mapped_column(LargeBinary)


class CaseEntry(Base):
    """One sealed piece of case content: the report, identity, a message, a note."""

    __tablename__ = "case_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_on: Mapped[dt.date] = mapped_column(Date)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    """A file sealed in chunks with the case key; name and type are sealed too."""

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    # The report or message the file came with.
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("case_entries.id", ondelete="CASCADE"))
    uploaded_by: Mapped[str] = mapped_column(String(20))  # "reporter" or "handler"
    created_on: Mapped[dt.date] = mapped_column(Date)
    size_bytes: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    sealed_meta: Mapped[bytes] = mapped_column(LargeBinary)


class AttachmentChunk(Base):
    __tablename__ = "attachment_chunks"

    attachment_id: Mapped[str] = mapped_column(
        ForeignKey("attachments.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class CaseDeclaration(Base):
    """A key holder's conflict-of-interest declaration and retaliation-risk assessment.

    Until a row for them exists, the case's content stays closed to them.
    `tag` is a MAC keyed from configuration over every field, so a database
    writer can neither forge a declaration nor turn a recusal into consent.
    """

    __tablename__ = "case_declarations"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    conflict: Mapped[bool] = mapped_column(Boolean)
    risk: Mapped[str | None] = mapped_column(String(10))
    declared_on: Mapped[dt.date] = mapped_column(Date)
    tag: Mapped[bytes] = mapped_column(LargeBinary)


class IdentityRequest(Base):
    """A handler's request to see the reporter's identity, and a custodian's decision.

    The justification and the decision's reason are sealed under a request
    key wrapped for the requester and the case's identity custodians
    (IdentityRequestKey); the notice to the reporter is sealed under the
    identity key, which the reporter holds.
    """

    __tablename__ = "identity_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(10))  # pending, approved, refused
    requested_on: Mapped[dt.date] = mapped_column(Date)
    decided_on: Mapped[dt.date | None] = mapped_column(Date)
    decider_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    sealed_request: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_decision: Mapped[bytes | None] = mapped_column(LargeBinary)
    sealed_notice: Mapped[bytes | None] = mapped_column(LargeBinary)


class IdentityRequestKey(Base):
    """An identity request's key wrapped (HPKE) for one user."""

    __tablename__ = "identity_request_keys"

    request_id: Mapped[int] = mapped_column(
        ForeignKey("identity_requests.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)


class ReporterLink(Base):
    """A case the reporter opened from their first one (a retaliation case).

    Its keys are sealed under a key derived from the reporter's case code, and
    `lookup` is derived from that key too: nothing in the clear says which
    case the reporter came from.
    """

    __tablename__ = "reporter_links"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    lookup: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    sealed_keys: Mapped[bytes] = mapped_column(LargeBinary)


class CheckIn(Base):
    """A question in the reporter's inbox after a case is concluded: any negative
    consequences? One per case and round (months after concluding)."""

    __tablename__ = "checkins"
    __table_args__ = (UniqueConstraint("case_id", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    sent_on: Mapped[dt.date] = mapped_column(Date)
    answered_on: Mapped[dt.date | None] = mapped_column(Date)


class OverdueFlag(Base):
    """A deadline a case passed, flagged once by `varsling jobs run`."""

    __tablename__ = "overdue_flags"

    case_id: Mapped[str] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    deadline: Mapped[str] = mapped_column(String(20), primary_key=True)
    flagged_on: Mapped[dt.date] = mapped_column(Date)
