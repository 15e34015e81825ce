"""The start page in a real browser: axe-core, no JavaScript, keyboard, reflow, CSP."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser.conftest import watch

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
SCREENSHOT_DIR = os.environ.get("VARSLING_SCREENSHOT_DIR")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_start_page_has_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    axe_violations: Callable[..., list[dict[str, Any]]],
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
    width: int,
) -> None:
    page = axe_context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server}/{language}/")
    assert page.locator("html").get_attribute("lang") == language
    violations = axe_violations(page)
    assert violations == [], describe(violations)


@pytest.mark.parametrize("language", LANGUAGES)
def test_start_page_reflows_at_320_px(
    context: BrowserContext, live_server: str, language: str
) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(f"{live_server}/{language}/")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 320px"
    assert page.locator(".quick-exit").is_visible()


def test_start_page_works_without_javascript(
    nojs_context: BrowserContext, live_server: str
) -> None:
    page = nojs_context.new_page()
    page.goto(f"{live_server}/")
    assert page.url == f"{live_server}/nb/"
    assert page.locator("html").get_attribute("lang") == "nb"
    assert page.get_by_role("heading", level=1).is_visible()
    assert page.locator(".button--start").get_attribute("href") == "/nb/report"

    page.get_by_role("link", name="Norsk nynorsk").click()
    page.wait_for_url(f"{live_server}/nn/")
    assert page.locator("html").get_attribute("lang") == "nn"
    assert page.get_by_role("link", name="Forlat sida raskt").is_visible()

    page.get_by_role("link", name="English").click()
    page.wait_for_url(f"{live_server}/en/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("link", name="Quick exit").is_visible()


def test_the_first_tab_reaches_a_visible_skip_link(page: Page, live_server: str) -> None:
    page.goto(f"{live_server}/en/")
    page.keyboard.press("Tab")
    focused = page.locator(":focus")
    assert focused.get_attribute("class") == "skip-link"
    assert focused.inner_text() == "Skip to main content"
    box = focused.bounding_box()
    assert box is not None
    viewport = page.viewport_size
    assert viewport is not None
    assert box["y"] >= 0
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= viewport["width"]
    assert box["height"] > 10

    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    assert page.locator(":focus").get_attribute("href") == "/en/report"


FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]:not([tabindex='-1'])"
LOOK = """(el) => {
    const s = getComputedStyle(el);
    return [s.outlineStyle, s.outlineWidth, s.outlineColor, s.boxShadow,
            s.backgroundColor, s.color, s.top].join("|");
}"""


@pytest.mark.parametrize("width", WIDTHS)
def test_tab_reaches_every_control_and_each_shows_focus(
    page: Page, live_server: str, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server}/nb/")
    controls = page.locator(FOCUSABLE)
    focused_looks: dict[int, str] = {}
    for _ in range(controls.count()):
        page.keyboard.press("Tab")
        index, look = page.evaluate(
            f"""() => {{
                const el = document.activeElement;
                const all = [...document.querySelectorAll("{FOCUSABLE}")];
                return [all.indexOf(el), ({LOOK})(el)];
            }}"""
        )
        focused_looks[index] = look
    assert sorted(focused_looks) == list(range(controls.count()))
    page.evaluate("() => document.activeElement.blur()")
    resting_looks = page.evaluate(
        f"""() => [...document.querySelectorAll("{FOCUSABLE}")].map({LOOK})"""
    )
    unchanged = [
        controls.nth(i).evaluate("el => el.outerHTML.slice(0, 80)")
        for i, look in focused_looks.items()
        if look == resting_looks[i]
    ]
    assert unchanged == [], "no visible focus on these"


def test_start_page_loads_nothing_from_elsewhere_and_breaks_no_csp(
    page: Page, live_server: str
) -> None:
    seen = watch(page)
    page.goto(f"{live_server}/nb/")
    page.wait_for_load_state("networkidle")
    assert all(url.startswith(live_server) for url in seen.requests), seen.requests
    assert any(url.endswith("/static/varsling.css") for url in seen.requests)
    assert seen.console_errors == []
    # The stylesheet applied under the strict CSP: the header is not unstyled.
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('.site-header')).backgroundColor"
    )
    assert background == "rgb(29, 58, 95)"


def test_print_shows_the_content_without_navigation(page: Page, live_server: str) -> None:
    page.goto(f"{live_server}/nb/")
    page.emulate_media(media="print")
    assert not page.locator(".quick-exit").is_visible()
    assert not page.locator(".language-switch").is_visible()
    assert page.get_by_role("heading", level=1).is_visible()


@pytest.mark.skipif(not SCREENSHOT_DIR, reason="set VARSLING_SCREENSHOT_DIR to take screenshots")
@pytest.mark.parametrize("width", WIDTHS)
def test_screenshot_start_page(context: BrowserContext, live_server: str, width: int) -> None:
    assert SCREENSHOT_DIR is not None
    folder = Path(SCREENSHOT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server}/nb/")
    page.screenshot(path=str(folder / f"start-nb-{width}.png"), full_page=True)
