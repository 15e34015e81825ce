"""Logging a staff member in on the staff pages, for tests (httpx or TestClient).

Every staff-page test uses these, so the login form is driven one way only.
"""

from __future__ import annotations

import base64
import html
import re
import time
from dataclasses import dataclass

import httpx

from tests.factories import PASSWORD
from varsling import crypto
from varsling.web.security import CSRF_FIELD

_TOKEN = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')
_PENDING = re.compile(r'name="enrolment" value="([^"]+)"')
_SECRET = re.compile(r'<code class="totp-secret">([A-Z2-7 ]+)</code>')
_RECOVERY = re.compile(r"<li><code>([a-z0-9-]{14})</code></li>")


def form_token(page: str) -> str:
    """The form token of the first form on a page."""
    match = _TOKEN.search(page)
    assert match is not None, "no form token on the page"
    return html.unescape(match.group(1))


def staff_web_login(
    client: httpx.Client,
    username: str,
    password: str = PASSWORD,
    *,
    code: str = "",
    lang: str = "en",
) -> httpx.Response:
    """Post the login form as a browser would; the answer is not followed."""
    page = client.get(f"/{lang}/staff/login")
    assert page.status_code == 200, page.text
    return client.post(
        f"/{lang}/staff/login",
        data={
            CSRF_FIELD: form_token(page.text),
            "username": username,
            "password": password,
            "code": code,
        },
        follow_redirects=False,
    )


def logged_in(client: httpx.Client, username: str, *, lang: str = "en") -> httpx.Client:
    """Log in (no two-factor) and check it worked; the same client, now with the cookie."""
    answer = staff_web_login(client, username, lang=lang)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"/{lang}/staff/", answer.headers["location"]
    return client


@dataclass(frozen=True)
class Enrolment:
    secret: bytes
    recovery_codes: list[str]
    step: int  # the time step whose code confirmed it (used up)


def totp_for(secret: bytes, step: int) -> str:
    return crypto.totp_code(secret, step)


def enrol(client: httpx.Client, *, lang: str = "en") -> Enrolment:
    """Set up two-factor from the set-up page, as a person with their phone would."""
    page = client.get(f"/{lang}/staff/two-factor")
    assert page.status_code == 200, page.text
    secret_text = _SECRET.search(page.text)
    pending = _PENDING.search(page.text)
    assert secret_text is not None
    assert pending is not None
    secret_b32 = secret_text.group(1).replace(" ", "")
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    step = crypto.totp_step(time.time())
    answer = client.post(
        f"/{lang}/staff/two-factor",
        data={
            CSRF_FIELD: form_token(page.text),
            "enrolment": html.unescape(pending.group(1)),
            "code": totp_for(secret, step),
        },
    )
    assert answer.status_code == 200, answer.text
    codes = _RECOVERY.findall(answer.text)
    assert len(codes) == crypto.RECOVERY_CODE_COUNT
    return Enrolment(secret=secret, recovery_codes=codes, step=step)
