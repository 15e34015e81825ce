"""The case handler's pages: the case list, the conflict declaration, the case page.

Every page and form calls the same service functions as the handler API
(cases/service.py, cases/declarations.py) and checks what was typed with the
API's own shapes (cases/schemas.py), so there is no second copy of a rule:
a case a staff member holds no key to is a 404 page, a case they have not
declared on shows only the declaration form (409, as the API's
declaration_required), and a refused form shows the page again with what was
typed kept and nothing changed (the attempt runs in a savepoint that is
rolled back). A form that worked redirects (303) to the page with a notice.

The case's sub-pages (files, grants, identity request, hold, access history)
are built in another module; the case page links to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import urlencode

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit
from varsling.accounts.models import Unit, User
from varsling.accounts.service import StaffPrincipal, utcnow
from varsling.cases import declarations, service
from varsling.cases.models import Risk, Status
from varsling.cases.routes import staff_download
from varsling.cases.schemas import DeclarationIn, NoteIn, StatusIn
from varsling.config import Settings
from varsling.errors import Conflict, InvalidInput, VarslingError
from varsling.reports.schemas import MessageIn
from varsling.request_transaction import DbSession
from varsling.web.i18n import N_, Language
from varsling.web.pages import PageLanguage, format_day, format_size
from varsling.web.security import CsrfResult
from varsling.web.staff_auth import StaffPage
from varsling.web.staff_login_pages import FieldError
from varsling.web.staff_pages import form_text, read_staff_form, render_staff, staff_translate

router = APIRouter(include_in_schema=False)

# The ids of the inputs, which the error summary links to.
MESSAGE_INPUT: Final = "message-body"
NOTE_INPUT: Final = "note-body"
OUTCOME_INPUT: Final = "outcome"
STEP_INPUT: Final = "status-step"
RISK_INPUT: Final = "risk-low"
REASON_INPUT: Final = "conflict-reason"
FILTERS_ANCHOR: Final = "filters"
# Longer than the API accepts, so that too long text is refused, never cut.
TEXT_LIMIT: Final = 30_000

LIST_DONE: Final = ("recused",)
CASE_DONE: Final = ("declared", "message", "note", "status")
FILTER_NAMES: Final = ("status", "unit", "overdue", "category")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _maker(request: Request) -> sessionmaker[Session]:
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    return maker


def _t(request: Request, language: Language, message: str) -> str:
    return staff_translate(request, language, message)


def _formatters(language: Language) -> dict[str, Callable[[Any], str]]:
    return {
        "day": lambda iso: format_day(str(iso), language),
        "size": lambda size: format_size(int(size), language),
    }


def case_path(language: Language, case_id: str) -> str:
    return f"/{language}/staff/cases/{case_id}"


def _record_refusal(session: Session, refused: VarslingError) -> None:
    """Write the audit event of a refusal the page answers itself (not the error handler)."""
    if refused.refusal is not None:
        audit.record(
            session,
            actor=refused.refusal.actor,
            action=refused.refusal.action,
            case_id=refused.refusal.case_id,
            details=refused.refusal.details,
        )


# --------------------------------------------------------------------------
# The case list


@router.get("/{lang:lang}/staff/cases", response_class=HTMLResponse)
def case_list(
    request: Request,
    language: PageLanguage,
    principal: StaffPage,
    session: DbSession,
    status: str | None = None,
    unit: str | None = None,
    overdue: str | None = None,
    category: str | None = None,
    after: str | None = None,
    done: str | None = None,
) -> HTMLResponse:
    """The caller's cases, filtered and paged by the service that answers GET /api/v1/cases."""
    typed = {"status": status, "unit": unit, "overdue": overdue, "category": category}
    kept = {name: (value or "")[:100] for name, value in typed.items()}
    errors: list[FieldError] = []
    found: service.CasePage | None = None
    try:
        query = replace(service.case_query(**kept, after=after), limit=service.PAGE_SIZE)
    except service.InvalidCaseQuery as wrong:
        errors = [_filter_error(request, language, name) for name in wrong.fields]
    else:
        found = service.list_cases(session, principal, utcnow().date(), query)
    units = dict(service.case_units(session, principal))
    filters = {name: value for name, value in kept.items() if value}
    return render_staff(
        request,
        language,
        "staff/cases.html",
        principal,
        {
            "cases": found.items if found else [],
            "total": found.total if found else 0,
            "next_url": _list_url(language, filters, found.next) if found and found.next else None,
            "first_url": _list_url(language, filters, None) if after else None,
            "filters": kept,
            "filtered": bool(filters),
            "units": units,
            "errors": errors,
            "done": done if done in LIST_DONE else None,
            **_formatters(language),
        },
        status_code=422 if errors else 200,
    )


def _list_url(language: Language, filters: dict[str, str], after: str | None) -> str:
    query = {**filters, **({"after": after} if after else {})}
    return f"/{language}/staff/cases" + (f"?{urlencode(query)}" if query else "")


_FILTER_MESSAGES: Final = {
    "status": N_("Choose a status from the list."),
    "unit": N_("Choose a unit from the list."),
    "overdue": N_("Choose whether to show only cases past a deadline."),
    "category": N_("Choose a category from the list."),
    "after": N_("The link to this page of the list is not valid. Start again from the first page."),
}


def _filter_error(request: Request, language: Language, name: str) -> FieldError:
    anchor = f"filter-{name}" if name in FILTER_NAMES else FILTERS_ANCHOR
    return FieldError(anchor, _t(request, language, _FILTER_MESSAGES.get(name, N_("Not valid."))))


# --------------------------------------------------------------------------
# The case page and the declaration form


@dataclass(frozen=True)
class Draft:
    """What was typed in the case page's forms, and what went wrong with it."""

    message: str = ""
    note: str = ""
    outcome: str = ""
    risk: str = ""
    reason: str = ""
    errors: Sequence[FieldError] = field(default_factory=tuple)
    form_check: CsrfResult = "ok"


def _show_case(
    request: Request,
    language: Language,
    session: Session,
    principal: StaffPrincipal,
    case_id: str,
    *,
    draft: Draft | None = None,
    done: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The case page, or (before the caller declared) only the declaration form (409)."""
    draft = draft or Draft()
    settings = _settings(request)
    today = utcnow().date()
    try:
        case = service.read_case(session, settings, principal, case_id, today)
    except declarations.DeclarationRequired as refused:
        # Answered here, not by the error handler: the audit event goes in this transaction.
        _record_refusal(session, refused)
        check = refused.body_extra["case"]
        return render_staff(
            request,
            language,
            "staff/case_declaration.html",
            principal,
            {
                "check": check,
                "unit_name": _unit_name(session, check["unit_id"]),
                "base": case_path(language, case_id),
                "risks": [r.value for r in Risk],
                **_draft_context(draft),
                **_formatters(language),
            },
            status_code=409 if status_code == 200 else status_code,
        )
    return render_staff(
        request,
        language,
        "staff/case.html",
        principal,
        {
            "case": case,
            "base": case_path(language, case_id),
            "unit_name": _unit_name(session, case["unit_id"]),
            "names": _names(session, principal, case),
            "next_status": _next_status(case["status"]),
            "done": done if done in CASE_DONE else None,
            **_draft_context(draft),
            **_formatters(language),
        },
        status_code=status_code,
    )


def _draft_context(draft: Draft) -> dict[str, Any]:
    return {
        "draft": draft,
        "errors": list(draft.errors),
        "form_check": draft.form_check,
    }


def _next_status(status: str) -> str | None:
    following = service.NEXT_STATUS.get(Status(status))
    return following.value if following else None


def _unit_name(session: Session, unit_id: int) -> str:
    unit = session.get(Unit, unit_id)
    return unit.name if unit else str(unit_id)


def _names(session: Session, principal: StaffPrincipal, case: dict[str, Any]) -> dict[int, str]:
    """The display names of the staff who wrote the case's notes and recusals."""
    ids = {n["author_id"] for n in case["notes"]} | {r["user_id"] for r in case["recusals"]}
    names = {}
    for user_id in ids - {None}:
        user = session.get(User, user_id)
        if user is not None:
            names[user_id] = user.display_name
    return names


@router.get("/{lang:lang}/staff/cases/{case_id}", response_class=HTMLResponse)
def case_page(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
    done: str | None = None,
) -> HTMLResponse:
    """The case (read as GET /api/v1/cases/{id} reads it, audited), or the declaration form."""
    return _show_case(request, language, session, principal, case_id, done=done)


@router.get("/{lang:lang}/staff/cases/{case_id}/files/{file_id}")
def download_file(
    request: Request,
    language: PageLanguage,
    case_id: str,
    file_id: str,
    principal: StaffPage,
    session: DbSession,
) -> Response:
    """One of the case's files, as an opaque download (the API's download, audited)."""
    try:
        return staff_download(
            session, _maker(request), _settings(request), principal, case_id, file_id
        )
    except declarations.DeclarationRequired as refused:
        _record_refusal(session, refused)
        return _show_case(request, language, session, principal, case_id)


# --------------------------------------------------------------------------
# The forms


def _schema_problems(shape: type[BaseModel], values: dict[str, Any]) -> list[tuple[str, str]]:
    """Each (field, error type) the API's shape finds in the values; [] when they fit."""
    try:
        shape.model_validate(values)
    except ValidationError as invalid:
        return [(str(e["loc"][0]) if e["loc"] else "", e["type"]) for e in invalid.errors()]
    return []


def _too_long(problems: list[tuple[str, str]]) -> bool:
    return any(kind == "string_too_long" for _field, kind in problems)


def _length_error(request: Request, language: Language, anchor: str, limit: int) -> FieldError:
    message = _t(
        request, language, N_("What you wrote is longer than %(count)s characters. Shorten it.")
    ) % {"count": format_decimal(limit, locale=language)}
    return FieldError(anchor, message)


def _open_or_declaration(
    request: Request,
    language: Language,
    session: Session,
    principal: StaffPrincipal,
    case_id: str,
) -> HTMLResponse | None:
    """None if the caller may act on the case; the declaration form (409) if they must
    declare first. A case they hold no key to raises NotFound (the 404 page)."""
    try:
        service.open_case(session, _settings(request), principal, case_id)
    except declarations.DeclarationRequired as refused:
        _record_refusal(session, refused)
        return _show_case(request, language, session, principal, case_id)
    return None


def _attempt(session: Session, work: Callable[[], object]) -> VarslingError | None:
    """Run `work` in a savepoint: on a refusal of the input or the case's state it is
    rolled back (nothing changed) and the refusal returned, its audit event written."""
    try:
        with session.begin_nested():
            work()
    except (InvalidInput, Conflict) as refused:
        if isinstance(refused, declarations.DeclarationRequired | declarations.AlreadyDeclared):
            raise
        _record_refusal(session, refused)
        return refused
    return None


def _done(language: Language, case_id: str, what: str) -> RedirectResponse:
    return RedirectResponse(f"{case_path(language, case_id)}?done={what}", status_code=303)


@router.post("/{lang:lang}/staff/cases/{case_id}/messages", response_class=HTMLResponse)
async def write_to_reporter(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
) -> Response:
    """Write to the reporter (service.write_to_reporter, as POST /api/v1/cases/{id}/messages)."""
    form, form_check = await read_staff_form(request, max_fields=10)
    body = form_text(form, "body", TEXT_LIMIT)
    return _write(
        request,
        language,
        session,
        principal,
        case_id,
        form_check,
        Draft(message=body),
        anchor=MESSAGE_INPUT,
        shape=MessageIn,
        body=body,
        empty=N_("Write the message to the reporter."),
        write=service.write_to_reporter,
        done="message",
    )


@router.post("/{lang:lang}/staff/cases/{case_id}/notes", response_class=HTMLResponse)
async def add_note(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
) -> Response:
    """An internal note (service.add_note): the reporter never sees it."""
    form, form_check = await read_staff_form(request, max_fields=10)
    body = form_text(form, "body", TEXT_LIMIT)
    return _write(
        request,
        language,
        session,
        principal,
        case_id,
        form_check,
        Draft(note=body),
        anchor=NOTE_INPUT,
        shape=NoteIn,
        body=body,
        empty=N_("Write the note."),
        write=service.add_note,
        done="note",
    )


def _write(
    request: Request,
    language: Language,
    session: Session,
    principal: StaffPrincipal,
    case_id: str,
    form_check: CsrfResult,
    draft: Draft,
    *,
    anchor: str,
    shape: type[BaseModel],
    body: str,
    empty: str,
    write: Callable[..., None],
    done: str,
) -> Response:
    closed = _open_or_declaration(request, language, session, principal, case_id)
    if closed is not None:
        return closed
    if form_check != "ok":
        return _show_case(
            request,
            language,
            session,
            principal,
            case_id,
            draft=replace(draft, form_check=form_check),
            status_code=400,
        )
    problems = _schema_problems(shape, {"body": body})
    if problems:
        error = (
            _length_error(request, language, anchor, 20_000)
            if _too_long(problems)
            else FieldError(anchor, _t(request, language, empty))
        )
        return _show_case(
            request,
            language,
            session,
            principal,
            case_id,
            draft=replace(draft, errors=(error,)),
            status_code=422,
        )
    settings = _settings(request)
    refused = _attempt(
        session,
        lambda: write(
            session, settings, principal, case_id, body=body.strip(), today=utcnow().date()
        ),
    )
    if refused is not None:
        error = FieldError(anchor, _t(request, language, N_("Nothing was saved. Try again.")))
        return _show_case(
            request,
            language,
            session,
            principal,
            case_id,
            draft=replace(draft, errors=(error,)),
            status_code=refused.status_code,
        )
    return _done(language, case_id, done)


@router.post("/{lang:lang}/staff/cases/{case_id}/status", response_class=HTMLResponse)
async def change_status(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
) -> Response:
    """The next status step, with the outcome the reporter reads (service.change_status)."""
    form, form_check = await read_staff_form(request, max_fields=10)
    status = form_text(form, "status", 50)
    outcome = form_text(form, "outcome", TEXT_LIMIT)
    closed = _open_or_declaration(request, language, session, principal, case_id)
    if closed is not None:
        return closed

    def again(
        errors: Sequence[FieldError] = (), check: CsrfResult = "ok", code: int = 422
    ) -> Response:
        return _show_case(
            request,
            language,
            session,
            principal,
            case_id,
            draft=Draft(outcome=outcome, errors=tuple(errors), form_check=check),
            status_code=code,
        )

    if form_check != "ok":
        return again(check=form_check, code=400)
    problems = _schema_problems(StatusIn, {"status": status, "outcome": outcome.strip() or None})
    if problems:
        fields = {name for name, _kind in problems}
        errors = []
        if "status" in fields:
            errors.append(FieldError(STEP_INPUT, _t(request, language, _STALE_STEP)))
        if "outcome" in fields:
            errors.append(_length_error(request, language, OUTCOME_INPUT, 20_000))
        return again(errors)
    settings = _settings(request)
    refused = _attempt(
        session,
        lambda: service.change_status(
            session,
            settings,
            principal,
            case_id,
            status=status,
            outcome_text=outcome.strip() or None,
            today=utcnow().date(),
        ),
    )
    if isinstance(refused, InvalidInput):
        message = N_(
            "Write the outcome: what has been done and found, as the reporter will read it."
        )
        return again([FieldError(OUTCOME_INPUT, _t(request, language, message))])
    if refused is not None:
        return again([FieldError(STEP_INPUT, _t(request, language, _STALE_STEP))], code=409)
    return _done(language, case_id, "status")


_STALE_STEP: Final = N_(
    "The case has already moved to another status, perhaps in another window. Nothing was "
    "changed: check the status and try again."
)


@router.post("/{lang:lang}/staff/cases/{case_id}/declaration", response_class=HTMLResponse)
async def declare(
    request: Request,
    language: PageLanguage,
    case_id: str,
    principal: StaffPage,
    session: DbSession,
) -> Response:
    """No conflict of interest (the case opens) or a conflict (the caller steps aside for good)."""
    form, form_check = await read_staff_form(request, max_fields=10)
    conflict = form_text(form, "conflict", 10)
    risk = form_text(form, "risk", 20)
    reason = form_text(form, "reason", TEXT_LIMIT)
    settings = _settings(request)
    opened = service.open_held_case(session, principal, case_id)  # 404 for anyone else

    def again(
        errors: Sequence[FieldError] = (), check: CsrfResult = "ok", code: int = 422
    ) -> Response:
        draft = Draft(risk=risk, reason=reason, errors=tuple(errors), form_check=check)
        return _show_case(
            request, language, session, principal, case_id, draft=draft, status_code=code
        )

    if form_check != "ok":
        return again(check=form_check, code=400)
    has_conflict = conflict == "yes"
    values: dict[str, Any] = (
        {"conflict": True, "reason": reason.strip() or None}
        if has_conflict
        else {"conflict": False, "risk": risk or None}
    )
    problems = _schema_problems(DeclarationIn, values)
    if conflict not in ("yes", "no") or problems:
        if has_conflict:
            error = (
                _length_error(request, language, REASON_INPUT, 5_000)
                if _too_long(problems)
                else FieldError(
                    REASON_INPUT,
                    _t(request, language, N_("Write why you have a conflict of interest.")),
                )
            )
        else:
            error = FieldError(
                RISK_INPUT,
                _t(request, language, N_("Choose how high the risk of retaliation is.")),
            )
        return again([error])
    checked = DeclarationIn.model_validate(values)
    refused = _attempt(
        session,
        lambda: declarations.declare(
            session,
            settings,
            principal,
            opened.case,
            opened.key,
            conflict=checked.conflict,
            risk=checked.risk,
            reason=checked.reason,
            today=utcnow().date(),
        ),
    )
    if refused is not None:
        message = (
            N_(
                "Nobody else could handle this case, up to the national level, so you cannot "
                "step aside yet. Ask the ethics committee to add a case handler. Until then the "
                "case stays closed to you."
            )
            if isinstance(refused, declarations.NobodyLeft)
            else N_("Nothing was saved. Try again.")
        )
        return again([FieldError(REASON_INPUT, _t(request, language, message))], code=409)
    if checked.conflict:
        return RedirectResponse(f"/{language}/staff/cases?done=recused", status_code=303)
    return _done(language, case_id, "declared")
