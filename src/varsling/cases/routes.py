"""Handler API: cases the caller holds a key for; anything else is 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit
from varsling.accounts.service import StaffPrincipal, staff_principal, utcnow
from varsling.authz import AppSettings, Staff, Token
from varsling.cases import access_history, attachments, declarations, grants, retention, service
from varsling.cases.models import Attachment
from varsling.cases.schemas import (
    AccessHistoryOut,
    CaseListOut,
    CaseOut,
    CaseSummaryOut,
    DeclarationIn,
    DeclarationOut,
    DiscardIn,
    DiscardOut,
    FilesAddedOut,
    GrantIn,
    HoldIn,
    HoldStateOut,
    NoteIn,
    StatusIn,
)
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import NotFound
from varsling.reports.schemas import MessageIn
from varsling.reports.uploads import ParsedForm, read_multipart
from varsling.request_transaction import DbSession

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])


_FILTERS = {
    "status": "Only cases with this status: received, acknowledged, investigating, "
    "concluded or closed.",
    "unit": "Only cases reported in this unit (its id).",
    "overdue": "true: only cases past a deadline they have not met; false: only the others.",
    "category": "Only cases of this category: sexual_harassment, harassment, discrimination, "
    "abuse_of_power, retaliation or other.",
    "after": "Where the page starts: the `next` of the page before.",
    "limit": f"Answer in pages of at most this many cases (1 to {service.MAX_PAGE_SIZE}; more "
    "is a 422); without it, every case comes in one answer and `next` is null.",
}


@router.get(
    "",
    response_model=CaseListOut,
    responses={422: {"description": "invalid_input: a filter or paging value means nothing."}},
)
def list_cases(
    principal: Staff,
    session: DbSession,
    status: Annotated[str | None, Query(description=_FILTERS["status"])] = None,
    unit: Annotated[str | None, Query(description=_FILTERS["unit"])] = None,
    overdue: Annotated[str | None, Query(description=_FILTERS["overdue"])] = None,
    category: Annotated[str | None, Query(description=_FILTERS["category"])] = None,
    after: Annotated[str | None, Query(description=_FILTERS["after"])] = None,
    limit: Annotated[str | None, Query(description=_FILTERS["limit"])] = None,
) -> dict[str, Any]:
    """The cases you hold a key to, retaliation cases first, then the oldest first.

    With `limit`, `next` is where the next page starts (pass it as `after`), null on the
    last page; without it, every case is in the answer, as before paging existed.
    `total` counts every case the filters let through, on all pages.
    """
    query = service.case_query(
        status=status, unit=unit, overdue=overdue, category=category, after=after, limit=limit
    )
    page = service.list_cases(session, principal, utcnow().date(), query)
    return {"items": page.items, "next": page.next, "total": page.total}


@router.get(
    "/{case_id}",
    response_model=CaseOut,
    responses={
        409: {
            "description": "declaration_required: the caller has not declared yet; the answer "
            "carries `case` with only category, unit, dates and who was named as involved."
        }
    },
)
def read_case(
    case_id: str, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    return service.read_case(session, settings, principal, case_id, utcnow().date())


@router.post("/{case_id}/declaration", response_model=DeclarationOut, status_code=201)
def declare(
    case_id: str,
    body: DeclarationIn,
    principal: Staff,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, Any]:
    """Declare no conflict of interest (the case opens; with a retaliation-risk assessment),
    or a conflict (you step aside: your access to the case ends for good)."""
    opened = service.open_held_case(session, principal, case_id)
    recusal = declarations.declare(
        session,
        settings,
        principal,
        opened.case,
        opened.key,
        conflict=body.conflict,
        risk=body.risk,
        reason=body.reason,
        today=utcnow().date(),
    )
    answer: dict[str, Any] = {"conflict": body.conflict, "risk": body.risk}
    if recusal is not None:
        answer |= {
            "routed_to_unit_id": recusal.routed_to_unit_id,
            "handlers_added": recusal.handlers_added,
        }
    return answer


@router.post("/{case_id}/grants", status_code=201)
def grant_access(
    case_id: str, body: GrantIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """Give another case handler or identity custodian of the case's unit chain access."""
    grants.grant_access(
        session, settings, principal, case_id, user_id=body.user_id, today=utcnow().date()
    )
    return {"status": "granted", "user_id": body.user_id}


@router.post("/{case_id}/hold", response_model=HoldStateOut, status_code=201)
def place_hold(
    case_id: str, body: HoldIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """Keep the case past retention until the review day; the reason is sealed in the case.

    422 invalid_review_date unless the day is after today and at most 10 years ahead.
    A new hold replaces the one in force.
    """
    return retention.place_hold(
        session,
        settings,
        principal,
        case_id,
        reason=body.reason,
        review_on=body.review_on,
        today=utcnow().date(),
    )


@router.delete("/{case_id}/hold", response_model=HoldStateOut)
def lift_hold(
    case_id: str, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """End the hold (409 no_hold if there is none): the case follows retention again."""
    return retention.lift_hold(session, settings, principal, case_id, today=utcnow().date())


@router.post("/{case_id}/discard", response_model=DiscardOut)
def discard_case(
    case_id: str, body: DiscardIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """Delete a report found manifestly out of scope at triage, at once and for good.

    Only while received or acknowledged (409 not_discardable otherwise). The
    reporter's case code opens nothing afterwards: write to them first.
    """
    return retention.discard_case(session, settings, principal, case_id, reason=body.reason)


@router.post("/{case_id}/messages", status_code=201)
def write_to_reporter(
    case_id: str, body: MessageIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, str]:
    service.write_to_reporter(
        session, settings, principal, case_id, body=body.body, today=utcnow().date()
    )
    return {"status": "sent"}


@router.post("/{case_id}/notes", status_code=201)
def add_note(
    case_id: str, body: NoteIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, str]:
    service.add_note(session, settings, principal, case_id, body=body.body, today=utcnow().date())
    return {"status": "saved"}


@router.post("/{case_id}/status", response_model=CaseSummaryOut)
def change_status(
    case_id: str, body: StatusIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    return service.change_status(
        session,
        settings,
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


def staff_download(
    session: Session,
    maker: sessionmaker[Session],
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    file_id: str,
) -> StreamingResponse:
    """A case's file for a key holder who declared (404 for any other), audited."""
    opened = service.open_case(session, settings, principal, case_id)
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
    return download_response(session, maker, attachment, opened.key)


@router.get("/{case_id}/files/{file_id}", response_class=StreamingResponse)
def download_file(
    case_id: str,
    file_id: str,
    principal: Staff,
    session: DbSession,
    settings: AppSettings,
    request: Request,
) -> StreamingResponse:
    return staff_download(
        session, request.app.state.sessionmaker, settings, principal, case_id, file_id
    )


# --------------------------------------------------------------------------
# A handler's files: one implementation for this route and the staff upload page.
# No transaction stays open while the body streams in: the case is opened in
# one (for its key, which seals each chunk as it arrives), the files stored in
# another, which checks access again.


async def receive_case_files(
    request: Request, settings: Settings, *, case_id: str, key: bytes
) -> ParsedForm:
    """The upload's fields and its files, sealed under the case key within the limits."""
    return await read_multipart(
        request,
        case_id=case_id,
        key=key,
        max_file_bytes=settings.max_file_bytes,
        max_files=settings.max_files_per_report,
    )


def store_case_files(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    form: ParsedForm,
) -> list[dict[str, Any]]:
    """Store what `receive_case_files` sealed; refused whole if any file broke a limit."""
    return service.add_handler_files(
        session,
        settings,
        principal,
        case_id,
        files=form.files,
        problems=form.problems,
        today=utcnow().date(),
    )


def _open_for_upload(
    session: Session, settings: Settings, token: str, case_id: str
) -> tuple[StaffPrincipal, bytes]:
    principal = staff_principal(session, token, settings=settings)
    return principal, service.open_case(session, settings, principal, case_id).key


@router.post(
    "/{case_id}/files",
    response_model=FilesAddedOut,
    status_code=201,
    responses={
        413: {"description": "files_refused: a file is larger than the limit; nothing stored"},
        422: {"description": "files_refused (too many files) or no_files; nothing stored"},
    },
)
async def add_files(case_id: str, token: Token, request: Request) -> dict[str, Any]:
    """Add files to the case as multipart/form-data (field name "files"), sealed like the
    reporter's; the reporter sees them on their case page. Each file at most
    `VARSLING_MAX_FILE_BYTES`, at most `VARSLING_MAX_FILES_PER_REPORT` at a time: a file
    past either limit refuses the whole upload."""
    settings: Settings = request.app.state.settings
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    principal, key = await run_in_threadpool(
        in_transaction, maker, _open_for_upload, settings, token, case_id
    )
    form = await receive_case_files(request, settings, case_id=case_id, key=key)
    try:
        stored = await run_in_threadpool(
            in_transaction, maker, store_case_files, settings, principal, case_id, form
        )
    finally:
        form.discard_files()
    return {"files": stored}


@router.get("/{case_id}/access", response_model=AccessHistoryOut)
def read_access_history(
    case_id: str,
    principal: Staff,
    session: DbSession,
    settings: AppSettings,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> dict[str, Any]:
    """Who did what with the case: staff and service events with their time, newest first
    (paged), and the reporter's messages and files by day only. The read is audited."""
    history = access_history.case_access_history(session, settings, principal, case_id, page=page)
    return history.as_dict()
