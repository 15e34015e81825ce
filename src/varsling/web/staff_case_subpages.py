"""A handler's case sub-pages: files, access, identity, hold, and the access history.

Each page belongs to one case at /{lang}/staff/cases/{case_id}/..., shows its
short header (category, unit, status) and links back to the case page
(web/staff_case_pages.py). Every page opens the case through the same
service functions as the API, so it answers as the API does: no key is the
404 page, no declaration the 409 page (declarations.require, audited).

A form is checked for its token first: a bad or expired token, or bad
input, shows the form again with what was typed and changes nothing. A
refusal from the service that the person can act on (a grant to someone
left out, a review day too far ahead...) is shown at the form: the action
ran in a savepoint, rolled back with its queued audit events, and the
refusal's own audit event is written. Success is a redirect (303) to the
page with a confirmation that takes focus.

The upload page reads its multipart body with no transaction open, as the
reporter pages do, and stores through the same function as
`POST /api/v1/cases/{case_id}/files` (cases/routes.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime
from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit
from varsling.accounts.models import Unit
from varsling.accounts.service import StaffPrincipal, utcnow
from varsling.authz import AppSettings
from varsling.cases import access_history, exclusions, grants, identity, retention, service
from varsling.cases.attachments import FileProblem
from varsling.cases.routes import receive_case_files, store_case_files
from varsling.cases.schemas import HoldIn, IdentityRequestIn
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import VarslingError
from varsling.request_transaction import DbSession
from varsling.web.i18n import N_, Language
from varsling.web.pages import PageLanguage, format_day, format_size
from varsling.web.report_pages import CATEGORIES
from varsling.web.security import CSRF_FIELD, CsrfResult, check_csrf
from varsling.web.staff_auth import StaffPage, staff_page_principal
from varsling.web.staff_login_pages import FieldError
from varsling.web.staff_pages import form_text, read_staff_form, render_staff, staff_translate

router = APIRouter(include_in_schema=False)

T = TypeVar("T")

# The ids of the inputs, which the error summaries link to.
FILES_INPUT: Final = "case-files"
GRANTEE_INPUT: Final = "grantee"
JUSTIFICATION_INPUT: Final = "justification"
REASON_INPUT: Final = "hold-reason"
REVIEW_INPUT: Final = "hold-review-on"
# Times in the access history are shown in the party's time zone (in UTC on a
# system without time zone data, and then said so).
try:
    DISPLAY_TIMEZONE: dt.tzinfo = ZoneInfo("Europe/Oslo")
except ZoneInfoNotFoundError:  # pragma: no cover - Debian and the container have tzdata
    DISPLAY_TIMEZONE = dt.UTC
MAX_REASON_CHARS: Final = 5_000

_STATUS_LABELS: Final[Mapping[str, str]] = {
    "received": N_("Received"),
    "acknowledged": N_("Acknowledged"),
    "investigating": N_("Under investigation"),
    "concluded": N_("Concluded"),
    "closed": N_("Closed"),
}
_CATEGORY_LABELS: Final[Mapping[str, str]] = {c.value: label for c, label, _hint in CATEGORIES}

# The sub-pages, in the order their navigation lists them.
_SUBPAGES: Final[tuple[tuple[str, str], ...]] = (
    ("upload", N_("Add files")),
    ("grants", N_("Give access")),
    ("identity", N_("The reporter's identity")),
    ("hold", N_("Retention hold")),
    ("access", N_("Access history")),
)


@dataclass(frozen=True)
class CaseHeader:
    """What each sub-page shows of its case: enough to know which case it is."""

    id: str
    category: str
    unit: str
    status: str
    received_on: str


@dataclass(frozen=True)
class SubpageLink:
    label: str
    url: str
    current: bool


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _maker(request: Request) -> sessionmaker[Session]:
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    return maker


def _t(request: Request, language: Language, message: str) -> str:
    return staff_translate(request, language, message)


def case_path(language: Language, case_id: str, subpage: str | None = None) -> str:
    """The case page, or one of its sub-pages."""
    return f"/{language}/staff/cases/{case_id}" + (f"/{subpage}" if subpage else "")


def case_header(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str
) -> CaseHeader:
    """The case's short header, for a handler who opened it; else 404 or 409 (as the API)."""
    case = service.open_case(session, settings, principal, case_id).case
    unit = session.get(Unit, case.unit_id)
    return CaseHeader(
        id=case.id,
        category=case.category,
        unit=unit.name if unit is not None else "",
        status=case.status,
        received_on=case.received_on.isoformat(),
    )


def _attempt(
    session: Session, work: Callable[[], T], refusals: tuple[type[VarslingError], ...]
) -> T | VarslingError:
    """Run `work` in a savepoint; a refusal in `refusals` undoes it and is returned.

    What `work` queued for the audit trail goes with it; the refusal's own
    event (if the service marked it) is written instead, as the API's error
    handler would. Any other error passes on to the error page.
    """
    queued = audit.queued_count(session)
    try:
        with session.begin_nested():
            return work()
    except refusals as refused:
        audit.drop_queued_after(session, queued)
        if refused.refusal is not None:
            audit.record(
                session,
                actor=refused.refusal.actor,
                action=refused.refusal.action,
                case_id=refused.refusal.case_id,
                details=refused.refusal.details,
            )
        return refused


def _render(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    header: CaseHeader,
    subpage: str,
    context: Mapping[str, Any],
    *,
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    links = [
        SubpageLink(
            _t(request, language, label), case_path(language, header.id, path), path == subpage
        )
        for path, label in _SUBPAGES
    ]
    return render_staff(
        request,
        language,
        f"staff/case_{subpage}.html",
        principal,
        {
            "header": header,
            "case_url": case_path(language, header.id),
            "page_url": case_path(language, header.id, subpage),
            "subpages": links,
            "category_label": _t(
                request, language, _CATEGORY_LABELS.get(header.category, N_("Something else"))
            ),
            "status_label": _t(request, language, _STATUS_LABELS.get(header.status, header.status)),
            "received_day": format_day(header.received_on, language),
            "errors": list(errors),
            "form_check": form_check,
            "day": lambda iso: format_day(str(iso), language),
            **context,
        },
        status_code=status_code,
    )


def _done(request: Request) -> str | None:
    done = request.query_params.get("done")
    return done if done and done.isascii() and done.replace("-", "").isalpha() else None


def _too_long(request: Request, language: Language, field: str, limit: int) -> FieldError:
    return FieldError(
        field,
        _t(request, language, N_("This is longer than %(count)s characters. Shorten it."))
        % {"count": format_decimal(limit, locale=language)},
    )


# --------------------------------------------------------------------------
# Adding files


def _upload_context(request: Request, language: Language, **extra: Any) -> dict[str, Any]:
    settings = _settings(request)
    return {
        "max_files": settings.max_files_per_report,
        "max_file_size": format_size(settings.max_file_bytes, language),
        "done": _done(request),
        "files_lost": False,
        **extra,
    }


@router.get("/{lang:lang}/staff/cases/{case_id}/upload", response_class=HTMLResponse)
def upload_page(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> HTMLResponse:
    header = case_header(session, settings, principal, case_id)
    return _render(
        request, language, principal, header, "upload", _upload_context(request, language)
    )


def _open_for_upload(
    session: Session, request: Request, language: Language, case_id: str
) -> tuple[StaffPrincipal, CaseHeader, bytes]:
    settings = _settings(request)
    principal = staff_page_principal(request, session, settings, language)
    header = case_header(session, settings, principal, case_id)
    return principal, header, service.open_case(session, settings, principal, case_id).key


def _file_problem(request: Request, language: Language, problem: FileProblem) -> FieldError:
    settings = _settings(request)
    if problem.reason == "too_large":
        text = _t(
            request,
            language,
            N_("The file %(name)s is larger than %(limit)s. Choose a smaller file, or split it."),
        ) % {"name": problem.name, "limit": format_size(settings.max_file_bytes, language)}
    else:
        text = _t(
            request,
            language,
            N_(
                "You can add at most %(count)s files at a time, so %(name)s could not be "
                "included. Add it afterwards."
            ),
        ) % {"name": problem.name, "count": settings.max_files_per_report}
    return FieldError(FILES_INPUT, text)


@router.post("/{lang:lang}/staff/cases/{case_id}/upload", response_class=HTMLResponse)
async def upload(request: Request, language: PageLanguage, case_id: str) -> Response:
    """Files sealed under the case key as they stream in; stored only if all are within limits."""
    maker = _maker(request)
    principal, header, key = await run_in_threadpool(
        in_transaction, maker, _open_for_upload, request, language, case_id
    )

    def again(
        errors: list[FieldError], status: int, form_check: CsrfResult = "ok", *, lost: bool = True
    ) -> Response:
        return _render(
            request,
            language,
            principal,
            header,
            "upload",
            _upload_context(request, language, done=None, files_lost=lost),
            errors=errors,
            form_check=form_check,
            status_code=status,
        )

    try:
        form = await receive_case_files(request, _settings(request), case_id=case_id, key=key)
    except VarslingError as unreadable:
        message = N_(
            "What you sent could not be read, perhaps because the files were too large "
            "altogether. Nothing was added. Try again with fewer or smaller files."
        )
        return again(
            [FieldError(FILES_INPUT, _t(request, language, message))],
            413 if unreadable.status_code == 413 else 400,
        )
    try:
        form_check = check_csrf(request, form.first(CSRF_FIELD))
        if form_check != "ok":
            return again([], 400, form_check, lost=bool(form.files or form.problems))
        try:
            await run_in_threadpool(
                in_transaction,
                maker,
                store_case_files,
                _settings(request),
                principal,
                case_id,
                form,
            )
        except service.FilesRefused as refused:
            errors = [_file_problem(request, language, p) for p in refused.problems]
            return again(errors, refused.status_code)
        except service.NoFiles:
            message = N_("Choose at least one file to add.")
            return again([FieldError(FILES_INPUT, _t(request, language, message))], 422, lost=False)
    finally:
        form.discard_files()
    return RedirectResponse(f"{case_path(language, case_id, 'upload')}?done=files", status_code=303)


# --------------------------------------------------------------------------
# Giving access


_GRANT_REFUSALS: Final[Mapping[str, str]] = {
    "no_such_user": N_("There is no active account for that person any more."),
    "not_a_handler_or_custodian": N_(
        "Only case handlers and identity custodians can be given a case."
    ),
    "outside_unit_chain": N_(
        "That person belongs to no unit on this case's chain (its unit and those above), "
        "so they cannot be given the case."
    ),
    "excluded": N_(
        "That person cannot be given this case: they are named as involved in it, by the "
        "reporter or because they stepped aside for a conflict of interest."
    ),
    "key_not_certified": N_(
        "That person's key is not certified by this installation, so the case cannot be "
        "encrypted for them. Tell the administrator."
    ),
    "already_granted": N_("That person already has access to this case."),
    "exclusions_altered": N_(
        "The record of who is left out of this case has been altered outside the service, so "
        "nobody can be given access. Tell the administrator and the auditors."
    ),
}


def _grant_refusal(request: Request, language: Language, refused: VarslingError) -> FieldError:
    reason = refused.code
    if refused.refusal is not None:
        reason = str(refused.refusal.details.get("reason", reason))
    message = _GRANT_REFUSALS.get(reason, N_("That person cannot be given this case."))
    return FieldError(GRANTEE_INPUT, _t(request, language, message))


def _grants_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    settings: Settings,
    case_id: str,
    *,
    chosen: str = "",
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
    done: bool = False,
) -> HTMLResponse:
    header = case_header(session, settings, principal, case_id)
    choices = grants.grant_choices(session, settings, principal, case_id)
    granted = request.query_params.get("granted", "") if done else ""
    granted_name = next(
        (p.display_name for p in choices.holders if str(p.user_id) == granted), None
    )
    return _render(
        request,
        language,
        principal,
        header,
        "grants",
        {
            "holders": choices.holders,
            "candidates": choices.candidates,
            "chosen": chosen,
            "me": principal.user_id,
            "granted_name": granted_name,
            "done": "granted" if done and granted_name else None,
        },
        errors=errors,
        form_check=form_check,
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/cases/{case_id}/grants", response_class=HTMLResponse)
def grants_page(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> HTMLResponse:
    return _grants_page(
        request, language, principal, session, settings, case_id, done=_done(request) == "granted"
    )


@router.post("/{lang:lang}/staff/cases/{case_id}/grants", response_class=HTMLResponse)
async def give_access(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """Give another handler or custodian of the case's unit chain access (grants.py)."""
    form, form_check = await read_staff_form(request, max_fields=10)
    chosen = form_text(form, "user_id", 20).strip()
    if form_check != "ok":
        return _grants_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            chosen=chosen,
            form_check=form_check,
            status_code=400,
        )
    if not chosen.isdigit() or not 0 < int(chosen) < 2**31:
        message = _t(request, language, N_("Choose who should get access to the case."))
        return _grants_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            errors=[FieldError(GRANTEE_INPUT, message)],
            status_code=422,
        )
    outcome = _attempt(
        session,
        lambda: grants.grant_access(
            session, settings, principal, case_id, user_id=int(chosen), today=utcnow().date()
        ),
        (grants.GrantRefused, grants.AlreadyGranted, exclusions.ExclusionsAltered),
    )
    if isinstance(outcome, VarslingError):
        return _grants_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            chosen=chosen,
            errors=[_grant_refusal(request, language, outcome)],
            status_code=outcome.status_code,
        )
    return RedirectResponse(
        f"{case_path(language, case_id, 'grants')}?done=granted&granted={int(chosen)}",
        status_code=303,
    )


# --------------------------------------------------------------------------
# The reporter's identity


_IDENTITY_REFUSALS: Final[Mapping[str, str]] = {
    "no_identity": N_("The reporter gave no name or contact details in this case."),
    "no_custodian": N_(
        "Nobody holds this case's identity key, so nobody can decide on a request. The "
        "identity stays with the reporter."
    ),
    "request_pending": N_("You already have a request on this case waiting for a custodian."),
}


def _identity_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    settings: Settings,
    case_id: str,
    *,
    justification: str = "",
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
    show: bool = False,
) -> HTMLResponse:
    header = case_header(session, settings, principal, case_id)
    requests = identity.case_requests(session, settings, principal, case_id)
    names = access_history.display_names(session, {r["requester_id"] for r in requests})
    mine = [r for r in requests if r["requester_id"] == principal.user_id]
    approved = any(r["status"] == identity.APPROVED for r in mine)
    shown = identity.read_identity(session, settings, principal, case_id) if show else None
    return _render(
        request,
        language,
        principal,
        header,
        "identity",
        {
            "requests": [
                {**r, "requester": names.get(r["requester_id"], ""), "mine": r in mine}
                for r in reversed(requests)
            ],
            "has_identity": identity.has_identity(session, case_id),
            "pending": any(r["status"] == identity.PENDING for r in mine),
            "approved": approved,
            "identity": shown,
            "justification": justification,
            "max_chars": format_decimal(MAX_REASON_CHARS, locale=language),
            "done": _done(request) if status_code == 200 and not show else None,
        },
        errors=errors,
        form_check=form_check,
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/cases/{case_id}/identity", response_class=HTMLResponse)
def identity_page(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
    show: str | None = None,
) -> HTMLResponse:
    """This case's identity requests; with ?show=identity, the identity (each read audited)."""
    return _identity_page(
        request, language, principal, session, settings, case_id, show=show == "identity"
    )


@router.post("/{lang:lang}/staff/cases/{case_id}/identity", response_class=HTMLResponse)
async def ask_for_identity(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """Ask the identity custodians to see who the reporter is, with a justification."""
    form, form_check = await read_staff_form(request, max_fields=10)
    justification = form_text(form, "justification", MAX_REASON_CHARS + 1000).replace("\x00", "")

    def again(errors: list[FieldError], status: int, check: CsrfResult = "ok") -> HTMLResponse:
        return _identity_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            justification=justification,
            errors=errors,
            form_check=check,
            status_code=status,
        )

    if form_check != "ok":
        return again([], 400, form_check)
    try:
        checked = IdentityRequestIn.model_validate({"justification": justification})
    except ValidationError:
        if justification.strip():
            return again([_too_long(request, language, JUSTIFICATION_INPUT, MAX_REASON_CHARS)], 422)
        message = N_("Write why you need to know who the reporter is.")
        return again([FieldError(JUSTIFICATION_INPUT, _t(request, language, message))], 422)
    outcome = _attempt(
        session,
        lambda: identity.request_identity(
            session,
            settings,
            principal,
            case_id,
            justification=checked.justification,
            today=utcnow().date(),
        ),
        (identity.NoIdentity, identity.NoCustodian, identity.RequestPending),
    )
    if isinstance(outcome, VarslingError):
        message = _IDENTITY_REFUSALS.get(outcome.code, N_("The request could not be made."))
        return again(
            [FieldError(JUSTIFICATION_INPUT, _t(request, language, message))],
            outcome.status_code,
        )
    return RedirectResponse(
        f"{case_path(language, case_id, 'identity')}?done=requested", status_code=303
    )


# --------------------------------------------------------------------------
# Retention hold


def _hold_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    settings: Settings,
    case_id: str,
    *,
    reason: str = "",
    review_on: str = "",
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    header = case_header(session, settings, principal, case_id)
    state = retention.hold_state(session, settings, principal, case_id)
    today = utcnow().date()
    return _render(
        request,
        language,
        principal,
        header,
        "hold",
        {
            "hold": state["hold"],
            "deletion_due": state["deletion_due"],
            "retention_months": settings.retention_months,
            "reason": reason,
            "review_on": review_on,
            "earliest": (today + dt.timedelta(days=1)).isoformat(),
            "latest": retention.latest_review_day(today).isoformat(),
            "max_years": retention.HOLD_MAX_YEARS,
            "max_chars": format_decimal(MAX_REASON_CHARS, locale=language),
            "done": _done(request) if status_code == 200 else None,
        },
        errors=errors,
        form_check=form_check,
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/cases/{case_id}/hold", response_class=HTMLResponse)
def hold_page(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> HTMLResponse:
    return _hold_page(request, language, principal, session, settings, case_id)


@router.post("/{lang:lang}/staff/cases/{case_id}/hold", response_class=HTMLResponse)
async def place_hold(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """Keep the case past retention until the review day (retention.place_hold)."""
    form, form_check = await read_staff_form(request, max_fields=10)
    reason = form_text(form, "reason", MAX_REASON_CHARS + 1000).replace("\x00", "")
    review_on = form_text(form, "review_on", 40).strip()

    def again(errors: list[FieldError], status: int, check: CsrfResult = "ok") -> HTMLResponse:
        return _hold_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            reason=reason,
            review_on=review_on,
            errors=errors,
            form_check=check,
            status_code=status,
        )

    if form_check != "ok":
        return again([], 400, form_check)
    errors = []
    try:
        checked = HoldIn.model_validate({"reason": reason, "review_on": review_on})
    except ValidationError as invalid:
        wrong = {str(error["loc"][0]) for error in invalid.errors() if error["loc"]}
        if "reason" in wrong and reason.strip():
            errors.append(_too_long(request, language, REASON_INPUT, MAX_REASON_CHARS))
        elif "reason" in wrong:
            message = N_("Write why the case must be kept.")
            errors.append(FieldError(REASON_INPUT, _t(request, language, message)))
        if "review_on" in wrong:
            message = N_("Enter the review day as a date, for example 2030-03-01.")
            errors.append(FieldError(REVIEW_INPUT, _t(request, language, message)))
    if errors:
        return again(errors, 422)
    outcome = _attempt(
        session,
        lambda: retention.place_hold(
            session,
            settings,
            principal,
            case_id,
            reason=checked.reason,
            review_on=checked.review_on,
            today=utcnow().date(),
        ),
        (retention.InvalidReviewDate,),
    )
    if isinstance(outcome, VarslingError):
        latest = retention.latest_review_day(utcnow().date())
        message = _t(
            request,
            language,
            N_(
                "The review day must be after today and at most %(years)s years ahead "
                "(by %(latest)s)."
            ),
        ) % {
            "years": retention.HOLD_MAX_YEARS,
            "latest": format_day(latest.isoformat(), language),
        }
        return again([FieldError(REVIEW_INPUT, message)], outcome.status_code)
    return RedirectResponse(f"{case_path(language, case_id, 'hold')}?done=held", status_code=303)


@router.post("/{lang:lang}/staff/cases/{case_id}/hold/lift", response_class=HTMLResponse)
async def lift_hold(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """End the hold: the case follows retention again (retention.lift_hold)."""
    _form, form_check = await read_staff_form(request, max_fields=5)
    if form_check != "ok":
        return _hold_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            form_check=form_check,
            status_code=400,
        )
    outcome = _attempt(
        session,
        lambda: retention.lift_hold(session, settings, principal, case_id, today=utcnow().date()),
        (retention.NoHold,),
    )
    if isinstance(outcome, VarslingError):
        message = _t(request, language, N_("The case has no hold to lift."))
        return _hold_page(
            request,
            language,
            principal,
            session,
            settings,
            case_id,
            errors=[FieldError("lift-hold", message)],
            status_code=outcome.status_code,
        )
    return RedirectResponse(f"{case_path(language, case_id, 'hold')}?done=lifted", status_code=303)


@router.get("/{lang:lang}/staff/cases/{case_id}/hold/lift")
def back_to_hold(language: PageLanguage, case_id: str, principal: StaffPage) -> RedirectResponse:
    """The form's address opened directly (e.g. from the language switch): the hold page."""
    return RedirectResponse(case_path(language, case_id, "hold"), status_code=303)


# --------------------------------------------------------------------------
# The access history


_STAFF_ACTIONS: Final[Mapping[str, str]] = {
    "case.read": N_("Read the case"),
    "case.conflict_check_read": N_("Looked at the case before declaring a conflict of interest"),
    "case.access_refused": N_("Was refused the case: no declaration of conflict of interest yet"),
    "case.declared": N_("Declared no conflict of interest"),
    "case.recused": N_("Stepped aside for a conflict of interest"),
    "case.recusal_refused": N_("Tried to step aside, but nobody would be left to handle the case"),
    "case.access_granted": N_("Gave another person access to the case"),
    "case.grant_refused": N_("Tried to give someone access to the case, and was refused"),
    "case.key_regranted": N_("Restored a colleague's access after their password was reset"),
    "case.regrant_refused": N_("Tried to restore a colleague's access, and was refused"),
    "recovery.granted": N_("Gave someone access to the case with the recovery key"),
    "case.message_sent": N_("Wrote to the reporter"),
    "case.note_added": N_("Wrote an internal note"),
    "case.status_changed": N_("Changed the status of the case"),
    "case.files_added": N_("Added files"),
    "case.file_downloaded": N_("Downloaded a file"),
    "case.hold_placed": N_("Placed a retention hold"),
    "case.hold_lifted": N_("Lifted the retention hold"),
    "case.hold_refused": N_("Tried to place a retention hold, and was refused"),
    "case.discard_refused": N_("Tried to discard the case, and was refused"),
    "case.identity_requests_read": N_("Looked at the requests to see the reporter's identity"),
    "case.identity_read": N_("Read the reporter's identity"),
    "case.identity_refused": N_("Tried to read the reporter's identity, and was refused"),
    "case.access_history_read": N_("Looked at this access history"),
    "case.integrity_failed": N_("Found that the case's content did not match its record"),
    "case.overdue_flagged": N_("Marked a deadline as passed"),
    "identity.requested": N_("Asked to see the reporter's identity"),
    "identity.request_refused": N_("Asked to see the reporter's identity, and was refused"),
    "identity.approved": N_("Approved a request to see the reporter's identity"),
    "identity.refused": N_("Refused a request to see the reporter's identity"),
    "identity.decision_refused": N_("Tried to decide on an identity request, and was refused"),
    "checkin.sent": N_("Asked the reporter whether they have had negative consequences"),
}
_REPORTER_ACTIONS: Final[Mapping[str, str]] = {
    "case.submitted": N_("Sent the report"),
    "case.retaliation_opened": N_("Reported retaliation: this case was opened"),
    "reporter.message_sent": N_("Sent a message"),
    "reporter.files_added": N_("Sent files"),
    "reporter.checkin_answered": N_("Answered a check-in question"),
    "reporter.retaliation_reported": N_("Reported retaliation (a new linked case)"),
    "reporter.case_sent_up": N_("Sent the case to the level above"),
}


def _format_moment(occurred: str, language: Language) -> str:
    moment = dt.datetime.fromisoformat(occurred)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    text: str = format_datetime(moment, format="medium", tzinfo=DISPLAY_TIMEZONE, locale=language)
    return text


@router.get("/{lang:lang}/staff/cases/{case_id}/access", response_class=HTMLResponse)
def access_page(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    settings: AppSettings,
    page: str = "1",
) -> HTMLResponse:
    """Who did what with the case, and when (cases/access_history.py); the read is audited."""
    header = case_header(session, settings, principal, case_id)
    history = access_history.case_access_history(
        session,
        settings,
        principal,
        case_id,
        page=int(page[:6]) if page.isascii() and page.isdigit() else 1,
    )
    someone = _t(request, language, N_("A former staff member"))
    staff_events = [
        {
            "who": (event.actor_name or someone)
            if event.actor_name is not None
            else _t(request, language, N_("The service")),
            "is_me": event.actor == principal.actor,
            "what": _t(
                request,
                language,
                _STAFF_ACTIONS.get(event.action, N_("Did something else with the case")),
            ),
            "code": event.action,
            "occurred": event.occurred,
            "when": _format_moment(event.occurred, language),
        }
        for event in history.staff_events
    ]
    reporter_events = [
        {
            "what": _t(
                request, language, _REPORTER_ACTIONS.get(event.action, N_("Sent something"))
            ),
            "day": event.day,
        }
        for event in history.reporter_events
    ]
    return _render(
        request,
        language,
        principal,
        header,
        "access",
        {
            "staff_events": staff_events,
            "reporter_events": reporter_events,
            "page": history.page,
            "pages": history.pages,
            "in_utc": DISPLAY_TIMEZONE is dt.UTC,
        },
    )
