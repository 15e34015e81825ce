"""Key lifecycle API: change one's password, an admin's reset, pending re-grants."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StringConstraints
from sqlalchemy.orm import Session, sessionmaker

from varsling.accounts import lifecycle
from varsling.accounts.service import staff_principal, utcnow
from varsling.authz import Admin, AppSettings, Staff, Token
from varsling.cases import regrants
from varsling.cases.models import KeyPurpose
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import error_body
from varsling.reports.schemas import StrictModel
from varsling.request_transaction import DbSession

router = APIRouter(prefix="/api/v1", tags=["accounts"])

Password = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class PasswordChangeIn(StrictModel):
    current_password: Password
    new_password: Password


class PasswordChangedOut(BaseModel):
    sessions_ended: int


class PasswordResetIn(StrictModel):
    new_password: Password


class PasswordResetOut(BaseModel):
    user_id: int
    key_version: int
    sessions_ended: int
    pending_keys: int


class PendingGrantOut(BaseModel):
    case_id: str
    purpose: Literal["case", "identity"]
    user_id: int
    display_name: str


class OwnPendingOut(BaseModel):
    case_id: str
    purpose: Literal["case", "identity"]


class PendingGrantsOut(BaseModel):
    # Re-grants the caller can make (they hold that key of that case).
    items: list[PendingGrantOut]
    # The caller's own case keys waiting for someone else to re-grant them.
    own: list[OwnPendingOut]


class RegrantIn(StrictModel):
    case_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    user_id: int
    purpose: Literal["case", "identity"] = "case"


@router.post(
    "/account/password",
    response_model=PasswordChangedOut,
    responses={401: {}, 422: {}, 429: {}},
)
async def change_password(
    body: PasswordChangeIn, token: Token, request: Request
) -> PasswordChangedOut | JSONResponse:
    """Change your password; your private key is sealed again and every session of yours
    ends (this one too: log in again)."""
    settings: Settings = request.app.state.settings
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    # Its own short transaction: no write lock may be held while Argon2id runs.
    principal = await run_in_threadpool(
        in_transaction, maker, partial(staff_principal, settings=settings), token
    )
    try:
        ended = await lifecycle.change_password(
            maker,
            settings,
            user_id=principal.user_id,
            current_password=body.current_password,
            new_password=body.new_password,
        )
    except lifecycle.WrongPassword as wrong:
        # Answered, not raised: the failure count and its audit event are committed.
        return JSONResponse(error_body(wrong.code, wrong.message), status_code=401)
    return PasswordChangedOut(sessions_ended=ended)


@router.post(
    "/admin/accounts/{user_id}/password-reset",
    response_model=PasswordResetOut,
    responses={404: {}, 422: {}},
)
def reset_password(
    user_id: int,
    body: PasswordResetIn,
    principal: Admin,
    session: DbSession,
    settings: AppSettings,
) -> PasswordResetOut:
    """Set a new password for an account: a new key pair; its case access waits for a
    re-grant by a key holder. Two-factor login is left as it is."""
    reset = lifecycle.reset_password(
        session, settings, user_id, new_password=body.new_password, actor=principal.actor
    )
    return PasswordResetOut(
        user_id=reset.user_id,
        key_version=reset.key_version,
        sessions_ended=reset.sessions_ended,
        pending_keys=reset.pending_keys,
    )


@router.get("/pending-grants", response_model=PendingGrantsOut)
def pending_grants(principal: Staff, session: DbSession) -> PendingGrantsOut:
    """Case access waiting for a re-grant after a password reset: what you can restore,
    and your own."""
    return PendingGrantsOut(
        items=[
            PendingGrantOut(
                case_id=p.case_id,
                purpose="identity" if p.purpose == KeyPurpose.IDENTITY.value else "case",
                user_id=p.user_id,
                display_name=p.display_name,
            )
            for p in regrants.pending_grants(session, principal)
        ],
        own=[
            OwnPendingOut(
                case_id=o.case_id,
                purpose="identity" if o.purpose == KeyPurpose.IDENTITY.value else "case",
            )
            for o in regrants.own_pending(session, principal)
        ],
    )


@router.post("/pending-grants", status_code=201, responses={403: {}, 404: {}})
def regrant(
    body: RegrantIn, principal: Staff, session: DbSession, settings: AppSettings
) -> dict[str, object]:
    """Re-grant a case key you hold to someone whose access is pending."""
    regrants.regrant(
        session,
        settings,
        principal,
        case_id=body.case_id,
        user_id=body.user_id,
        purpose=KeyPurpose(body.purpose),
        today=utcnow().date(),
    )
    return {"status": "regranted", "case_id": body.case_id, "user_id": body.user_id}
