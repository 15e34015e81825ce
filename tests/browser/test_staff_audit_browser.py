"""The auditor's and the custodian's pages in a real browser: axe-core on every page and
error state in three languages at 1280 and 375 px, and the keyboard with no JavaScript."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser.conftest import AxeViolations, staff_login, watch
from tests.browser.test_case_pages_browser import handler_headers, tab_to

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
JUSTIFICATION = "Vi må snakke med varsleren om møtet i fylkesstyret."


def _ask_for_identity(base: str, unit_id: int) -> int:
    """A report with the reporter's name; its handler opens it and asks to see the name."""
    handler = handler_headers(base, "hanne")
    before = {c["id"] for c in httpx.get(f"{base}/api/v1/cases", headers=handler).json()["items"]}
    sent = httpx.post(
        f"{base}/api/v1/reports",
        json={
            "unit_id": unit_id,
            "category": "harassment",
            "description": "Nedsettende kommentarer på møtet.",
            "identity": {"name": "Kari Nordmann", "contact": "kari@example.org"},
        },
    )
    assert sent.status_code == 201, sent.text
    after = {c["id"] for c in httpx.get(f"{base}/api/v1/cases", headers=handler).json()["items"]}
    [case_id] = after - before
    declared = httpx.post(
        f"{base}/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": "low"},
        headers=handler,
    )
    assert declared.status_code == 201, declared.text
    asked = httpx.post(
        f"{base}/api/v1/cases/{case_id}/identity-requests",
        json={"justification": JUSTIFICATION},
        headers=handler,
    )
    assert asked.status_code == 201, asked.text
    request_id: int = asked.json()["id"]
    return request_id


@pytest.fixture(scope="module")
def pending_request(live_server: str, org: dict[str, int]) -> int:
    return _ask_for_identity(live_server, org["vestland"])


def _logged_in(browser: Browser, base: str, username: str) -> BrowserContext:
    """A context (axe may be injected) where `username` logged in on the login page."""
    ctx = browser.new_context(bypass_csp=True)
    page = ctx.new_page()
    staff_login(page, base, username)
    page.close()
    return ctx


def _same_session(browser: Browser, logged_in: BrowserContext, **options: Any) -> BrowserContext:
    """Another context (say, without JavaScript) holding the same staff session cookie."""
    ctx = browser.new_context(**options)
    ctx.add_cookies(logged_in.cookies())
    return ctx


class Axe:
    """Runs axe-core on a page at both widths, collecting violations by state."""

    def __init__(
        self, page: Page, axe: AxeViolations, describe: Callable[[list[dict[str, Any]]], str]
    ) -> None:
        self.page, self.axe, self.describe = page, axe, describe
        self.found: dict[str, str] = {}
        self.checked: list[str] = []

    def check(self, state: str, language: str) -> None:
        assert self.page.locator("html").get_attribute("lang") == language
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": 900})
            violations = self.axe(self.page)
            if violations:
                self.found[f"{state} at {width}px"] = self.describe(violations)
        self.checked.append(state)

    def assert_clean(self) -> None:
        assert self.found == {}, "\n".join(f"{s}:\n{t}" for s, t in self.found.items())


def _forge_and_submit(page: Page, form_selector: str) -> None:
    """Replace the form's token with a forged one (as a page from another site would)."""
    page.locator(f"{form_selector} input[name=csrf_token]").evaluate(
        "input => { input.value = 'forged-token'; }"
    )
    page.locator(f"{form_selector} button[type=submit]").click()


@pytest.fixture(scope="module")
def auditor_context(
    browser: Browser, live_server: str, org: dict[str, int]
) -> Iterator[BrowserContext]:
    """The auditor, logged in once for the module."""
    ctx = _logged_in(browser, live_server, "aud")
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def custodian_context(
    browser: Browser, live_server: str, org: dict[str, int]
) -> Iterator[BrowserContext]:
    """The custodian (two-factor set up on the way), logged in once for the module."""
    ctx = _logged_in(browser, live_server, "cora")
    yield ctx
    ctx.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_auditor_pages_and_their_errors_have_no_axe_violations(
    auditor_context: BrowserContext,
    live_server: str,
    pending_request: int,  # a case, so that the statistics have a quarter
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
) -> None:
    page = auditor_context.new_page()
    axe = Axe(page, axe_violations, describe)

    page.goto(f"{live_server}/{language}/staff/audit?limit=5")
    assert page.locator("table.data-table caption").count() == 1
    assert page.locator("tbody th[scope=row]").count() == 5
    axe.check("audit trail", language)

    page.goto(f"{live_server}/{language}/staff/audit?case_id=nope&from=2026-13-01")
    page.wait_for_selector(".error-summary")
    assert page.locator("#filter-case").input_value() == "nope"
    axe.check("audit trail, invalid filter", language)

    page.goto(f"{live_server}/{language}/staff/audit?chain=reporter")
    axe.check("audit trail, reporters' events", language)

    page.goto(f"{live_server}/{language}/staff/audit")
    _forge_and_submit(page, "form[action$='/staff/audit/checkpoint']")
    page.wait_for_selector(".error-summary")
    axe.check("checkpoint, forged form token", language)

    page.locator("form[action$='/staff/audit/checkpoint'] button[type=submit]").click()
    page.wait_for_selector("#checkpoint-text")
    assert '"signature"' in page.locator("#checkpoint-text").input_value()
    axe.check("checkpoint signed", language)

    page.goto(f"{live_server}/{language}/staff/statistics")
    assert page.locator("table.data-table th[scope=col]").count() > 0
    axe.check("statistics", language)

    axe.assert_clean()


@pytest.mark.parametrize("language", LANGUAGES)
def test_custodian_page_and_its_errors_have_no_axe_violations(
    custodian_context: BrowserContext,
    live_server: str,
    pending_request: int,
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
) -> None:
    page = custodian_context.new_page()
    axe = Axe(page, axe_violations, describe)
    form = f"form[action$='/staff/identity-requests/{pending_request}/decision']"

    page.goto(f"{live_server}/{language}/staff/identity-requests")
    assert JUSTIFICATION in page.content()
    axe.check("identity requests", language)

    page.locator(f"#decision-{pending_request}-refuse").check()
    page.locator(f"{form} button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    assert page.locator(f"#decision-{pending_request}-refuse").is_checked()
    axe.check("refused with no reason", language)

    page.fill(f"#reason-{pending_request}", "Skrevet med omhu")
    _forge_and_submit(page, form)
    page.wait_for_selector(".error-summary")
    assert page.locator(f"#reason-{pending_request}").input_value() == "Skrevet med omhu"
    axe.check("decision, forged form token", language)

    page.goto(f"{live_server}/{language}/staff/audit")
    assert page.locator("h1").count() == 1
    axe.check("a page of another role (403)", language)

    axe.assert_clean()


def test_a_custodian_decides_with_the_keyboard_and_no_javascript(
    browser: Browser, live_server: str, org: dict[str, int], custodian_context: BrowserContext
) -> None:
    request_id = _ask_for_identity(live_server, org["vestland"])
    ctx = _same_session(
        browser,
        custodian_context,
        java_script_enabled=False,
        viewport={"width": 375, "height": 800},
    )
    try:
        page = ctx.new_page()
        seen = watch(page)
        page.goto(f"{live_server}/en/staff/identity-requests")
        tab_to(page, f"#decision-{request_id}")
        page.keyboard.press("Space")
        tab_to(page, f"#reason-{request_id}")
        page.keyboard.type("The handler must hear the reporter before the hearing.")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_url(f"{live_server}/en/staff/identity-requests?decided={request_id}")
        assert f"Request {request_id} is approved." in page.locator(".notice").inner_text()
        assert all(url.startswith(live_server) for url in seen.requests)
        assert seen.console_errors == []
    finally:
        ctx.close()


def test_an_auditor_filters_pages_and_exports_with_no_javascript(
    browser: Browser, live_server: str, auditor_context: BrowserContext
) -> None:
    ctx = _same_session(
        browser,
        auditor_context,
        java_script_enabled=False,
        viewport={"width": 1280, "height": 900},
        accept_downloads=True,
    )
    try:
        page = ctx.new_page()
        page.goto(f"{live_server}/en/staff/audit?limit=3")
        first = page.locator("tbody th[scope=row]").all_inner_texts()
        page.get_by_role("link", name="Older events").click()
        older = page.locator("tbody th[scope=row]").all_inner_texts()
        assert [int(n) for n in older] == [int(first[-1]) - n for n in (1, 2, 3)]
        tab_to(page, "#filter-action")
        page.keyboard.type("unit.created")
        page.keyboard.press("Enter")
        page.wait_for_url("**action=unit.created**")
        actions = page.locator("tbody td:nth-child(4)").all_inner_texts()
        assert actions
        assert set(actions) == {"unit.created"}
        with page.expect_download() as download:
            page.locator("form[action$='/staff/audit/export'] button").click()
        assert download.value.suggested_filename.startswith("varsling-audit-")
    finally:
        ctx.close()
