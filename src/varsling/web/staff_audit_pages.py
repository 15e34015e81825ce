"""The auditor's and the custodian's pages: the audit trail, checkpoints and export,
statistics and deadlines; identity requests to decide.

Thin: every rule lives in the services the API calls too (audit_listing,
audit, statistics, cases.identity). A VarslingError raised here renders as
the staff error page (404 for a request on a case whose identity key the
custodian does not hold, as the API answers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import audit, audit_listing, statistics
from varsling.accounts.models import Unit, User
from varsling.accounts.service import StaffPrincipal, utcnow
from varsling.cases import identity
from varsling.config import Settings
from varsling.request_transaction import DbSession
from varsling.web.i18n import N_, Language
from varsling.web.pages import PageLanguage
from varsling.web.report_pages import CATEGORIES
from varsling.web.security import CsrfResult
from varsling.web.staff_auth import AuditorPage, CustodianPage
from varsling.web.staff_pages import form_text, read_staff_form, render_staff, staff_translate

router = APIRouter(include_in_schema=False)

MAX_REASON_CHARS: Final = 5_000


@dataclass(frozen=True)
class FieldError:
    """One problem, shown in the error summary and at its field (`field` is the input's id)."""

    field: str
    message: str


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _translate(request: Request, language: Language, message: str) -> str:
    return staff_translate(request, language, message)


def _category_names(request: Request, language: Language) -> dict[str, str]:
    return {
        category.value: _translate(request, language, name) for category, name, _hint in CATEGORIES
    }


# --------------------------------------------------------------------------
# The audit trail


# The filter's inputs: (query name, input id, label, hint).
_FILTER_FIELDS: Final = (
    ("case_id", "filter-case", N_("Case"), N_("The case's id: 32 characters, 0-9 and a-f")),
    ("actor", "filter-actor", N_("Actor"), N_("Who acted: user:12 for a staff member, or system")),
    ("action", "filter-action", N_("Action"), N_("For example case.read or identity.approved")),
    ("from", "filter-from", N_("From (day)"), N_("The first day, for example 2026-01-31")),
    ("to", "filter-to", N_("To (day)"), N_("The last day, included")),
)
# The service names the field it refuses; the page says why in the reader's language.
_FILTER_ERRORS: Final[Mapping[str, tuple[str, str]]] = {
    "chain": ("filter-chain", N_("Choose staff and system events or reporters' events.")),
    "case_id": ("filter-case", N_("A case id has 32 characters: digits 0-9 and letters a-f.")),
    "actor": (
        "filter-actor",
        N_(
            "Write the actor as user: and a number (user:12), or system. Reporters' events have "
            "no actor: leave it empty for them."
        ),
    ),
    "action": ("filter-action", N_("Write the action in small letters with dots, like case.read.")),
    "from": ("filter-from", N_("Write the first day as a date, like 2026-01-31.")),
    "to": (
        "filter-to",
        N_("Write the last day as a date, like 2026-01-31, and not before the first day."),
    ),
    "limit": ("filter-chain", N_("The page size must be a number from 1 to 200.")),
    "after": ("filter-chain", N_("This page link is broken. Start again from the first page.")),
    "before": ("filter-chain", N_("This page link is broken. Start again from the first page.")),
}


def _filter_form(request: Request) -> dict[str, str]:
    params = request.query_params
    form = {name: params.get(name, "")[:200] for name, *_ in _FILTER_FIELDS}
    form["chain"] = params.get("chain", "")[:20]
    # Not an input: kept so that the next pages have the same size.
    form["limit"] = params.get("limit", "")[:5]
    return form


def _page_url(language: Language, form: Mapping[str, str], **cursor: int) -> str:
    query = {name: value for name, value in form.items() if value.strip()}
    query.update({key: str(value) for key, value in cursor.items()})
    return f"/{language}/staff/audit" + (f"?{urlencode(query)}" if query else "")


def _render_trail(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    *,
    form: Mapping[str, str],
    events_page: audit_listing.EventPage | None = None,
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    filter_fields = [
        (name, input_id, _translate(request, language, label), _translate(request, language, hint))
        for name, input_id, label, hint in _FILTER_FIELDS
    ]
    newer_url = older_url = None
    if events_page is not None:
        if events_page.newer is not None:
            newer_url = _page_url(language, form, after=events_page.newer)
        if events_page.older is not None:
            older_url = _page_url(language, form, before=events_page.older)
    return render_staff(
        request,
        language,
        "staff/audit_events.html",
        principal,
        {
            "form": form,
            "filter_fields": filter_fields,
            "events_page": events_page,
            "newer_url": newer_url,
            "older_url": older_url,
            "errors": list(errors),
            "form_check": form_check,
        },
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/audit", response_class=HTMLResponse)
def audit_trail_page(
    request: Request, language: PageLanguage, principal: AuditorPage, session: DbSession
) -> HTMLResponse:
    """The trail, filtered and paged by the same service as GET /api/v1/audit/events."""
    form = _filter_form(request)
    params = request.query_params
    try:
        flt = audit_listing.EventFilter.parse(
            chain=form["chain"],
            case_id=form["case_id"],
            actor=form["actor"],
            action=form["action"],
            from_day=form["from"],
            to_day=form["to"],
        )
        events_page = audit_listing.list_events(
            session,
            flt,
            actor=principal.actor,
            limit=audit_listing.parse_limit(params.get("limit")),
            after=audit_listing.parse_cursor(params.get("after"), "after"),
            before=audit_listing.parse_cursor(params.get("before"), "before"),
        )
    except audit_listing.InvalidFilter as problem:
        field, message = _FILTER_ERRORS[problem.field]
        return _render_trail(
            request,
            language,
            principal,
            form=form,
            errors=[FieldError(field, _translate(request, language, message))],
            status_code=422,
        )
    return _render_trail(request, language, principal, form=form, events_page=events_page)


@router.post("/{lang:lang}/staff/audit/checkpoint", response_class=HTMLResponse)
async def take_checkpoint(
    request: Request, language: PageLanguage, principal: AuditorPage, session: DbSession
) -> HTMLResponse:
    """Sign both chains' heads (audit.create_checkpoint, as the API) and show the checkpoint."""
    _form, form_check = await read_staff_form(request, max_fields=5)
    if form_check != "ok":
        return _trail_refused(request, language, principal, form_check)
    made = audit.create_checkpoint(session, _settings(request).signing_seed, actor=principal.actor)
    return render_staff(
        request,
        language,
        "staff/audit_checkpoint.html",
        principal,
        {"checkpoint": made, "checkpoint_json": json.dumps(made.to_json(), sort_keys=True)},
    )


@router.post("/{lang:lang}/staff/audit/export", response_model=None)
async def download_export(
    request: Request, language: PageLanguage, principal: AuditorPage, session: DbSession
) -> Response:
    """Every event as JSON Lines closed by a fresh checkpoint (audit.export, as the CLI)."""
    _form, form_check = await read_staff_form(request, max_fields=5)
    if form_check != "ok":
        return _trail_refused(request, language, principal, form_check)
    made = audit.export(session, _settings(request).signing_seed, actor=principal.actor)
    # Read in full inside the transaction that signed its checkpoint.
    body = "".join(line + "\n" for line in made.lines)
    day = made.checkpoint.signed_at[:10]
    return Response(
        body,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="varsling-audit-{day}.jsonl"'},
    )


def _trail_refused(
    request: Request, language: Language, principal: StaffPrincipal, form_check: CsrfResult
) -> HTMLResponse:
    """A checkpoint or export form whose token failed: nothing is signed, nothing listed."""
    form = dict.fromkeys([name for name, *_ in _FILTER_FIELDS] + ["chain"], "")
    return _render_trail(
        request, language, principal, form=form, form_check=form_check, status_code=400
    )


# --------------------------------------------------------------------------
# Statistics and deadlines


def _quarter_name(request: Request, language: Language, quarter: str) -> str:
    year, number = quarter.split("-Q")
    return _translate(request, language, N_("Quarter {number}, {year}")).format(
        number=number, year=year
    )


@router.get("/{lang:lang}/staff/statistics", response_class=HTMLResponse)
def statistics_page(
    request: Request, language: PageLanguage, principal: AuditorPage, session: DbSession
) -> HTMLResponse:
    """The same figures as GET /api/v1/statistics, hidden counts in plain words."""
    figures = statistics.statistics(
        session, min_cell=_settings(request).statistics_min_cell, actor=principal.actor
    )
    return render_staff(
        request,
        language,
        "staff/statistics.html",
        principal,
        {
            "figures": figures,
            "category_names": _category_names(request, language),
            "quarter_names": {
                q.quarter: _quarter_name(request, language, q.quarter) for q in figures.quarters
            },
        },
    )


# --------------------------------------------------------------------------
# Identity requests (custodians)

DECISIONS: Final = ("approve", "refuse")


@dataclass(frozen=True)
class TypedDecision:
    """What the custodian sent, shown back when it could not be saved."""

    request_id: int
    decision: str
    reason: str


def _render_requests(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    *,
    decided: int | None = None,
    typed: TypedDecision | None = None,
    errors: Sequence[FieldError] = (),
    form_check: CsrfResult = "ok",
    status_code: int = 200,
) -> HTMLResponse:
    items = identity.custodian_requests(session, _settings(request), principal)
    pending = [i for i in items if i["status"] == identity.PENDING and not i["decided_by_me"]]
    earlier = [i for i in items if i["decided_by_me"]]
    user_ids = {int(i["requester_id"]) for i in items}
    names = {
        user.id: user.display_name
        for user in session.scalars(select(User).where(User.id.in_(user_ids)))
    }
    unit_names = {unit.id: unit.name for unit in session.scalars(select(Unit))}
    just_decided = next((i for i in earlier if i["id"] == decided), None)
    return render_staff(
        request,
        language,
        "staff/identity_requests.html",
        principal,
        {
            "pending": pending,
            "earlier": earlier,
            "names": names,
            "unit_names": unit_names,
            "category_names": _category_names(request, language),
            "decided": just_decided,
            "typed": typed,
            "errors": list(errors),
            "form_check": form_check,
        },
        status_code=status_code,
    )


@router.get("/{lang:lang}/staff/identity-requests", response_class=HTMLResponse)
def identity_requests_page(
    request: Request,
    language: PageLanguage,
    principal: CustodianPage,
    session: DbSession,
    decided: str | None = None,
) -> HTMLResponse:
    """Requests waiting on cases whose identity key the custodian holds, and earlier decisions."""
    decided_id = int(decided) if decided and re.fullmatch(r"[0-9]{1,9}", decided) else None
    return _render_requests(request, language, principal, session, decided=decided_id)


@router.post(
    "/{lang:lang}/staff/identity-requests/{request_id}/decision", response_class=HTMLResponse
)
async def decide_identity_request(
    request: Request,
    language: PageLanguage,
    request_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    principal: CustodianPage,
    session: DbSession,
) -> Response:
    """Approve or refuse with a reason (identity.decide, as the API); a request on a case
    whose identity key the custodian does not hold is 404, as in the API."""
    form, form_check = await read_staff_form(request, max_fields=5)
    typed = TypedDecision(
        request_id,
        form_text(form, "decision", 20),
        # Kept in full (up to a bound) to show back, though only 5000 may be saved.
        form_text(form, "reason", 4 * MAX_REASON_CHARS),
    )
    if form_check != "ok":
        return _render_requests(
            request,
            language,
            principal,
            session,
            typed=typed,
            form_check=form_check,
            status_code=400,
        )
    errors = []
    if typed.decision not in DECISIONS:
        errors.append(
            FieldError(
                f"decision-{request_id}",
                _translate(request, language, N_("Choose whether you approve or refuse.")),
            )
        )
    if not typed.reason.strip():
        errors.append(
            FieldError(
                f"reason-{request_id}",
                _translate(request, language, N_("Write your reason. It is needed either way.")),
            )
        )
    elif len(typed.reason) > MAX_REASON_CHARS:
        errors.append(
            FieldError(
                f"reason-{request_id}",
                _translate(request, language, N_("The reason can be at most 5000 characters.")),
            )
        )
    if errors:
        return _render_requests(
            request, language, principal, session, typed=typed, errors=errors, status_code=422
        )
    identity.decide(
        session,
        _settings(request),
        principal,
        request_id,
        approve=typed.decision == "approve",
        reason=typed.reason.strip(),
        today=utcnow().date(),
    )
    return RedirectResponse(
        f"/{language}/staff/identity-requests?decided={request_id}", status_code=303
    )
