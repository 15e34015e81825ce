"""Retention: deleting cases (crypto-shredding), holds, and discarding at triage.

A deleted case's content was sealed under keys that only wrapped copies
(case_keys, identity_request_keys) and the reporter's code-sealed copy
(reporter_access, reporter_sessions, reporter_links) could open. Those go
first, then the content, then the case row, all in one transaction; the
audit trail keeps one `case.deleted` event (the day, the reason, the
category), never content. Backups keep what they held until they expire:
see SECURITY.md.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import ReporterSession
from varsling.accounts.service import StaffPrincipal
from varsling.cases import manifest, service
from varsling.cases.models import (
    Attachment,
    AttachmentChunk,
    Case,
    CaseDeclaration,
    CaseEntry,
    CaseExclusion,
    CaseKey,
    CheckIn,
    EntryKind,
    IdentityRequest,
    IdentityRequestKey,
    OverdueFlag,
    RecoveryWrap,
    ReporterAccess,
    ReporterLink,
    Status,
)
from varsling.config import Settings
from varsling.errors import Conflict, InvalidInput

# The furthest a hold may reach: a review at least this often.
HOLD_MAX_YEARS = 10
DISCARDABLE = (Status.RECEIVED, Status.ACKNOWLEDGED)


class DeletionReason(enum.StrEnum):
    RETENTION = "retention"  # closed, and the retention period has passed
    DISCARDED = "discarded"  # found manifestly out of scope at triage


class DiscardReason(enum.StrEnum):
    """Why a report was discarded at triage: codes only, never typed text."""

    NOT_A_WHISTLEBLOWING_MATTER = "not_a_whistleblowing_matter"
    DUPLICATE = "duplicate"
    TEST_OR_SPAM = "test_or_spam"


class InvalidReviewDate(InvalidInput):
    code = "invalid_review_date"


class NoHold(Conflict):
    code = "no_hold"


class NotDiscardable(Conflict):
    code = "not_discardable"


def has_linked_cases(session: Session, case_id: str) -> bool:
    """Whether a retaliation case linked to this one lives: the reporter reaches it
    with this case's code, so this case must stay while it does."""
    linked = select(Case.id).where(Case.linked_case_id == case_id).limit(1)
    return session.execute(linked).first() is not None


# --------------------------------------------------------------------------
# Deletion


def deletion_due(case: Case, settings: Settings, *, linked: bool = False) -> dt.date | None:
    """The first day `varsling jobs run` deletes the case; None while it is not closed,
    or while a retaliation case linked to it lives (`linked`).

    Retention ends `retention_months` after closing; a hold keeps the case
    through its review day, so it goes the day after at the earliest.
    """
    if case.status != Status.CLOSED.value or case.closed_on is None or linked:
        return None
    due = service.add_months(case.closed_on, settings.retention_months)
    if case.hold_review_on is not None:
        due = max(due, case.hold_review_on + dt.timedelta(days=1))
    return due


def delete_case(
    session: Session,
    case_id: str,
    *,
    reason: DeletionReason,
    actor: str,
    details: dict[str, Any] | None = None,
) -> bool:
    """Destroy the case: every key that opens it first, then its content, then the row.

    Locks the case row first (on PostgreSQL), so a concurrent writer waits and
    a second deleter finds nothing. False (and nothing audited) when the case
    is already gone. Explicit deletes in this order, although the foreign keys
    cascade: no content row may outlive a key, even for a moment in the
    transaction, and nothing depends on how a schema was migrated.
    """
    case = session.execute(
        select(Case).where(Case.id == case_id).with_for_update()
    ).scalar_one_or_none()
    if case is None:
        return False
    request_ids = select(IdentityRequest.id).where(IdentityRequest.case_id == case_id)
    attachment_ids = select(Attachment.id).where(Attachment.case_id == case_id)
    steps: list[Any] = [
        # The keys: wrapped for staff, sealed under the reporter's code and sessions.
        delete(CaseKey).where(CaseKey.case_id == case_id),
        delete(RecoveryWrap).where(RecoveryWrap.case_id == case_id),
        delete(ReporterAccess).where(ReporterAccess.case_id == case_id),
        delete(ReporterSession).where(ReporterSession.case_id == case_id),
        delete(ReporterLink).where(ReporterLink.case_id == case_id),
        delete(IdentityRequestKey).where(IdentityRequestKey.request_id.in_(request_ids)),
        # The content, and what is known about who handled it.
        delete(AttachmentChunk).where(AttachmentChunk.attachment_id.in_(attachment_ids)),
        delete(Attachment).where(Attachment.case_id == case_id),
        delete(CaseEntry).where(CaseEntry.case_id == case_id),
        update(Case).where(Case.id == case_id).values(sealed_manifest=None),
        delete(CaseExclusion).where(CaseExclusion.case_id == case_id),
        delete(CaseDeclaration).where(CaseDeclaration.case_id == case_id),
        delete(IdentityRequest).where(IdentityRequest.case_id == case_id),
        delete(CheckIn).where(CheckIn.case_id == case_id),
        delete(OverdueFlag).where(OverdueFlag.case_id == case_id),
    ]
    for statement in steps:
        session.execute(statement.execution_options(synchronize_session=False))
    facts: dict[str, Any] = {
        "reason": reason.value,
        "category": case.category,
        "received_on": case.received_on.isoformat(),
        "closed_on": case.closed_on.isoformat() if case.closed_on else None,
        **(details or {}),
    }
    session.execute(
        delete(Case).where(Case.id == case_id).execution_options(synchronize_session=False)
    )
    session.expunge(case)
    audit.record(session, actor=actor, action="case.deleted", case_id=case_id, details=facts)
    return True


def due_for_deletion(session: Session, settings: Settings, today: dt.date) -> list[str]:
    """The ids of closed cases whose retention has passed and that no hold keeps."""
    # add_months(d, n) is at least 28 * n days after d: a superset, checked exactly below.
    latest = today - dt.timedelta(days=28 * settings.retention_months)
    candidates = session.execute(
        select(Case)
        .where(
            Case.status == Status.CLOSED.value,
            Case.closed_on.is_not(None),
            Case.closed_on <= latest,
        )
        .order_by(Case.id)
    ).scalars()
    due = [c.id for c in candidates if (day := deletion_due(c, settings)) and day <= today]
    linked = set(
        session.execute(select(Case.linked_case_id).where(Case.linked_case_id.in_(due))).scalars()
    )
    return [case_id for case_id in due if case_id not in linked]


def delete_due(session: Session, settings: Settings, case_ids: list[str], today: dt.date) -> int:
    """Delete those of `case_ids` still due, skipping any another run has locked.

    `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite runs one writer at a time):
    two runs at once never both pick a case, so each is deleted and audited once.
    """
    locked = session.execute(
        select(Case).where(Case.id.in_(case_ids)).with_for_update(skip_locked=True)
    ).scalars()
    deleted = 0
    for case in list(locked):
        due = deletion_due(case, settings, linked=has_linked_cases(session, case.id))
        if due is None or due > today:
            continue  # held, or a retaliation case was linked to it, since the ids were read
        deleted += delete_case(
            session, case.id, reason=DeletionReason.RETENTION, actor=audit.SYSTEM
        )
    return deleted


# --------------------------------------------------------------------------
# Holds and discarding: a handler who opened the case


@dataclass(frozen=True)
class Hold:
    review_on: dt.date
    reason: str | None
    placed_on: dt.date | None


def current_hold(session: Session, case: Case, reader: service.ContentReader) -> Hold | None:
    """The hold in force: its review day and the reason sealed with the latest hold entry."""
    if case.hold_review_on is None:
        return None
    held = session.execute(
        select(CaseEntry)
        .where(CaseEntry.case_id == case.id, CaseEntry.kind == EntryKind.HOLD.value)
        .order_by(CaseEntry.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    payload = reader.entry(held) if held is not None else None
    return Hold(
        review_on=case.hold_review_on,
        reason=str(payload["body"]) if payload is not None else None,
        placed_on=held.created_on if held is not None else None,
    )


def hold_state(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str
) -> dict[str, Any]:
    """The hold in force (its review day and sealed reason) and the day the case will be
    deleted, for a handler who opened the case; as `read_case` tells them."""
    opened = service.open_case(session, settings, principal, case_id)
    hold = current_hold(session, opened.case, service.ContentReader(opened.key))
    return hold_answer(
        opened.case,
        settings,
        reason=hold.reason if hold else None,
        placed_on=hold.placed_on if hold else None,
        linked=has_linked_cases(session, case_id),
    )


def latest_review_day(today: dt.date) -> dt.date:
    """The furthest review day a hold placed today may have."""
    return service.add_months(today, 12 * HOLD_MAX_YEARS)


def place_hold(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    reason: str,
    review_on: dt.date,
    today: dt.date,
) -> dict[str, Any]:
    """Keep the case past retention until `review_on`; the reason is sealed as an entry."""
    opened = service.open_case(session, settings, principal, case_id)
    latest = latest_review_day(today)
    if not today < review_on <= latest:
        raise InvalidReviewDate(
            f"The review day must be after today and at most {HOLD_MAX_YEARS} years ahead "
            f"(by {latest.isoformat()})."
        ).audited(
            actor=principal.actor,
            action="case.hold_refused",
            case_id=case_id,
            details={"review_on": review_on.isoformat()},
        )
    service.add_entry(
        session,
        case_id=case_id,
        kind=EntryKind.HOLD,
        key=opened.key,
        payload={"body": reason, "review_on": review_on.isoformat()},
        today=today,
        author_id=principal.user_id,
    )
    opened.case.hold_review_on = review_on
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="case.hold_placed",
        case_id=case_id,
        details={
            "review_on": review_on.isoformat(),
            **manifest.audit_tag(session, case_id, opened.key),
        },
    )
    return hold_answer(
        opened.case,
        settings,
        reason=reason,
        placed_on=today,
        linked=has_linked_cases(session, case_id),
    )


def lift_hold(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    today: dt.date,
) -> dict[str, Any]:
    """End the hold: the case follows retention again (deleted at once if that has passed)."""
    opened = service.open_case(session, settings, principal, case_id)
    held = opened.case.hold_review_on
    if held is None:
        raise NoHold("The case has no hold to lift.")
    opened.case.hold_review_on = None
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="case.hold_lifted",
        case_id=case_id,
        details={"review_on": held.isoformat()},
    )
    return hold_answer(
        opened.case,
        settings,
        reason=None,
        placed_on=None,
        linked=has_linked_cases(session, case_id),
    )


def hold_answer(
    case: Case,
    settings: Settings,
    *,
    reason: str | None,
    placed_on: dt.date | None,
    linked: bool,
) -> dict[str, Any]:
    due = deletion_due(case, settings, linked=linked)
    hold = (
        {
            "review_on": case.hold_review_on.isoformat(),
            "reason": reason,
            "placed_on": placed_on.isoformat() if placed_on else None,
        }
        if case.hold_review_on is not None
        else None
    )
    return {"hold": hold, "deletion_due": due.isoformat() if due else None}


def discard_case(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    reason: DiscardReason,
) -> dict[str, Any]:
    """Delete a report found manifestly out of scope at triage, at once.

    Only while it is received or acknowledged. The reporter's code opens
    nothing afterwards: a handler who wants to tell the reporter why writes
    to them first (docs/design.md, "Retention").
    """
    opened = service.open_case(session, settings, principal, case_id)
    # Locked before the checks: no status change or new linked case slips in between.
    session.execute(select(Case.id).where(Case.id == case_id).with_for_update())
    session.refresh(opened.case)
    status = Status(opened.case.status)
    if has_linked_cases(session, case_id):
        raise NotDiscardable(
            "A case with a linked retaliation case cannot be discarded: the reporter follows "
            "that case with this case's code."
        ).audited(
            actor=principal.actor,
            action="case.discard_refused",
            case_id=case_id,
            details={"status": status.value, "discard_reason": reason.value, "linked": True},
        )
    if status not in DISCARDABLE:
        raise NotDiscardable(
            f"A case that is {status.value} cannot be discarded: only a received or "
            "acknowledged report can. Conclude and close it instead."
        ).audited(
            actor=principal.actor,
            action="case.discard_refused",
            case_id=case_id,
            details={"status": status.value, "discard_reason": reason.value},
        )
    delete_case(
        session,
        case_id,
        reason=DeletionReason.DISCARDED,
        actor=principal.actor,
        details={"discard_reason": reason.value, "status": status.value},
    )
    return {"status": "deleted", "reason": reason.value}
