"""Headless Debian chromium (through Playwright), a live server and axe-core.

`make browser-deps` installs chromium and axe-core. Without them these tests
are skipped on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.serving import serve_in_thread
from varsling import crypto
from varsling.accounts import service as accounts
from varsling.app import create_app
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker, migrate

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
WCAG_AA = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
BROWSER_PASSWORD = "browser test password"


def _missing_browser_deps() -> list[str]:
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(str(CHROMIUM))
    if not AXE.is_file():
        missing.append(str(AXE.relative_to(ROOT)))
    return missing


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    missing = _missing_browser_deps()
    if missing:
        reason = f"missing {', '.join(missing)}: run `make browser-deps`"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def browser_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


def browser_test_settings(folder: Path) -> Settings:
    """Settings for a browser test's own migrated SQLite database in `folder`."""
    url = f"sqlite:///{folder}/varsling.db"
    migrate(url)
    return Settings(
        environment="development",
        code_pepper="browser-test-pepper-" + "p" * 40,
        code_salt="browser-test-salt-" + "s" * 40,
        web_secret="browser-test-web-secret-" + "w" * 40,
        signing_key="browser-test-signing-key-" + "k" * 40,
        password_pepper="browser-test-password-pepper-" + "q" * 40,
        database_url=url,
        argon2_time_cost=1,
        argon2_memory_kib=64,
        # One database serves the whole session's reports.
        submissions_per_minute=100_000,
        uploads_per_minute=100_000,
    )


@pytest.fixture(scope="session")
def browser_settings(browser_tmp: Path) -> Settings:
    return browser_test_settings(browser_tmp)


@pytest.fixture(scope="session")
def org(browser_settings: Settings) -> dict[str, int]:
    """A small organisation: units in a tree, handlers, one custodian at the top."""
    engine = make_engine(browser_settings.database_url)
    ids: dict[str, int] = {}
    with make_sessionmaker(engine).begin() as session:
        national = accounts.create_unit(session, name="Sentralt", kind="national")
        vestland = accounts.create_unit(
            session, name="Vestland fylkesparti", parent_id=national.id, kind="county"
        )
        bergen = accounts.create_unit(
            session, name="Bergen kommuneparti", parent_id=vestland.id, kind="municipal"
        )
        oslo = accounts.create_unit(
            session, name="Oslo fylkesparti", parent_id=national.id, kind="county"
        )
        youth = accounts.create_unit(
            session, name="Ungdomspartiet", parent_id=national.id, kind="youth"
        )
        ids.update(
            national=national.id,
            vestland=vestland.id,
            bergen=bergen.id,
            oslo=oslo.id,
            youth=youth.id,
        )
        for username, display, unit, role in (
            ("nina", "Nina Nilsen", national.id, "handler"),
            ("hanne", "Hanne Hansen", vestland.id, "handler"),
            ("ola", "Ola Olsen", vestland.id, "handler"),
            ("cora", "Cora Carlsen", national.id, "custodian"),
            ("aud", "Audun Aas", national.id, "auditor"),
            ("adam", "Adam Admin", national.id, "admin"),
        ):
            user = accounts.create_user(
                session,
                browser_settings,
                username=username,
                password=BROWSER_PASSWORD,
                roles=[role],
                unit_ids=[unit],
                display_name=display,
            )
            ids[username] = user.id
    engine.dispose()
    return ids


@pytest.fixture(scope="session")
def web_app(browser_settings: Settings, org: dict[str, int]) -> FastAPI:
    """The whole service, on a migrated SQLite database with `org` in it."""
    return create_app(browser_settings)


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 and a free port in a thread; yields the base URL."""
    with serve_in_thread(app) as (host, port):
        yield f"http://{host}:{port}"


@pytest.fixture(scope="session")
def live_server(web_app: FastAPI) -> Iterator[str]:
    """Serve `web_app` on 127.0.0.1 and a free port in a thread; yields the base URL."""
    with serve(web_app) as base:
        yield base


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A normal context: JavaScript on, the page's CSP enforced."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def axe_context(browser: Browser) -> Iterator[BrowserContext]:
    """Only for axe runs: the CSP is bypassed so axe-core can be injected."""
    ctx = browser.new_context(bypass_csp=True)
    yield ctx
    ctx.close()


@pytest.fixture
def nojs_context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    yield ctx
    ctx.close()


AxeViolations = Callable[..., list[dict[str, Any]]]


def run_axe(page: Page, tags: Sequence[str] = WCAG_AA) -> list[dict[str, Any]]:
    """Run axe-core on the page (open it in `axe_context`) and return its violations."""
    page.add_script_tag(path=str(AXE))
    result: list[dict[str, Any]] = page.evaluate(
        """async (tags) => {
            const results = await axe.run(document, {runOnly: {type: "tag", values: tags}});
            return results.violations;
        }""",
        list(tags),
    )
    return result


def describe_violations(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        targets = [node.get("target") for node in violation.get("nodes", [])][:5]
        lines.append(
            f"{violation['id']} ({violation.get('impact')}): {violation['help']} {targets}"
        )
    return "\n".join(lines)


@pytest.fixture
def axe_violations() -> AxeViolations:
    """`axe_violations(page, tags=WCAG_AA)`: the axe-core violations on `page`."""
    return run_axe


@pytest.fixture
def describe() -> Callable[[list[dict[str, Any]]], str]:
    return describe_violations


@dataclass
class PageWatch:
    """Every request a page makes and every console error it logs."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def watch(page: Page) -> PageWatch:
    """Start recording `page`'s requests and console errors (CSP violations show there)."""
    seen = PageWatch()
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on(
        "console",
        lambda message: (
            seen.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    return seen


def takes_focus(page: Page, selector: str, timeout_ms: float = 20_000) -> bool:
    """Whether the element at `selector` gets focus on its own (autofocus), within the timeout.

    Chromium applies `autofocus` in a rendering step after the load event, so
    checking at once races it; on a loaded machine (two test workers, each with
    its chromium) that step has been seen to take more than five seconds. The
    wait ends as soon as the element has focus.
    """
    check = "(selector) => document.activeElement && document.activeElement.matches(selector)"
    try:
        page.wait_for_function(check, arg=selector, timeout=min(timeout_ms, 5_000))
    except PlaywrightTimeoutError:
        # Seen a few times under load: chromium had not run the page's autofocus at all.
        # A page that is not the browser's active one may wait for it (other tests keep
        # pages open in the same browser); make it active (this focuses no element) and
        # look again.
        page.bring_to_front()
        try:
            page.wait_for_function(check, arg=selector, timeout=timeout_ms)
        except PlaywrightTimeoutError:
            return False
    return True


# --------------------------------------------------------------------------
# Staff logins in the browser, two-factor included


@dataclass
class _Enrolled:
    secret: bytes
    last_step: int
    recovery_codes: list[str]


# Per test process (each xdist worker has its own database): who has set up two-factor.
_ENROLLED: dict[str, _Enrolled] = {}
_SECRET_TEXT = "code.totp-secret"


def _next_code(username: str) -> str:
    """A code the account has not used: the current step's, the next one's, or a recovery code.

    A code is never accepted twice, and tests log the same person in often.
    """
    enrolled = _ENROLLED[username]
    now = crypto.totp_step(time.time())
    step = max(now, enrolled.last_step + 1)
    if step > now + 1:
        if enrolled.recovery_codes:
            return enrolled.recovery_codes.pop()
        time.sleep((step - 1) * crypto.TOTP_STEP_SECONDS - time.time() + 0.5)
    enrolled.last_step = step
    return crypto.totp_code(enrolled.secret, step)


def enrol_in_browser(page: Page, username: str) -> None:
    """On the two-factor set-up page: type the key's current code, as a phone would show it."""
    secret_text = page.locator(_SECRET_TEXT).inner_text().replace(" ", "")
    secret = base64.b32decode(secret_text + "=" * (-len(secret_text) % 8))
    step = crypto.totp_step(time.time())
    page.fill("#code", crypto.totp_code(secret, step))
    page.locator("form[action$='/staff/two-factor'] button[type=submit]").click()
    page.wait_for_selector("ul.recovery-codes")
    codes = [c.strip() for c in page.locator("ul.recovery-codes code").all_inner_texts()]
    _ENROLLED[username] = _Enrolled(secret, step, codes)


def staff_login(page: Page, base: str, username: str, language: str = "en") -> None:
    """Log a staff member in on the staff login page, setting up two-factor if their role
    needs it and they have none yet; the page ends on their start page."""
    page.goto(f"{base}/{language}/staff/login")
    page.fill("#username", username)
    page.fill("#password", BROWSER_PASSWORD)
    if username in _ENROLLED:
        page.fill("#code", _next_code(username))
    page.locator("form[action$='/staff/login'] button[type=submit]").click()
    page.wait_for_load_state()
    if page.url.endswith(f"/{language}/staff/two-factor") and username not in _ENROLLED:
        enrol_in_browser(page, username)
        page.goto(f"{base}/{language}/staff/")
    assert "/staff/login" not in page.url, f"{username} could not log in: {page.url}"


def _enrol_over_http(base: str, username: str) -> None:
    """Set two-factor up through the pages with httpx, as `enrol_in_browser` does in chromium."""
    from tests.staff_web import enrol, staff_web_login

    with httpx.Client(base_url=base) as client:
        answer = staff_web_login(client, username, BROWSER_PASSWORD)
        assert answer.headers.get("location", "").endswith("/staff/two-factor"), answer.text
        done = enrol(client)
    _ENROLLED[username] = _Enrolled(done.secret, done.step, list(done.recovery_codes))


def staff_api_headers(base: str, username: str) -> dict[str, str]:
    """A bearer token for the API; an account whose role needs two-factor sets it up first."""

    def attempt() -> httpx.Response:
        body = {"username": username, "password": BROWSER_PASSWORD}
        if username in _ENROLLED:
            body["code"] = _next_code(username)
        return httpx.post(f"{base}/api/v1/sessions", json=body)

    response = attempt()
    if response.status_code == 403 and username not in _ENROLLED:
        _enrol_over_http(base, username)
        response = attempt()
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}
