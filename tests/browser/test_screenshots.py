"""Full-page screenshots of every reporter page, in bokmål at 1280 and 375 px.

Skipped unless VARSLING_SCREENSHOT_DIR names a folder: `make screenshots`
writes them to ./screenshots so anyone can look at the pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser.conftest import staff_login
from tests.browser.test_case_pages_browser import create_case, fill_case

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.environ.get("VARSLING_SCREENSHOT_DIR"),
        reason="set VARSLING_SCREENSHOT_DIR to take screenshots",
    ),
]

WIDTHS = [1280, 375]


def shoot(page: Page, name: str, width: int) -> None:
    folder = Path(os.environ["VARSLING_SCREENSHOT_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}-nb-{width}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshots_of_the_report_pages(
    context: BrowserContext, live_server: str, org: dict[str, int], width: int
) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})

    page.goto(f"{live_server}/nb/")
    shoot(page, "01-start", width)

    page.goto(f"{live_server}/nb/report")
    assert page.locator("#unit").is_visible()
    shoot(page, "02-report-unit", width)

    page.goto(f"{live_server}/nb/report?unit={org['vestland']}")
    assert page.locator("#description").is_visible()
    shoot(page, "03-report-form", width)

    page.locator(".report-form button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    shoot(page, "04-report-form-errors", width)

    page.check("input[name=category][value=harassment]")
    page.fill("#description", "Lederen kom med nedsettende kommentarer om meg på medlemsmøtet.")
    page.fill("#where", "Medlemsmøtet i Bergen")
    page.locator(".report-form button[type=submit]").click()
    page.wait_for_selector(".case-code")
    shoot(page, "05-receipt", width)


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshots_of_the_follow_up_pages(
    context: BrowserContext, live_server: str, org: dict[str, int], width: int
) -> None:
    case = create_case(
        live_server,
        org["vestland"],
        "hanne",
        where="Medlemsmøtet i Bergen",
        identity={"name": "Kari Nordmann", "contact": "Telefon 400 00 000"},
    )
    fill_case(live_server, case)
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})

    page.goto(f"{live_server}/nb/follow-up")
    shoot(page, "06-follow-up", width)

    page.fill("#case-code", "1234 5678")
    page.locator("form[action$='/follow-up'] button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    shoot(page, "07-follow-up-error", width)

    page.fill("#case-code", case.code)
    page.locator("form[action$='/follow-up'] button[type=submit]").click()
    page.wait_for_url(f"{live_server}/nb/case")
    shoot(page, "08-case", width)

    page.locator("#reply button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    shoot(page, "09-case-reply-error", width)

    page.goto(f"{live_server}/nb/case/retaliation")
    shoot(page, "10-case-retaliation", width)

    # What a reporter sees when the session ended while they wrote.
    page.fill("#message-body", "Etter møtet ble jeg tatt ut av arbeidsgruppa.")
    cookies = context.cookies()
    context.clear_cookies()
    page.locator("form[action$='/case/retaliation'] button[type=submit]").click()
    page.wait_for_selector("#kept-text")
    shoot(page, "11-case-session-ended", width)
    context.add_cookies(cookies)

    page.goto(f"{live_server}/nb/case")
    page.locator(".case-heading__logout button").click()
    page.wait_for_url(f"{live_server}/nb/follow-up?notice=logged-out")
    shoot(page, "12-logged-out", width)


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshots_of_the_staff_pages(
    context: BrowserContext, live_server: str, org: dict[str, int], width: int
) -> None:
    """Every role's pages: a handler's day, the custodian's, the auditor's, the admin's."""
    case = create_case(live_server, org["vestland"], "hanne", where="Medlemsmøtet i Bergen")
    fill_case(live_server, case)
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})

    page.goto(f"{live_server}/nb/staff/login")
    shoot(page, "20-staff-login", width)

    # A handler who has not declared yet sees only the declaration form.
    staff_login(page, live_server, "ola", "nb")
    page.goto(f"{live_server}/nb/staff/cases/{case.case_id}")
    shoot(page, "21-staff-case-declaration", width)
    page.context.clear_cookies()

    staff_login(page, live_server, "hanne", "nb")
    page.goto(f"{live_server}/nb/staff/cases")
    shoot(page, "22-staff-cases", width)
    page.goto(f"{live_server}/nb/staff/cases/{case.case_id}")
    shoot(page, "23-staff-case", width)
    for number, subpage in enumerate(("upload", "grants", "identity", "hold", "access"), 24):
        page.goto(f"{live_server}/nb/staff/cases/{case.case_id}/{subpage}")
        shoot(page, f"{number}-staff-case-{subpage}", width)
    page.goto(f"{live_server}/nb/staff/two-factor")
    shoot(page, "29-staff-two-factor", width)
    page.context.clear_cookies()

    for username, pages in (
        ("cora", (("30-staff-identity-requests", "identity-requests"),)),
        ("aud", (("31-staff-audit", "audit"), ("32-staff-statistics", "statistics"))),
        (
            "adam",
            (
                ("33-staff-admin-units", "admin/units"),
                ("34-staff-admin-accounts", "admin/accounts"),
                ("35-staff-admin-account", f"admin/accounts/{org['hanne']}"),
            ),
        ),
    ):
        staff_login(page, live_server, username, "nb")
        for name, path in pages:
            page.goto(f"{live_server}/nb/staff/{path}")
            assert page.locator("h1").count() == 1, path
            shoot(page, name, width)
        page.context.clear_cookies()
