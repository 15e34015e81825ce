"""Rendering a staff page: its navigation by role, its form token and its errors.

Staff pages are server-rendered like the reporter pages (web/pages.py), in
the same three languages, with the same headers and form tokens; they extend
`staff/base.html`. A `VarslingError` a page lets through becomes an HTML
error page here (app.py sends /{lang}/staff/ paths this way), after the
request's transaction has rolled back; a refusal the service marked as
audited is written by the app's handler as for the API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from varsling.accounts.models import Role
from varsling.accounts.service import StaffPrincipal
from varsling.errors import VarslingError
from varsling.web.i18n import N_, Language, is_language
from varsling.web.pages import page_templates, render_page
from varsling.web.security import CSRF_FIELD, CsrfResult, check_csrf, limit_session_cookie

STAFF_PATH: Final = re.compile(r"^/(?P<lang>[a-z]{2})/staff(/|$)")


@dataclass(frozen=True)
class NavLink:
    """One entry of the staff navigation."""

    label: str
    url: str
    current: bool


# Each role's pages, in the order the navigation lists them; the first of a
# person's roles is where they land after logging in.
_ROLE_PAGES: Final[tuple[tuple[Role, str, str], ...]] = (
    (Role.HANDLER, N_("Cases"), "cases"),
    (Role.CUSTODIAN, N_("Identity requests"), "identity-requests"),
    (Role.AUDITOR, N_("Audit trail"), "audit"),
    (Role.AUDITOR, N_("Statistics"), "statistics"),
    (Role.ADMIN, N_("Units"), "admin/units"),
    (Role.ADMIN, N_("Accounts"), "admin/accounts"),
)


def staff_home(language: Language, roles: frozenset[str]) -> str:
    """Where a staff member lands after logging in."""
    for role, _label, path in _ROLE_PAGES:
        if role.value in roles:
            return f"/{language}/staff/{path}"
    return f"/{language}/staff/two-factor"


def nav_links(request: Request, language: Language, roles: frozenset[str]) -> list[NavLink]:
    templates = page_templates(request)
    links = []
    for role, label, path in _ROLE_PAGES:
        if role.value in roles:
            url = f"/{language}/staff/{path}"
            links.append(
                NavLink(
                    label=templates.gettext(language, label),
                    url=url,
                    current=request.url.path == url or request.url.path.startswith(url + "/"),
                )
            )
    return links


def staff_translate(request: Request, language: Language, message: str) -> str:
    """A message marked with `N_` in Python code, in the page's language."""
    return page_templates(request).gettext(language, message)


def render_staff(
    request: Request,
    language: Language,
    template: str,
    principal: StaffPrincipal | None,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a staff page: `render_page` plus the navigation for the person's roles.

    Templates get `principal`, `nav_links` and `staff_home` besides what every
    page gets. The cookie (the session token) never outlives the session.
    """
    seconds_left = getattr(request.state, "staff_seconds_left", None)
    if isinstance(seconds_left, int):
        limit_session_cookie(request, seconds_left)
    roles = principal.roles if principal is not None else frozenset()
    page_context: dict[str, Any] = {
        "principal": principal,
        "nav_links": nav_links(request, language, roles) if principal is not None else [],
        "staff_home": staff_home(language, roles),
        "request_path": request.url.path,
    }
    page_context.update(context or {})
    return render_page(request, language, template, page_context, status_code=status_code)


async def read_staff_form(
    request: Request, *, max_fields: int = 100
) -> tuple[FormData, CsrfResult]:
    """A posted staff form (no files) and whether its form token checks out.

    Only "ok" may change anything; otherwise re-render the form with what was typed.
    """
    form = await request.form(max_files=0, max_fields=max_fields)
    token = form.get(CSRF_FIELD)
    return form, check_csrf(request, token if isinstance(token, str) else None)


def form_text(form: FormData, name: str, limit: int = 10_000) -> str:
    """A text field of a posted form ("" when missing), cut at `limit` characters."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


# What a staff member reads when a page is refused, by the error's code, then its status.
_ERROR_TEXTS: Final[Mapping[str, tuple[str, str]]] = {
    "404": (
        N_("Not found"),
        N_("This page or case does not exist, or you have no access to it."),
    ),
    "403": (
        N_("No access"),
        N_("Your role does not give access to this page. Ask an administrator if you need it."),
    ),
    "409": (
        N_("This could not be done now"),
        N_("The case or account is not in a state that allows this. Nothing was changed."),
    ),
    "422": (
        N_("Something was not filled in correctly"),
        N_("Nothing was changed. Go back, check what you entered and try again."),
    ),
    "429": (
        N_("Too many attempts"),
        N_("Wait a little and try again."),
    ),
    "second_person_required": (
        N_("Someone else must decide"),
        N_("You cannot decide on a request you made yourself. Nothing was changed."),
    ),
    "declaration_required": (
        N_("Declare first"),
        N_("Before you can work on this case, declare whether you have a conflict of interest."),
    ),
    "identity_not_granted": (
        N_("No access to the identity"),
        N_("The reporter's identity has not been released to you."),
    ),
}


def error_page(request: Request, error: VarslingError) -> HTMLResponse:
    """The HTML answer to a refused staff page, in the page's language."""
    match = STAFF_PATH.match(request.url.path)
    language: Language = "nb"
    if match is not None and is_language(match["lang"]):
        language = match["lang"]
    title, text = _ERROR_TEXTS.get(error.code) or _ERROR_TEXTS.get(
        str(error.status_code), (N_("Something went wrong"), N_("Nothing was changed."))
    )
    principal = getattr(request.state, "staff_principal", None)
    response = render_staff(
        request,
        language,
        "staff/error.html",
        principal if isinstance(principal, StaffPrincipal) else None,
        {
            "title": staff_translate(request, language, title),
            "text": staff_translate(request, language, text),
            "status": error.status_code,
        },
        status_code=error.status_code,
    )
    response.headers.update(error.headers)
    return response


def is_staff_path(path: str) -> bool:
    return STAFF_PATH.match(path) is not None
