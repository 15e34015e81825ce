"""Identity custody: a handler asks, a second person (a custodian) decides, the reporter
is told first, and only then can the handler's session hold the identity key.

- A request's justification and the decision's reason are sealed under a fresh
  request key, wrapped (HPKE, certified keys only, never for the excluded) for
  the requester, the custodians holding the case's identity key (IK) and the
  case's other key holders. The justification is also a case entry under the
  case key, kept in the case manifest, for handlers who join the case later.
- On approval the custodian's session unwraps the IK and, in one transaction,
  first seals the notice to the reporter under the IK (the reporter holds it),
  then wraps the IK for the requesting handler. The server holds no IK of its
  own: without a custodian's session nothing can be wrapped.
- A handler reads the identity only with an approved request of theirs, the IK
  wrapped for them and the reporter's notice for that approval opening under
  the IK: a database writer who deletes the notice stops the disclosure, it
  does not make it silent.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts.models import User
from varsling.accounts.service import StaffPrincipal, key_certified
from varsling.cases import declarations, exclusions, keys, manifest, service
from varsling.cases.models import (
    Case,
    CaseKey,
    EntryKind,
    IdentityRequest,
    IdentityRequestKey,
    KeyPurpose,
)
from varsling.config import Settings
from varsling.errors import Conflict, Forbidden, NotFound, VarslingError
from varsling.notifications import service as notifications
from varsling.notifications.models import NoticeKind

PENDING, APPROVED, REFUSED = "pending", "approved", "refused"
_REQUEST_PURPOSE = "identity-request"


class NoIdentity(Conflict):
    code = "no_identity"


class NoCustodian(Conflict):
    code = "no_custodian"


class RequestPending(Conflict):
    code = "request_pending"


class SecondPersonRequired(Forbidden):
    code = "second_person_required"


class AlreadyDecided(Conflict):
    code = "already_decided"


class RequesterIneligible(Conflict):
    """The requester may no longer be given the identity key."""

    code = "requester_ineligible"


class IdentityNotGranted(Forbidden):
    code = "identity_not_granted"


# --------------------------------------------------------------------------
# Sealing: each blob bound to its case, request and part


def _context(part: str, request: IdentityRequest) -> bytes:
    return crypto.context("varsling/identity-request", request.case_id, request.id, part)


def _notice_context(request: IdentityRequest) -> bytes:
    # Bound to the requester too: a notice cannot be moved to another handler's request.
    return crypto.context(
        "varsling/identity-notice", request.case_id, request.id, request.requester_id
    )


def _seal_json(key: bytes, payload: dict[str, Any], context: bytes) -> bytes:
    return crypto.seal(key, json.dumps(payload, ensure_ascii=False).encode(), context=context)


def _open_json(key: bytes, blob: bytes, context: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(crypto.open_sealed(key, blob, context=context))
    return payload


def _request_info(request: IdentityRequest, user_id: int) -> bytes:
    return crypto.wrap_info(request.case_id, f"{_REQUEST_PURPOSE}:{request.id}", f"user:{user_id}")


def _wrap_request_key(
    session: Session, settings: Settings, request: IdentityRequest, user: User, key: bytes
) -> None:
    if not key_certified(user, settings.signing_public_key):
        raise crypto.CryptoError(f"refusing to wrap for the uncertified key of user {user.id}")
    session.add(
        IdentityRequestKey(
            request_id=request.id,
            user_id=user.id,
            wrapped_key=crypto.wrap_key(key, user.public_key, info=_request_info(request, user.id)),
        )
    )


def _request_key(
    session: Session, request: IdentityRequest, principal: StaffPrincipal
) -> bytes | None:
    """The request key from the caller's session, None when it is not wrapped for them."""
    wrapped = session.get(IdentityRequestKey, (request.id, principal.user_id))
    if wrapped is None:
        return None
    try:
        return crypto.unwrap_key(
            wrapped.wrapped_key,
            principal.private_key,
            info=_request_info(request, principal.user_id),
        )
    except crypto.CryptoError:
        return None


def _held_key(session: Session, case_id: str, user_id: int, purpose: KeyPurpose) -> CaseKey | None:
    return keys.held_key(session, case_id, user_id, purpose)


def _open_part(key: bytes | None, blob: bytes | None, context: bytes) -> dict[str, Any] | None:
    if key is None or blob is None:
        return None
    try:
        return _open_json(key, blob, context)
    except (crypto.CryptoError, ValueError):
        return None


def has_identity(session: Session, case_id: str) -> bool:
    return bool(service.entries(session, case_id, EntryKind.IDENTITY))


# --------------------------------------------------------------------------
# Asking


def request_identity(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    justification: str,
    today: dt.date,
) -> IdentityRequest:
    """A handler who opened the case asks to see the reporter's identity."""
    opened = service.open_case(session, settings, principal, case_id)

    def refuse(error: VarslingError) -> VarslingError:
        return error.audited(
            actor=principal.actor,
            action="identity.request_refused",
            case_id=case_id,
            details={"reason": error.code},
        )

    if not has_identity(session, case_id):
        raise refuse(
            NoIdentity("The reporter gave no identity in this case: there is none to see.")
        )
    custodians = keys.eligible(
        session,
        settings,
        case_id,
        _users(session, keys.holders(session, case_id, KeyPurpose.IDENTITY)),
    )
    if not custodians:
        raise refuse(
            NoCustodian(
                "Nobody holds this case's identity key, so nobody can decide on a request to "
                "see it. The identity stays with the reporter."
            )
        )
    pending = session.execute(
        select(IdentityRequest.id).where(
            IdentityRequest.case_id == case_id,
            IdentityRequest.requester_id == principal.user_id,
            IdentityRequest.status == PENDING,
        )
    ).first()
    if pending is not None:
        raise refuse(
            RequestPending("You already have a request on this case waiting for a custodian.")
        )

    request = IdentityRequest(
        case_id=case_id,
        requester_id=principal.user_id,
        status=PENDING,
        requested_on=today,
        sealed_request=b"",
    )
    session.add(request)
    session.flush()
    request_key = crypto.new_key()
    request.sealed_request = _seal_json(
        request_key, {"justification": justification}, _context("request", request)
    )
    # The requester, the custodians, and the case's other key holders (who see the
    # request and its outcome); never anyone excluded or with an uncertified key.
    co_handlers = keys.eligible(
        session,
        settings,
        case_id,
        _users(session, keys.holders(session, case_id, KeyPurpose.CASE)),
    )
    readers = {u.id: u for u in [*custodians, *co_handlers]}
    readers[principal.user_id] = _users(session, {principal.user_id})[0]
    for user in readers.values():
        _wrap_request_key(session, settings, request, user, request_key)
    notifications.enqueue(
        session,
        settings,
        kind=NoticeKind.IDENTITY_REQUEST,
        unit_id=keys.handling_unit(opened.case),
        recipients=custodians,
        today=today,
    )
    service.add_entry(
        session,
        case_id=case_id,
        kind=EntryKind.IDENTITY_REQUEST,
        key=opened.key,
        payload={"request_id": request.id, "justification": justification},
        today=today,
        author_id=principal.user_id,
    )
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="identity.requested",
        case_id=case_id,
        details={
            "request_id": request.id,
            "custodians": len(custodians),
            **manifest.audit_tag(session, case_id, opened.key),
        },
    )
    return request


def _users(session: Session, user_ids: set[int]) -> list[User]:
    if not user_ids:
        return []
    return list(
        session.execute(select(User).where(User.id.in_(user_ids)).order_by(User.id)).scalars()
    )


def case_requests(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str
) -> list[dict[str, Any]]:
    """The case's identity requests, for a handler who opened it."""
    opened = service.open_case(session, settings, principal, case_id)
    reader = service.ContentReader(opened.key)
    from_entries: dict[int, str] = {}
    for entry in service.entries(session, case_id, EntryKind.IDENTITY_REQUEST):
        payload = reader.entry(entry)
        if payload is not None:
            from_entries[int(payload["request_id"])] = str(payload["justification"])
    out = []
    for request in session.execute(
        select(IdentityRequest)
        .where(IdentityRequest.case_id == case_id)
        .order_by(IdentityRequest.id)
    ).scalars():
        request_key = _request_key(session, request, principal)
        asked = _open_part(request_key, request.sealed_request, _context("request", request))
        decided = _open_part(request_key, request.sealed_decision, _context("decision", request))
        justification = asked["justification"] if asked else from_entries.get(request.id)
        out.append(
            {
                **_row(request),
                "justification": justification,
                "reason": decided["reason"] if decided else None,
            }
        )
    audit.record(
        session,
        actor=principal.actor,
        action="case.identity_requests_read",
        case_id=case_id,
        details={"requests": len(out)},
    )
    return out


def _row(request: IdentityRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "case_id": request.case_id,
        "requester_id": request.requester_id,
        "status": request.status,
        "requested_on": request.requested_on.isoformat(),
        "decided_on": request.decided_on.isoformat() if request.decided_on else None,
    }


# --------------------------------------------------------------------------
# Deciding (a custodian holding the case's identity key)


def custodian_requests(
    session: Session, settings: Settings, principal: StaffPrincipal
) -> list[dict[str, Any]]:
    """Pending requests on cases where the caller holds the identity key, and the ones
    they decided; never case content (a custodian holds no case key for it)."""
    held = select(CaseKey.case_id).where(
        CaseKey.user_id == principal.user_id, keys.current(KeyPurpose.IDENTITY)
    )
    found = session.execute(
        select(IdentityRequest, Case)
        .join(Case, Case.id == IdentityRequest.case_id)
        .where(
            or_(
                (IdentityRequest.status == PENDING) & IdentityRequest.case_id.in_(held),
                IdentityRequest.decider_id == principal.user_id,
            )
        )
        .order_by(IdentityRequest.id)
    ).all()
    out = []
    for request, case in found:
        if request.decider_id != principal.user_id and exclusions.is_excluded(
            session, settings, case.id, principal.user_id
        ):
            continue
        request_key = _request_key(session, request, principal)
        asked = _open_part(request_key, request.sealed_request, _context("request", request))
        decided = _open_part(request_key, request.sealed_decision, _context("decision", request))
        out.append(
            {
                **_row(request),
                "category": case.category,
                "unit_id": case.unit_id,
                "justification": asked["justification"] if asked else None,
                "reason": decided["reason"] if decided else None,
                "decided_by_me": request.decider_id == principal.user_id,
            }
        )
    audit.record(
        session,
        actor=principal.actor,
        action="identity.requests_listed",
        details={"requests": len(out)},
    )
    return out


@dataclass(frozen=True)
class Decision:
    request_id: int
    status: str
    decided_on: dt.date


def decide(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    request_id: int,
    *,
    approve: bool,
    reason: str,
    today: dt.date,
) -> Decision:
    """Approve or refuse a request; on approval, tell the reporter first, then wrap."""
    # Locked: a second custodian deciding at the same moment waits, then finds it decided.
    request = session.get(IdentityRequest, request_id, with_for_update=True)
    case_id = request.case_id if request is not None else None

    def refuse(error: VarslingError, why: str) -> VarslingError:
        return error.audited(
            actor=principal.actor,
            action="identity.decision_refused",
            case_id=case_id,
            details={"request_id": request_id, "reason": why},
        )

    not_found = NotFound("No such identity request for you to decide.")
    if request is None:
        raise refuse(not_found, "no_such_request")
    held = _held_key(session, request.case_id, principal.user_id, KeyPurpose.IDENTITY)
    if held is None or exclusions.is_excluded(
        session, settings, request.case_id, principal.user_id
    ):
        raise refuse(not_found, "identity_key_not_held")
    if request.requester_id == principal.user_id:
        raise refuse(
            SecondPersonRequired(
                "You asked for this yourself: another custodian must decide (a second person)."
            ),
            "second_person_required",
        )
    if request.status != PENDING:
        raise refuse(AlreadyDecided("This request has been decided already."), "already_decided")
    request_key = _request_key(session, request, principal)
    if request_key is None:
        # The request was not wrapped for this custodian: they cannot read what they decide.
        raise refuse(not_found, "request_key_not_held")

    identity_key = keys.unwrap(held, principal.private_key)
    requester = session.get(User, request.requester_id)
    if approve:
        problem = _requester_problem(session, settings, request, requester)
        if problem is not None:
            raise refuse(
                RequesterIneligible(
                    "The identity cannot be given to this handler now "
                    f"({problem.replace('_', ' ')}). Refuse the request instead."
                ),
                problem,
            )
    request.sealed_decision = _seal_json(
        request_key,
        {"approve": approve, "reason": reason, "decided_on": today.isoformat()},
        _context("decision", request),
    )
    request.decided_on = today
    request.decider_id = principal.user_id
    if approve and requester is not None:  # checked by _requester_problem
        # First the reporter's notice, under the identity key they hold ...
        request.sealed_notice = _seal_json(
            identity_key,
            {"decided_on": today.isoformat(), "reason": reason},
            _notice_context(request),
        )
        session.flush()
        # ... then the identity key for the handler, from this custodian's session.
        if _held_key(session, request.case_id, requester.id, KeyPurpose.IDENTITY) is None:
            keys.wrap_for(
                session,
                settings.signing_public_key,
                request.case_id,
                requester,
                KeyPurpose.IDENTITY,
                identity_key,
                today,
            )
    request.status = APPROVED if approve else REFUSED
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="identity.approved" if approve else "identity.refused",
        case_id=request.case_id,
        details={"request_id": request.id, "requester_id": request.requester_id},
    )
    return Decision(request.id, request.status, today)


def _requester_problem(
    session: Session, settings: Settings, request: IdentityRequest, requester: User | None
) -> str | None:
    """Why the requester may not be given the identity key now, or None."""
    if requester is None or not requester.active:
        return "requester_inactive"
    if exclusions.is_excluded(session, settings, request.case_id, requester.id):
        return "requester_excluded"
    if _held_key(session, request.case_id, requester.id, KeyPurpose.CASE) is None:
        return "requester_has_no_case_key"
    try:
        declared = declarations.find(session, settings, request.case_id, requester.id)
    except declarations.DeclarationAltered:
        declared = None
    if declared is None or declared.conflict:
        return "requester_not_declared"
    if not key_certified(requester, settings.signing_public_key):
        return "requester_key_not_certified"
    return None


# --------------------------------------------------------------------------
# Reading (the handler) and being told (the reporter)


def read_identity(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str
) -> dict[str, Any]:
    """The identity, for a handler with an approved request, the identity key wrapped for
    them and the reporter's notice in place; every read audited. Else 403."""
    service.open_case(session, settings, principal, case_id)

    def refuse(why: str) -> VarslingError:
        return IdentityNotGranted(
            "You have not been allowed to see the reporter's identity in this case. Ask for it "
            f"with a written justification: POST /api/v1/cases/{case_id}/identity-requests."
        ).audited(
            actor=principal.actor,
            action="case.identity_refused",
            case_id=case_id,
            details={"reason": why},
        )

    approved = list(
        session.execute(
            select(IdentityRequest)
            .where(
                IdentityRequest.case_id == case_id,
                IdentityRequest.requester_id == principal.user_id,
                IdentityRequest.status == APPROVED,
            )
            .order_by(IdentityRequest.id)
        ).scalars()
    )
    held = _held_key(session, case_id, principal.user_id, KeyPurpose.IDENTITY)
    if not approved:
        raise refuse("no_approved_request")
    if held is None:
        raise refuse("identity_key_not_held")
    identity_key = keys.unwrap(held, principal.private_key)
    told = [
        r
        for r in approved
        if _open_part(identity_key, r.sealed_notice, _notice_context(r)) is not None
    ]
    if not told:
        raise refuse("reporter_not_told")
    found = service.entries(session, case_id, EntryKind.IDENTITY)
    if not found:
        raise refuse("no_identity")
    reader = service.ContentReader(identity_key)
    identity = reader.entry(found[0])
    if identity is None:
        raise refuse("identity_unreadable")
    audit.record(
        session,
        actor=principal.actor,
        action="case.identity_read",
        case_id=case_id,
        details={"request_id": told[-1].id},
    )
    return identity


def reporter_notices(
    session: Session, case_id: str, identity_key: bytes
) -> tuple[list[dict[str, str]], int]:
    """The notices of approved identity requests, oldest first, and how many did not open."""
    notices, unreadable = [], 0
    for request in session.execute(
        select(IdentityRequest)
        .where(IdentityRequest.case_id == case_id, IdentityRequest.sealed_notice.is_not(None))
        .order_by(IdentityRequest.id)
    ).scalars():
        opened = _open_part(identity_key, request.sealed_notice, _notice_context(request))
        if opened is None:
            unreadable += 1
            continue
        notices.append({"decided_on": str(opened["decided_on"]), "reason": str(opened["reason"])})
    return notices, unreadable
