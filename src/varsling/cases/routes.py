"""Handler API: cases the caller holds a key for; anything else is 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from varsling.accounts.service import utcnow
from varsling.authz import Staff
from varsling.cases import service
from varsling.cases.schemas import CaseListOut, CaseOut, CaseSummaryOut, NoteIn, StatusIn
from varsling.db import DbSession
from varsling.reports.schemas import MessageIn

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])


@router.get("", response_model=CaseListOut)
def list_cases(principal: Staff, session: DbSession) -> dict[str, Any]:
    return {"items": service.list_cases(session, principal, utcnow().date())}


@router.get("/{case_id}", response_model=CaseOut)
def read_case(case_id: str, principal: Staff, session: DbSession) -> dict[str, Any]:
    return service.read_case(session, principal, case_id, utcnow().date())


@router.post("/{case_id}/messages", status_code=201)
def write_to_reporter(
    case_id: str, body: MessageIn, principal: Staff, session: DbSession
) -> dict[str, str]:
    service.write_to_reporter(session, principal, case_id, body=body.body, today=utcnow().date())
    return {"status": "sent"}


@router.post("/{case_id}/notes", status_code=201)
def add_note(case_id: str, body: NoteIn, principal: Staff, session: DbSession) -> dict[str, str]:
    service.add_note(session, principal, case_id, body=body.body, today=utcnow().date())
    return {"status": "saved"}


@router.post("/{case_id}/status", response_model=CaseSummaryOut)
def change_status(
    case_id: str, body: StatusIn, principal: Staff, session: DbSession
) -> dict[str, Any]:
    return service.change_status(
        session,
        principal,
        case_id,
        status=body.status.value,
        outcome_text=body.outcome,
        today=utcnow().date(),
    )
