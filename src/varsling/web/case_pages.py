"""Follow-up with a case code: login, the case page, replies, files, retaliation.

A reporter logs in with their case code; the browser's one cookie then
becomes the session token (only its hash is stored, and the case keys are
sealed under a key derived from it). Nothing here logs anything about the
reporter, and what they typed is never lost on an error: it is shown back.

No database transaction is open while a multipart body streams in: the
session is checked in one transaction, the sealed files stored in another.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit, crypto, throttle
from varsling.accounts.service import utcnow
from varsling.cases import attachments
from varsling.cases.routes import download_response
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import (
    Conflict,
    NotFound,
    TooManyAttempts,
    Unauthenticated,
    UploadsBusy,
    VarslingError,
)
from varsling.reports import reprisal, service
from varsling.reports.service import ReporterPrincipal
from varsling.reports.uploads import FileProblem, ParsedForm, read_multipart
from varsling.request_transaction import DbSession
from varsling.throttle import Flood
from varsling.web.i18n import N_, Language
from varsling.web.pages import (
    PageLanguage,
    format_day,
    format_minutes,
    format_size,
    page_templates,
    render_page,
)
from varsling.web.security import (
    CSRF_FIELD,
    FORM_TOKEN_SECONDS,
    CsrfResult,
    check_csrf,
    clear_session_cookie,
    limit_session_cookie,
    rotate_session_cookie,
    session_value,
)

router = APIRouter(include_in_schema=False)

CODE_FIELD: Final = "case_code"
BODY_FIELD: Final = "body"
FILES_FIELD: Final = "files"
# The ids of the inputs, which the error summary links to.
CODE_INPUT: Final = "case-code"
BODY_INPUT: Final = "message-body"
FILES_INPUT: Final = "message-files"
MAX_MESSAGE_CHARS: Final = 20_000

Notice = Literal["ended", "logged-out"]
Sent = Literal["message", "files", "retaliation", "sent-up", "checkin", "checkin-yes"]
SENT: Final = ("message", "files", "retaliation", "sent-up", "checkin", "checkin-yes")
ANSWER_FIELD: Final = "answer"
DETAILS_FIELD: Final = "details"


@dataclass(frozen=True)
class FieldError:
    """One problem with what was sent, shown in the error summary and at its field."""

    field: str  # the id of the input it belongs to
    message: str


@dataclass(frozen=True)
class CaseLogin:
    principal: ReporterPrincipal
    seconds_left: int


@dataclass(frozen=True)
class MessageDraft:
    """What the reporter typed in a message form, and what went wrong with it."""

    body: str = ""
    errors: Sequence[FieldError] = ()
    form_check: CsrfResult = "ok"
    files_lost: bool = False  # files were chosen, but not kept: choose them again


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _maker(request: Request) -> sessionmaker[Session]:
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    return maker


def _translate(request: Request, language: Language, message: str) -> str:
    return page_templates(request).gettext(language, message)


# --------------------------------------------------------------------------
# Formatting for the page's language


def _formatters(language: Language) -> dict[str, Callable[[Any], str | bool]]:
    return {
        "day": lambda iso: format_day(str(iso), language),
        "size": lambda size: format_size(int(size), language),
        "passed": lambda iso: iso_date_passed(str(iso)),
    }


def iso_date_passed(iso_date: str) -> bool:
    """Whether a deadline (its last day) is over: shown as "was due by", not "due by"."""
    return dt.date.fromisoformat(iso_date) < utcnow().date()


# --------------------------------------------------------------------------
# The reporter's session: the cookie value is the token

# Sessions opened by these pages; an API bearer token planted as a cookie opens nothing.
WEB = "web"


def find_login(session: Session, token: str | None) -> CaseLogin | None:
    """The reporter logged in with this browser's cookie, or None."""
    if token is None:
        return None
    try:
        live = service.reporter_session(session, token, WEB)
    except Unauthenticated:
        return None
    seconds_left = int((live.expires_at - utcnow()).total_seconds())
    return CaseLogin(live.principal, max(1, seconds_left))


def end_reporter_session(session: Session, token: str) -> None:
    """Delete the reporter session behind `token`, if there is one."""
    service.end_reporter_session(session, token, WEB)


async def _current_login(request: Request) -> CaseLogin | None:
    token = session_value(request)
    if token is None:
        return None
    return await run_in_threadpool(in_transaction, _maker(request), find_login, token)


def _to_follow_up(language: Language, notice: Notice | None = "ended") -> RedirectResponse:
    query = f"?notice={notice}" if notice else ""
    return RedirectResponse(f"/{language}/follow-up{query}", status_code=303)


def _keep_cookie_for(request: Request, login: CaseLogin) -> None:
    # The cookie is the session token: it should not outlive the session.
    limit_session_cookie(request, login.seconds_left)


def _form_text(value: object) -> str:
    return value if isinstance(value, str) else ""


# --------------------------------------------------------------------------
# Follow-up: logging in with the case code


def _render_follow_up(
    request: Request,
    language: Language,
    *,
    notice: str | None = None,
    case_code: str = "",
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    return render_page(
        request,
        language,
        "follow_up.html",
        {
            "notice": notice,
            "case_code": case_code,
            "errors": list(errors),
            "form_check": form_check,
            "session_length": format_minutes(_settings(request).reporter_session_minutes, language),
        },
        status_code=status_code,
    )


@router.get("/{lang:lang}/follow-up", response_class=HTMLResponse)
def follow_up_page(
    request: Request,
    language: PageLanguage,
    notice: str | None = None,
) -> HTMLResponse:
    return _render_follow_up(
        request, language, notice=notice if notice in ("ended", "logged-out") else None
    )


def _login_error(request: Request, language: Language, case_code: str) -> FieldError:
    if not case_code.strip():
        message = N_("Enter your case code.")
    elif crypto.normalize_case_code(case_code) is None:
        message = N_(
            "A case code has 20 digits. Check that you have typed all of them, and nothing else."
        )
    else:
        message = N_("This case code does not open a case. Check the digits and try again.")
    return FieldError(CODE_INPUT, _translate(request, language, message))


@router.post("/{lang:lang}/follow-up", response_class=HTMLResponse)
async def follow_up_login(request: Request, language: PageLanguage) -> Response:
    """Check the case code; on success the cookie becomes the session and the code is gone."""
    form = await request.form(max_files=0, max_fields=20)
    case_code = _form_text(form.get(CODE_FIELD))[:100]
    form_check = check_csrf(request, _form_text(form.get(CSRF_FIELD)))
    if form_check != "ok":
        return _render_follow_up(
            request, language, case_code=case_code, form_check=form_check, status_code=400
        )
    settings = _settings(request)
    previous = session_value(request)
    response = RedirectResponse(f"/{language}/case", status_code=303)
    limit_session_cookie(request, settings.reporter_session_minutes * 60)
    token = rotate_session_cookie(request, response)
    opened = None
    if case_code.strip():
        try:
            opened = await service.sign_in_reporter(
                _maker(request), settings, case_code=case_code, token=token, channel=WEB
            )
        except TooManyAttempts as busy:
            limit_session_cookie(request, FORM_TOKEN_SECONDS)
            message = _translate(
                request,
                language,
                N_(
                    "Many case codes are being tried right now, so the service is slowed down "
                    "for everyone. Wait %(seconds)s seconds, then try again."
                ),
            ) % {"seconds": busy.retry_after}
            page = _render_follow_up(
                request,
                language,
                case_code=case_code,
                errors=[FieldError(CODE_INPUT, message)],
                status_code=429,
            )
            page.headers.update(busy.headers)
            return page
    if opened is None:
        # The fresh cookie value now only binds form tokens, for the usual time.
        limit_session_cookie(request, FORM_TOKEN_SECONDS)
        return _render_follow_up(
            request,
            language,
            case_code=case_code,
            errors=[_login_error(request, language, case_code)],
            status_code=401,
        )
    if previous is not None and previous != opened:
        # An earlier login in this browser (perhaps to another case) ends here.
        await run_in_threadpool(in_transaction, _maker(request), end_reporter_session, previous)
    return response


# --------------------------------------------------------------------------
# The case page


def _render_case(
    request: Request,
    language: Language,
    login: CaseLogin,
    case: dict[str, Any],
    *,
    sent: str | None = None,
    draft: MessageDraft | None = None,
    status_code: int = 200,
    reference: str | None = None,
    send_up_refused: bool = False,
    checkin_draft: CheckInDraft | None = None,
) -> HTMLResponse:
    draft = draft or MessageDraft()
    _keep_cookie_for(request, login)
    settings = _settings(request)
    return render_page(
        request,
        language,
        "case_linked.html" if reference else "case.html",
        {
            "case": case,
            "reference": reference,
            "base": _case_path(language, reference),
            "send_up_refused": send_up_refused,
            "checkin_draft": checkin_draft,
            "report": case["report"],
            "sent": sent,
            "body": draft.body,
            "errors": list(draft.errors),
            "form_check": draft.form_check,
            "files_lost": draft.files_lost,
            "session_length": format_minutes(settings.reporter_session_minutes, language),
            "max_files": settings.max_files_per_report,
            "max_file_size": format_size(settings.max_file_bytes, language),
            **_formatters(language),
        },
        status_code=status_code,
    )


def _render_case_gone(request: Request, language: Language) -> HTMLResponse:
    return render_page(request, language, "case_gone.html", status_code=404)


@dataclass(frozen=True)
class CheckInDraft:
    """An unsent answer to a check-in question, shown back with its error."""

    checkin_id: int
    details: str = ""


def _case_path(language: Language, reference: str | None) -> str:
    """The page of the first case, or of one of its linked cases."""
    return f"/{language}/case" + (f"/linked/{reference}" if reference else "")


def _target(session: Session, login: CaseLogin, reference: str | None) -> ReporterPrincipal:
    """The reporter acting on their first case or on a linked one (404 for others)."""
    if reference is None:
        return login.principal
    return reprisal.linked_principal(session, login.principal, reference)


def _view(
    session: Session, settings: Settings, login: CaseLogin, reference: str | None
) -> dict[str, Any]:
    return reprisal.reporter_view(session, settings, _target(session, login, reference))


def _show_case(
    request: Request,
    language: PageLanguage,
    session: Session,
    sent: str | None,
    reference: str | None,
) -> Response:
    login = find_login(session, session_value(request))
    if login is None:
        return _to_follow_up(language)
    try:
        case = _view(session, _settings(request), login, reference)
    except NotFound:
        return _render_case_gone(request, language)
    except Unauthenticated:  # a session from before linked cases
        return _to_follow_up(language)
    return _render_case(
        request,
        language,
        login,
        case,
        sent=sent if sent in SENT else None,
        reference=reference,
    )


@router.get("/{lang:lang}/case", response_class=HTMLResponse)
def case_page(
    request: Request,
    language: PageLanguage,
    session: DbSession,
    sent: str | None = None,
) -> Response:
    return _show_case(request, language, session, sent, None)


@router.get("/{lang:lang}/case/linked/{reference}", response_class=HTMLResponse)
def linked_case_page(
    request: Request,
    language: PageLanguage,
    reference: str,
    session: DbSession,
    sent: str | None = None,
) -> Response:
    """A case the reporter opened from their first one (a retaliation case)."""
    return _show_case(request, language, session, sent, reference)


async def _rerender_case(
    request: Request,
    language: Language,
    login: CaseLogin,
    draft: MessageDraft,
    status_code: int,
    reference: str | None = None,
    *,
    send_up_refused: bool = False,
    checkin_draft: CheckInDraft | None = None,
) -> Response:
    try:
        case = await run_in_threadpool(
            in_transaction, _maker(request), _view, _settings(request), login, reference
        )
    except NotFound:
        return _render_case_gone(request, language)
    except Unauthenticated:
        return _to_follow_up(language)
    return _render_case(
        request,
        language,
        login,
        case,
        draft=draft,
        status_code=status_code,
        reference=reference,
        send_up_refused=send_up_refused,
        checkin_draft=checkin_draft,
    )


def _render_retaliation(
    request: Request,
    language: Language,
    login: CaseLogin,
    *,
    draft: MessageDraft | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    draft = draft or MessageDraft()
    _keep_cookie_for(request, login)
    settings = _settings(request)
    return render_page(
        request,
        language,
        "case_retaliation.html",
        {
            "body": draft.body,
            "errors": list(draft.errors),
            "form_check": draft.form_check,
            "files_lost": draft.files_lost,
            "max_files": settings.max_files_per_report,
            "max_file_size": format_size(settings.max_file_bytes, language),
        },
        status_code=status_code,
    )


@router.get("/{lang:lang}/case/retaliation", response_class=HTMLResponse)
def retaliation_page(request: Request, language: PageLanguage, session: DbSession) -> Response:
    login = find_login(session, session_value(request))
    if login is None:
        return _to_follow_up(language)
    return _render_retaliation(request, language, login)


# --------------------------------------------------------------------------
# Sending a message, files, or a report of retaliation


def _file_problem(
    request: Request, language: Language, problem: FileProblem, settings: Settings
) -> FieldError:
    if problem.reason == "too_large":
        text = _translate(
            request,
            language,
            N_("The file %(name)s is larger than %(limit)s. Choose a smaller file, or split it."),
        ) % {"name": problem.name, "limit": format_size(settings.max_file_bytes, language)}
    else:
        text = _translate(
            request,
            language,
            N_(
                "You can send at most %(count)s files at a time, so %(name)s could not be "
                "included. Send it in another message."
            ),
        ) % {"name": problem.name, "count": settings.max_files_per_report}
    return FieldError(FILES_INPUT, text)


def _check_message(
    request: Request,
    language: Language,
    form: ParsedForm,
    body: str,
    *,
    needs_text: bool,
) -> list[FieldError]:
    errors: list[FieldError] = []
    text = body.strip()
    if not text and (needs_text or not (form.files or form.problems)):
        message = (
            N_("Write what happened.")
            if needs_text
            else N_("Write a message, or choose at least one file to send.")
        )
        errors.append(FieldError(BODY_INPUT, _translate(request, language, message)))
    elif len(text) > MAX_MESSAGE_CHARS:
        errors.append(
            FieldError(
                BODY_INPUT,
                _translate(
                    request,
                    language,
                    N_(
                        "The message is longer than %(count)s characters. "
                        "Shorten it, or send it in two parts."
                    ),
                )
                % {"count": format_decimal(MAX_MESSAGE_CHARS, locale=language)},
            )
        )
    settings = _settings(request)
    errors.extend(_file_problem(request, language, p, settings) for p in form.problems)
    return errors


def _store_message(
    session: Session,
    settings: Settings,
    login: CaseLogin,
    reference: str | None,
    body: str,
    prepared: service.PreparedCase | None,
    form: ParsedForm,
) -> None:
    if prepared is not None:
        # A report of retaliation opens a case of its own, linked to the first one.
        reprisal.open_retaliation_case(
            session, settings, login.principal, body=body, prepared=prepared, files=form.files
        )
        return
    principal = _target(session, login, reference)
    if form.files:
        # Counted with every other reporter's uploads, installation-wide.
        throttle.claim_flood_slot(session, settings, Flood.UPLOAD)
    if body:
        service.add_reporter_message(session, principal, body=body, files=form.files)
    else:
        service.add_reporter_files(session, principal, files=form.files)


async def _receive_message(
    request: Request, language: Language, *, retaliation: bool, reference: str | None = None
) -> Response:
    """The reply form and the retaliation form: text and files in one multipart body.

    Files are sealed as they stream in, under the key of the case they go to: the
    linked case's for a reply there, a new case's for a report of retaliation.
    """
    settings = _settings(request)
    login = await _current_login(request)
    prepared = service.PreparedCase.new() if retaliation else None
    target = login.principal if login else None
    if login is not None and reference is not None:
        try:
            target = await run_in_threadpool(
                in_transaction, _maker(request), _target, login, reference
            )
        except NotFound:
            return _render_case_gone(request, language)
        except Unauthenticated:
            return _to_follow_up(language)
    sealing_for = (
        (prepared.case_id, prepared.case_key)
        if prepared
        else ((target.case_id, target.case_key) if target else ("", bytes(32)))
    )
    try:
        form = await read_multipart(
            request,
            # Without a session nothing can be stored: files are dropped unread.
            case_id=sealing_for[0],
            key=sealing_for[1],
            max_file_bytes=settings.max_file_bytes,
            max_files=settings.max_files_per_report if login else 0,
            file_field=FILES_FIELD,
        )
    except VarslingError:
        form = None
    if form is None or login is None:
        body = form.first(BODY_FIELD).replace("\x00", "") if form else ""
        names = [p.name for p in form.problems] if form else []
        if form is not None:
            form.discard_files()
        if login is None:
            return render_page(
                request,
                language,
                "case_session_ended.html",
                {
                    "body": body,
                    "file_names": names,
                    "retaliation": retaliation,
                    "session_length": format_minutes(settings.reporter_session_minutes, language),
                },
                status_code=401,
            )
        unreadable = FieldError(
            BODY_INPUT,
            _translate(
                request,
                language,
                N_(
                    "What you sent could not be read, perhaps because the files were too large "
                    "altogether. Nothing was sent. Try again with fewer or smaller files."
                ),
            ),
        )
        return await _show_draft(
            request, language, login, MessageDraft(errors=[unreadable]), retaliation, 400, reference
        )

    body = form.first(BODY_FIELD).replace("\x00", "")
    text = body.strip()
    files_lost = bool(form.files or form.problems)
    try:
        form_check = check_csrf(request, form.first(CSRF_FIELD))
        if form_check != "ok":
            draft = MessageDraft(body=body, form_check=form_check, files_lost=files_lost)
            return await _show_draft(request, language, login, draft, retaliation, 400, reference)
        errors = _check_message(request, language, form, body, needs_text=retaliation)
        if errors:
            too_large = any(p.reason == "too_large" for p in form.problems)
            draft = MessageDraft(body=body, errors=errors, files_lost=files_lost)
            status = 413 if too_large else 422
            return await _show_draft(
                request, language, login, draft, retaliation, status, reference
            )
        await run_in_threadpool(
            in_transaction,
            _maker(request),
            _store_message,
            settings,
            login,
            reference,
            text,
            prepared,
            form,
        )
    except UploadsBusy as busy:
        busy_error = FieldError(
            FILES_INPUT,
            _translate(
                request,
                language,
                N_(
                    "Unusually many files are being sent right now, so nothing was sent. "
                    "What you wrote is kept below. Wait %(seconds)s seconds, then choose "
                    "the files again and send."
                ),
            )
            % {"seconds": busy.retry_after},
        )
        draft = MessageDraft(body=body, errors=[busy_error], files_lost=files_lost)
        page = await _show_draft(
            request, language, login, draft, retaliation, busy.status_code, reference
        )
        page.headers["Retry-After"] = str(busy.retry_after)
        return page
    except NotFound:
        return _render_case_gone(request, language)
    except Unauthenticated:
        # A session from before linked cases: log in again (what was typed is shown).
        return render_page(
            request,
            language,
            "case_session_ended.html",
            {
                "body": body,
                "file_names": [f.name for f in form.files],
                "retaliation": retaliation,
                "session_length": format_minutes(settings.reporter_session_minutes, language),
            },
            status_code=401,
        )
    finally:
        form.discard_files()
    sent: Sent = "retaliation" if retaliation else ("message" if text else "files")
    return RedirectResponse(f"{_case_path(language, reference)}?sent={sent}", status_code=303)


async def _show_draft(
    request: Request,
    language: Language,
    login: CaseLogin,
    draft: MessageDraft,
    retaliation: bool,
    status_code: int,
    reference: str | None = None,
) -> Response:
    if retaliation:
        return _render_retaliation(request, language, login, draft=draft, status_code=status_code)
    return await _rerender_case(request, language, login, draft, status_code, reference)


@router.post("/{lang:lang}/case/messages", response_class=HTMLResponse)
async def send_message(request: Request, language: PageLanguage) -> Response:
    return await _receive_message(request, language, retaliation=False)


@router.post("/{lang:lang}/case/retaliation", response_class=HTMLResponse)
async def send_retaliation(request: Request, language: PageLanguage) -> Response:
    return await _receive_message(request, language, retaliation=True)


@router.post("/{lang:lang}/case/linked/{reference}/messages", response_class=HTMLResponse)
async def send_linked_message(request: Request, language: PageLanguage, reference: str) -> Response:
    return await _receive_message(request, language, retaliation=False, reference=reference)


@router.get("/{lang:lang}/case/messages")
@router.get("/{lang:lang}/case/logout")
@router.get("/{lang:lang}/case/send-up")
@router.get("/{lang:lang}/case/checkins/{checkin_id}")
def back_to_case(language: PageLanguage) -> RedirectResponse:
    """A form's address opened directly (e.g. from the language switch on an error page)."""
    return RedirectResponse(f"/{language}/case", status_code=303)


@router.get("/{lang:lang}/case/linked/{reference}/messages")
@router.get("/{lang:lang}/case/linked/{reference}/send-up")
@router.get("/{lang:lang}/case/linked/{reference}/checkins/{checkin_id}")
def back_to_linked_case(language: PageLanguage, reference: str) -> RedirectResponse:
    return RedirectResponse(_case_path(language, reference), status_code=303)


# --------------------------------------------------------------------------
# Sending an unanswered case up; answering a check-in


def _not_sent(
    request: Request, language: Language, *, body: str = "", retaliation: bool = False
) -> HTMLResponse:
    """A form sent without a session: nothing was done, and what was typed is kept (401)."""
    settings = _settings(request)
    return render_page(
        request,
        language,
        "case_session_ended.html",
        {
            "body": body,
            "file_names": [],
            "retaliation": retaliation,
            "session_length": format_minutes(settings.reporter_session_minutes, language),
        },
        status_code=401,
    )


def _record_refusal(session: Session, refused: VarslingError) -> None:
    if refused.refusal is not None:
        audit.record(
            session,
            actor=refused.refusal.actor,
            action=refused.refusal.action,
            case_id=refused.refusal.case_id,
            details=refused.refusal.details,
        )


def _send_up(session: Session, settings: Settings, login: CaseLogin, reference: str | None) -> None:
    reprisal.send_up(session, settings, _target(session, login, reference))


async def _receive_send_up(request: Request, language: Language, reference: str | None) -> Response:
    form = await request.form(max_files=0, max_fields=20)
    login = await _current_login(request)
    if login is None:
        # Said plainly: a redirect to the login page could pass for "sent up".
        return _not_sent(request, language)
    form_check = check_csrf(request, _form_text(form.get(CSRF_FIELD)))
    if form_check != "ok":
        draft = MessageDraft(form_check=form_check)
        return await _rerender_case(request, language, login, draft, 400, reference)
    try:
        await run_in_threadpool(
            in_transaction, _maker(request), _send_up, _settings(request), login, reference
        )
    except NotFound:
        return _render_case_gone(request, language)
    except Unauthenticated:
        return _to_follow_up(language)
    except Conflict as refused:
        await run_in_threadpool(in_transaction, _maker(request), _record_refusal, refused)
        return await _rerender_case(
            request, language, login, MessageDraft(), 409, reference, send_up_refused=True
        )
    return RedirectResponse(f"{_case_path(language, reference)}?sent=sent-up", status_code=303)


@router.post("/{lang:lang}/case/send-up", response_class=HTMLResponse)
async def send_up(request: Request, language: PageLanguage) -> Response:
    """Send the unacknowledged case to the case handlers of the level above."""
    return await _receive_send_up(request, language, None)


@router.post("/{lang:lang}/case/linked/{reference}/send-up", response_class=HTMLResponse)
async def send_up_linked(request: Request, language: PageLanguage, reference: str) -> Response:
    return await _receive_send_up(request, language, reference)


def _answer(
    session: Session,
    settings: Settings,
    login: CaseLogin,
    reference: str | None,
    checkin_id: int,
    yes: bool,
    details: str,
) -> None:
    reprisal.answer_checkin(
        session,
        settings,
        _target(session, login, reference),
        checkin_id,
        negative_consequences=yes,
        details=details or None,
    )


async def _receive_checkin(
    request: Request, language: Language, checkin_id: int, reference: str | None
) -> Response:
    form = await request.form(max_files=0, max_fields=20)
    login = await _current_login(request)
    answer = _form_text(form.get(ANSWER_FIELD))
    details = _form_text(form.get(DETAILS_FIELD)).replace("\x00", "").strip()
    if login is None:
        # What the reporter wrote about what happened to them is shown back, not lost.
        return _not_sent(request, language, body=details, retaliation=answer == "yes")
    draft = CheckInDraft(checkin_id, details)
    form_check = check_csrf(request, _form_text(form.get(CSRF_FIELD)))
    if form_check != "ok":
        return await _rerender_case(
            request,
            language,
            login,
            MessageDraft(form_check=form_check),
            400,
            reference,
            checkin_draft=draft,
        )
    errors = []
    if answer not in ("yes", "no"):
        errors.append(
            FieldError(
                f"checkin-{checkin_id}-yes",
                _translate(request, language, N_("Answer yes or no.")),
            )
        )
    elif len(details) > MAX_MESSAGE_CHARS:
        errors.append(
            FieldError(
                f"checkin-{checkin_id}-details",
                _translate(
                    request,
                    language,
                    N_("What you wrote is longer than %(count)s characters. Shorten it."),
                )
                % {"count": format_decimal(MAX_MESSAGE_CHARS, locale=language)},
            )
        )
    if errors:
        return await _rerender_case(
            request,
            language,
            login,
            MessageDraft(errors=errors),
            422,
            reference,
            checkin_draft=draft,
        )
    try:
        await run_in_threadpool(
            in_transaction,
            _maker(request),
            _answer,
            _settings(request),
            login,
            reference,
            checkin_id,
            answer == "yes",
            details,
        )
    except NotFound:
        return RedirectResponse(_case_path(language, reference), status_code=303)
    except Unauthenticated:
        return _to_follow_up(language)
    except Conflict:  # answered already (another tab): the page shows the answer's date
        return RedirectResponse(_case_path(language, reference), status_code=303)
    sent = "checkin-yes" if answer == "yes" else "checkin"
    return RedirectResponse(f"{_case_path(language, reference)}?sent={sent}", status_code=303)


@router.post("/{lang:lang}/case/checkins/{checkin_id}", response_class=HTMLResponse)
async def answer_checkin(request: Request, language: PageLanguage, checkin_id: int) -> Response:
    """The reporter's answer to a check-in question; yes opens a retaliation case."""
    return await _receive_checkin(request, language, checkin_id, None)


@router.post(
    "/{lang:lang}/case/linked/{reference}/checkins/{checkin_id}", response_class=HTMLResponse
)
async def answer_linked_checkin(
    request: Request, language: PageLanguage, reference: str, checkin_id: int
) -> Response:
    return await _receive_checkin(request, language, checkin_id, reference)


# --------------------------------------------------------------------------
# Downloading a file, logging out


@router.get("/{lang:lang}/case/files/{file_id}")
def download_file(
    request: Request, language: PageLanguage, file_id: str, session: DbSession
) -> Response:
    """One of the case's files, as an opaque download (never shown inline)."""
    return _download(request, language, session, None, file_id)


@router.get("/{lang:lang}/case/linked/{reference}/files/{file_id}")
def download_linked_file(
    request: Request, language: PageLanguage, reference: str, file_id: str, session: DbSession
) -> Response:
    return _download(request, language, session, reference, file_id)


def _download(
    request: Request,
    language: Language,
    session: Session,
    reference: str | None,
    file_id: str,
) -> Response:
    login = find_login(session, session_value(request))
    if login is None:
        return _to_follow_up(language)
    try:
        principal = _target(session, login, reference)
    except NotFound:
        return _render_case_gone(request, language)
    except Unauthenticated:
        return _to_follow_up(language)
    attachment = attachments.find(session, principal.case_id, file_id)
    if attachment is None:
        return render_page(request, language, "case_file_missing.html", status_code=404)
    audit.record(
        session,
        actor=audit.REPORTER,
        action="reporter.file_downloaded",
        case_id=principal.case_id,
        details={"file_id": file_id},
    )
    return download_response(session, _maker(request), attachment, principal.case_key)


@router.post("/{lang:lang}/case/logout", response_class=HTMLResponse)
async def log_out(request: Request, language: PageLanguage) -> Response:
    form = await request.form(max_files=0, max_fields=20)
    form_check = check_csrf(request, _form_text(form.get(CSRF_FIELD)))
    if form_check != "ok":
        login = await _current_login(request)
        if login is None:
            return _to_follow_up(language)
        draft = MessageDraft(form_check=form_check)
        return await _rerender_case(request, language, login, draft, 400)
    token = session_value(request)
    if token is not None:
        await run_in_threadpool(in_transaction, _maker(request), end_reporter_session, token)
    response = _to_follow_up(language, "logged-out")
    clear_session_cookie(request, response)
    return response
