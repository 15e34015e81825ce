"""Staff login with password and two-factor code, two-factor set-up, logout.

One form asks for the username, the password and, for an account with
two-factor, the code from the authenticator app (or a recovery code). A
person whose role needs two-factor and who has none yet gets a session that
opens only the set-up page until a code from the new secret checks out. The
per-account backoff shows as a message with the time to wait.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts import two_factor
from varsling.accounts.models import User
from varsling.accounts.service import STAFF_WEB_CHANNEL, StaffPrincipal
from varsling.authz import AppSettings
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import InvalidInput, TooManyAttempts, Unauthenticated
from varsling.request_transaction import DbSession
from varsling.web.i18n import N_, Language
from varsling.web.pages import PageLanguage, format_minutes, format_seconds
from varsling.web.security import (
    CsrfResult,
    clear_session_cookie,
    limit_session_cookie,
    session_value,
    set_session_value,
)
from varsling.web.staff_auth import (
    StaffPage,
    StaffRedirect,
    enrolling_principal,
    login_path,
    staff_page_principal,
)
from varsling.web.staff_pages import (
    form_text,
    read_staff_form,
    render_staff,
    staff_home,
    staff_translate,
)

router = APIRouter(include_in_schema=False)

USERNAME_INPUT: Final = "username"
PASSWORD_INPUT: Final = "password"  # noqa: S105 - the input's id, not a password
CODE_INPUT: Final = "code"
PENDING_FIELD: Final = "enrolment"


@dataclass(frozen=True)
class FieldError:
    """One problem with what was sent, shown in the error summary and at its field."""

    field: str
    message: str


def _maker(request: Request) -> sessionmaker[Session]:
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    return maker


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# --------------------------------------------------------------------------
# Login


def _render_login(
    request: Request,
    language: Language,
    *,
    username: str = "",
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    settings = _settings(request)
    return render_staff(
        request,
        language,
        "staff/login.html",
        None,
        {
            "username": username,
            "errors": list(errors),
            "form_check": form_check,
            "notice": notice,
            "idle": format_minutes(settings.session_idle_minutes, language),
            "absolute": format_minutes(settings.session_minutes, language),
        },
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/login", response_class=HTMLResponse)
def login_page(request: Request, language: PageLanguage, notice: str | None = None) -> HTMLResponse:
    return _render_login(
        request,
        language,
        notice=notice if notice in ("ended", "logged-out", "password-changed") else None,
    )


def _end_previous(session: Session, token: str) -> None:
    """End the staff session an earlier login in this browser left, if any."""
    try:
        accounts.logout(session, token, STAFF_WEB_CHANNEL)
    except Unauthenticated:
        return


@router.post("/{lang:lang}/staff/login", response_class=HTMLResponse)
async def login(request: Request, language: PageLanguage) -> Response:
    form, form_check = await read_staff_form(request, max_fields=10)
    username = form_text(form, USERNAME_INPUT, 100).strip()
    password = form_text(form, PASSWORD_INPUT, 1000)
    code = form_text(form, CODE_INPUT, 40).strip()
    if form_check != "ok":
        return _render_login(
            request, language, username=username, form_check=form_check, status_code=400
        )
    errors = []
    if not username:
        errors.append(FieldError(USERNAME_INPUT, _t(request, language, N_("Enter your username."))))
    if not password:
        errors.append(FieldError(PASSWORD_INPUT, _t(request, language, N_("Enter your password."))))
    if errors:
        return _render_login(request, language, username=username, errors=errors, status_code=422)
    settings = _settings(request)
    previous = session_value(request)
    token = crypto.new_token()
    try:
        outcome = await accounts.sign_in_staff(
            _maker(request),
            settings,
            username=username,
            password=password,
            code=code or None,
            channel=STAFF_WEB_CHANNEL,
            token=token,
        )
    except TooManyAttempts as busy:
        message = _t(
            request,
            language,
            N_(
                "There have been too many failed attempts to log in to this account. "
                "For its safety, wait %(wait)s and try again."
            ),
        ) % {"wait": _wait_text(busy.retry_after, language)}
        page = _render_login(
            request,
            language,
            username=username,
            errors=[FieldError(PASSWORD_INPUT, message)],
            status_code=429,
        )
        page.headers.update(busy.headers)
        return page
    if outcome.token is None:
        message = _t(
            request,
            language,
            N_(
                "The username, password or code is wrong. If you have set up two-factor login, "
                "enter the code your app shows now, or one of your recovery codes."
            ),
        )
        return _render_login(
            request,
            language,
            username=username,
            errors=[FieldError(PASSWORD_INPUT, message)],
            status_code=401,
        )
    target = f"/{language}/staff/two-factor" if outcome.scope == "enrol" else f"/{language}/staff/"
    response = RedirectResponse(target, status_code=303)
    limit_session_cookie(request, settings.session_minutes * 60)
    set_session_value(request, response, token)
    if previous is not None and previous != token:
        await run_in_threadpool(in_transaction, _maker(request), _end_previous, previous)
    return response


def _wait_text(seconds: int, language: Language) -> str:
    if seconds < 120:
        return format_seconds(seconds, language)
    return format_minutes((seconds + 59) // 60, language)


def _t(request: Request, language: Language, message: str) -> str:
    return staff_translate(request, language, message)


@router.get("/{lang:lang}/staff/", response_class=HTMLResponse)
def staff_start(principal: StaffPage, language: PageLanguage) -> RedirectResponse:
    """Where a login lands: the first page of the person's roles."""
    return RedirectResponse(staff_home(language, principal.roles), status_code=303)


@router.post("/{lang:lang}/staff/logout", response_class=HTMLResponse)
async def logout(request: Request, language: PageLanguage) -> Response:
    """End the session. A logout needs a form token like every other form.

    A browser without a staff session is sent to the login page, its cookie
    (perhaps a reporter's session) left alone.
    """
    _form, form_check = await read_staff_form(request, max_fields=5)
    token = session_value(request)
    maker = _maker(request)
    if token is None or not await run_in_threadpool(
        in_transaction, maker, _is_staff_session, token
    ):
        return RedirectResponse(login_path(language), status_code=303)
    if form_check != "ok":
        return render_staff(
            request,
            language,
            "staff/error.html",
            None,
            {
                "title": _t(request, language, N_("The form could not be sent")),
                "text": _t(
                    request,
                    language,
                    N_("You are still logged in. Go back and press Log out again."),
                ),
                "status": 400,
            },
            status_code=400,
        )
    await run_in_threadpool(in_transaction, maker, _end_previous, token)
    response = RedirectResponse(login_path(language, "logged-out"), status_code=303)
    clear_session_cookie(request, response)
    return response


def _is_staff_session(session: Session, token: str) -> bool:
    try:
        accounts.find_session(session, token, STAFF_WEB_CHANNEL)
    except Unauthenticated:
        return False
    return True


# --------------------------------------------------------------------------
# Two-factor set-up


def any_scope_principal(
    request: Request, session: DbSession, settings: AppSettings, language: PageLanguage
) -> StaffPrincipal:
    """A fully logged-in staff member, or one whose session may only set up two-factor."""
    try:
        return staff_page_principal(request, session, settings, language)
    except StaffRedirect as redirect:
        if redirect.location != f"/{language}/staff/two-factor":
            raise
    return enrolling_principal(request, session, settings, language)


EnrollingPage = Annotated[StaffPrincipal, Depends(any_scope_principal)]


def _render_enrolment(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    *,
    pending: two_factor.PendingEnrolment | None = None,
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    settings = _settings(request)
    user = session.get(User, principal.user_id)
    if user is None:
        raise Unauthenticated("The account is not active.")
    row = two_factor.checked_row(session, settings, user.id)
    pending = pending or two_factor.start_enrolment(settings, user)
    label = _t(request, language, N_("QR code for your authenticator app"))
    return render_staff(
        request,
        language,
        "staff/two_factor.html",
        principal if _scope(request, session) == "full" else None,
        {
            "enrolled": two_factor.is_enrolled(row),
            "required": two_factor.is_required(settings, principal.roles),
            "codes_left": two_factor.recovery_codes_left(row),
            "secret_text": " ".join(
                pending.secret_text[i : i + 4] for i in range(0, len(pending.secret_text), 4)
            ),
            "qr": two_factor.qr_svg(pending.uri, label),
            "pending": pending.sealed,
            "errors": list(errors),
            "form_check": form_check,
        },
        status_code=status_code,
    )


def _scope(request: Request, session: Session) -> str:
    token = session_value(request)
    if token is None:
        return "none"
    found, _ = accounts.find_session(session, token, STAFF_WEB_CHANNEL)
    return found.scope


@router.get("/{lang:lang}/staff/two-factor", response_class=HTMLResponse)
def enrolment_page(
    request: Request, language: PageLanguage, principal: EnrollingPage, session: DbSession
) -> HTMLResponse:
    return _render_enrolment(request, language, principal, session)


@router.post("/{lang:lang}/staff/two-factor", response_class=HTMLResponse)
async def enrol(
    request: Request, language: PageLanguage, principal: EnrollingPage, session: DbSession
) -> HTMLResponse:
    """Confirm the set-up with a code; the answer shows the recovery codes, once."""
    form, form_check = await read_staff_form(request, max_fields=10)
    code = form_text(form, CODE_INPUT, 40).strip()
    sealed = form_text(form, PENDING_FIELD, 1000)
    settings = _settings(request)
    now = time.time()
    kept = _kept_pending(session, settings, principal, sealed, now=now)
    if form_check != "ok":
        return _render_enrolment(
            request,
            language,
            principal,
            session,
            pending=kept,
            form_check=form_check,
            status_code=400,
        )
    if not code:
        return _render_enrolment(
            request,
            language,
            principal,
            session,
            pending=kept,
            errors=[
                FieldError(CODE_INPUT, _t(request, language, N_("Enter the code your app shows.")))
            ],
            status_code=422,
        )
    try:
        codes = two_factor.confirm_enrolment(
            session, settings, principal.user_id, sealed, code, now=now
        )
    except InvalidInput:
        message = (
            N_(
                "The code does not match. Check that the time on your phone is right, and enter "
                "the code the app shows now."
            )
            if kept is not None
            else N_("The set-up took too long and has started again: scan the new QR code.")
        )
        return _render_enrolment(
            request,
            language,
            principal,
            session,
            pending=kept,
            errors=[FieldError(CODE_INPUT, _t(request, language, message))],
            status_code=422,
        )
    _promote_session(request, session)
    return render_staff(
        request,
        language,
        "staff/recovery_codes.html",
        principal,
        {"codes": codes, "home": staff_home(language, principal.roles)},
    )


def _kept_pending(
    session: Session, settings: Settings, principal: StaffPrincipal, sealed: str, *, now: float
) -> two_factor.PendingEnrolment | None:
    """The same set-up again (the QR code already scanned) if its field is still valid."""
    secret = two_factor.pending_secret(settings, principal.user_id, sealed, now=now)
    user = session.get(User, principal.user_id)
    if secret is None or user is None:
        return None
    return two_factor.PendingEnrolment(
        secret_text=crypto.totp_secret_text(secret),
        uri=crypto.totp_uri(secret, account=user.username, issuer=two_factor.ISSUER),
        sealed=sealed,
    )


def _promote_session(request: Request, session: Session) -> None:
    """A session that could only set up two-factor becomes a full one."""
    token = session_value(request)
    if token is None:
        return
    found, _ = accounts.find_session(session, token, STAFF_WEB_CHANNEL)
    found.scope = "full"
