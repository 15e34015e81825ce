"""The pages every reporter starts from, and `install_web`, which wires the web side in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from varsling.web import (
    case_pages,
    report_pages,
    staff_account_pages,
    staff_admin_pages,
    staff_audit_pages,
    staff_case_pages,
    staff_case_subpages,
    staff_login_pages,
)
from varsling.web.i18n import DEFAULT_LANGUAGE, PageTemplates
from varsling.web.pages import PageLanguage, render_page
from varsling.web.security import CsrfSigner, SecurityHeadersMiddleware
from varsling.web.staff_auth import StaffRedirect

if TYPE_CHECKING:
    from varsling.config import Settings

router = APIRouter(include_in_schema=False)


# HEAD answers like GET: link checkers and uptime monitors ask with it.
@router.api_route("/", methods=["GET", "HEAD"])
def root() -> RedirectResponse:
    return RedirectResponse(f"/{DEFAULT_LANGUAGE}/", status_code=307)


@router.api_route("/{lang:lang}/", methods=["GET", "HEAD"], response_class=HTMLResponse)
def start_page(request: Request, language: PageLanguage) -> HTMLResponse:
    return render_page(request, language, "start.html")


async def _staff_redirect(_request: Request, exc: Exception) -> Response:
    location = exc.location if isinstance(exc, StaffRedirect) else "/"
    return RedirectResponse(location, status_code=303)


def mount_static(app: FastAPI) -> None:
    """Serve `varsling/static` at /static: every asset is self-hosted."""
    app.mount("/static", StaticFiles(packages=[("varsling", "static")]), name="static")


def install_web(app: FastAPI, settings: Settings) -> None:
    """Static files, security headers, templates, form tokens and the page router."""
    app.state.varsling_templates = PageTemplates.load()
    app.state.varsling_csrf = CsrfSigner.from_settings(settings)
    mount_static(app)
    app.add_middleware(
        SecurityHeadersMiddleware, strict_transport_security=settings.secure_transport
    )
    app.add_exception_handler(StaffRedirect, _staff_redirect)
    app.include_router(router)
    app.include_router(report_pages.router)
    app.include_router(case_pages.router)
    # The staff workspace: each role's pages in a module of their own.
    app.include_router(staff_login_pages.router)
    app.include_router(staff_audit_pages.router)
    app.include_router(staff_admin_pages.router)
    app.include_router(staff_account_pages.router)
    app.include_router(staff_case_pages.router)
    app.include_router(staff_case_subpages.router)
