"""The report form and the receipt in a real browser: axe-core, reflow, keyboard, no JavaScript."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page
from sqlalchemy import func, select

from tests.browser.conftest import takes_focus, watch
from varsling.cases.models import Case
from varsling.config import Settings
from varsling.db import make_engine

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
STATES = [
    "step1",
    "unit-error",
    "form",
    "error",
    "no-custodian-left",
    "token",
    "receipt",
    "sent-before",
]
CODE = re.compile(r"\d{4} \d{4} \d{4} \d{4} \d{4}")
SUBMIT = "form.report-form button[type=submit]"

Violations = Callable[..., list[dict[str, Any]]]


def submit_and_wait(page: Page) -> None:
    with page.expect_navigation():
        page.locator(SUBMIT).click()


def open_state(page: Page, base: str, language: str, state: str, org: dict[str, int]) -> None:
    """Bring `page` to one of the report pages, with JavaScript on (for axe)."""
    if state == "step1":
        page.goto(f"{base}/{language}/report")
        return
    if state == "unit-error":
        # Step 1 again, with an error: the unit asked for does not exist.
        page.goto(f"{base}/{language}/report?unit=999999")
        assert page.locator(".error-summary").is_visible()
        return
    page.goto(f"{base}/{language}/report?unit={org['bergen']}")
    if state == "form":
        return
    if state == "no-custodian-left":
        # Every identity custodian left out, shown again: nobody would hold the name.
        page.locator(f"#excluded-custodian-{org['cora']}").check()
        submit_and_wait(page)
        assert page.locator("#nobody-holds-identity").is_visible()
        return
    if state == "error":
        # Something typed, something ticked, the required parts missing.
        page.locator("#when").fill("I fjor høst")
        page.locator(f"#excluded-{org['ola']}").check()
        submit_and_wait(page)
        assert page.locator(".error-summary").is_visible()
        return
    if state == "token":
        # Without its cookie the form token is not accepted: the form explains why.
        page.locator("#description").fill("Det skjedde på årsmøtet.")
        page.context.clear_cookies()
        submit_and_wait(page)
        assert page.locator(".form-token-notice").is_visible()
        return
    page.locator("#category").check()
    page.locator("#description").fill("Det skjedde på årsmøtet.")
    submit_and_wait(page)
    assert CODE.fullmatch(page.locator(".case-code").inner_text().replace("\n", " ").strip())
    if state == "sent-before":
        # The form again from the browser that just sent one: it says so.
        page.goto(f"{base}/{language}/report?unit={org['bergen']}")
        assert page.locator("#sent-before").is_visible()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("language", LANGUAGES)
def test_report_pages_have_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    axe_violations: Violations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
    state: str,
    width: int,
) -> None:
    page = axe_context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    open_state(page, live_server, language, state, org)
    assert page.locator("html").get_attribute("lang") == language
    violations = axe_violations(page)
    assert violations == [], describe(violations)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("language", LANGUAGES)
def test_report_pages_reflow_at_320_px(
    context: BrowserContext, live_server: str, org: dict[str, int], language: str, state: str
) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": 320, "height": 640})
    open_state(page, live_server, language, state, org)
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 320px"
    assert page.locator(".quick-exit").is_visible()


def focused_id(page: Page) -> str:
    return str(page.evaluate("() => document.activeElement && document.activeElement.id"))


def tab_to(page: Page, element_id: str, *, limit: int = 80) -> None:
    """Press Tab until the element with `element_id` has focus."""
    for _ in range(limit):
        if focused_id(page) == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached #{element_id}; focus is on #{focused_id(page)}")


def tab_to_submit(page: Page, *, limit: int = 80) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(
            "() => document.activeElement.matches('form.report-form button[type=submit]')"
        ):
            return
    raise AssertionError("Tab never reached the submit button")


def test_keyboard_only_report_without_javascript_then_follow_up(
    nojs_context: BrowserContext, live_server: str, org: dict[str, int]
) -> None:
    page = nojs_context.new_page()
    page.goto(f"{live_server}/nb/report")

    # Step 1: the unit, by typing its name into the list.
    tab_to(page, "unit")
    page.keyboard.type("Bergen")
    assert page.locator("#unit").input_value() == str(org["bergen"])
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{live_server}/nb/report?unit={org['bergen']}"
    assert page.locator("html").get_attribute("lang") == "nb"

    # Step 2: leave Ola out, write what happened, and send without a category.
    tab_to(page, f"excluded-{org['ola']}")
    page.keyboard.press("Space")
    tab_to(page, "description")
    page.keyboard.type("Lederen truet med å stryke meg fra lista etter at jeg sa fra.")
    page.keyboard.press("Tab")
    page.keyboard.type("Mars 2026")
    tab_to(page, "wants_meeting")
    page.keyboard.press("Space")
    tab_to_submit(page)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    # The error summary has focus and leads to the missing answer; nothing typed is lost.
    assert takes_focus(page, ".error-summary")
    assert page.locator("#description").input_value().startswith("Lederen truet med")
    assert page.locator("#when").input_value() == "Mars 2026"
    assert page.locator(f"#excluded-{org['ola']}").is_checked()
    assert page.locator("#wants_meeting").is_checked()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.getAttribute('href')") == "#category"
    page.keyboard.press("Enter")
    # Following the link puts the keyboard at the category question.
    assert focused_id(page) == "category"
    page.keyboard.press("ArrowDown")  # moves to, and chooses, the second category
    assert page.locator("#category-sexual_harassment").is_checked()
    tab_to_submit(page)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    # The receipt: the code, large, and the page it is on is the POST's answer.
    assert page.url == f"{live_server}/nb/report"
    code = re.sub(r"\s+", " ", page.locator(".case-code").inner_text()).strip()
    assert CODE.fullmatch(code), code
    assert page.get_by_role("heading", level=1).inner_text() == "Varselet ditt er sendt"

    with httpx.Client(base_url=live_server) as api:
        login = api.post("/api/v1/reporter/session", json={"case_code": code})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        case = api.get("/api/v1/reporter/case", headers=headers).json()
    report = case["report"]
    assert report["category"] == "sexual_harassment"
    assert report["description"].startswith("Lederen truet med å stryke meg")
    assert report["when"] == "Mars 2026"
    assert report["wants_meeting"] is True
    assert report["on_behalf_of_someone_else"] is False
    assert report["identity"] is None


LOOK = """(el) => {
    const s = getComputedStyle(el);
    return {outline: [s.outlineStyle, s.outlineWidth, s.outlineColor].join(" "),
            width: parseFloat(s.outlineWidth), style: s.outlineStyle,
            shadow: s.boxShadow, background: s.backgroundColor};
}"""


@pytest.mark.parametrize("width", WIDTHS)
def test_every_kind_of_control_shows_its_focus(
    page: Page, live_server: str, org: dict[str, int], width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server}/en/report?unit={org['bergen']}")
    controls = [
        "destination-unit",
        "excluded",
        "category",
        "description",
        "when",
        "files",
        "on_behalf_of_someone_else",
        "identity_name",
    ]
    for control in controls:
        tab_to(page, control)
        focused = page.locator(f"#{control}").evaluate(LOOK)
        page.evaluate("() => document.activeElement.blur()")
        resting = page.locator(f"#{control}").evaluate(LOOK)
        assert focused["style"] != "none", control
        assert focused["width"] >= 2, (control, focused)
        assert focused != resting, control
    tab_to_submit(page)
    button = page.locator(SUBMIT)
    focused = button.evaluate(LOOK)
    page.evaluate("() => document.activeElement.blur()")
    assert focused != button.evaluate(LOOK), "submit button"

    page.goto(f"{live_server}/en/report")
    tab_to(page, "unit")
    focused = page.locator("#unit").evaluate(LOOK)
    assert focused["style"] != "none"
    assert focused["width"] >= 2


def test_the_error_summary_takes_focus_and_its_links_lead_to_the_fields(
    page: Page, live_server: str, org: dict[str, int]
) -> None:
    page.goto(f"{live_server}/en/report?unit={org['vestland']}")
    submit_and_wait(page)
    summary = page.locator(".error-summary")
    assert takes_focus(page, ".error-summary")
    links = summary.locator("a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "#category",
        "#description",
    ]
    links.nth(1).click()
    assert page.evaluate("() => location.hash") == "#description"
    assert page.locator("#description").get_attribute("aria-invalid") == "true"
    described = page.locator("#description").get_attribute("aria-describedby") or ""
    assert "description-error" in described.split()
    message = page.locator("#description-error").text_content() or ""
    assert " ".join(message.split()) == "Error: Describe what happened."


def test_form_and_receipt_load_nothing_from_elsewhere_and_break_no_csp(
    page: Page, live_server: str, org: dict[str, int]
) -> None:
    seen = watch(page)
    open_state(page, live_server, "nb", "receipt", org)
    page.wait_for_load_state("networkidle")
    assert all(url.startswith(live_server) for url in seen.requests), seen.requests
    assert not [url for url in seen.requests if CODE.search(url.replace("%20", " "))]
    assert seen.console_errors == []


def test_the_receipt_prints_the_code_and_what_to_do_without_the_rest(
    page: Page, live_server: str, org: dict[str, int]
) -> None:
    open_state(page, live_server, "en", "receipt", org)
    assert page.locator(".language-switch__list").count() == 0
    assert page.locator(".language-switch__note").is_visible()
    assert not page.locator(".print-only").is_visible()

    page.emulate_media(media="print")
    assert page.locator(".case-code").is_visible()
    assert page.locator(".notice--important").is_visible()
    assert page.locator(".print-only").is_visible()
    assert "/en/follow-up" in page.locator(".print-only").inner_text()
    for hidden in (".quick-exit", ".language-switch", ".site-footer", ".actions", ".no-print"):
        assert not page.locator(hidden).first.is_visible(), hidden
    # The signed receipt prints too, on a page of its own, to be kept apart from the code.
    block = page.locator(".signed-receipt__block")
    assert block.is_visible()
    assert "BEGIN VARSLING RECEIPT" in block.inner_text()
    assert page.locator(".signed-receipt").evaluate("e => getComputedStyle(e).breakBefore") == (
        "page"
    )


def test_the_signed_receipt_wraps_instead_of_scrolling_on_a_narrow_screen(
    page: Page, live_server: str, org: dict[str, int]
) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    open_state(page, live_server, "en", "receipt", org)
    block = page.locator(".signed-receipt__block")
    assert block.evaluate("e => e.scrollWidth <= e.clientWidth")
    # What is copied is the block as made: wrapping adds no line breaks.
    assert len(block.inner_text().strip().splitlines()) == 7


def test_the_print_button_appears_and_prints_where_javascript_runs(
    page: Page, live_server: str, org: dict[str, int]
) -> None:
    open_state(page, live_server, "nb", "receipt", org)
    button = page.locator("button[data-print]")
    assert button.is_visible()
    assert button.inner_text() == "Skriv ut denne siden"
    page.evaluate("window.print = () => { window.printed = true; }")
    button.click()
    assert page.evaluate("window.printed") is True


def test_without_javascript_the_receipt_says_how_to_print_instead(
    nojs_context: BrowserContext, live_server: str, org: dict[str, int]
) -> None:
    page = nojs_context.new_page()
    open_state(page, live_server, "nb", "receipt", org)
    assert not page.locator("button[data-print]").is_visible()
    assert "Ctrl+P" in page.locator(".receipt").inner_text()


def shown_code(page: Page) -> str:
    return re.sub(r"\s+", " ", page.locator(".case-code").inner_text()).strip()


def case_count(settings: Settings) -> int:
    engine = make_engine(settings.database_url, immediate=False)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(Case)).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.parametrize("language", LANGUAGES)
def test_reloading_the_receipt_shows_the_same_code_instead_of_sending_again(
    axe_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    browser_settings: Settings,
    language: str,
    axe_violations: Violations,
    describe: Callable[[list[dict[str, Any]]], str],
) -> None:
    page = axe_context.new_page()
    open_state(page, live_server, language, "receipt", org)
    code = shown_code(page)
    before = case_count(browser_settings)
    page.on("dialog", lambda dialog: dialog.accept())
    response = page.reload()

    assert response is not None
    assert response.status == 200
    assert shown_code(page) == code
    assert case_count(browser_settings) == before
    violations = axe_violations(page)
    assert violations == [], describe(violations)


def test_a_double_click_on_send_shows_the_one_case_code(
    page: Page, live_server: str, org: dict[str, int], browser_settings: Settings
) -> None:
    page.goto(f"{live_server}/nb/report?unit={org['bergen']}")
    page.locator("#category").check()
    page.locator("#description").fill("Det skjedde på årsmøtet, to ganger.")
    before = case_count(browser_settings)
    posts: list[str] = []
    page.on(
        "request", lambda request: posts.append(request.url) if request.method == "POST" else None
    )

    # Two clicks, the second while the first is on its way (as a quick double click).
    page.evaluate(
        """(selector) => {
            const button = document.querySelector(selector);
            button.click();
            setTimeout(() => button.click(), 10);
        }""",
        SUBMIT,
    )
    page.wait_for_selector(".case-code")
    page.wait_for_load_state("networkidle")

    code = shown_code(page)
    assert CODE.fullmatch(code), code
    assert len(posts) == 2  # both clicks sent the form
    assert case_count(browser_settings) == before + 1
    with httpx.Client(base_url=live_server) as api:
        login = api.post("/api/v1/reporter/session", json={"case_code": code})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        case = api.get("/api/v1/reporter/case", headers=headers).json()
    assert case["report"]["description"] == "Det skjedde på årsmøtet, to ganger."


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_same_form_from_another_browser_is_already_sent_without_the_code(
    context: BrowserContext,
    axe_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    language: str,
    axe_violations: Violations,
    describe: Callable[[list[dict[str, Any]]], str],
) -> None:
    sender = context.new_page()
    sender.goto(f"{live_server}/{language}/report?unit={org['bergen']}")
    submission = sender.locator("input[name=submission]").get_attribute("value")
    sender.locator("#category").check()
    sender.locator("#description").fill("Det skjedde på årsmøtet.")
    submit_and_wait(sender)
    assert CODE.fullmatch(shown_code(sender))

    # Another browser opens its own form and posts it with the first form's id.
    replay = axe_context.new_page()
    replay.goto(f"{live_server}/{language}/report?unit={org['bergen']}")
    replay.evaluate(
        "(id) => { document.querySelector('input[name=submission]').value = id; }", submission
    )
    replay.locator("#category").check()
    replay.locator("#description").fill("Det skjedde på årsmøtet.")
    with replay.expect_navigation() as navigation:
        replay.locator(SUBMIT).click()

    response = navigation.value
    assert response is not None
    assert response.status == 409
    assert replay.locator(".case-code").count() == 0
    violations = axe_violations(replay)
    assert violations == [], describe(violations)
