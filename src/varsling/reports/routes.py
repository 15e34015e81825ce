"""Reporter API: thin; parse, call the service, shape the answer."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from varsling import audit, throttle
from varsling.authz import AppSettings, Reporter, Token
from varsling.cases import attachments
from varsling.cases.routes import download_response
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import InvalidInput, NotFound, PayloadTooLarge, error_body
from varsling.reports import reprisal, routing, service
from varsling.reports.schemas import (
    REPORT_FIELDS,
    CaseCodeOut,
    CheckInAnswerIn,
    CheckInAnswerOut,
    ReporterCaseOut,
    ReporterMessageIn,
    ReporterSessionIn,
    ReportIn,
    RetaliationIn,
    RetaliationOut,
    SendUpOut,
    TokenOut,
    UnitOut,
)
from varsling.reports.service import ReporterPrincipal
from varsling.reports.uploads import read_multipart
from varsling.request_transaction import DbSession
from varsling.throttle import Flood

router = APIRouter(prefix="/api/v1", tags=["reporter"])


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/units", response_model=list[UnitOut])
def list_units(request: Request, session: DbSession) -> list[UnitOut]:
    return [
        UnitOut(
            id=u.id,
            name=u.name,
            parent_id=u.parent_id,
            kind=u.kind,
            recipients=[asdict(r) for r in u.recipients],
            custodians=[asdict(c) for c in u.custodians],
            identity_custodian=u.has_custodian,
        )
        for u in routing.offered_units(session, verifying_key=_settings(request).signing_public_key)
    ]


BUSY_ERRORS: dict[int | str, dict[str, object]] = {
    429: {
        "description": "submissions_busy / uploads_busy: the installation-wide limit a "
        "minute is reached; nothing was stored, send again after Retry-After seconds"
    }
}


@router.post("/reports", status_code=201, response_model=CaseCodeOut, responses=BUSY_ERRORS)
def submit_report(body: ReportIn, request: Request, session: DbSession) -> CaseCodeOut:
    """Store a report; answer its case code and a signed receipt (see the fields)."""
    settings = _settings(request)
    # First, so a flood is refused before any costly work, in a transaction of its
    # own: the slot's row lock ends with it, before the case code's Argon2id runs
    # (`session` has not begun yet: it begins at its first statement).
    in_transaction(
        request.app.state.sessionmaker, throttle.claim_flood_slot, settings, Flood.SUBMISSION
    )
    code = service.new_case_code(settings)
    submission = service.submit_report(
        session,
        settings,
        unit_id=body.unit_id,
        category=body.category.value,
        report=body.model_dump(include=set(REPORT_FIELDS), exclude_none=True),
        identity=body.identity.model_dump() if body.identity else None,
        excluded=body.excluded_recipients,
        code=code,
    )
    return CaseCodeOut(case_code=submission.case_code, receipt=submission.receipt)


@router.post("/reporter/session", response_model=TokenOut, responses={401: {}})
async def reporter_login(body: ReporterSessionIn, request: Request) -> TokenOut | JSONResponse:
    token = await service.sign_in_reporter(
        request.app.state.sessionmaker, _settings(request), case_code=body.case_code
    )
    if token is None:
        # Answered, not raised: the failure count must be committed.
        return JSONResponse(
            error_body("unauthenticated", "That case code does not open a case."),
            status_code=401,
        )
    return TokenOut(token=token)


CheckInId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/reporter/case", response_model=ReporterCaseOut)
def reporter_case(
    principal: Reporter, session: DbSession, settings: AppSettings
) -> dict[str, object]:
    return reprisal.reporter_view(session, settings, principal)


@router.post(
    "/reporter/case/retaliation",
    status_code=201,
    response_model=RetaliationOut,
    responses={401: {"description": "login_again: a session from before linked cases"}},
)
def report_retaliation(
    body: RetaliationIn, principal: Reporter, session: DbSession, settings: AppSettings
) -> dict[str, object]:
    """Report retaliation: opens a linked, high-priority case for the same handlers and
    the level above, followed with the same case code. Also from long after closing."""
    opened = reprisal.open_retaliation_case(session, settings, principal, body=body.body)
    return {"status": "opened", "reference": opened.reference}


def _send_up(
    session: DbSession, settings: AppSettings, principal: ReporterPrincipal
) -> dict[str, str]:
    reprisal.send_up(session, settings, principal)
    return {"status": "sent_up"}


def _answer(
    session: DbSession,
    settings: AppSettings,
    principal: ReporterPrincipal,
    checkin_id: int,
    body: CheckInAnswerIn,
) -> dict[str, object]:
    opened = reprisal.answer_checkin(
        session,
        settings,
        principal,
        checkin_id,
        negative_consequences=body.negative_consequences,
        details=body.details or None,
    )
    return {"status": "answered", "retaliation_reference": opened.reference if opened else None}


_SEND_UP_ERRORS: dict[int | str, dict[str, object]] = {
    409: {
        "description": "acknowledgement_not_yet_due, already_acknowledged, recently_sent_up "
        "or no_level_above"
    }
}


@router.post(
    "/reporter/case/escalate", status_code=201, response_model=SendUpOut, responses=_SEND_UP_ERRORS
)
def send_up(principal: Reporter, session: DbSession, settings: AppSettings) -> dict[str, str]:
    """Send the unacknowledged case to the handlers of the level above (after its deadline)."""
    return _send_up(session, settings, principal)


@router.post(
    "/reporter/case/checkins/{checkin_id}",
    status_code=201,
    response_model=CheckInAnswerOut,
    responses={409: {"description": "already_answered"}},
)
def answer_checkin(
    checkin_id: CheckInId,
    body: CheckInAnswerIn,
    principal: Reporter,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, object]:
    """Answer a check-in; a yes opens a retaliation case (details as its text)."""
    return _answer(session, settings, principal, checkin_id, body)


@router.get("/reporter/cases/{reference}", response_model=ReporterCaseOut)
def linked_case(
    reference: str, principal: Reporter, session: DbSession, settings: AppSettings
) -> dict[str, object]:
    """One of the reporter's linked cases (404 for anything else)."""
    linked = reprisal.linked_principal(session, principal, reference)
    return reprisal.reporter_view(session, settings, linked)


@router.post("/reporter/cases/{reference}/messages", status_code=201)
def linked_case_message(
    reference: str, body: ReporterMessageIn, principal: Reporter, session: DbSession
) -> dict[str, str]:
    linked = reprisal.linked_principal(session, principal, reference)
    service.add_reporter_message(session, linked, body=body.body, retaliation=body.retaliation)
    return {"status": "sent"}


@router.post(
    "/reporter/cases/{reference}/escalate",
    status_code=201,
    response_model=SendUpOut,
    responses=_SEND_UP_ERRORS,
)
def linked_case_send_up(
    reference: str, principal: Reporter, session: DbSession, settings: AppSettings
) -> dict[str, str]:
    return _send_up(session, settings, reprisal.linked_principal(session, principal, reference))


@router.post(
    "/reporter/cases/{reference}/checkins/{checkin_id}",
    status_code=201,
    response_model=CheckInAnswerOut,
)
def linked_case_checkin(
    reference: str,
    checkin_id: CheckInId,
    body: CheckInAnswerIn,
    principal: Reporter,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, object]:
    linked = reprisal.linked_principal(session, principal, reference)
    return _answer(session, settings, linked, checkin_id, body)


@router.get("/reporter/cases/{reference}/files/{file_id}", response_class=StreamingResponse)
def linked_case_download(
    reference: str, file_id: str, principal: Reporter, session: DbSession, request: Request
) -> StreamingResponse:
    linked = reprisal.linked_principal(session, principal, reference)
    return _download(session, request, linked, file_id)


@router.post("/reporter/case/files", status_code=201, responses=BUSY_ERRORS)
async def reporter_files(token: Token, request: Request) -> dict[str, object]:
    """Files for the reporter's case, as multipart/form-data (field name "files").

    No transaction stays open while the body streams in: the session is
    checked in one, the sealed files are stored in another.
    """
    settings = _settings(request)
    maker = request.app.state.sessionmaker
    principal = await run_in_threadpool(in_transaction, maker, service.reporter_principal, token)
    # Before the body is read: a flood of uploads is refused cheaply.
    await run_in_threadpool(
        in_transaction, maker, throttle.claim_flood_slot, settings, Flood.UPLOAD
    )
    form = await read_multipart(
        request,
        case_id=principal.case_id,
        key=principal.case_key,
        max_file_bytes=settings.max_file_bytes,
        max_files=settings.max_files_per_report,
    )
    if form.problems:
        form.discard_files()
        problem = form.problems[0]
        if problem.reason == "too_large":
            raise PayloadTooLarge(
                f"The file {problem.name!r} is larger than {settings.max_file_bytes} bytes; "
                "nothing was stored."
            )
        raise InvalidInput(
            f"At most {settings.max_files_per_report} files at a time; nothing was stored."
        )
    if not form.files:
        raise InvalidInput('Choose at least one file (form field "files").')

    def store(session: Session) -> list[dict[str, object]]:
        return service.add_reporter_files(session, principal, files=form.files)

    return {"files": await run_in_threadpool(in_transaction, maker, store)}


@router.get("/reporter/case/files/{file_id}", response_class=StreamingResponse)
def reporter_download(
    file_id: str, principal: Reporter, session: DbSession, request: Request
) -> StreamingResponse:
    return _download(session, request, principal, file_id)


def _download(
    session: Session, request: Request, principal: ReporterPrincipal, file_id: str
) -> StreamingResponse:
    attachment = attachments.find(session, principal.case_id, file_id)
    if attachment is None:
        raise NotFound("No such file.")
    audit.record(
        session,
        actor=audit.REPORTER,
        action="reporter.file_downloaded",
        case_id=principal.case_id,
        details={"file_id": file_id},
    )
    return download_response(
        session, request.app.state.sessionmaker, attachment, principal.case_key
    )


@router.post("/reporter/case/messages", status_code=201)
def reporter_message(
    body: ReporterMessageIn, principal: Reporter, session: DbSession
) -> dict[str, str]:
    service.add_reporter_message(session, principal, body=body.body, retaliation=body.retaliation)
    return {"status": "sent"}
