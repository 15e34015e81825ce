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
from typing import Any, Final, Literal

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from varsling.accounts.models import Role, UnitKind, User
from varsling.accounts.service import key_certified, members_by_unit, unit_chain, utcnow
from varsling.cases.models import Category
from varsling.config import Settings
from varsling.db import DbSession, in_transaction
from varsling.errors import InvalidInput
from varsling.reports import service
from varsling.reports.schemas import (
    LONG_TEXT_CHARS,
    REPORT_FIELDS,
    REPORT_FLAGS,
    REPORT_TEXT_FIELDS,
    SHORT_TEXT_CHARS,
    ReportIn,
)
from varsling.reports.service import (
    AlreadySent,
    NoHandlers,
    PreparedCase,
    Recipient,
    Submission,
    UnitListing,
)
from varsling.reports.uploads import FileProblem, ParsedForm, read_multipart
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
NATIONAL_CHOICE: Final = "national"

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
class Destination:
    """One place the report can be sent: the chosen unit, or straight to the national level."""

    value: str  # "unit" or "national"
    unit: UnitListing
    receiving_unit_name: str  # the unit whose handlers receive it (the unit or one above)
    recipients: list[Recipient]


@dataclass(frozen=True)
class FallbackLevel:
    """The case handlers of one unit on the way up, listed where they are first met.

    The first level receives the report when nobody is left out; each later one
    receives it when everyone listed before it is left out (DESIGN: "and so on up").
    """

    unit_name: str
    recipients: list[Recipient]
    first: bool  # receives the report when nobody is left out
    national_only: bool = False  # reached only when sending straight to the national level


@dataclass(frozen=True)
class ReportChoices:
    unit: UnitListing
    destinations: list[Destination]
    levels: list[FallbackLevel] = field(default_factory=list)

    @property
    def handlers(self) -> list[Recipient]:
        """Everyone who could receive the report, once each: the people one can leave out."""
        return [recipient for level in self.levels for recipient in level.recipients]

    @property
    def custodians(self) -> list[Recipient]:
        """Everyone who would hold the identity key, for any destination, once each."""
        found: dict[int, Recipient] = {}
        for destination in self.destinations:
            for custodian in destination.unit.custodians:
                found.setdefault(custodian.id, custodian)
        return list(found.values())

    def destination(self, value: str) -> Destination:
        for destination in self.destinations:
            if destination.value == value:
                return destination
        return self.destinations[0]


@dataclass(frozen=True)
class UnitGroup:
    """An `<optgroup>` of the unit list: the national level, a county, or youth and students."""

    label: str
    units: list[UnitListing]


@dataclass(frozen=True)
class UnitCatalogue:
    units: list[UnitListing]

    @property
    def root(self) -> UnitListing | None:
        roots = [u for u in self.units if u.parent_id is None]
        national = [u for u in roots if u.kind == UnitKind.NATIONAL]
        candidates = national or roots
        return candidates[0] if candidates else None

    def find(self, unit_id: int) -> UnitListing | None:
        return next((u for u in self.units if u.id == unit_id), None)

    def groups(
        self, language: Language, gettext: Callable[[Language, str], str]
    ) -> list[UnitGroup]:
        """National units first, then each county with its municipal units, then youth."""
        by_id = {u.id: u for u in self.units}

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
        for unit in self.units:
            if not unit.recipients:
                continue  # nobody can receive a report there: not offered
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
            members = sorted(
                counties[county_id], key=lambda u: (u.id != county_id, _name_key(u.name))
            )
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
    return UnitCatalogue(service.list_units(session, verifying_key=verifying_key))


def _load_choices(
    session: Session, verifying_key: bytes, unit_id: int
) -> tuple[UnitCatalogue, ReportChoices | None]:
    catalogue = _load_catalogue(session, verifying_key)
    unit = catalogue.find(unit_id)
    if unit is None:
        return catalogue, None
    destinations = [_destination(session, verifying_key, "unit", unit)]
    root = catalogue.root
    if root is not None and root.id != unit.id:
        here = {r.id for r in unit.recipients}
        there = {r.id for r in root.recipients}
        # When the report already goes to the national level, there is nothing to choose.
        if here != there:
            destinations.append(_destination(session, verifying_key, NATIONAL_CHOICE, root))
    seen: set[int] = set()
    levels = _fallback_levels(session, verifying_key, unit.id, seen)
    if len(destinations) > 1:
        levels += [
            FallbackLevel(level.unit_name, level.recipients, first=False, national_only=True)
            for level in _fallback_levels(session, verifying_key, destinations[1].unit.id, seen)
        ]
    return catalogue, ReportChoices(unit, destinations, levels)


def _fallback_levels(
    session: Session, verifying_key: bytes, unit_id: int, seen: set[int]
) -> list[FallbackLevel]:
    """The unit's case handlers, then each unit above with people not yet in `seen`.

    This is the order `service.route` follows: a unit whose handlers are all
    listed already is reached only when they are all left out, so it is skipped.
    Nobody whose key is not certified is listed: they cannot receive.
    """
    levels: list[FallbackLevel] = []
    chain = unit_chain(session, unit_id)
    handlers = members_by_unit(session, [unit.id for unit in chain], Role.HANDLER)
    for unit in chain:
        new = [
            Recipient(user.id, user.display_name)
            for user in handlers.get(unit.id, [])
            if user.id not in seen and key_certified(user, verifying_key)
        ]
        if new:
            seen.update(r.id for r in new)
            levels.append(FallbackLevel(unit.name, new, first=not levels))
    return levels


SendProblem = Literal[
    "nobody_left", "nobody_set_up", "not_offered", "custodians_not_offered", "not_stored"
]


class NotOffered(Exception):
    """The report would reach someone the form did not name (people changed meanwhile)."""

    def __init__(self, problem: SendProblem = "not_offered") -> None:
        super().__init__(problem)
        self.problem: SendProblem = problem


def _check_routing(
    session: Session,
    verifying_key: bytes,
    unit_id: int,
    excluded: set[int],
    offered: set[int],
    offered_custodians: set[int],
) -> None:
    """Raise unless the report reaches someone, and only people the form named.

    That holds for the identity key too: no custodian the form did not name
    receives it.
    """
    # InvalidInput: nobody is left
    routing = service.route(session, unit_id, excluded, verifying_key=verifying_key)
    if any(handler.id not in offered for handler in routing.handlers):
        raise NotOffered("not_offered")
    if any(custodian.id not in offered_custodians for custodian in routing.custodians):
        raise NotOffered("custodians_not_offered")


def _load_for_sending(
    session: Session, verifying_key: bytes, unit_id: int, draft: ReportDraft
) -> tuple[UnitCatalogue, ReportChoices | None, SendProblem | None]:
    """The form's choices, `draft.excluded` cut to people offered, and what stops sending.

    `draft.offered` is who the form the reporter saw named; a post without it
    (not from our form) is held to who the form would name now.
    """
    catalogue, choices = _load_choices(session, verifying_key, unit_id)
    if choices is None:
        return catalogue, None, None
    now_offered = {r.id for r in choices.handlers}
    now_custodians = {r.id for r in choices.custodians}
    named = draft.offered | draft.offered_custodians
    known = set(session.scalars(select(User.id).where(User.id.in_(named)))) if named else set()
    draft.offered = draft.offered & known if draft.offered else set(now_offered)
    if draft.custodians_named:
        draft.offered_custodians &= known
    else:
        draft.offered_custodians = set(now_custodians)
    # Every person the form offered can be left out; anything else is not ours.
    draft.excluded &= draft.offered | now_offered | draft.offered_custodians | now_custodians
    try:
        _check_routing(
            session,
            verifying_key,
            choices.destination(draft.destination).unit.id,
            draft.excluded,
            draft.offered,
            draft.offered_custodians,
        )
    except NoHandlers:
        return catalogue, choices, "nobody_set_up"
    except InvalidInput:
        return catalogue, choices, "nobody_left"
    except NotOffered as changed:
        return catalogue, choices, changed.problem
    return catalogue, choices, None


def _destination(
    session: Session, verifying_key: bytes, value: str, unit: UnitListing
) -> Destination:
    try:
        receiving = service.route(session, unit.id, verifying_key=verifying_key).unit.name
    except InvalidInput:
        receiving = unit.name
    return Destination(value, unit, receiving, unit.recipients)


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
    unit_groups = catalogue.groups(language, page_templates(request).gettext)
    return render_page(
        request,
        language,
        "report_unit.html",
        {
            "unit_groups": unit_groups,
            "has_units": bool(unit_groups),
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
    catalogue, choices, problem = await run_in_threadpool(
        in_transaction,
        maker,
        _load_for_sending,
        settings.signing_public_key,
        unit_id if unit_id is not None else -1,
        draft,
    )
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
    if valid is not None and not errors and csrf_status == "ok":
        try:
            submission = await run_in_threadpool(
                in_transaction,
                maker,
                _submit,
                settings,
                valid,
                prepared,
                form,
                draft.submission,
                draft.offered,
                draft.offered_custodians,
                session_value(request),
            )
        except AlreadySent as sent:
            return _already_sent(request, language, sent)
        except NoHandlers:
            errors.add("excluded", problem_messages["nobody_set_up"])
        except InvalidInput:
            # Handlers changed since the check above: the same answer.
            errors.add("excluded", problem_messages["nobody_left"])
        except NotOffered as changed:
            errors.add("excluded", problem_messages[changed.problem])
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
    return _render_form(
        request,
        language,
        choices,
        draft=draft,
        errors=errors,
        csrf_status=csrf_status,
        status_code=status_code,
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
    offered: set[int],
    offered_custodians: set[int],
    browser: str | None,
) -> Submission:
    now = utcnow()
    # First: a second click gets the first click's receipt, whatever changed since.
    service.spend_submission(session, settings, submission_id, browser=browser, now=now)
    # Checked again in the transaction that stores it: people may have changed.
    _check_routing(
        session,
        settings.signing_public_key,
        report.unit_id,
        set(report.excluded_recipients),
        offered,
        offered_custodians,
    )
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
