"""The administrators' pages in a real browser: axe-core on every page and error state in
nb, nn and en at 1280 and 375 px, the error summary's focus, and the pages without JavaScript.

These pages change units and accounts, so they run on a database and server of their
own (the report pages' organisation stays as their tests expect it), with the shipped
two-factor setting: the administrator has set it up and logs in with a recovery code,
once; every context then carries that session's cookie.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser.conftest import (
    BROWSER_PASSWORD,
    browser_test_settings,
    serve,
    takes_focus,
    watch,
)
from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts import two_factor
from varsling.accounts.models import User
from varsling.app import create_app
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
SUBMIT = "main form button[type=submit]"

Violations = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def admin_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return browser_test_settings(tmp_path_factory.mktemp("admin-browser"))


@pytest.fixture(scope="module")
def world(admin_settings: Settings) -> dict[str, Any]:
    """Units with a handler, an auditor whose key was swapped, and Ada the administrator
    with two-factor set up; her recovery codes log her in."""
    engine = make_engine(admin_settings.database_url)
    ids: dict[str, Any] = {}
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
        ids.update(national=national.id, vestland=vestland.id, bergen=bergen.id, oslo=oslo.id)
        for username, display, roles, units in (
            ("hanne", "Hanne Hansen", ["handler"], [vestland.id]),
            ("carl", "Carl Revisor", ["auditor"], []),
            ("ada", "Ada Admin", ["admin"], []),
        ):
            user = accounts.create_user(
                session,
                admin_settings,
                username=username,
                password=BROWSER_PASSWORD,
                roles=roles,
                unit_ids=units,
                display_name=display,
            )
            ids[username] = user.id
        carl = session.get(User, ids["carl"])
        assert carl is not None
        carl.public_key = crypto.generate_keypair().public_key  # a database writer's swap
        ada = session.get(User, ids["ada"])
        assert ada is not None
        earlier = time.time() - 90
        pending = two_factor.start_enrolment(admin_settings, ada, now=earlier)
        secret_b32 = pending.secret_text.replace(" ", "")
        secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
        code = crypto.totp_code(secret, crypto.totp_step(earlier))
        ids["recovery"] = two_factor.confirm_enrolment(
            session, admin_settings, ada.id, pending.sealed, code, now=earlier
        )
    engine.dispose()
    return ids


@pytest.fixture(scope="module")
def admin_app(admin_settings: Settings, world: dict[str, Any]) -> FastAPI:
    return create_app(admin_settings)


@pytest.fixture(scope="module")
def admin_server(admin_app: FastAPI) -> Iterator[str]:
    with serve(admin_app) as base:
        yield base


@pytest.fixture(scope="module")
def admin_cookies(browser: Browser, admin_server: str, world: dict[str, Any]) -> list[Any]:
    """Log Ada in once, with password and a recovery code, keyboard only, JavaScript off."""
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{admin_server}/en/staff/login")
        page.locator("#username").focus()
        page.keyboard.type("ada")
        page.keyboard.press("Tab")
        page.keyboard.type(BROWSER_PASSWORD)
        page.keyboard.press("Tab")
        page.keyboard.type(world["recovery"][0])
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.endswith("/en/staff/admin/units"), page.url
        return list(context.cookies())
    finally:
        context.close()


def logged_in(context: BrowserContext, cookies: list[Any]) -> Page:
    context.add_cookies(cookies)
    return context.new_page()


def submit(page: Page, form: str = SUBMIT) -> None:
    with page.expect_navigation():
        page.locator(form).first.click()


def open_state(page: Page, base: str, lang: str, state: str, world: dict[str, Any]) -> None:
    """Bring `page` to one admin page or error state (JavaScript on, for axe)."""
    admin = f"{base}/{lang}/staff/admin"
    if state == "units":
        page.goto(f"{admin}/units")
        assert page.locator("#warnings-title").is_visible()
    elif state == "units-done":
        page.goto(f"{admin}/units?done=unit-added")
        assert page.locator(".notice--success").is_visible()
    elif state == "units-error":
        # A second "Bergen kommuneparti" under Vestland: refused, the name kept.
        page.goto(f"{admin}/units")
        page.locator("#name").fill("bergen kommuneparti")
        page.locator("#parent").select_option(str(world["vestland"]))
        submit(page)
        assert page.locator(".error-summary").is_visible()
    elif state == "unit":
        page.goto(f"{admin}/units/{world['bergen']}")
    elif state == "unit-national":
        page.goto(f"{admin}/units/{world['national']}")
    elif state == "unit-error":
        # Vestland under Bergen, which lies under Vestland.
        page.goto(f"{admin}/units/{world['vestland']}")
        page.locator("#parent").select_option(str(world["bergen"]))
        submit(page, "form[action$='/move'] button[type=submit]")
        assert page.locator("#parent[aria-invalid=true]").is_visible()
    elif state == "accounts":
        page.goto(f"{admin}/accounts")
        assert page.locator(".badge--overdue").first.is_visible()
    elif state == "account-new":
        page.goto(f"{admin}/accounts/new")
    elif state == "account-new-error":
        page.goto(f"{admin}/accounts/new")
        page.locator("#username").fill("nina")
        page.locator("#display_name").fill("Nina Nilsen")
        page.locator("#password").fill("short")
        page.locator("#roles").check()
        submit(page)
        assert page.locator(".error-summary").is_visible()
    elif state == "account":
        page.goto(f"{admin}/accounts/{world['hanne']}?done=roles")
    elif state == "account-error":
        # The auditor made a custodian without a unit.
        page.goto(f"{admin}/accounts/{world['carl']}")
        page.locator("#roles-custodian").check()
        submit(page, "form[action$='/roles'] button[type=submit]")
        assert page.locator(".error-summary").is_visible()
    elif state == "account-last-admin":
        page.goto(f"{admin}/accounts/{world['ada']}")
        submit(page, "form[action$='/deactivate'] button[type=submit]")
        assert page.locator("#deactivate-error-1").is_visible()
    elif state == "account-token":
        # A form token that does not check out: the notice, nothing changed.
        page.goto(f"{admin}/accounts/{world['hanne']}")
        page.locator("form[action$='/units'] input[name=csrf_token]").evaluate(
            "input => { input.value = 'forged' }"
        )
        submit(page, "form[action$='/units'] button[type=submit]")
        assert page.locator(".form-token-notice").is_visible()
    else:
        raise AssertionError(state)


STATES = [
    "units",
    "units-done",
    "units-error",
    "unit",
    "unit-national",
    "unit-error",
    "accounts",
    "account-new",
    "account-new-error",
    "account",
    "account-error",
    "account-last-admin",
    "account-token",
]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_admin_pages_have_no_axe_violations(
    axe_context: BrowserContext,
    admin_server: str,
    admin_cookies: list[Any],
    world: dict[str, Any],
    axe_violations: Violations,
    describe: Callable[[list[dict[str, Any]]], str],
    lang: str,
    state: str,
    width: int,
) -> None:
    page = logged_in(axe_context, admin_cookies)
    page.set_viewport_size({"width": width, "height": 900})
    open_state(page, admin_server, lang, state, world)
    assert page.locator("html").get_attribute("lang") == lang
    # Nothing wider than the screen (a table may scroll inside its own region).
    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow, f"{state} scrolls sideways at {width} px"
    violations = axe_violations(page)
    assert violations == [], describe(violations)


def test_the_error_summary_takes_focus_and_leads_to_the_field(
    context: BrowserContext, admin_server: str, admin_cookies: list[Any], world: dict[str, Any]
) -> None:
    page = logged_in(context, admin_cookies)
    seen = watch(page)
    open_state(page, admin_server, "en", "account-new-error", world)

    assert takes_focus(page, ".error-summary")
    # Everything typed is kept.
    assert page.locator("#username").input_value() == "nina"
    assert page.locator("#password").input_value() == "short"
    assert page.locator("#display_name").input_value() == "Nina Nilsen"
    assert page.locator("#roles").is_checked()
    page.locator(".error-summary a").first.click()
    assert page.evaluate("document.activeElement.id") == "password"
    # The refused form answers 422, which chromium logs; nothing else (no CSP refusal).
    assert [e for e in seen.console_errors if "status of 422" not in e] == []
    assert all(url.startswith(admin_server) for url in seen.requests)


def test_adding_a_unit_and_an_account_with_the_keyboard_and_no_javascript(
    browser: Browser,
    admin_server: str,
    admin_cookies: list[Any],
    world: dict[str, Any],
) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    try:
        page = logged_in(context, admin_cookies)
        page.goto(f"{admin_server}/nn/staff/admin/units")
        page.locator("#parent").select_option(str(world["vestland"]))
        page.locator("#name").focus()
        page.keyboard.type("Askøy kommuneparti")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator(".notice--success").inner_text().strip() == "Partileddet er lagt til."
        assert (
            page.locator(".unit-tree").get_by_role("link", name="Askøy kommuneparti").is_visible()
        )

        page.goto(f"{admin_server}/nn/staff/admin/accounts/new")
        page.locator("#username").fill("kari.kommune")
        page.locator("#display_name").fill("Kari Kommune")
        page.locator("#password").fill("eit langt nok passord")
        page.locator("#roles").focus()
        page.keyboard.press("Space")
        page.locator(f"#units-{world['bergen']}").focus()
        page.keyboard.press("Space")
        page.locator("main form button[type=submit]").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator(".notice--success").inner_text().strip() == "Brukarkontoen er lagd til."
        assert page.locator("h1").inner_text() == "kari.kommune"
    finally:
        context.close()
