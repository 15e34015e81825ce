"""Staff login and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from varsling.accounts import service
from varsling.authz import Token
from varsling.db import DbSession
from varsling.errors import error_body
from varsling.reports.schemas import StrictModel, TokenOut

router = APIRouter(prefix="/api/v1", tags=["accounts"])


class LoginIn(StrictModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


@router.post("/sessions", response_model=TokenOut, responses={401: {}})
async def login(body: LoginIn, request: Request) -> TokenOut | JSONResponse:
    token = await service.sign_in_staff(
        request.app.state.sessionmaker,
        request.app.state.settings,
        username=body.username,
        password=body.password,
    )
    if token is None:
        # Answered, not raised: the failure count and its audit event are committed.
        return JSONResponse(
            error_body("unauthenticated", "Wrong username or password."), status_code=401
        )
    return TokenOut(token=token)


@router.delete("/sessions/current", status_code=204)
def logout(token: Token, session: DbSession) -> Response:
    service.logout(session, token)
    return Response(status_code=204)
