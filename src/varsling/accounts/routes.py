"""Staff login and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from varsling.accounts import service
from varsling.authz import Token
from varsling.errors import error_body
from varsling.reports.schemas import StrictModel, TokenOut
from varsling.request_transaction import DbSession

router = APIRouter(prefix="/api/v1", tags=["accounts"])


class LoginIn(StrictModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    # The current TOTP code, or an unused recovery code, when the account has two-factor.
    code: Annotated[str, StringConstraints(max_length=40)] | None = None


@router.post("/sessions", response_model=TokenOut, responses={401: {}, 403: {}})
async def login(body: LoginIn, request: Request) -> TokenOut | JSONResponse:
    outcome = await service.sign_in_staff(
        request.app.state.sessionmaker,
        request.app.state.settings,
        username=body.username,
        password=body.password,
        code=body.code,
    )
    # Answered, not raised: the failure count and its audit event are committed.
    if outcome.enrolment_required:
        return JSONResponse(
            error_body(
                "two_factor_enrolment_required",
                "Your role needs two-factor login: log in on the web pages "
                "(/en/staff/login) once to set it up.",
            ),
            status_code=403,
        )
    if outcome.token is None:
        return JSONResponse(
            error_body("unauthenticated", "Wrong username, password or two-factor code."),
            status_code=401,
        )
    return TokenOut(token=outcome.token)


@router.delete("/sessions/current", status_code=204)
def logout(token: Token, session: DbSession) -> Response:
    service.logout(session, token)
    return Response(status_code=204)
