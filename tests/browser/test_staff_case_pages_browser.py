"""The case handler's pages in a real browser: axe-core in three languages at two widths,
and a handler's day with the keyboard alone and JavaScript off, confirmed from the
reporter's side."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import delete

from tests.browser.conftest import BROWSER_PASSWORD, serve, takes_focus
from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts import two_factor
from varsling.app import create_app
from varsling.cases.models import CaseEntry
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
AxeViolations = Callable[..., list[dict[str, Any]]]


def api_login(base: str, username: str) -> dict[str, str]:
    response = httpx.post(
        f"{base}/api/v1/sessions", json={"username": username, "password": BROWSER_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def held(base: str, headers: dict[str, str]) -> set[str]:
    response = httpx.get(f"{base}/api/v1/cases", headers=headers)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def new_case(base: str, unit_id: int, handler: dict[str, str], **fields: object) -> tuple[str, str]:
    """A report through the API: the id its handler sees it under, and its case code."""
    before = held(base, handler)
    sent = httpx.post(
        f"{base}/api/v1/reports",
        json={
            "unit_id": unit_id,
            "category": "harassment",
            "description": "Lederen kom med nedsettende kommentarer på medlemsmøtet.",
            "involved": "Lederen i lokallaget",
            **fields,
        },
    )
    assert sent.status_code == 201, sent.text
    [case_id] = held(base, handler) - before
    return case_id, sent.json()["case_code"]


def call(base: str, headers: dict[str, str], path: str, body: dict[str, object]) -> None:
    answer = httpx.post(f"{base}{path}", json=body, headers=headers)
    assert answer.status_code in (200, 201), answer.text


@dataclass(frozen=True)
class StaffCases:
    full: str  # declared, with messages, a note, a file and an outcome
    undeclared: str  # only the declaration form opens
    tampered: str  # a message removed behind the service's back


@pytest.fixture(scope="module")
def staff_cases(live_server: str, org: dict[str, int], browser_settings: Settings) -> StaffCases:
    hanne = api_login(live_server, "hanne")
    full, code = new_case(live_server, org["vestland"], hanne, where="Medlemsmøtet i Bergen")
    call(
        live_server, hanne, f"/api/v1/cases/{full}/declaration", {"conflict": False, "risk": "high"}
    )
    reporter = httpx.post(f"{live_server}/api/v1/reporter/session", json={"case_code": code})
    reporter_headers = {"Authorization": f"Bearer {reporter.json()['token']}"}
    uploaded = httpx.post(
        f"{live_server}/api/v1/reporter/case/files",
        files=[("files", ("referat fra møtet.pdf", b"%PDF-1.4 test", "application/pdf"))],
        headers=reporter_headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    for step in ("acknowledged", "investigating"):
        call(live_server, hanne, f"/api/v1/cases/{full}/status", {"status": step})
    call(live_server, hanne, f"/api/v1/cases/{full}/messages", {"body": "Hvem var til stede?"})
    call(
        live_server,
        reporter_headers,
        "/api/v1/reporter/case/messages",
        {
            "body": "Styret og to medlemmer.\nJeg ble tatt ut av gruppa etterpå.",
            "retaliation": True,
        },
    )
    call(live_server, hanne, f"/api/v1/cases/{full}/notes", {"body": "Snakk med styreleder."})
    call(
        live_server,
        hanne,
        f"/api/v1/cases/{full}/status",
        {"status": "concluded", "outcome": "Lederen har fått en advarsel."},
    )
    undeclared, _ = new_case(live_server, org["vestland"], hanne, category="discrimination")
    tampered, _ = new_case(live_server, org["vestland"], hanne)
    call(
        live_server,
        hanne,
        f"/api/v1/cases/{tampered}/declaration",
        {"conflict": False, "risk": "low"},
    )
    call(live_server, hanne, f"/api/v1/cases/{tampered}/messages", {"body": "Første svar."})
    engine = make_engine(browser_settings.database_url, immediate=False)
    with engine.begin() as connection:
        connection.execute(
            delete(CaseEntry).where(
                CaseEntry.case_id == tampered, CaseEntry.kind == "handler_message"
            )
        )
    engine.dispose()
    return StaffCases(full, undeclared, tampered)


def page_login(page: Page, base: str, language: str, username: str) -> None:
    page.goto(f"{base}/{language}/staff/login")
    page.fill("#username", username)
    page.fill("#password", BROWSER_PASSWORD)
    page.locator("form[action$='/staff/login'] button[type=submit]").click()
    page.wait_for_url(f"{base}/{language}/staff/cases")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_handler_pages_and_their_error_states_have_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    staff_cases: StaffCases,
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
    width: int,
) -> None:
    page = axe_context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    base = f"{live_server}/{language}/staff/cases"
    found: dict[str, str] = {}

    def check(state: str) -> None:
        assert page.locator("html").get_attribute("lang") == language, state
        violations = axe_violations(page)
        if violations:
            found[state] = describe(violations)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 0:
            found[f"{state} (reflow)"] = f"scrolls sideways by {overflow}px at {width}px"

    page_login(page, live_server, language, "hanne")
    assert page.locator(f"a[href='/{language}/staff/cases/{staff_cases.full}']").count() == 1
    assert page.locator(".badge").count() > 0
    check("case list")

    page.goto(f"{base}?status=bogus&category=harassment")
    assert page.locator(".error-summary").is_visible()
    check("case list, a filter that means nothing")

    page.goto(f"{base}?done=recused")
    check("case list, stepped aside")

    page.goto(f"{base}/{staff_cases.undeclared}")
    assert page.locator("#no-conflict form").count() == 1
    check("declaration form")

    page.locator("#no-conflict button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    check("declaration form, no risk chosen")

    page.goto(f"{base}/{staff_cases.full}")
    assert page.locator(".case-message--retaliation").count() == 1
    assert page.locator(".case-files a").count() == 1
    assert page.locator("#outcome-section").is_visible()
    check("case page")

    page.locator("#reply button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    check("case page, empty message")

    page.fill("#note-body", "Kept when the form token is refused.")
    page.locator("#note input[name=csrf_token]").evaluate("el => { el.value = 'forged' }")
    page.locator("#note button[type=submit]").click()
    page.wait_for_selector(".form-token-notice")
    assert page.locator("#note-body").input_value() == "Kept when the form token is refused."
    check("case page, form token refused")

    page.goto(f"{base}/{staff_cases.full}?done=note")
    assert takes_focus(page, ".case-done")
    check("case page, note saved")

    page.goto(f"{base}/{staff_cases.tampered}")
    assert page.get_by_role("alert").is_visible()
    check("case page, integrity warning")

    missing = page.goto(f"{base}/{'0' * 32}")
    assert missing is not None
    assert missing.status == 404
    check("no such case")

    assert found == {}, "\n".join(f"{state}:\n{text}" for state, text in found.items())


# --------------------------------------------------------------------------
# A handler's day: keyboard only, JavaScript off, two-factor login


@pytest.fixture(scope="module")
def two_factor_server(browser_settings: Settings, org: dict[str, int]) -> Iterator[str]:
    """The same database, served with two-factor required for case handlers too."""
    settings = browser_settings.model_copy(
        update={"two_factor_roles": ("handler", "custodian", "admin")}
    )
    app = create_app(settings)
    try:
        with serve(app) as base:
            yield base
    finally:
        app.state.engine.dispose()


@dataclass(frozen=True)
class Enrolled:
    username: str
    secret: bytes


@pytest.fixture(scope="module")
def dag(browser_settings: Settings, org: dict[str, int]) -> Enrolled:
    """The only case handler of the youth party, with two-factor set up on her phone."""
    engine = make_engine(browser_settings.database_url)
    then = time.time() - 90  # so the code she types at login is a new one
    with make_sessionmaker(engine).begin() as session:
        user = accounts.create_user(
            session,
            browser_settings,
            username="dag",
            password=BROWSER_PASSWORD,
            roles=["handler"],
            unit_ids=[org["youth"]],
            display_name="Dag Dahl",
        )
        pending = two_factor.start_enrolment(browser_settings, user, now=then)
        text = pending.secret_text.replace(" ", "")
        secret = base64.b32decode(text + "=" * (-len(text) % 8))
        two_factor.confirm_enrolment(
            session,
            browser_settings,
            user.id,
            pending.sealed,
            crypto.totp_code(secret, crypto.totp_step(then)),
            now=then,
        )
    engine.dispose()
    return Enrolled("dag", secret)


def focused(page: Page, selector: str) -> bool:
    return bool(page.locator(selector).evaluate("element => element === document.activeElement"))


def tab_to(page: Page, selector: str, limit: int = 150) -> None:
    """Press Tab until the element matching `selector` has focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused(page, selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def confirmed(page: Page, url: str) -> None:
    """The form's answer (303) led to `url`, whose notice takes focus."""
    page.wait_for_url(url)
    assert takes_focus(page, ".case-done"), f"the notice did not take focus on {url}"


def test_a_handlers_day_with_the_keyboard_and_no_javascript(
    browser: Browser,
    two_factor_server: str,
    org: dict[str, int],
    dag: Enrolled,
) -> None:
    base = two_factor_server
    description = "Kassereren kjeftet på en frivillig etter møtet."
    sent = httpx.post(
        f"{base}/api/v1/reports",
        json={"unit_id": org["youth"], "category": "harassment", "description": description},
    )
    assert sent.status_code == 201, sent.text
    case_code = sent.json()["case_code"]
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    try:
        page = context.new_page()
        # Log in with password and the code the app shows now.
        page.goto(f"{base}/nb/staff/login")
        tab_to(page, "#username")
        page.keyboard.type(dag.username)
        tab_to(page, "#password")
        page.keyboard.type(BROWSER_PASSWORD)
        tab_to(page, "#code")
        page.keyboard.type(crypto.totp_code(dag.secret, crypto.totp_step(time.time())))
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/nb/staff/cases")

        # The new case: declare no conflict first.
        [link] = page.locator(".case-list a").all()
        href = link.get_attribute("href")
        assert href is not None
        case_url = f"{base}{href}"
        tab_to(page, f".case-list a[href='{href}']")
        page.keyboard.press("Enter")
        page.wait_for_url(case_url)
        assert description not in page.content()
        tab_to(page, "#risk-low")
        page.keyboard.press("ArrowDown")  # medium
        assert page.locator("#risk-medium").is_checked()
        tab_to(page, "#no-conflict button[type=submit]")
        page.keyboard.press("Enter")
        confirmed(page, f"{case_url}?done=declared")

        # Read the report.
        assert description in page.locator("#report").inner_text()

        # Reply to the reporter.
        reply = "Takk for varselet. Hvem var til stede?"
        tab_to(page, "#message-body")
        page.keyboard.type(reply)
        tab_to(page, "#reply button[type=submit]")
        page.keyboard.press("Enter")
        confirmed(page, f"{case_url}?done=message")
        assert reply in page.locator("#messages").inner_text()

        # An internal note.
        note = "Ring kassereren på mandag."
        tab_to(page, "#note-body")
        page.keyboard.type(note)
        tab_to(page, "#note button[type=submit]")
        page.keyboard.press("Space")
        confirmed(page, f"{case_url}?done=note")
        assert note in page.locator("#notes").inner_text()

        # Acknowledge, investigate, conclude with an outcome.
        for status in ("Bekreftet mottatt", "Under behandling"):
            tab_to(page, "#status-step")
            assert status in page.locator("#status-step").inner_text()
            page.keyboard.press("Enter")
            confirmed(page, f"{case_url}?done=status")
        outcome = "Kassereren har beklaget og fått en advarsel."
        tab_to(page, "#outcome")
        page.keyboard.type(outcome)
        tab_to(page, "#status-step")
        page.keyboard.press("Enter")
        confirmed(page, f"{case_url}?done=status")
        assert "Konkludert" in page.locator(".case-status").inner_text()
    finally:
        context.close()

    # The reporter's side, in a browser of their own: the reply, the status and the
    # outcome arrived; the internal note did not.
    reporter_context = browser.new_context(java_script_enabled=False)
    try:
        page = reporter_context.new_page()
        page.goto(f"{base}/nb/follow-up")
        tab_to(page, "#case-code")
        page.keyboard.type(case_code)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/nb/case")
        assert "Konkludert" in page.locator(".case-status").inner_text()
        assert outcome in page.locator("#outcome").inner_text()
        assert reply in page.locator(".case-message--handler").inner_text()
        assert note not in page.content()
    finally:
        reporter_context.close()
