"""Reporter API: thin; parse, call the service, shape the answer."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from varsling.authz import Reporter
from varsling.config import Settings
from varsling.db import DbSession
from varsling.reports import service
from varsling.reports.schemas import (
    CaseCodeOut,
    ReporterCaseOut,
    ReporterMessageIn,
    ReporterSessionIn,
    ReportIn,
    TokenOut,
    UnitOut,
)

router = APIRouter(prefix="/api/v1", tags=["reporter"])

REPORT_FIELDS = (
    "description",
    "when",
    "where",
    "involved",
    "witnesses",
    "reported_before",
    "desired_outcome",
    "on_behalf_of_someone_else",
    "wants_meeting",
)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/units", response_model=list[UnitOut])
def list_units(session: DbSession) -> list[UnitOut]:
    return [
        UnitOut(
            id=u.id,
            name=u.name,
            parent_id=u.parent_id,
            kind=u.kind,
            recipients=[asdict(r) for r in u.recipients],
            identity_custodian=u.has_custodian,
        )
        for u in service.list_units(session)
    ]


@router.post("/reports", status_code=201, response_model=CaseCodeOut)
def submit_report(body: ReportIn, request: Request, session: DbSession) -> CaseCodeOut:
    submission = service.submit_report(
        session,
        _settings(request),
        unit_id=body.unit_id,
        category=body.category.value,
        report=body.model_dump(include=set(REPORT_FIELDS), exclude_none=True),
        identity=body.identity.model_dump() if body.identity else None,
        excluded=body.excluded_recipients,
    )
    return CaseCodeOut(case_code=submission.case_code)


@router.post("/reporter/session", response_model=TokenOut, responses={401: {}})
def reporter_login(
    body: ReporterSessionIn, request: Request, session: DbSession
) -> TokenOut | JSONResponse:
    token = service.open_reporter_session(
        session,
        _settings(request),
        case_code=body.case_code,
        maker=request.app.state.sessionmaker,
    )
    if token is None:
        # Answered, not raised: the failure count must be committed.
        return JSONResponse(
            {
                "error": {
                    "code": "unauthenticated",
                    "message": "That case code does not open a case.",
                }
            },
            status_code=401,
        )
    return TokenOut(token=token)


@router.get("/reporter/case", response_model=ReporterCaseOut)
def reporter_case(principal: Reporter, session: DbSession) -> dict[str, object]:
    return service.reporter_case(session, principal)


@router.post("/reporter/case/messages", status_code=201)
def reporter_message(
    body: ReporterMessageIn, principal: Reporter, session: DbSession
) -> dict[str, str]:
    service.add_reporter_message(session, principal, body=body.body, retaliation=body.retaliation)
    return {"status": "sent"}
