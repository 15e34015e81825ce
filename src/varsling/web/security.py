"""Security headers on every response, and CSRF protection for the reporter forms.

The cookie the service sets is `varsling_session`: a random value per
browser, HttpOnly, SameSite=Strict, gone after two hours. Served over TLS
(the default in production) it is `__Host-varsling_session`, Secure, for the
whole site and no Domain, so no other host or plain-http page can set it. (The
receipt adds `varsling_sent` for ten minutes: an expiry and its MAC, see
report_pages.) A form token is an
HMAC over its issue time and that value, so it works only in the browser it
was given to, and an old token can be told apart from a forged one (the
issue time carries its own HMAC, which needs no cookie to check).

Nothing here reads or logs a client's address or user agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from markupsafe import Markup
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from varsling.config import Settings

SESSION_COOKIE: Final = "varsling_session"
SECURE_SESSION_COOKIE: Final = "__Host-varsling_session"
HSTS: Final = "max-age=31536000"
CSRF_FIELD: Final = "csrf_token"
FORM_TOKEN_SECONDS: Final = 2 * 60 * 60
# A token stamped this far in the future is not ours (beyond clock skew between replicas).
_CLOCK_SKEW_SECONDS: Final = 60

CsrfResult = Literal["ok", "expired", "invalid"]

CONTENT_SECURITY_POLICY: Final = (
    # Scripts only from files we serve (one: the receipt's print button, an
    # enhancement; every page works without it). Never inline script or style.
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_DENIED_FEATURES: Final = (
    "accelerometer",
    "autoplay",
    "browsing-topics",
    "camera",
    "display-capture",
    "encrypted-media",
    "fullscreen",
    "geolocation",
    "gyroscope",
    "hid",
    "interest-cohort",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "picture-in-picture",
    "publickey-credentials-get",
    "screen-wake-lock",
    "serial",
    "usb",
    "xr-spatial-tracking",
)
PERMISSIONS_POLICY: Final = ", ".join(f"{feature}=()" for feature in _DENIED_FEATURES)
SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
STATIC_PREFIX: Final = "/static/"


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response.

    HTML is never stored by the browser or a proxy (`no-store`): a receipt or a
    case page must not survive in a cache. Other answers get `no-store` too
    unless they set their own Cache-Control; static assets are revalidated.
    """

    def __init__(self, app: ASGIApp, *, strict_transport_security: bool = False) -> None:
        self.app = app
        self.strict_transport_security = strict_transport_security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = str(scope.get("path", "")).startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    if name == "Content-Security-Policy":
                        # A route's own policy stands (a download adds `sandbox`).
                        headers.setdefault(name, value)
                    else:
                        headers[name] = value
                if self.strict_transport_security:
                    headers["Strict-Transport-Security"] = HSTS
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Cache-Control"] = "no-store"
                elif "cache-control" not in headers:
                    headers["Cache-Control"] = "no-cache" if is_static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class CsrfSigner:
    """Makes and checks form tokens; one per application."""

    secret: bytes = field(repr=False)
    lifetime_seconds: int = FORM_TOKEN_SECONDS
    secure_cookie: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CsrfSigner:
        return cls(secret=settings.secret("web_secret"), secure_cookie=settings.secure_transport)

    @property
    def cookie_name(self) -> str:
        return SECURE_SESSION_COOKIE if self.secure_cookie else SESSION_COOKIE

    def token(self, session_value: str, *, now: float) -> str:
        issued = int(now)
        return f"{issued}.{self._stamp(issued)}.{self._bound(issued, session_value)}"

    def check(self, session_value: str | None, form_token: str | None, *, now: float) -> CsrfResult:
        match = _TOKEN.fullmatch(form_token or "")
        if match is None:
            return "invalid"
        issued = int(match["issued"])
        if not _same(self._stamp(issued), match["stamp"]) or issued > now + _CLOCK_SKEW_SECONDS:
            return "invalid"
        if now - issued > self.lifetime_seconds:
            return "expired"
        if session_value is None or not _same(self._bound(issued, session_value), match["bound"]):
            return "invalid"
        return "ok"

    def _stamp(self, issued: int) -> str:
        return _mac(self.secret, b"varsling/csrf/stamp/v1\x00" + str(issued).encode())

    def _bound(self, issued: int, session_value: str) -> str:
        message = b"varsling/csrf/bound/v1\x00" + str(issued).encode() + b"\x00"
        return _mac(self.secret, message + session_value.encode())


_TOKEN: Final = re.compile(
    r"(?P<issued>[0-9]{1,12})\.(?P<stamp>[A-Za-z0-9_-]{43})\.(?P<bound>[A-Za-z0-9_-]{43})"
)
_SESSION_VALUE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def _mac(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def csrf_signer(request: Request) -> CsrfSigner:
    signer = getattr(request.app.state, "varsling_csrf", None)
    if not isinstance(signer, CsrfSigner):
        raise RuntimeError("install_web(app, settings) has not been called")
    return signer


def session_value(request: Request) -> str | None:
    """This browser's random value: set earlier in this request, or from its cookie."""
    current = getattr(request.state, "varsling_session_value", None)
    if isinstance(current, str):
        return current
    if getattr(request.state, "varsling_session_cleared", False):
        return None
    cookie = request.cookies.get(csrf_signer(request).cookie_name)
    if cookie is not None and _SESSION_VALUE.fullmatch(cookie):
        return cookie
    return None


def _session_value_for_form(request: Request) -> str:
    value = session_value(request) or secrets.token_urlsafe(32)
    request.state.varsling_session_value = value
    return value


def csrf_token(request: Request, *, now: float | None = None) -> str:
    """A form token for this browser; call `set_session_cookie` on the response after."""
    value = _session_value_for_form(request)
    return csrf_signer(request).token(value, now=time.time() if now is None else now)


def set_session_cookie(request: Request, response: Response) -> None:
    """Send (or refresh) this browser's cookie if this request gave it a form token."""
    value = getattr(request.state, "varsling_session_value", None)
    if not isinstance(value, str):
        return
    signer = csrf_signer(request)
    max_age = getattr(request.state, "varsling_session_max_age", None)
    response.set_cookie(
        signer.cookie_name,
        value,
        max_age=max_age if isinstance(max_age, int) else signer.lifetime_seconds,
        path="/",
        secure=signer.secure_cookie,
        httponly=True,
        samesite="strict",
    )


def limit_session_cookie(request: Request, seconds: int) -> None:
    """Let the cookie set by this request live `seconds` at most (a reporter's login).

    A logged-in reporter's cookie is their session token, so it should not
    outlive the session on the server.
    """
    request.state.varsling_session_max_age = max(
        1, min(int(seconds), csrf_signer(request).lifetime_seconds)
    )


def issue_csrf_token(request: Request, response: Response) -> str:
    """A form token for this browser, with its cookie set on `response`."""
    token = csrf_token(request)
    set_session_cookie(request, response)
    return token


def check_csrf(request: Request, form_token: str | None, *, now: float | None = None) -> CsrfResult:
    """`ok`, `expired` (a genuine token that is too old) or `invalid` (anything else).

    Neither `expired` nor `invalid` may change anything: re-render the form
    with what the reporter typed, a fresh token and a plain explanation.
    """
    return csrf_signer(request).check(
        session_value(request), form_token, now=time.time() if now is None else now
    )


def rotate_session_cookie(request: Request, response: Response) -> str:
    """Give this browser a new random value (at a login), and return it.

    Form tokens issued later in this request are bound to the new value.
    """
    value = secrets.token_urlsafe(32)
    request.state.varsling_session_value = value
    set_session_cookie(request, response)
    return value


def set_session_value(request: Request, response: Response, value: str) -> None:
    """Make `value` this browser's cookie value (a staff login: it is the session token).

    Form tokens issued later in this request are bound to it.
    """
    if not _SESSION_VALUE.fullmatch(value):
        raise ValueError("a session value is 43 URL-safe base64 characters")
    request.state.varsling_session_value = value
    request.state.varsling_session_cleared = False
    set_session_cookie(request, response)


def clear_session_cookie(request: Request, response: Response) -> None:
    """Delete this browser's cookie (at a logout)."""
    request.state.varsling_session_value = None
    request.state.varsling_session_cleared = True
    signer = csrf_signer(request)
    response.delete_cookie(
        signer.cookie_name, path="/", secure=signer.secure_cookie, httponly=True, samesite="strict"
    )


class PageFormToken:
    """Issues a form token only if the page being rendered asks for one.

    A page without a form then sets no cookie at all.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            self._token = csrf_token(self._request)
        return self._token

    def field(self) -> Markup:
        return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, self.token())

    def finish(self, response: Response) -> None:
        if self._token is not None:
            set_session_cookie(self._request, response)
