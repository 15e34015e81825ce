"""The only place that decides who may do what.

Routers carry one of these dependencies, so a new route is closed by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from varsling.accounts.models import Role
from varsling.accounts.service import StaffPrincipal, staff_principal
from varsling.config import Settings
from varsling.errors import Forbidden, Unauthenticated
from varsling.reports.service import ReporterPrincipal, reporter_principal
from varsling.request_transaction import DbSession


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]

_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def bearer_token(credentials: Credentials) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("Log in first: send 'Authorization: Bearer <token>'.")
    return credentials.credentials


Token = Annotated[str, Depends(bearer_token)]


def current_staff(session: DbSession, token: Token, settings: AppSettings) -> StaffPrincipal:
    return staff_principal(session, token, settings=settings)


Staff = Annotated[StaffPrincipal, Depends(current_staff)]


def current_reporter(session: DbSession, token: Token) -> ReporterPrincipal:
    return reporter_principal(session, token)


Reporter = Annotated[ReporterPrincipal, Depends(current_reporter)]


def require_role(role: Role) -> Callable[[StaffPrincipal], StaffPrincipal]:
    def check(principal: Staff) -> StaffPrincipal:
        if role.value not in principal.roles:
            raise Forbidden(f"This needs the {role.value} role.")
        return principal

    return check


Auditor = Annotated[StaffPrincipal, Depends(require_role(Role.AUDITOR))]
Admin = Annotated[StaffPrincipal, Depends(require_role(Role.ADMIN))]
Custodian = Annotated[StaffPrincipal, Depends(require_role(Role.CUSTODIAN))]
