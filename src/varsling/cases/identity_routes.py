"""Identity custody API: handlers ask and read, custodians decide (cases/identity.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from varsling.accounts.service import utcnow
from varsling.authz import AppSettings, Custodian, Staff
from varsling.cases import identity
from varsling.cases.schemas import (
    CustodianRequestListOut,
    IdentityDecisionIn,
    IdentityDecisionOut,
    IdentityOut,
    IdentityRequestCreatedOut,
    IdentityRequestIn,
    IdentityRequestListOut,
)
from varsling.request_transaction import DbSession

router = APIRouter(prefix="/api/v1", tags=["identity"])


@router.post(
    "/cases/{case_id}/identity-requests",
    response_model=IdentityRequestCreatedOut,
    status_code=201,
    responses={409: {"description": "no_identity, no_custodian or request_pending"}},
)
def request_identity(
    case_id: str,
    body: IdentityRequestIn,
    principal: Staff,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, Any]:
    """Ask the identity custodians to let you see who the reporter is, and say why."""
    request = identity.request_identity(
        session,
        settings,
        principal,
        case_id,
        justification=body.justification,
        today=utcnow().date(),
    )
    return {"id": request.id, "status": request.status}


@router.get("/cases/{case_id}/identity-requests", response_model=IdentityRequestListOut)
def case_requests(
    case_id: str, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    return {"items": identity.case_requests(session, settings, principal, case_id)}


@router.get(
    "/cases/{case_id}/identity",
    response_model=IdentityOut,
    responses={403: {"description": "identity_not_granted"}},
)
def read_identity(
    case_id: str, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """The reporter's identity, once a custodian approved your request; every read audited."""
    return {"identity": identity.read_identity(session, settings, principal, case_id)}


@router.get("/identity-requests", response_model=CustodianRequestListOut)
def custodian_requests(
    principal: Custodian, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """Requests waiting on cases whose identity key you hold, and those you decided."""
    return {"items": identity.custodian_requests(session, settings, principal)}


@router.post(
    "/identity-requests/{request_id}/decision",
    response_model=IdentityDecisionOut,
    responses={
        403: {"description": "second_person_required"},
        404: {"description": "not a request on a case whose identity key you hold"},
        409: {"description": "already_decided or requester_ineligible"},
    },
)
def decide(
    request_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: IdentityDecisionIn,
    principal: Custodian,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, Any]:
    """Approve (the reporter is told first, then the key is wrapped) or refuse, with a reason."""
    decision = identity.decide(
        session,
        settings,
        principal,
        request_id,
        approve=body.approve,
        reason=body.reason,
        today=utcnow().date(),
    )
    return {
        "id": decision.request_id,
        "status": decision.status,
        "decided_on": decision.decided_on.isoformat(),
    }
