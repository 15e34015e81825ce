"""A staff member's own password, and restoring others' case access after a reset.

The password page checks the current password like a login (the same
backoff) and seals the same private key again under the new one; every
session of the account ends, so the browser is sent to the login page. The
"Restore access" page lists the case keys of reset colleagues that the
caller holds, each with a button that re-grants it from the caller's session.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Final

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from varsling.accounts import lifecycle
from varsling.accounts.service import (
    MIN_PASSWORD_CHARS,
    STAFF_WEB_CHANNEL,
    StaffPrincipal,
    staff_principal,
    utcnow,
)
from varsling.cases import regrants
from varsling.cases.models import KeyPurpose
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from varsling.request_transaction import DbSession
from varsling.web.i18n import N_, Language
from varsling.web.pages import PageLanguage, format_seconds
from varsling.web.security import CsrfResult, clear_session_cookie, session_value
from varsling.web.staff_auth import StaffPage, login_path
from varsling.web.staff_login_pages import FieldError
from varsling.web.staff_pages import form_text, read_staff_form, render_staff, staff_translate

router = APIRouter(include_in_schema=False)

CURRENT_INPUT: Final = "current_password"
NEW_INPUT: Final = "new_password"
REPEAT_INPUT: Final = "repeat_password"


def _t(request: Request, language: Language, message: str) -> str:
    return staff_translate(request, language, message)


# --------------------------------------------------------------------------
# Changing one's password


def _render_password(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    *,
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    return render_staff(
        request,
        language,
        "staff/password.html",
        principal,
        {"errors": list(errors), "form_check": form_check, "min_chars": MIN_PASSWORD_CHARS},
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/account/password", response_class=HTMLResponse)
def password_page(request: Request, language: PageLanguage, principal: StaffPage) -> HTMLResponse:
    """The form to change one's own password."""
    return _render_password(request, language, principal)


@router.post("/{lang:lang}/staff/account/password", response_class=HTMLResponse)
async def change_password(request: Request, language: PageLanguage) -> Response:
    """Change the password; on success every session ends and the browser logs in again.

    No request transaction: Argon2id runs twice here and must not hold a lock.
    """
    settings: Settings = request.app.state.settings
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    token = session_value(request)
    if token is None:
        return RedirectResponse(login_path(language), status_code=303)
    try:
        principal = await run_in_threadpool(
            in_transaction,
            maker,
            partial(staff_principal, settings=settings),
            token,
            STAFF_WEB_CHANNEL,
        )
    except Unauthenticated:
        return RedirectResponse(login_path(language, "ended"), status_code=303)
    form, form_check = await read_staff_form(request, max_fields=10)
    current = form_text(form, CURRENT_INPUT, 1000)
    new = form_text(form, NEW_INPUT, 1000)
    repeat = form_text(form, REPEAT_INPUT, 1000)
    if form_check != "ok":
        return _render_password(
            request, language, principal, form_check=form_check, status_code=400
        )
    errors = []
    if not current:
        errors.append(
            FieldError(CURRENT_INPUT, _t(request, language, N_("Enter your current password.")))
        )
    if len(new) < MIN_PASSWORD_CHARS:
        message = _t(request, language, N_("A password needs at least %(count)s characters."))
        errors.append(FieldError(NEW_INPUT, message % {"count": MIN_PASSWORD_CHARS}))
    elif new != repeat:
        errors.append(
            FieldError(
                REPEAT_INPUT,
                _t(request, language, N_("The two new passwords are not the same.")),
            )
        )
    if errors:
        return _render_password(request, language, principal, errors=errors, status_code=422)
    try:
        await lifecycle.change_password(
            maker,
            settings,
            user_id=principal.user_id,
            current_password=current,
            new_password=new,
        )
    except TooManyAttempts as busy:
        message = _t(
            request,
            language,
            N_(
                "There have been too many wrong passwords for this account. "
                "For its safety, wait %(wait)s and try again."
            ),
        ) % {"wait": format_seconds(busy.retry_after, language)}
        page = _render_password(
            request,
            language,
            principal,
            errors=[FieldError(CURRENT_INPUT, message)],
            status_code=429,
        )
        page.headers.update(busy.headers)
        return page
    except lifecycle.WrongPassword:
        message = _t(request, language, N_("The current password is wrong. Nothing was changed."))
        return _render_password(
            request,
            language,
            principal,
            errors=[FieldError(CURRENT_INPUT, message)],
            status_code=401,
        )
    except InvalidInput:
        message = _t(request, language, N_("A password needs at least %(count)s characters."))
        return _render_password(
            request,
            language,
            principal,
            errors=[FieldError(NEW_INPUT, message % {"count": MIN_PASSWORD_CHARS})],
            status_code=422,
        )
    response = RedirectResponse(login_path(language, "password-changed"), status_code=303)
    clear_session_cookie(request, response)
    return response


# --------------------------------------------------------------------------
# Restoring colleagues' access after a reset


@router.get("/{lang:lang}/staff/pending-grants", response_class=HTMLResponse)
def pending_grants_page(
    request: Request, language: PageLanguage, principal: StaffPage, session: DbSession
) -> HTMLResponse:
    """The colleagues' case keys the caller can re-grant, and the caller's own pending ones."""
    done = request.query_params.get("done") == "regranted"
    return render_staff(
        request,
        language,
        "staff/pending_grants.html",
        principal,
        {
            "items": regrants.pending_grants(session, principal),
            "own": regrants.own_pending(session, principal),
            "done": done,
        },
    )


def _int(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise NotFound("There is no such access to restore.")
    return int(value)


@router.post("/{lang:lang}/staff/pending-grants", response_class=HTMLResponse)
async def regrant(
    request: Request, language: PageLanguage, principal: StaffPage, session: DbSession
) -> Response:
    """Re-grant one case key; a refusal is the staff error page (audited)."""
    form, form_check = await read_staff_form(request, max_fields=10)
    if form_check != "ok":
        return render_staff(
            request,
            language,
            "staff/error.html",
            principal,
            {
                "title": _t(request, language, N_("The form could not be sent")),
                "text": _t(request, language, N_("Nothing was changed. Go back and try again.")),
                "status": 400,
            },
            status_code=400,
        )
    purpose = form_text(form, "purpose", 20)
    if purpose not in {p.value for p in KeyPurpose}:
        raise NotFound("There is no such access to restore.")
    regrants.regrant(
        session,
        request.app.state.settings,
        principal,
        case_id=form_text(form, "case_id", 64),
        user_id=_int(form_text(form, "user_id", 12)),
        purpose=KeyPurpose(purpose),
        today=utcnow().date(),
    )
    return RedirectResponse(f"/{language}/staff/pending-grants?done=regranted", status_code=303)
