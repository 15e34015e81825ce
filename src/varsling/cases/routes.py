"""Handler API: cases the caller holds a key for; anything else is 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit
from varsling.accounts.service import utcnow
from varsling.authz import Staff
from varsling.cases import attachments, service
from varsling.cases.models import Attachment
from varsling.cases.schemas import CaseListOut, CaseOut, CaseSummaryOut, NoteIn, StatusIn
from varsling.db import DbSession
from varsling.errors import NotFound
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


def download_response(
    session: Session, maker: sessionmaker[Session], attachment: Attachment, key: bytes
) -> StreamingResponse:
    """A file as an opaque download, never rendered inline, whatever type it claims.

    Every chunk is checked (in the request's transaction) before the first
    byte goes out, so a tampered or cut-off file is an error, never a
    partial download; the stream then reads chunk by chunk on its own.
    """
    name = attachments.describe(attachment, key)["name"]
    for _ in attachments.decrypted_chunks(attachments.reader_in(session), attachment, key):
        pass
    chunks: Iterator[bytes] = attachments.decrypted_chunks(
        attachments.reader_with_own_transactions(maker), attachment, key
    )
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "Content-Length": str(attachment.size_bytes),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "no-store",
        },
    )


@router.get("/{case_id}/files/{file_id}", response_class=StreamingResponse)
def download_file(
    case_id: str, file_id: str, principal: Staff, session: DbSession, request: Request
) -> StreamingResponse:
    opened = service.open_case(session, principal, case_id)
    attachment = attachments.find(session, case_id, file_id)
    if attachment is None:
        raise NotFound("No such file.")
    audit.record(
        session,
        actor=principal.actor,
        action="case.file_downloaded",
        case_id=case_id,
        details={"file_id": file_id},
    )
    return download_response(session, request.app.state.sessionmaker, attachment, opened.key)
