"""Who is logged in on the staff pages, and what their role lets them open.

The staff pages use the browser's `varsling_session` cookie (see
web/security.py): at a staff login its value becomes the session token, bound
to the "staff-web" channel, so it is no API bearer token and no reporter
session. Every page carries one of the dependencies below, so a new page is
closed by default, like the API routes in authz.py, and answers as they do:
no session sends the browser to the login page (303), a staff member
without the role gets a 403 page, a case they hold no key to a 404 page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import crypto
from varsling.accounts.models import LoginSession, Role
from varsling.accounts.service import (
    STAFF_WEB_CHANNEL,
    StaffPrincipal,
    find_session,
    staff_principal,
    utcnow,
)
from varsling.authz import AppSettings
from varsling.errors import Forbidden, Unauthenticated
from varsling.request_transaction import DbSession
from varsling.web.i18n import Language
from varsling.web.pages import PageLanguage
from varsling.web.security import session_value


class StaffRedirect(Exception):
    """Send the browser elsewhere (303): to the login page, or to set up two-factor."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def login_path(language: Language, notice: str | None = None) -> str:
    return f"/{language}/staff/login" + (f"?notice={notice}" if notice else "")


def enrol_path(language: Language) -> str:
    return f"/{language}/staff/two-factor"


def _remember_session_end(request: Request, session: Session, token: str) -> None:
    found, _ = find_session(session, token, STAFF_WEB_CHANNEL)
    ends = found.expires_at if found.expires_at.tzinfo else found.expires_at.replace(tzinfo=dt.UTC)
    # render_staff keeps the cookie from outliving the session.
    request.state.staff_seconds_left = max(1, int((ends - utcnow()).total_seconds()))


def _principal(
    request: Request, session: Session, settings: AppSettings, language: Language, scope: str
) -> StaffPrincipal:
    token = session_value(request)
    if token is None:
        raise StaffRedirect(login_path(language))
    try:
        principal = staff_principal(
            session, token, STAFF_WEB_CHANNEL, settings=settings, scope=scope
        )
    except Unauthenticated:
        raise StaffRedirect(_where_instead(session, token, language, scope)) from None
    _remember_session_end(request, session, token)
    request.state.staff_principal = principal
    return principal


def _where_instead(session: Session, token: str, language: Language, scope: str) -> str:
    """Where a browser goes whose cookie opens no session of `scope`."""
    try:
        found, _ = find_session(session, token, STAFF_WEB_CHANNEL)
    except Unauthenticated:
        # A session that ran out says so; a cookie that never was a session does not.
        lookup = crypto.derive_token(token, STAFF_WEB_CHANNEL).lookup
        ended = session.execute(
            select(LoginSession.id).where(LoginSession.token_lookup == lookup)
        ).first()
        return login_path(language, "ended" if ended is not None else None)
    if found.scope == "enrol" and scope == "full":
        return enrol_path(language)
    return login_path(language, "ended")


def staff_page_principal(
    request: Request, session: DbSession, settings: AppSettings, language: PageLanguage
) -> StaffPrincipal:
    """The staff member behind this browser's cookie, fully logged in (two-factor done)."""
    return _principal(request, session, settings, language, "full")


def enrolling_principal(
    request: Request, session: DbSession, settings: AppSettings, language: PageLanguage
) -> StaffPrincipal:
    """The staff member whose session may only set up two-factor."""
    return _principal(request, session, settings, language, "enrol")


StaffPage = Annotated[StaffPrincipal, Depends(staff_page_principal)]


def require_page_role(role: Role) -> Callable[[StaffPrincipal], StaffPrincipal]:
    def check(principal: StaffPage) -> StaffPrincipal:
        if role.value not in principal.roles:
            raise Forbidden(f"This needs the {role.value} role.")
        return principal

    return check


HandlerPage = Annotated[StaffPrincipal, Depends(require_page_role(Role.HANDLER))]
CustodianPage = Annotated[StaffPrincipal, Depends(require_page_role(Role.CUSTODIAN))]
AuditorPage = Annotated[StaffPrincipal, Depends(require_page_role(Role.AUDITOR))]
AdminPage = Annotated[StaffPrincipal, Depends(require_page_role(Role.ADMIN))]
