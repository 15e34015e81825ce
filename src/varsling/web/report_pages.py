"""The report form and the receipt.

The form comes in two steps so that it works without JavaScript: first the
reporter chooses the part of the party where it happened (`GET /{lang}/report`),
then the whole form for that unit, with the names of the case handlers who
will receive it (`GET /{lang}/report?unit=ID`). The form posts as
multipart/form-data; files are sealed as they stream in, before any database
transaction starts. On any problem the form comes back with everything the
reporter typed and nothing is stored. On success the receipt with the case
code is the answer to the POST itself: the code is never in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from varsling import throttle
from varsling.accounts.models import UnitKind
from varsling.accounts.service import utcnow
from varsling.cases.models import Category
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import InvalidInput, SubmissionsBusy
from varsling.reports import routing, service
from varsling.reports.routing import (
    ReportChoices,
    SendProblem,
    UnitCatalogue,
    UnitListing,
)
from varsling.reports.schemas import (
    LONG_TEXT_CHARS,
    REPORT_FIELDS,
    REPORT_FLAGS,
    REPORT_TEXT_FIELDS,
    SHORT_TEXT_CHARS,
    ReportIn,
)
from varsling.reports.service import AlreadySent, PreparedCase, Submission
from varsling.reports.uploads import FileProblem, ParsedForm, read_multipart
from varsling.request_transaction import DbSession
from varsling.throttle import Flood
from varsling.web.i18n import N_, Language
from varsling.web.pages import (
    LanguageLink,
    PageLanguage,
    format_size,
    language_links,
    page_templates,
    render_page,
)
from varsling.web.security import CsrfResult, check_csrf, csrf_signer, session_value

router = APIRouter(include_in_schema=False)

# What the reporter chooses at step 1 when they do not know the unit.
NATIONAL_CHOICE: Final = routing.NATIONAL

# The six categories in the order the form lists them, each with a plain hint.
CATEGORIES: Final[tuple[tuple[Category, str, str], ...]] = (
    (
        Category.HARASSMENT,
        N_("Harassment"),
        N_("Behaviour that offends, frightens, humiliates or degrades someone."),
    ),
    (
        Category.SEXUAL_HARASSMENT,
        N_("Sexual harassment"),
        N_("Unwanted sexual attention, words, touching or pressure."),
    ),
    (
        Category.DISCRIMINATION,
        N_("Discrimination"),
        N_(
            "Being treated worse because of, for example, gender, ethnicity, religion, "
            "disability, sexual orientation or age."
        ),
    ),
    (
        Category.ABUSE_OF_POWER,
        N_("Abuse of power"),
        N_(
            "Someone using their position or influence, for example in nominations or "
            "elections, to pressure, exclude or punish others."
        ),
    ),
    (
        Category.RETALIATION,
        N_("Retaliation"),
        N_("Being punished, frozen out or treated worse because you or someone else reported."),
    ),
    (
        Category.OTHER,
        N_("Something else"),
        N_("Another breach of the party's ethics guidelines."),
    ),
)

# Text fields in page order; each form field has the name of its key in the sealed report.
TEXT_FIELDS: Final = REPORT_TEXT_FIELDS
CHECKBOX_FIELDS: Final = REPORT_FLAGS
# Labels as the error messages name the fields (the same words as on the form).
FIELD_LABELS: Final[Mapping[str, str]] = {
    "description": N_("What happened?"),
    "when": N_("When did it happen?"),
    "where": N_("Where did it happen?"),
    "involved": N_("Who was involved?"),
    "witnesses": N_("Did anyone see or hear it?"),
    "reported_before": N_("Have you reported this before?"),
    "desired_outcome": N_("What do you hope will happen?"),
    "identity_name": N_("Your name"),
    "identity_contact": N_("How we can reach you"),
}
# Where the error summary sends the reporter for each problem, in page order.
ERROR_ORDER: Final[tuple[str, ...]] = (
    "excluded",
    "category",
    *TEXT_FIELDS,
    "files",
    "identity_name",
    "identity_contact",
)
# The longest text each box takes, as the server checks it (ReportIn).
MAX_LENGTHS: Final[Mapping[str, int]] = {
    "description": LONG_TEXT_CHARS,
    "when": SHORT_TEXT_CHARS,
    "where": SHORT_TEXT_CHARS,
    "involved": LONG_TEXT_CHARS,
    "witnesses": LONG_TEXT_CHARS,
    "reported_before": LONG_TEXT_CHARS,
    "desired_outcome": LONG_TEXT_CHARS,
    "identity_name": SHORT_TEXT_CHARS,
    "identity_contact": SHORT_TEXT_CHARS,
}
_SCHEMA_FIELDS: Final[Mapping[tuple[str | int, ...], str]] = {
    ("category",): "category",
    **{(name,): name for name in TEXT_FIELDS},
    ("identity", "name"): "identity_name",
    ("identity", "contact"): "identity_contact",
    ("excluded_recipients",): "excluded",
}


# --------------------------------------------------------------------------
# What the form offers: the unit, where the report can go, who can be left out


@dataclass(frozen=True)
class UnitGroup:
    """An `<optgroup>` of the unit list: the national level, a county, or youth and students."""

    label: str
    units: list[UnitListing]


def unit_groups(
    catalogue: UnitCatalogue, language: Language, gettext: Callable[[Language, str], str]
) -> list[UnitGroup]:
    """The units offered: national units first, then each county with its municipal units,
    then youth."""
    by_id = {u.id: u for u in catalogue.units}

    def ancestors(unit: UnitListing) -> Iterable[UnitListing]:
        seen = {unit.id}
        current = by_id.get(unit.parent_id) if unit.parent_id is not None else None
        while current is not None and current.id not in seen:
            yield current
            seen.add(current.id)
            current = by_id.get(current.parent_id) if current.parent_id is not None else None

    national: list[UnitListing] = []
    youth: list[UnitListing] = []
    counties: dict[int, list[UnitListing]] = {}
    for unit in catalogue.offered:
        chain = [unit, *ancestors(unit)]
        if any(u.kind in (UnitKind.YOUTH, UnitKind.STUDENT) for u in chain):
            youth.append(unit)
            continue
        county = next((u for u in chain if u.kind == UnitKind.COUNTY), None)
        if county is None:
            national.append(unit)
        else:
            counties.setdefault(county.id, []).append(unit)

    groups = []
    if national:
        national.sort(key=lambda u: (u.parent_id is not None, _name_key(u.name)))
        groups.append(UnitGroup(gettext(language, N_("National level")), national))
    for county_id in sorted(counties, key=lambda i: _name_key(by_id[i].name)):
        members = sorted(counties[county_id], key=lambda u: (u.id != county_id, _name_key(u.name)))
        groups.append(UnitGroup(by_id[county_id].name, members))
    if youth:
        youth.sort(key=lambda u: _name_key(u.name))
        groups.append(UnitGroup(gettext(language, N_("Youth and students")), youth))
    return groups


_NORWEGIAN_ORDER: Final = str.maketrans({"æ": "z{", "ø": "z|", "å": "z}"})


def _name_key(name: str) -> str:
    """Sort names the Norwegian way: æ, ø and å after z."""
    return name.casefold().translate(_NORWEGIAN_ORDER)


def _load_catalogue(session: Session, verifying_key: bytes) -> UnitCatalogue:
    return routing.unit_catalogue(session, verifying_key=verifying_key)


def _load_choices(
    session: Session, verifying_key: bytes, unit_id: int
) -> tuple[UnitCatalogue, ReportChoices | None]:
    return routing.report_choices(session, unit_id, verifying_key=verifying_key)


def _load_for_sending(
    session: Session, verifying_key: bytes, unit_id: int, draft: ReportDraft
) -> routing.SendingPlan:
    """The form held to what it offered (routing.plan_sending); `draft` keeps the result.

    `draft.offered` is who the form the reporter saw named; a post without it
    (not from our form) is held to who the form would name now.
    """
    plan = routing.plan_sending(
        session,
        unit_id,
        destination=draft.destination,
        excluded=draft.excluded,
        offered_handlers=draft.offered,
        offered_custodians=draft.offered_custodians,
        custodians_named=draft.custodians_named,
        verifying_key=verifying_key,
    )
    if plan.choices is not None:
        draft.excluded = set(plan.excluded)
        draft.offered = set(plan.offered.handlers)
        draft.offered_custodians = set(plan.offered.custodians)
    return plan


# --------------------------------------------------------------------------
# What the reporter typed, and what was wrong with it


@dataclass
class ReportDraft:
    """Everything the reporter typed, exactly as typed, to show again on an error."""

    category: str = ""
    text: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TEXT_FIELDS, ""))
    checked: set[str] = field(default_factory=set)
    identity_name: str = ""
    identity_contact: str = ""
    destination: str = "unit"
    excluded: set[int] = field(default_factory=set)
    offered: set[int] = field(default_factory=set)  # who the form named, as posted with it
    offered_custodians: set[int] = field(default_factory=set)  # the custodians it named
    # Our form always says it listed custodians, so "it named none" is told from
    # "not our form" (which is held to who the form would name now).
    custodians_named: bool = False
    # Random per form: a reload of the receipt cannot send the report twice.
    submission: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @classmethod
    def from_form(cls, form: ParsedForm) -> ReportDraft:
        return cls(
            category=form.first("category"),
            text={name: form.first(name) for name in TEXT_FIELDS},
            checked={name for name in CHECKBOX_FIELDS if form.first(name)},
            identity_name=form.first("identity_name"),
            identity_contact=form.first("identity_contact"),
            destination=NATIONAL_CHOICE if form.first("destination") == NATIONAL_CHOICE else "unit",
            excluded=_ids(form.fields.get("excluded", [])),
            offered=_ids(form.fields.get("offered", [])),
            offered_custodians=_ids(form.fields.get("offered_custodian", [])),
            custodians_named=form.first("custodians_named") == "yes",
            submission=_submission_id(form.first("submission")),
        )


def _ids(values: Iterable[str]) -> set[int]:
    return {int(v) for v in values if v.isascii() and v.isdigit() and len(v) < 12}


@dataclass(frozen=True)
class FieldError:
    field: str  # the form field; the summary links to its first control
    message: str


@dataclass
class FormErrors:
    items: list[FieldError] = field(default_factory=list)

    def add(self, field_name: str, message: str) -> None:
        self.items.append(FieldError(field_name, message))

    def for_field(self, field_name: str) -> list[str]:
        return [e.message for e in self.items if e.field == field_name]

    def ordered(self) -> list[FieldError]:
        return sorted(self.items, key=lambda e: ERROR_ORDER.index(e.field))

    def __bool__(self) -> bool:
        return bool(self.items)


class _Messages:
    """Translated messages for one language, with numbers in its own format."""

    def __init__(self, request: Request, language: Language) -> None:
        self._templates = page_templates(request)
        self._language = language

    def __call__(self, message: str, **params: object) -> str:
        text = self._templates.gettext(self._language, message)
        return text % params if params else text

    def number(self, value: int) -> str:
        return format_decimal(value, locale=self._language)

    def size(self, size_bytes: int) -> str:
        return format_size(size_bytes, self._language)


def _report_in(unit_id: int, draft: ReportDraft, excluded: Sequence[int]) -> dict[str, Any]:
    """The API's shape of a report, so the web form and the API share their limits."""
    data: dict[str, Any] = {
        "unit_id": unit_id,
        "excluded_recipients": list(excluded),
        "on_behalf_of_someone_else": "on_behalf_of_someone_else" in draft.checked,
        "wants_meeting": "wants_meeting" in draft.checked,
    }
    if draft.category:
        data["category"] = draft.category
    for name in TEXT_FIELDS:
        value = draft.text[name]
        if name == "description" or value.strip():
            data[name] = value
    if draft.identity_name.strip() or draft.identity_contact.strip():
        data["identity"] = {"name": draft.identity_name, "contact": draft.identity_contact}
    return data


def validate_report(
    data: dict[str, Any], messages: _Messages, errors: FormErrors
) -> ReportIn | None:
    """`ReportIn` for valid data; otherwise each problem added to `errors` in plain words."""
    try:
        return ReportIn.model_validate(data)
    except ValidationError as invalid:
        for problem in invalid.errors():
            field_name = _SCHEMA_FIELDS.get(tuple(problem["loc"]))
            if field_name is None or field_name in {e.field for e in errors.items}:
                continue
            errors.add(field_name, _problem_message(field_name, problem, messages))
        if not errors:
            errors.add("description", messages(N_("Check what you wrote and send it again.")))
        return None


def _problem_message(field_name: str, problem: Mapping[str, Any], messages: _Messages) -> str:
    kind = problem["type"]
    if field_name == "category":
        return messages(N_("Choose what the report is about."))
    if field_name == "excluded":
        return messages(N_("You have left out too many people. Leave out fewer."))
    if kind == "string_too_long":
        typed = problem.get("input")
        count = len(typed.strip()) if isinstance(typed, str) else 0
        return messages(
            N_(
                "“%(label)s” can be at most %(max)s characters. You wrote %(count)s. "
                "Shorten it, or add the rest as a file."
            ),
            label=messages(FIELD_LABELS[field_name]),
            max=messages.number(int(problem.get("ctx", {}).get("max_length", 0))),
            count=messages.number(count),
        )
    if field_name == "description":
        return messages(N_("Describe what happened."))
    if field_name == "identity_name":
        return messages(
            N_("Write your name, or leave both fields about you empty to stay anonymous.")
        )
    return messages(N_("Check what you wrote here."))


def _file_errors(
    problems: Sequence[FileProblem], settings: Settings, messages: _Messages, errors: FormErrors
) -> None:
    for problem in problems:
        if problem.reason == "too_large":
            errors.add(
                "files",
                messages(
                    N_("The file “%(name)s” is larger than %(limit)s. It was not sent."),
                    name=problem.name,
                    limit=messages.size(settings.max_file_bytes),
                ),
            )
        else:
            errors.add(
                "files",
                messages(
                    N_("You can add at most %(max)s files. “%(name)s” was not sent."),
                    max=messages.number(settings.max_files_per_report),
                    name=problem.name,
                ),
            )


# --------------------------------------------------------------------------
# Pages


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _form_language_links(request: Request, language: Language, unit_id: int) -> list[LanguageLink]:
    """The switch keeps the chosen unit (but, being links, not anything typed)."""
    return [
        LanguageLink(link.language, link.name, f"{link.url}?unit={unit_id}", link.current)
        for link in language_links(request.url.path, language)
    ]


def _render_unit_step(
    request: Request,
    language: Language,
    catalogue: UnitCatalogue,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    groups = unit_groups(catalogue, language, page_templates(request).gettext)
    return render_page(
        request,
        language,
        "report_unit.html",
        {
            "unit_groups": groups,
            "has_units": bool(groups),
            "national_choice": NATIONAL_CHOICE,
            "unit_error": error,
            "recently_sent": recently_sent(request),
        },
        status_code=status_code,
    )


def _render_form(
    request: Request,
    language: Language,
    choices: ReportChoices,
    *,
    draft: ReportDraft | None = None,
    errors: FormErrors | None = None,
    csrf_status: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    settings = _settings(request)
    errors = errors or FormErrors()
    draft = draft or ReportDraft()
    return render_page(
        request,
        language,
        "report_form.html",
        {
            "language_links": _form_language_links(request, language, choices.unit.id),
            "choices": choices,
            "national_choice": NATIONAL_CHOICE,
            "categories": CATEGORIES,
            "draft": draft,
            "errors": errors,
            "error_list": errors.ordered(),
            "csrf_status": csrf_status,
            "max_files": settings.max_files_per_report,
            "max_file_size": format_size(settings.max_file_bytes, language),
            "max_lengths": MAX_LENGTHS,
            "recently_sent": recently_sent(request),
        },
        status_code=status_code,
    )


def _unit_id(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


@router.get("/{lang:lang}/report", response_class=HTMLResponse)
def report_form(
    request: Request, language: PageLanguage, session: DbSession, unit: str | None = None
) -> HTMLResponse:
    """Step 1 without `unit`; the whole form for a unit with it."""
    messages = _Messages(request, language)
    verifying_key = _settings(request).signing_public_key
    if unit is None:
        return _render_unit_step(request, language, _load_catalogue(session, verifying_key))
    if unit == NATIONAL_CHOICE:
        root = _load_catalogue(session, verifying_key).root
        unit_id = root.id if root is not None else None
    else:
        unit_id = _unit_id(unit)
    catalogue, choices = (
        _load_choices(session, verifying_key, unit_id)
        if unit_id is not None
        else (_load_catalogue(session, verifying_key), None)
    )
    if choices is None:
        error = (
            messages(N_("Choose where in the party it happened."))
            if unit == ""
            else messages(N_("We could not find that part of the party. Choose again."))
        )
        return _render_unit_step(request, language, catalogue, error=error, status_code=422)
    return _render_form(request, language, choices)


@router.post("/{lang:lang}/report", response_class=HTMLResponse)
async def send_report(request: Request, language: PageLanguage) -> HTMLResponse:
    """Read the form (sealing files as they arrive), check it, then store it in one go."""
    settings = _settings(request)
    maker = request.app.state.sessionmaker
    messages = _Messages(request, language)
    prepared = PreparedCase.new()
    # No transaction is open while the body streams in.
    try:
        form = await read_multipart(
            request,
            case_id=prepared.case_id,
            key=prepared.case_key,
            max_file_bytes=settings.max_file_bytes,
            max_files=settings.max_files_per_report,
        )
    except InvalidInput:
        catalogue = await run_in_threadpool(
            in_transaction, maker, _load_catalogue, settings.signing_public_key
        )
        return _render_unit_step(
            request,
            language,
            catalogue,
            error=messages(
                N_(
                    "The form could not be read, so nothing was sent. A text may have been "
                    "far too long. Start again, and add long texts as a file."
                )
            ),
            status_code=400,
        )
    try:
        return await _check_and_store(request, language, form, prepared, messages)
    finally:
        # Stored files are already closed; anything else is thrown away.
        form.discard_files()


async def _check_and_store(
    request: Request,
    language: Language,
    form: ParsedForm,
    prepared: PreparedCase,
    messages: _Messages,
) -> HTMLResponse:
    settings = _settings(request)
    maker = request.app.state.sessionmaker
    csrf_status = check_csrf(request, form.first("csrf_token"))
    unit_id = _unit_id(form.first("unit"))
    draft = ReportDraft.from_form(form)
    if csrf_status == "ok":
        # A second click first: its receipt, whatever changed on the form's side since.
        try:
            await run_in_threadpool(
                in_transaction, maker, _check_unspent, settings, draft.submission, request
            )
        except AlreadySent as sent:
            return _already_sent(request, language, sent)
    plan = await run_in_threadpool(
        in_transaction,
        maker,
        _load_for_sending,
        settings.signing_public_key,
        unit_id if unit_id is not None else -1,
        draft,
    )
    catalogue, choices, problem = plan.catalogue, plan.choices, plan.problem
    if choices is None:
        return _render_unit_step(
            request,
            language,
            catalogue,
            error=messages(N_("We could not find that part of the party. Choose again.")),
            status_code=422,
        )

    destination = choices.destination(draft.destination)
    errors = FormErrors()
    problem_messages: dict[SendProblem, str] = {
        "nobody_left": messages(
            N_(
                "Nobody would be left to receive the report: everyone who could "
                "receive it, up to the national level, is left out. Leave out fewer "
                "people."
            )
        ),
        "not_offered": messages(
            N_(
                "The case handlers who would receive the report have changed since you "
                "opened the form. Check who receives it, and send it again."
            )
        ),
        "custodians_not_offered": messages(
            N_(
                "The identity custodians who would hold your name have changed since you "
                "opened the form. Check who they are, and send it again."
            )
        ),
        "not_stored": messages(
            N_(
                "Something went wrong while the report was being stored, so nothing was "
                "stored and nothing was sent. What you wrote is kept below: send it again."
            )
        ),
        "nobody_set_up": messages(
            N_(
                "Nobody can receive reports here yet: the ethics committee has not set up a "
                "case handler for this part of the party or any level above it. Nothing was "
                "sent. You can turn to one of the other places listed on the start page."
            )
        ),
    }
    if problem is not None:
        errors.add("excluded", problem_messages[problem])
    valid = validate_report(
        _report_in(destination.unit.id, draft, sorted(draft.excluded)), messages, errors
    )
    _file_errors(form.problems, settings, messages, errors)

    submission: Submission | None = None
    status_code = 400 if csrf_status != "ok" else 422
    retry_after: int | None = None
    if valid is not None and not errors and csrf_status == "ok":
        try:
            # A flood is refused before anything else, in a transaction of its own, so
            # that no lock is held while the case code's Argon2id runs (outside any).
            await run_in_threadpool(
                in_transaction, maker, throttle.claim_flood_slot, settings, Flood.SUBMISSION
            )
            code = await run_in_threadpool(service.new_case_code, settings)
            submission = await run_in_threadpool(
                in_transaction,
                maker,
                _submit,
                settings,
                valid,
                prepared,
                form,
                draft.submission,
                plan.offered,
                session_value(request),
                code,
            )
        except AlreadySent as sent:
            return _already_sent(request, language, sent)
        except SubmissionsBusy as busy:
            errors.add("excluded", _busy_message(messages, busy))
            status_code = busy.status_code
            retry_after = busy.retry_after
        except InvalidInput as refused:
            # Handlers changed since the check above: the same answers.
            errors.add("excluded", problem_messages[routing.send_problem(refused)])
        except SQLAlchemyError:
            # Anything else the database refused rolled back the whole report.
            errors.add("excluded", problem_messages["not_stored"])
            status_code = 503
        if errors:
            # Show who would receive it now.
            catalogue, reloaded = await run_in_threadpool(
                in_transaction, maker, _load_choices, settings.signing_public_key, choices.unit.id
            )
            if reloaded is not None:
                choices = reloaded
    if submission is not None:
        return _render_receipt(request, language, submission.case_code, submission.receipt)

    chosen = [sealed.name for sealed in form.files]
    if chosen:
        errors.add(
            "files",
            messages(
                N_(
                    "Your browser cannot keep files when the form is shown again. "
                    "Choose these files again: %(names)s."
                ),
                names=", ".join(chosen),
            ),
        )
    page = _render_form(
        request,
        language,
        choices,
        draft=draft,
        errors=errors,
        csrf_status=csrf_status,
        status_code=status_code,
    )
    if retry_after is not None:
        page.headers["Retry-After"] = str(retry_after)
    return page


def _busy_message(messages: _Messages, busy: SubmissionsBusy) -> str:
    return messages(
        N_(
            "Unusually many reports are being sent right now, so yours was not sent yet and "
            "nothing was stored. What you wrote is kept below. Wait %(seconds)s seconds, "
            "then send it again."
        ),
        seconds=busy.retry_after,
    )


def _check_unspent(
    session: Session, settings: Settings, submission_id: str, request: Request
) -> None:
    service.check_unspent(
        session, settings, submission_id, browser=session_value(request), now=utcnow()
    )


def _already_sent(request: Request, language: Language, sent: AlreadySent) -> HTMLResponse:
    if sent.case_code is not None:
        # The same browser sent this very form moments ago: the same receipt.
        return _render_receipt(request, language, sent.case_code, sent.receipt)
    # A reload long after, or another browser: the report is stored once.
    return render_page(request, language, "report_already_sent.html", status_code=409)


def _submission_id(value: str) -> str:
    """The form's submission id, or a fresh one if it is missing or malformed."""
    if (
        16 <= len(value) <= 64
        and value.isascii()
        and value.replace("-", "").replace("_", "").isalnum()
    ):
        return value
    return secrets.token_urlsafe(16)


def _submit(
    session: Session,
    settings: Settings,
    report: ReportIn,
    prepared: PreparedCase,
    form: ParsedForm,
    submission_id: str,
    offered: routing.Offered,
    browser: str | None,
    code: service.NewCaseCode,
) -> Submission:
    now = utcnow()
    # A second click gets the first click's receipt, whatever changed since.
    service.spend_submission(session, settings, submission_id, browser=browser, now=now)
    # The routing is checked again in the transaction that stores it, held to who the
    # form named: people may have changed.
    submission = service.submit_report(
        session,
        settings,
        unit_id=report.unit_id,
        category=report.category.value,
        report=report.model_dump(include=set(REPORT_FIELDS), exclude_none=True),
        identity=report.identity.model_dump() if report.identity else None,
        excluded=report.excluded_recipients,
        prepared=prepared,
        files=form.files,
        today=now.date(),
        offered=offered,
        code=code,
    )
    service.keep_receipt(
        session,
        settings,
        submission_id,
        browser=browser,
        case_code=submission.case_code,
        receipt=submission.receipt,
        now=now,
    )
    return submission


def _public_url(request: Request, path: str) -> str:
    """An address to print: behind TLS (secure cookies on) it is https, whatever the proxy sent."""
    base = str(request.base_url).rstrip("/")
    if _settings(request).secure_transport and base.startswith("http://"):
        base = "https://" + base.removeprefix("http://")
    return base + path


def _render_receipt(
    request: Request, language: Language, case_code: str, receipt: str | None
) -> HTMLResponse:
    response = render_page(
        request,
        language,
        "receipt.html",
        {
            "code_groups": case_code.split(" "),
            "signed_receipt": receipt,
            "follow_up_url": _public_url(request, f"/{language}/follow-up"),
        },
    )
    _mark_sent(request, response)
    return response


# --------------------------------------------------------------------------
# "A report was just sent from this browser": a signed cookie, nothing stored

SENT_COOKIE: Final = "varsling_sent"
SENT_SECONDS: Final = service.RECEIPT_MINUTES * 60


def _sent_mac(request: Request, until: int) -> str:
    message = b"varsling/report-sent/v1\x00" + str(until).encode()
    digest = hmac.new(csrf_signer(request).secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _mark_sent(request: Request, response: HTMLResponse) -> None:
    """Flag this browser for SENT_SECONDS: only an expiry and its MAC, no case, no id."""
    until = int(time.time()) + SENT_SECONDS
    response.set_cookie(
        SENT_COOKIE,
        f"{until}.{_sent_mac(request, until)}",
        max_age=SENT_SECONDS,
        path="/",
        secure=csrf_signer(request).secure_cookie,
        httponly=True,
        samesite="strict",
    )


def recently_sent(request: Request, *, now: float | None = None) -> bool:
    """Whether this browser showed a receipt in the last SENT_SECONDS."""
    until_text, _, mac = request.cookies.get(SENT_COOKIE, "").partition(".")
    if not (until_text.isascii() and until_text.isdigit() and len(until_text) < 12):
        return False
    until = int(until_text)
    moment = time.time() if now is None else now
    if not hmac.compare_digest(mac.encode(), _sent_mac(request, until).encode()):
        return False
    return moment < until <= moment + SENT_SECONDS + 60
