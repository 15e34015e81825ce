"""Reprisal protection on the reporter's side: retaliation cases, sending an
unanswered case up, and answering check-ins.

A retaliation case is a new case linked to the reporter's first one. The
reporter's session wraps its keys for the first case's current handlers,
the handlers of the unit above, and the identity custodians of the chain;
the first case's exclusions are carried over. The reporter follows it with
the same case code: its keys are sealed under the *link key*, derived from
the case-code key at login (reports/service.py) and nowhere stored, in a
ReporterLink row whose `lookup` is an HMAC under that key too. So neither a
handler nor a database holder can open the link, and nothing in the clear
but Case.linked_case_id (which the handlers need) says which case a
retaliation case came from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts.models import Role, User, UserRole
from varsling.accounts.service import members_by_unit, unit_chain, utcnow
from varsling.cases import attachments, exclusions, keys, manifest, recovery
from varsling.cases import service as cases
from varsling.cases.models import (
    Case,
    Category,
    CheckIn,
    EntryKind,
    KeyPurpose,
    Priority,
    ReporterLink,
    Status,
)
from varsling.config import Settings
from varsling.errors import Conflict, NotFound, Unauthenticated
from varsling.notifications import service as notifications
from varsling.notifications.models import NoticeKind
from varsling.reports import service
from varsling.reports.routing import custodians_on_chain
from varsling.reports.service import ReporterPrincipal

_LOOKUP_LABEL = b"varsling/reporter-link/lookup"
_REF_LABEL = "varsling/reporter-link/ref"
_LINK_CONTEXT = "varsling/reporter-link"
REF_CHARS = 16
_REF = re.compile(f"[0-9a-f]{{{REF_CHARS}}}")


class LoginAgain(Unauthenticated):
    """The session was opened before link keys existed: it cannot open linked cases."""

    code = "login_again"


class NotYetDue(Conflict):
    code = "acknowledgement_not_yet_due"


class AlreadyAcknowledged(Conflict):
    code = "already_acknowledged"


class RecentlySentUp(Conflict):
    code = "recently_sent_up"


class NoLevelAbove(Conflict):
    code = "no_level_above"


class AlreadyAnswered(Conflict):
    code = "already_answered"


class NobodyToReceive(Conflict):
    code = "nobody_to_receive"


def _link_key(principal: ReporterPrincipal) -> bytes:
    if principal.link_key is None:
        raise LoginAgain(
            "This session was opened before linked cases existed. Log in again with your case code."
        )
    return principal.link_key


def link_lookup(link_key: bytes) -> bytes:
    return hmac.new(link_key, _LOOKUP_LABEL, hashlib.sha256).digest()


def reference(link_key: bytes, case_id: str) -> str:
    """The reporter's name for a linked case: opaque without the link key, so an
    address in the browser's history names no case in the database."""
    message = crypto.context(_REF_LABEL, case_id)
    return hmac.new(link_key, message, hashlib.sha256).hexdigest()[:REF_CHARS]


def _link_context(case_id: str) -> bytes:
    return crypto.context(_LINK_CONTEXT, case_id)


# --------------------------------------------------------------------------
# The reporter's family of cases


@dataclass(frozen=True)
class LinkedCase:
    reference: str
    case: Case
    case_key: bytes
    identity_key: bytes


def linked_cases(session: Session, principal: ReporterPrincipal) -> list[LinkedCase]:
    """The cases the reporter opened from their first one, oldest first.

    A link that does not open (altered or copied from another reporter) is left out.
    """
    link_key = _link_key(principal)
    rows = session.execute(
        select(ReporterLink, Case)
        .join(Case, Case.id == ReporterLink.case_id)
        .where(ReporterLink.lookup == link_lookup(link_key))
        .order_by(Case.received_on, Case.id)
    ).all()
    found = []
    for link, case in rows:
        try:
            opened = crypto.open_sealed(link_key, link.sealed_keys, context=_link_context(case.id))
        except crypto.CryptoError:
            continue
        k = crypto.KEY_BYTES
        found.append(LinkedCase(reference(link_key, case.id), case, opened[:k], opened[k : 2 * k]))
    return found


def linked_principal(session: Session, principal: ReporterPrincipal, ref: str) -> ReporterPrincipal:
    """The reporter acting on one of their linked cases; 404 for anything else."""
    if principal.first_case_id is not None or not _REF.fullmatch(ref):
        raise NotFound("No such case.")
    for linked in linked_cases(session, principal):
        if hmac.compare_digest(linked.reference, ref):
            return ReporterPrincipal(
                linked.case.id,
                linked.case_key,
                linked.identity_key,
                link_key=principal.link_key,
                first_case_id=principal.case_id,
            )
    raise NotFound("No such case.")


# --------------------------------------------------------------------------
# Retaliation cases


@dataclass(frozen=True)
class RetaliationCase:
    case_id: str
    reference: str


def _excluded_on(session: Session, settings: Settings, case_id: str) -> list[int]:
    """Every handler and custodian account (any unit, active or not) excluded from a case.

    Wider than the case's unit chain, so someone who moved unit stays excluded.
    """
    candidates = session.execute(
        select(User.id)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role.in_([Role.HANDLER.value, Role.CUSTODIAN.value]))
        .distinct()
    ).scalars()
    return sorted(u for u in candidates if exclusions.is_excluded(session, settings, case_id, u))


def _receivers(session: Session, settings: Settings, first: Case) -> tuple[int, list[User]]:
    """The handling unit and handlers of a retaliation case on `first`: its current
    handlers plus the unit above's; when none is left, the nearest on its chain."""
    holders = keys.holders(session, first.id, KeyPurpose.CASE)
    current = [u for u in (session.get(User, i) for i in sorted(holders)) if u is not None]
    # A current holder who is no handler any more (or a granted custodian) keeps
    # their access to the first case but is not routed a new one.
    current = [u for u in current if Role.HANDLER.value in u.role_names]
    receivers = {u.id: u for u in keys.eligible(session, settings, first.id, current)}
    unit_id = keys.handling_unit(first)
    above = keys.handlers_above(session, settings, first, leaving_out=receivers)
    if above is not None:
        receivers |= {u.id: u for u in above[1]}
        if not current:
            unit_id = above[0]
    if receivers:
        return unit_id, list(receivers.values())
    chain = unit_chain(session, first.unit_id)
    by_unit = members_by_unit(session, [u.id for u in chain], Role.HANDLER)
    for unit in chain:
        found = keys.eligible(session, settings, first.id, by_unit.get(unit.id, []))
        if found:
            return unit.id, found
    raise NobodyToReceive(
        "No case handler can receive a report of retaliation on this case right now. "
        "Write to the case handlers in your case, or contact the ethics committee directly."
    )


def open_retaliation_case(
    session: Session,
    settings: Settings,
    principal: ReporterPrincipal,
    *,
    body: str | None,
    today: dt.date | None = None,
    prepared: service.PreparedCase | None = None,
    files: Iterable[attachments.SealedFile] = (),
    checkin_round: int | None = None,
) -> RetaliationCase:
    """Open a high-priority retaliation case linked to the reporter's first case.

    Works from a linked case too (then it links to the first case) and at any
    time, also long after the first case closed, as long as it exists.
    """
    today = today or utcnow().date()
    link_key = _link_key(principal)
    first_id = principal.first_case_id or principal.case_id
    # Locked (key share) so that retention cannot delete the first case under a new link.
    first = session.get(Case, first_id, with_for_update={"key_share": True})
    if first is None:
        raise NotFound("This case no longer exists.")
    verifying_key = settings.signing_public_key
    unit_id, handlers = _receivers(session, settings, first)
    custodians = keys.eligible(
        session,
        settings,
        first.id,
        custodians_on_chain(session, first.unit_id, verifying_key=verifying_key),
    )
    excluded = _excluded_on(session, settings, first.id)

    prepared = prepared or service.PreparedCase.new()
    case_id, case_key = prepared.case_id, prepared.case_key
    identity_key = crypto.new_key()
    acknowledgement_due = today + dt.timedelta(days=settings.retaliation_acknowledgement_days)
    session.add(
        Case(
            id=case_id,
            unit_id=first.unit_id,
            status=Status.RECEIVED.value,
            category=Category.RETALIATION.value,
            priority=Priority.HIGH.value,
            received_on=today,
            acknowledgement_due=acknowledgement_due,
            feedback_due=cases.add_months(
                acknowledgement_due, settings.retaliation_feedback_months
            ),
            handling_unit_id=unit_id,
            linked_case_id=first.id,
        )
    )
    session.flush()
    exclusions.record_exclusions(session, settings, case_id, excluded)
    # Asked again on the new case: its exclusions are now the first case's.
    handlers = keys.eligible(session, settings, case_id, handlers)
    custodians = keys.eligible(session, settings, case_id, custodians)
    for handler in handlers:
        keys.wrap_for(session, verifying_key, case_id, handler, KeyPurpose.CASE, case_key, today)
    for custodian in custodians:
        keys.wrap_for(
            session, verifying_key, case_id, custodian, KeyPurpose.IDENTITY, identity_key, today
        )
    notifications.enqueue(
        session,
        settings,
        kind=NoticeKind.RETALIATION,
        unit_id=unit_id,
        recipients=handlers,
        today=today,
    )
    recovery.wrap_for_recovery(
        session,
        settings,
        case_id,
        case_key=case_key,
        identity_key=identity_key,
        actor=audit.REPORTER,
    )
    session.add(
        ReporterLink(
            case_id=case_id,
            lookup=link_lookup(link_key),
            sealed_keys=crypto.seal(
                link_key, case_key + identity_key, context=_link_context(case_id)
            ),
        )
    )
    payload: dict[str, Any] = {"category": Category.RETALIATION.value}
    if body:
        payload["description"] = body
    if checkin_round is not None:
        payload["checkin_round"] = checkin_round
    identity = cases.first_entry(
        session,
        principal.case_id,
        EntryKind.IDENTITY,
        cases.ContentReader(principal.identity_key),
    )
    stored_files, manifest_tag = service.seal_new_content(
        session,
        case_id=case_id,
        case_key=case_key,
        identity_key=identity_key,
        report=payload,
        identity=identity,
        files=files,
        today=today,
    )
    audit.record(
        session,
        actor=audit.REPORTER,
        action="case.retaliation_opened",
        case_id=case_id,
        details={
            "linked_case_id": first.id,
            "routed_to_unit_id": unit_id,
            "recipients": len(handlers),
            "custodians": len(custodians),
            "excluded_count": len(excluded),
            "with_identity": identity is not None,
            "files": len(stored_files),
            "from_checkin": checkin_round is not None,
            **manifest_tag,
        },
    )
    audit.record(
        session,
        actor=audit.REPORTER,
        action="reporter.retaliation_reported",
        case_id=first.id,
        details={"retaliation_case_id": case_id},
    )
    return RetaliationCase(case_id, reference(link_key, case_id))


# --------------------------------------------------------------------------
# Sending an unacknowledged case to the level above


def _acknowledgement_days(case: Case) -> int:
    return max(1, (case.acknowledgement_due - case.received_on).days)


@dataclass(frozen=True)
class SendUp:
    allowed: bool
    refusal: Conflict | None
    unit_id: int | None = None
    handlers: tuple[User, ...] = ()


def check_send_up(session: Session, settings: Settings, case: Case, today: dt.date) -> SendUp:
    """Whether the reporter may send the case to the level above today, and to whom."""
    if case.acknowledged_on is not None or case.status != Status.RECEIVED.value:
        return SendUp(
            False,
            AlreadyAcknowledged(
                "The case handlers have confirmed that they received your case, so it is not "
                "sent to the level above."
            ),
        )
    if today <= case.acknowledgement_due:
        return SendUp(
            False,
            NotYetDue(
                "The case handlers still have time to confirm that they received your case: "
                f"until {case.acknowledgement_due.isoformat()}."
            ),
        )
    if case.escalated_on is not None and today <= case.escalated_on + dt.timedelta(
        days=_acknowledgement_days(case)
    ):
        return SendUp(
            False,
            RecentlySentUp(
                "You sent this case to the level above recently; they have "
                f"{_acknowledgement_days(case)} days to confirm it before it can go further."
            ),
        )
    holders = keys.holders(session, case.id, KeyPurpose.CASE)
    above = keys.handlers_above(session, settings, case, leaving_out=holders)
    if above is None:
        return SendUp(
            False,
            NoLevelAbove(
                "There is no level above that can receive your case. Write to the case "
                "handlers in your case, or contact the ethics committee directly."
            ),
        )
    return SendUp(True, None, above[0], tuple(above[1]))


def send_up(
    session: Session,
    settings: Settings,
    principal: ReporterPrincipal,
    *,
    today: dt.date | None = None,
) -> SendUp:
    """Wrap the case key, from the reporter's session, for the handlers of the level
    above; refused (409, audited) before the deadline, after acknowledgement, or
    when there is nobody above."""
    today = today or utcnow().date()
    case = session.get(Case, principal.case_id)
    if case is None:
        raise NotFound("This case no longer exists.")
    checked = check_send_up(session, settings, case, today)
    if checked.refusal is not None:
        raise checked.refusal.audited(
            actor=audit.REPORTER,
            action="reporter.send_up_refused",
            case_id=case.id,
            details={"reason": checked.refusal.code},
        )
    assert checked.unit_id is not None  # noqa: S101 (allowed implies a level above)
    from_unit = keys.handling_unit(case)
    for handler in checked.handlers:
        keys.wrap_for(
            session,
            settings.signing_public_key,
            case.id,
            handler,
            KeyPurpose.CASE,
            principal.case_key,
            today,
        )
    case.handling_unit_id = checked.unit_id
    case.escalated_on = today
    session.flush()
    notifications.enqueue(
        session,
        settings,
        kind=NoticeKind.NEW_CASE,
        unit_id=checked.unit_id,
        recipients=checked.handlers,
        today=today,
    )
    audit.record(
        session,
        actor=audit.REPORTER,
        action="reporter.case_sent_up",
        case_id=case.id,
        details={
            "from_unit_id": from_unit,
            "to_unit_id": checked.unit_id,
            "handlers_added": len(checked.handlers),
        },
    )
    return checked


# --------------------------------------------------------------------------
# Check-ins


def checkins(session: Session, case_id: str) -> list[CheckIn]:
    return list(
        session.execute(
            select(CheckIn).where(CheckIn.case_id == case_id).order_by(CheckIn.round)
        ).scalars()
    )


def answer_checkin(
    session: Session,
    settings: Settings,
    principal: ReporterPrincipal,
    checkin_id: int,
    *,
    negative_consequences: bool,
    details: str | None,
    today: dt.date | None = None,
) -> RetaliationCase | None:
    """Seal the reporter's answer for the handlers, once; "yes" opens a retaliation case."""
    today = today or utcnow().date()
    checkin = session.get(CheckIn, checkin_id)
    if checkin is None or checkin.case_id != principal.case_id:
        raise NotFound("No such question.")
    if negative_consequences:
        _link_key(principal)  # before anything changes
    if checkin.answered_on is not None:
        raise AlreadyAnswered("You have already answered this question.")
    # Only one answer wins, also when two arrive at once.
    answered = session.execute(
        update(CheckIn)
        .where(CheckIn.id == checkin.id, CheckIn.answered_on.is_(None))
        .values(answered_on=today)
        .execution_options(synchronize_session=False)
    )
    if answered.rowcount != 1:  # type: ignore[attr-defined]
        raise AlreadyAnswered("You have already answered this question.")
    session.refresh(checkin)
    cases.add_entry(
        session,
        case_id=principal.case_id,
        kind=EntryKind.CHECKIN_ANSWER,
        key=principal.case_key,
        payload={
            "checkin_id": checkin.id,
            "round": checkin.round,
            "negative_consequences": negative_consequences,
            "details": details,
        },
        today=today,
    )
    audit.record(
        session,
        actor=audit.REPORTER,
        action="reporter.checkin_answered",
        case_id=principal.case_id,
        details={
            "checkin_id": checkin.id,
            "round": checkin.round,
            **manifest.audit_tag(session, principal.case_id, principal.case_key),
        },
    )
    if not negative_consequences:
        return None
    return open_retaliation_case(
        session, settings, principal, body=details, today=today, checkin_round=checkin.round
    )


# --------------------------------------------------------------------------
# What the reporter sees


def reporter_view(
    session: Session,
    settings: Settings,
    principal: ReporterPrincipal,
    *,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """The reporter's case (reports/service.reporter_case) with its linked cases,
    check-in questions and whether it can be sent to the level above."""
    today = today or utcnow().date()
    answer = service.reporter_case(session, principal)
    case = session.get(Case, principal.case_id)
    assert case is not None  # noqa: S101 (reporter_case found it)
    family = (
        linked_cases(session, principal)
        if principal.first_case_id is None and principal.link_key is not None
        else []
    )
    answer["linked_cases"] = [
        {
            "reference": linked.reference,
            "category": linked.case.category,
            "status": linked.case.status,
            "received_on": linked.case.received_on.isoformat(),
            "acknowledgement_due": linked.case.acknowledgement_due.isoformat(),
            "feedback_due": linked.case.feedback_due.isoformat(),
        }
        for linked in family
    ]
    answer["checkins"] = [
        {
            "id": c.id,
            "round": c.round,
            "sent_on": c.sent_on.isoformat(),
            "answered_on": c.answered_on.isoformat() if c.answered_on else None,
        }
        for c in checkins(session, case.id)
    ]
    answer["can_send_up"] = check_send_up(session, settings, case, today).allowed
    answer["sent_up_on"] = case.escalated_on.isoformat() if case.escalated_on else None
    answer["category"] = case.category
    return answer
