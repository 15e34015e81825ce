"""The password page, the "Restore access" page and the admin's reset form in a real browser:
axe-core in three languages at two widths, with their error states."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext

from tests.browser.conftest import BROWSER_PASSWORD, staff_login

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
Violations = Callable[..., list[dict[str, Any]]]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_key_lifecycle_pages_have_no_axe_violations(
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

    staff_login(page, live_server, "hanne", language)
    page.goto(f"{live_server}/{language}/staff/account/password")
    check("password")
    page.locator("form[action$='/staff/account/password'] button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator(".error-summary li").count() == 2
    assert page.locator("#new_password").get_attribute("aria-invalid") == "true"
    check("password, nothing filled in")
    page.fill("#current_password", BROWSER_PASSWORD)
    page.fill("#new_password", "a long enough new passphrase")
    page.fill("#repeat_password", "something else entirely")
    page.locator("form[action$='/staff/account/password'] button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("#repeat_password").get_attribute("aria-invalid") == "true"
    check("password, the two new ones differ")
    page.goto(f"{live_server}/{language}/staff/pending-grants")
    check("restore access")

    staff_login(page, live_server, "adam", language)
    page.goto(f"{live_server}/{language}/staff/admin/accounts/{org['ola']}")
    page.fill("#password", "short")
    page.locator("form[action$='/password-reset'] button[type=submit]").click()
    page.wait_for_load_state()
    assert page.locator("#password").get_attribute("aria-invalid") == "true"
    check("admin account, reset refused")

    failing = {state: describe(v) for state, v in seen.items() if v}
    assert not failing, failing
