"""Follow-up and the case page in a real browser: axe-core, no JavaScript, keyboard only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page
from sqlalchemy import delete, insert, update

from tests.browser.conftest import staff_api_headers, takes_focus, watch
from varsling.cases.models import Case, CaseEntry, CheckIn
from varsling.config import Settings
from varsling.db import make_engine
from varsling.errors import NotFound
from varsling.reports import service

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
WRONG_CODE = "0000 1111 2222 3333 4444"


@dataclass(frozen=True)
class BrowserCase:
    code: str
    case_id: str
    handler: dict[str, str]


def handler_headers(base: str, username: str) -> dict[str, str]:
    return staff_api_headers(base, username)


def case_ids(base: str, handler: dict[str, str]) -> set[str]:
    response = httpx.get(f"{base}/api/v1/cases", headers=handler)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def create_case(base: str, unit_id: int, handler_name: str, **fields: object) -> BrowserCase:
    """A report sent through the API, and the id its handler sees it under."""
    handler = handler_headers(base, handler_name)
    before = case_ids(base, handler)
    response = httpx.post(
        f"{base}/api/v1/reports",
        json={
            "unit_id": unit_id,
            "category": "harassment",
            "description": "Lederen kom med nedsettende kommentarer på medlemsmøtet.",
            **fields,
        },
    )
    assert response.status_code == 201, response.text
    [case_id] = case_ids(base, handler) - before
    declared = httpx.post(
        f"{base}/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": "low"},
        headers=handler,
    )
    assert declared.status_code == 201, declared.text
    return BrowserCase(response.json()["case_code"], case_id, handler)


def reporter_headers(base: str, code: str) -> dict[str, str]:
    response = httpx.post(f"{base}/api/v1/reporter/session", json={"case_code": code})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def fill_case(base: str, case: BrowserCase) -> None:
    """Messages both ways (one about retaliation), a file, and an outcome."""
    reporter = reporter_headers(base, case.code)
    for status in ("acknowledged", "investigating"):
        changed = httpx.post(
            f"{base}/api/v1/cases/{case.case_id}/status",
            json={"status": status},
            headers=case.handler,
        )
        assert changed.status_code == 200, changed.text
    written = httpx.post(
        f"{base}/api/v1/cases/{case.case_id}/messages",
        json={"body": "Takk for varselet. Kan du si litt mer om hvem som var til stede?"},
        headers=case.handler,
    )
    assert written.status_code == 201, written.text
    replied = httpx.post(
        f"{base}/api/v1/reporter/case/messages",
        json={"body": "Det var styret og to medlemmer.\nJeg kan gi navnene hvis det trengs."},
        headers=reporter,
    )
    assert replied.status_code == 201, replied.text
    uploaded = httpx.post(
        f"{base}/api/v1/reporter/case/files",
        files=[("files", ("referat fra møtet.pdf", b"%PDF-1.4 test", "application/pdf"))],
        headers=reporter,
    )
    assert uploaded.status_code == 201, uploaded.text
    retaliation = httpx.post(
        f"{base}/api/v1/reporter/case/messages",
        json={"body": "Etter møtet ble jeg tatt ut av arbeidsgruppa.", "retaliation": True},
        headers=reporter,
    )
    assert retaliation.status_code == 201, retaliation.text
    concluded = httpx.post(
        f"{base}/api/v1/cases/{case.case_id}/status",
        json={
            "status": "concluded",
            "outcome": "Vi har snakket med de involverte, og lederen har fått en advarsel.",
        },
        headers=case.handler,
    )
    assert concluded.status_code == 200, concluded.text


@pytest.fixture(scope="module")
def full_case(live_server: str, org: dict[str, int]) -> BrowserCase:
    """A case with something in every part of the case page."""
    case = create_case(
        live_server,
        org["vestland"],
        "hanne",
        where="Medlemsmøtet i Bergen",
        identity={"name": "Kari Nordmann", "contact": "Telefon 400 00 000"},
    )
    fill_case(live_server, case)
    disclose_identity(live_server, case)
    return case


NOTICE_HEADINGS = {
    "nb": "En saksbehandler har fått lov til å se hvem du er",
    "nn": "Ein sakshandsamar har fått lov til å sjå kven du er",
    "en": "A case handler has been allowed to see who you are",
}
NOTICE_REASON = "Saksbehandleren må snakke med deg om hvem som var til stede på møtet."


def disclose_identity(base: str, case: BrowserCase) -> None:
    """The handler asks to see the reporter's name; the custodian approves, with a reason."""
    asked = httpx.post(
        f"{base}/api/v1/cases/{case.case_id}/identity-requests",
        json={"justification": "Vi må høre varsleren om hvem som var til stede."},
        headers=case.handler,
    )
    assert asked.status_code == 201, asked.text
    decided = httpx.post(
        f"{base}/api/v1/identity-requests/{asked.json()['id']}/decision",
        json={"approve": True, "reason": NOTICE_REASON},
        headers=handler_headers(base, "cora"),
    )
    assert decided.status_code == 200, decided.text


def log_in(page: Page, base: str, language: str, code: str) -> None:
    page.goto(f"{base}/{language}/follow-up")
    page.fill("#case-code", code)
    page.locator("form[action$='/follow-up'] button[type=submit]").click()


AxeViolations = Callable[..., list[dict[str, Any]]]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_follow_up_and_case_pages_have_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    full_case: BrowserCase,
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
    width: int,
) -> None:
    page = axe_context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    found: dict[str, str] = {}

    def check(state: str) -> None:
        assert page.locator("html").get_attribute("lang") == language
        violations = axe_violations(page)
        if violations:
            found[state] = describe(violations)

    page.goto(f"{live_server}/{language}/follow-up")
    check("follow-up")

    log_in(page, live_server, language, WRONG_CODE)
    page.wait_for_selector(".error-summary")
    check("follow-up, wrong code")

    log_in(page, live_server, language, full_case.code)
    page.wait_for_url(f"{live_server}/{language}/case")
    assert page.locator(".case-message--retaliation").count() == 1
    assert page.locator(".case-files a").count() == 1
    assert page.locator("#outcome").is_visible()
    notices = page.locator("#identity-notices")
    assert notices.locator("h2").inner_text() == NOTICE_HEADINGS[language]
    assert notices.locator(".case-text").inner_text() == NOTICE_REASON
    check("case page, with an identity notice")

    page.locator("#reply button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    assert page.locator("#message-body").get_attribute("aria-invalid") == "true"
    check("case page, empty reply")

    page.goto(f"{live_server}/{language}/case/retaliation")
    check("retaliation page")

    page.locator("form[action$='/case/retaliation'] button[type=submit]").click()
    page.wait_for_selector(".error-summary")
    check("retaliation page, nothing written")

    # The cookie is gone (the session ended) while the reporter was writing.
    page.fill("#message-body", "Skrevet mens økten gikk ut.")
    axe_context.clear_cookies()
    page.locator("form[action$='/case/retaliation'] button[type=submit]").click()
    page.wait_for_selector("#kept-text")
    assert page.locator("#kept-text").input_value() == "Skrevet mens økten gikk ut."
    check("session ended while writing")

    assert found == {}, "\n".join(f"{state}:\n{text}" for state, text in found.items())


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until the element matching `selector` has focus."""
    target = page.locator(selector)
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_log_in_and_reply_with_the_keyboard_and_no_javascript(
    nojs_context: BrowserContext, live_server: str, org: dict[str, int]
) -> None:
    case = create_case(live_server, org["national"], "nina")
    page = nojs_context.new_page()
    page.goto(f"{live_server}/nb/")
    tab_to(page, "footer a[href='/nb/follow-up']")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/nb/follow-up")

    tab_to(page, "#case-code")
    page.keyboard.type(case.code.replace(" ", "-"))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/nb/case")
    assert page.get_by_role("heading", level=1).inner_text() == "Saken din"
    assert "Mottatt" in page.locator(".case-status").inner_text()

    reply = "Jeg husker en ting til:\nDet skjedde også på sommerfesten."
    tab_to(page, "#message-body")
    page.keyboard.type(reply)
    tab_to(page, "#reply button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/nb/case?sent=message")
    assert page.locator(".notice--success").is_visible()
    assert page.locator(".case-message--reporter .case-text").inner_text() == reply

    handler = handler_headers(live_server, "nina")
    view = httpx.get(f"{live_server}/api/v1/cases/{case.case_id}", headers=handler).json()
    assert [(m["author"], m["body"], m["retaliation"]) for m in view["messages"]] == [
        ("reporter", reply, False)
    ]

    tab_to(page, ".case-heading__logout button")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/nb/follow-up?notice=logged-out")
    page.goto(f"{live_server}/nb/case")
    assert page.url == f"{live_server}/nb/follow-up?notice=ended"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_identity_notice_shows_without_javascript(
    nojs_context: BrowserContext, live_server: str, full_case: BrowserCase, language: str
) -> None:
    page = nojs_context.new_page()
    log_in(page, live_server, language, full_case.code)
    page.wait_for_url(f"{live_server}/{language}/case")
    heading = page.get_by_role("heading", name=NOTICE_HEADINGS[language])
    assert heading.is_visible()
    assert page.locator("#identity-notices .case-text").inner_text() == NOTICE_REASON
    # The page's contents list leads to it.
    page.locator(".case-contents a[href='#identity-notices']").click()
    assert page.url.endswith("#identity-notices")


def test_the_error_summary_takes_focus_without_javascript(
    nojs_context: BrowserContext, live_server: str
) -> None:
    page = nojs_context.new_page()
    page.goto(f"{live_server}/en/follow-up")
    tab_to(page, "#case-code")
    page.keyboard.type("1234")
    page.keyboard.press("Enter")
    page.wait_for_selector(".error-summary")
    assert takes_focus(page, ".error-summary")
    tab_to(page, ".error-summary a")
    page.keyboard.press("Enter")
    assert page.locator("#case-code").evaluate("el => el === document.activeElement")
    assert page.locator("#case-code").input_value() == "1234"


@pytest.mark.parametrize("language", LANGUAGES)
def test_case_page_reflows_at_320_px(
    context: BrowserContext, live_server: str, full_case: BrowserCase, language: str
) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": 320, "height": 640})
    log_in(page, live_server, language, full_case.code)
    page.wait_for_url(f"{live_server}/{language}/case")
    for path in ("case", "case/retaliation"):
        page.goto(f"{live_server}/{language}/{path}")
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"/{language}/{path} scrolls sideways by {overflow}px at 320px"


def test_case_page_loads_nothing_from_elsewhere_and_breaks_no_csp(
    page: Page, live_server: str, full_case: BrowserCase
) -> None:
    seen = watch(page)
    log_in(page, live_server, "nb", full_case.code)
    page.wait_for_url(f"{live_server}/nb/case")
    page.wait_for_load_state("networkidle")
    page.goto(f"{live_server}/nb/case/retaliation")
    page.wait_for_load_state("networkidle")
    assert all(url.startswith(live_server) for url in seen.requests), seen.requests
    assert seen.console_errors == []
    assert [c["name"] for c in page.context.cookies()] == ["varsling_session"]


def forge_form_token(page: Page, form: str) -> None:
    """Spoil the form token of `form`, as a form opened elsewhere would have."""
    page.locator(f"{form} input[name=csrf_token]").evaluate("el => { el.value = 'forged' }")


def press_submit(page: Page, button: str) -> None:
    """Send a form from the keyboard: focus its button, press Enter (the notice's focus is
    for keyboard users). See takes_focus for the one flake seen around autofocus."""
    page.locator(button).focus()
    page.keyboard.press("Enter")


def test_the_form_token_notice_takes_focus_without_javascript(
    nojs_context: BrowserContext, live_server: str, org: dict[str, int]
) -> None:
    case = create_case(live_server, org["national"], "nina")
    page = nojs_context.new_page()
    notice = ".form-token-notice"

    page.goto(f"{live_server}/en/follow-up")
    page.fill("#case-code", case.code)
    forge_form_token(page, "form[action$='/follow-up']")
    press_submit(page, "form[action$='/follow-up'] button[type=submit]")
    page.wait_for_selector(notice)
    assert takes_focus(page, notice)
    assert page.locator("#case-code").input_value() == case.code
    assert page.locator(".language-switch__list").count() == 0

    log_in(page, live_server, "en", case.code)
    page.wait_for_url(f"{live_server}/en/case")
    page.fill("#message-body", "Kept when the form token is refused.")
    forge_form_token(page, "#reply form")
    press_submit(page, "#reply button[type=submit]")
    page.wait_for_selector(notice)
    assert takes_focus(page, notice)
    assert page.locator("#message-body").input_value() == "Kept when the form token is refused."
    assert page.locator(".language-switch__list").count() == 0
    assert page.locator(".language-switch__note").is_visible()

    page.goto(f"{live_server}/en/case/retaliation")
    assert page.locator(".language-switch__list").count() == 1
    page.fill("#message-body", "Frozen out of the group chat.")
    forge_form_token(page, "form[action$='/case/retaliation']")
    press_submit(page, "form[action$='/case/retaliation'] button[type=submit]")
    page.wait_for_selector(notice)
    assert takes_focus(page, notice)
    assert page.locator("#message-body").input_value() == "Frozen out of the group chat."
    assert page.locator(".language-switch__list").count() == 0


@pytest.mark.parametrize("language", LANGUAGES)
def test_case_gone_and_file_missing_pages_have_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    monkeypatch: pytest.MonkeyPatch,
    language: str,
) -> None:
    case = create_case(live_server, org["national"], "nina")
    page = axe_context.new_page()
    found: dict[str, str] = {}

    def check(state: str) -> None:
        assert page.locator("html").get_attribute("lang") == language
        violations = axe_violations(page)
        if violations:
            found[state] = describe(violations)

    log_in(page, live_server, language, case.code)
    page.wait_for_url(f"{live_server}/{language}/case")

    missing = page.goto(f"{live_server}/{language}/case/files/no-such-file")
    assert missing is not None
    assert missing.status == 404
    check("file missing")

    # The case is deleted (for example at the end of its retention) while logged in.
    def gone(*_: object) -> object:
        raise NotFound("This case no longer exists.")

    monkeypatch.setattr(service, "reporter_case", gone)
    gone_page = page.goto(f"{live_server}/{language}/case")
    assert gone_page is not None
    assert gone_page.status == 404
    check("case gone")

    assert found == {}, "\n".join(f"{state}:\n{text}" for state, text in found.items())


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_tampering_notice_is_clear_and_has_no_axe_violations(
    axe_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    browser_settings: Settings,
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
) -> None:
    case = create_case(live_server, org["national"], "nina")
    fill_case(live_server, case)
    # A database writer removes the handler's message behind the service's back.
    engine = make_engine(browser_settings.database_url, immediate=False)
    with engine.begin() as connection:
        connection.execute(
            delete(CaseEntry).where(
                CaseEntry.case_id == case.case_id, CaseEntry.kind == "handler_message"
            )
        )
    engine.dispose()
    page = axe_context.new_page()

    log_in(page, live_server, language, case.code)
    page.wait_for_url(f"{live_server}/{language}/case")

    notice = page.get_by_role("alert")
    assert notice.is_visible()
    assert (
        notice.locator("h2").inner_text()
        == {
            "nb": "Saken din kan være endret av noen utenfor tjenesten",
            "nn": "Saka di kan vere endra av nokon utanfor tenesta",
            "en": "Your case may have been changed by someone outside the service",
        }[language]
    )
    violations = axe_violations(page)
    assert violations == [], describe(violations)


@pytest.mark.parametrize("language", LANGUAGES)
def test_reprisal_states_have_no_axe_violations_and_work_without_javascript(
    axe_context: BrowserContext,
    nojs_context: BrowserContext,
    live_server: str,
    org: dict[str, int],
    browser_settings: Settings,
    axe_violations: AxeViolations,
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
) -> None:
    """An unanswered case past its deadline, an open check-in and a linked retaliation case."""
    case = create_case(live_server, org["vestland"], "hanne")
    reporter = reporter_headers(live_server, case.code)
    opened = httpx.post(
        f"{live_server}/api/v1/reporter/case/retaliation",
        json={"body": "Jeg ble tatt av lista etter at jeg varslet."},
        headers=reporter,
    )
    assert opened.status_code == 201, opened.text
    engine = make_engine(browser_settings.database_url, immediate=False)
    with engine.begin() as connection:
        connection.execute(
            update(Case)
            .where(Case.id == case.case_id)
            .values(acknowledgement_due=dt.date.today() - dt.timedelta(days=1))
        )
        connection.execute(
            insert(CheckIn).values(case_id=case.case_id, round=1, sent_on=dt.date.today())
        )
    engine.dispose()
    found: dict[str, str] = {}

    for context in (axe_context, nojs_context):
        page = context.new_page()

        def check(state: str, page: Page = page, context: BrowserContext = context) -> None:
            assert page.locator("html").get_attribute("lang") == language
            if context is axe_context:
                violations = axe_violations(page)
                if violations:
                    found[state] = describe(violations)

        log_in(page, live_server, language, case.code)
        page.wait_for_url(f"{live_server}/{language}/case")
        assert page.locator("#send-up").is_visible()
        assert page.locator("#checkins form").count() == 1
        assert page.locator(".case-linked a").count() == 1
        check("case page with send-up offer, check-in and linked case")

        page.locator("#checkins button[type=submit]").click()
        page.wait_for_selector(".error-summary")
        check("check-in, no answer chosen")

        page.locator(".case-linked a").first.click()
        page.wait_for_selector("#reply")
        assert "Jeg ble tatt av lista" in page.locator("#report").inner_text()
        check("linked case page")
        if context is axe_context:
            continue
        # Without JavaScript: send it up, then answer the question.
        page.goto(f"{live_server}/{language}/case")
        page.locator("#send-up button[type=submit]").click()
        page.wait_for_url(f"{live_server}/{language}/case?sent=sent-up")
        assert page.locator("#send-up").count() == 0
        page.locator("#checkins input[value=no]").check()
        page.locator("#checkins button[type=submit]").click()
        page.wait_for_url(f"{live_server}/{language}/case?sent=checkin")
        assert page.locator("#checkins").count() == 0
        page.close()

    assert found == {}, "\n".join(f"{state}:\n{text}" for state, text in found.items())
