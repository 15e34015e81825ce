"""Conflict-of-interest declarations: no case content opens to a key holder before one.

Before a handler first opens a case they see only what they need to judge a
conflict (category, unit, dates and who the reporter named as involved) and
declare: no conflict (the case opens, with their retaliation-risk
assessment) or a conflict (they recuse: their keys to the case are
destroyed, they are added to the case's exclusions so no later grant can
reach them, and when nobody would be left, their session first wraps the
case for the handlers of the unit above).

Each declaration row carries a MAC over all its fields, keyed from
configuration, so a database writer can neither forge one (to skip the gate)
nor turn a recusal into a declaration of no conflict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts.service import StaffPrincipal
from varsling.cases import exclusions, keys, manifest
from varsling.cases.models import (
    Case,
    CaseDeclaration,
    CaseKey,
    EntryKind,
    IdentityRequest,
    IdentityRequestKey,
    KeyPurpose,
    Risk,
)
from varsling.config import Settings
from varsling.errors import Conflict, InvalidInput

_KEY_LABEL = "varsling/case-declaration/v1"


class DeclarationRequired(Conflict):
    """The case's content stays closed until the caller declares (no) conflict."""

    code = "declaration_required"


class AlreadyDeclared(Conflict):
    code = "already_declared"


class DeclarationAltered(Conflict):
    """A declaration row does not match its MAC: the gate stays shut."""

    code = "declaration_altered"


class NobodyLeft(Conflict):
    """A recusal would leave nobody who can handle the case."""

    code = "nobody_left_to_handle"


def _key(settings: Settings) -> bytes:
    return crypto.hkdf(settings.secret("code_pepper"), label=_KEY_LABEL)


def _tag(
    key: bytes,
    *,
    case_id: str,
    user_id: int,
    conflict: bool,
    risk: str | None,
    declared_on: dt.date,
) -> bytes:
    message = crypto.context(
        "varsling/case-declaration",
        case_id,
        user_id,
        "conflict" if conflict else "no-conflict",
        risk or "",
        declared_on.isoformat(),
    )
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Declaration:
    conflict: bool
    risk: str | None
    declared_on: dt.date


def find(session: Session, settings: Settings, case_id: str, user_id: int) -> Declaration | None:
    """The user's declaration on the case, None if they have not declared.

    Raises DeclarationAltered when the row does not match its MAC.
    """
    row = session.get(CaseDeclaration, (case_id, user_id))
    if row is None:
        return None
    expected = _tag(
        _key(settings),
        case_id=case_id,
        user_id=user_id,
        conflict=row.conflict,
        risk=row.risk,
        declared_on=row.declared_on,
    )
    if not hmac.compare_digest(row.tag, expected):
        raise DeclarationAltered(
            "The record of your conflict-of-interest declaration on this case has been altered "
            "outside the service, so the case stays closed. Tell the administrator and auditors."
        )
    return Declaration(row.conflict, row.risk, row.declared_on)


def declared_cases(
    session: Session, user_id: int, *, case_ids: Sequence[str] | None = None
) -> set[str]:
    """Which of `case_ids` (None: of all cases) the user has a declaration row for
    (unchecked: for listings only); one query for a page of cases, however many the
    user holds."""
    if case_ids is not None and not case_ids:
        return set()
    declared = select(CaseDeclaration.case_id).where(
        CaseDeclaration.user_id == user_id, CaseDeclaration.conflict.is_(False)
    )
    if case_ids is not None:
        declared = declared.where(CaseDeclaration.case_id.in_(case_ids))
    return set(session.execute(declared).scalars())


def conflict_check(
    session: Session, case: Case, case_key: bytes, *, today: dt.date
) -> dict[str, Any]:
    """What a key holder sees before declaring: enough to judge a conflict, no more."""
    from varsling.cases import service  # the content reader; service imports this module

    reader = service.ContentReader(case_key)
    involved = service.first_entry(session, case.id, EntryKind.INVOLVED, reader)
    return {
        "id": case.id,
        "category": case.category,
        "unit_id": case.unit_id,
        "priority": case.priority,
        "received_on": case.received_on.isoformat(),
        "acknowledgement_due": case.acknowledgement_due.isoformat(),
        "feedback_due": case.feedback_due.isoformat(),
        "involved": (involved or {}).get("involved"),
    }


def require(
    session: Session, settings: Settings, principal: StaffPrincipal, case: Case
) -> Declaration:
    """The caller's declaration of no conflict; else 409 declaration_required, audited."""
    found = find(session, settings, case.id, principal.user_id)
    if found is None or found.conflict:
        raise DeclarationRequired(
            "Declare whether you have a conflict of interest in this case before it opens: "
            f"POST /api/v1/cases/{case.id}/declaration."
        ).audited(
            actor=principal.actor,
            action="case.access_refused",
            case_id=case.id,
            details={"reason": "declaration_required"},
        )
    return found


@dataclass(frozen=True)
class Recusal:
    routed_to_unit_id: int | None
    handlers_added: int


def declare(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case: Case,
    case_key: bytes,
    *,
    conflict: bool,
    risk: Risk | None,
    reason: str | None,
    today: dt.date,
) -> Recusal | None:
    """Record the caller's declaration; with a conflict, recuse them (see the module doc)."""
    if find(session, settings, case.id, principal.user_id) is not None:
        raise AlreadyDeclared("You have already declared on this case.")
    if not conflict and risk is None:
        raise InvalidInput(
            "Record your retaliation-risk assessment (low, medium or high) with the declaration."
        )
    if conflict and not reason:
        raise InvalidInput("Give the reason for your conflict of interest.")
    recusal = None
    if conflict:
        recusal = _recuse(session, settings, principal, case, case_key, reason or "", today)
    session.add(
        CaseDeclaration(
            case_id=case.id,
            user_id=principal.user_id,
            conflict=conflict,
            risk=risk.value if risk else None,
            declared_on=today,
            tag=_tag(
                _key(settings),
                case_id=case.id,
                user_id=principal.user_id,
                conflict=conflict,
                risk=risk.value if risk else None,
                declared_on=today,
            ),
        )
    )
    session.flush()
    details: dict[str, Any] = {"conflict": conflict, "risk": risk.value if risk else None}
    if recusal is not None:
        details |= {
            "routed_to_unit_id": recusal.routed_to_unit_id,
            "handlers_added": recusal.handlers_added,
            **manifest.audit_tag(session, case.id, case_key),
        }
    audit.record(
        session,
        actor=principal.actor,
        action="case.recused" if conflict else "case.declared",
        case_id=case.id,
        details=details,
    )
    return recusal


def _recuse(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case: Case,
    case_key: bytes,
    reason: str,
    today: dt.date,
) -> Recusal:
    from varsling.cases import service

    others = keys.holders(session, case.id, KeyPurpose.CASE) - {principal.user_id}
    routed_to: int | None = None
    added = 0
    if not others:
        above = keys.handlers_above(session, settings, case, leaving_out=[principal.user_id])
        if above is None:
            raise NobodyLeft(
                "Nobody else could handle this case: there is no other case handler for it, "
                "up to the national level. Ask the ethics committee to add one; until then "
                "the case stays closed to you."
            ).audited(
                actor=principal.actor,
                action="case.recusal_refused",
                case_id=case.id,
                details={"reason": "nobody_left"},
            )
        routed_to, handlers = above
        for handler in handlers:
            keys.wrap_for(
                session,
                settings.signing_public_key,
                case.id,
                handler,
                KeyPurpose.CASE,
                case_key,
                today,
            )
            added += 1
        case.handling_unit_id = routed_to
    # The reason stays with the case, for whoever handles it next.
    service.add_entry(
        session,
        case_id=case.id,
        kind=EntryKind.RECUSAL,
        key=case_key,
        payload={"body": reason},
        today=today,
        author_id=principal.user_id,
    )
    session.execute(
        delete(CaseKey).where(CaseKey.case_id == case.id, CaseKey.user_id == principal.user_id)
    )
    # The keys to the case's identity requests too: their justifications and reasons.
    session.execute(
        delete(IdentityRequestKey).where(
            IdentityRequestKey.user_id == principal.user_id,
            IdentityRequestKey.request_id.in_(
                select(IdentityRequest.id).where(IdentityRequest.case_id == case.id)
            ),
        )
    )
    exclusions.add_exclusions(session, settings, case.id, [principal.user_id])
    return Recusal(routed_to, added)
