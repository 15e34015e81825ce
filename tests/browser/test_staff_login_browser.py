"""The staff login and two-factor pages in a real browser: axe-core in three languages at
two widths, every error state, and a login with two-factor without JavaScript."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.sync_api import BrowserContext, Page

from tests.browser.conftest import (
    _ENROLLED,
    BROWSER_PASSWORD,
    _next_code,
    enrol_in_browser,
    staff_login,
    takes_focus,
    watch,
)
from varsling.accounts import two_factor

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
Violations = Callable[..., list[dict[str, Any]]]


def _reset(web_app: FastAPI, user_id: int, username: str) -> None:
    """An administrator's reset: the account sets up two-factor anew at its next login."""
    with web_app.state.sessionmaker.begin() as session:
        two_factor.reset_two_factor(session, web_app.state.settings, user_id, actor="system")
    _ENROLLED.pop(username, None)


def _submit_login(page: Page, username: str, password: str, code: str = "") -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.fill("#code", code)
    page.locator("form[action$='/staff/login'] button[type=submit]").click()
    page.wait_for_load_state()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_login_and_two_factor_pages_have_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    axe_violations: Violations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
    width: int,
) -> None:
    page = axe_context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    seen: dict[str, list[dict[str, Any]]] = {}

    def check(state: str) -> None:
        assert page.locator("html").get_attribute("lang") == language
        seen[state] = axe_violations(page)

    page.goto(f"{live_server}/{language}/staff/login")
    check("login")
    _submit_login(page, "", "")
    assert page.locator(".error-summary li").count() == 2
    check("login, nothing filled in")
    _submit_login(page, "nina", "not the password")
    assert page.locator("#username").input_value() == "nina"
    check("login, wrong password")
    page.goto(f"{live_server}/{language}/staff/login?notice=ended")
    check("login, session ended")
    page.locator("input[name=csrf_token]").evaluate("el => { el.value = 'forged' }")
    _submit_login(page, "nina", BROWSER_PASSWORD)
    assert page.locator(".form-token-notice").count() == 1
    check("login, forged form token")

    staff_login(page, live_server, "hanne", language)
    page.goto(f"{live_server}/{language}/staff/two-factor")
    check("two-factor set-up (optional)")
    page.fill("#code", "000000")
    page.locator("form[action$='/staff/two-factor'] button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("#code").get_attribute("aria-invalid") == "true"
    check("two-factor set-up, wrong code")

    failing = {state: describe(v) for state, v in seen.items() if v}
    assert not failing, failing


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_custodian_is_led_through_set_up_to_the_recovery_codes(
    axe_context: BrowserContext,
    web_app: FastAPI,
    live_server: str,
    org: dict[str, int],
    axe_violations: Violations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
) -> None:
    _reset(web_app, org["cora"], "cora")
    page = axe_context.new_page()
    page.goto(f"{live_server}/{language}/staff/login")
    _submit_login(page, "cora", BROWSER_PASSWORD)
    assert page.url.endswith(f"/{language}/staff/two-factor")
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    # Only the set-up and logging out are offered: no navigation to other pages yet.
    assert page.locator(".staff-nav").count() == 0

    enrol_in_browser(page, "cora")
    assert page.locator("ul.recovery-codes li").count() == 10
    violations = axe_violations(page)
    assert violations == [], describe(violations)


def test_a_login_with_two_factor_works_with_the_keyboard_and_without_javascript(
    nojs_context: BrowserContext, web_app: FastAPI, live_server: str, org: dict[str, int]
) -> None:
    _reset(web_app, org["cora"], "cora")
    page = nojs_context.new_page()
    seen = watch(page)
    staff_login(page, live_server, "cora")  # sets two-factor up on the way
    page.goto(f"{live_server}/en/staff/login")
    page.locator("#username").focus()
    page.keyboard.type("cora")
    page.keyboard.press("Tab")
    page.keyboard.type(BROWSER_PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(_next_code("cora"))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/en/staff/identity-requests")
    assert all(url.startswith(live_server) for url in seen.requests), seen.requests
    # Logging out from the keyboard.
    page.goto(f"{live_server}/en/staff/two-factor")
    page.locator(".staff-nav__logout button").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/en/staff/login?notice=logged-out")


def test_a_refused_login_puts_focus_on_the_error_summary_without_javascript(
    nojs_context: BrowserContext, live_server: str, org: dict[str, int]
) -> None:
    page = nojs_context.new_page()
    page.goto(f"{live_server}/nb/staff/login")
    page.locator("#username").focus()
    page.keyboard.type("nina")
    page.keyboard.press("Enter")
    page.wait_for_selector(".error-summary")
    assert takes_focus(page, ".error-summary")
    assert page.locator("#username").input_value() == "nina"
