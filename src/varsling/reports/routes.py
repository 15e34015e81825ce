"""Reporter API: thin; parse, call the service, shape the answer."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from varsling import audit
from varsling.authz import Reporter, Token
from varsling.cases import attachments
from varsling.cases.routes import download_response
from varsling.config import Settings
from varsling.db import DbSession, in_transaction
from varsling.errors import InvalidInput, NotFound, PayloadTooLarge, error_body
from varsling.reports import service
from varsling.reports.schemas import (
    REPORT_FIELDS,
    CaseCodeOut,
    ReporterCaseOut,
    ReporterMessageIn,
    ReporterSessionIn,
    ReportIn,
    TokenOut,
    UnitOut,
)
from varsling.reports.uploads import read_multipart

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
        for u in service.list_units(session, verifying_key=_settings(request).signing_public_key)
        if u.recipients  # a unit nobody can receive for is not offered
    ]


@router.post("/reports", status_code=201, response_model=CaseCodeOut)
def submit_report(body: ReportIn, request: Request, session: DbSession) -> CaseCodeOut:
    """Store a report; answer its case code and a signed receipt (see the fields)."""
    submission = service.submit_report(
        session,
        _settings(request),
        unit_id=body.unit_id,
        category=body.category.value,
        report=body.model_dump(include=set(REPORT_FIELDS), exclude_none=True),
        identity=body.identity.model_dump() if body.identity else None,
        excluded=body.excluded_recipients,
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


@router.get("/reporter/case", response_model=ReporterCaseOut)
def reporter_case(principal: Reporter, session: DbSession) -> dict[str, object]:
    return service.reporter_case(session, principal)


@router.post("/reporter/case/files", status_code=201)
async def reporter_files(token: Token, request: Request) -> dict[str, object]:
    """Files for the reporter's case, as multipart/form-data (field name "files").

    No transaction stays open while the body streams in: the session is
    checked in one, the sealed files are stored in another.
    """
    settings = _settings(request)
    maker = request.app.state.sessionmaker
    principal = await run_in_threadpool(in_transaction, maker, service.reporter_principal, token)
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
