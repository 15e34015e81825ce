"""A handler's case sub-pages in a real browser: axe-core in every state, no JavaScript.

Every sub-page (files, access, identity, hold, access history) and its error
and confirmation states, in bokmål, nynorsk and English, at 1280 and 375 px,
with 0 axe-core violations; and a request for the identity made with the
keyboard alone and JavaScript off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page
from sqlalchemy import select

from tests.browser.conftest import BROWSER_PASSWORD, takes_focus
from tests.staff_web import enrol, staff_web_login, totp_for
from varsling.accounts import service as accounts
from varsling.accounts.models import User
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.browser

LANGUAGES = ["nb", "nn", "en"]
WIDTHS = [1280, 375]
CUSTODIAN = "cecilie"


@dataclass(frozen=True)
class Cases:
    fresh: str  # nothing done yet: the identity form, no hold
    worked: str  # an approved identity request, a hold, a file, a history
    handler_id: int


def api_login(base: str, username: str, code: str = "") -> dict[str, str]:
    body = {"username": username, "password": BROWSER_PASSWORD}
    if code:
        body["code"] = code
    response = httpx.post(f"{base}/api/v1/sessions", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def new_case(base: str, unit_id: int, handler: dict[str, str]) -> str:
    def ids() -> set[str]:
        listed = httpx.get(f"{base}/api/v1/cases", headers=handler)
        assert listed.status_code == 200, listed.text
        return {item["id"] for item in listed.json()["items"]}

    before = ids()
    sent = httpx.post(
        f"{base}/api/v1/reports",
        json={
            "unit_id": unit_id,
            "category": "abuse_of_power",
            "description": "Nominasjonskomiteen ble presset til å stryke en kandidat.",
            "identity": {"name": "Per Hansen", "contact": "Telefon 400 00 001"},
        },
    )
    assert sent.status_code == 201, sent.text
    (case_id,) = ids() - before
    declared = httpx.post(
        f"{base}/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": "medium"},
        headers=handler,
    )
    assert declared.status_code == 201, declared.text
    return case_id


@pytest.fixture(scope="module")
def cases(live_server: str, org: dict[str, int], browser_settings: Settings) -> Cases:
    """Two cases in Vestland for hanne; a custodian of their own (with two-factor) decides."""
    engine = make_engine(browser_settings.database_url)
    with make_sessionmaker(engine).begin() as session:
        if session.scalar(select(User.id).where(User.username == CUSTODIAN)) is None:
            accounts.create_user(
                session,
                browser_settings,
                username=CUSTODIAN,
                password=BROWSER_PASSWORD,
                roles=["custodian"],
                unit_ids=[org["national"]],
                display_name="Cecilie Moe",
            )
    engine.dispose()
    with httpx.Client(base_url=live_server) as web:
        staff_web_login(web, CUSTODIAN, BROWSER_PASSWORD)
        enrolment = enrol(web)
    custodian = api_login(live_server, CUSTODIAN, totp_for(enrolment.secret, enrolment.step + 1))
    handler = api_login(live_server, "hanne")
    fresh = new_case(live_server, org["vestland"], handler)
    worked = new_case(live_server, org["vestland"], handler)
    asked = httpx.post(
        f"{live_server}/api/v1/cases/{worked}/identity-requests",
        json={"justification": "Vi må snakke med varsleren om hva som ble sagt i komiteen."},
        headers=handler,
    )
    assert asked.status_code == 201, asked.text
    decided = httpx.post(
        f"{live_server}/api/v1/identity-requests/{asked.json()['id']}/decision",
        json={"approve": True, "reason": "Saksbehandleren må snakke med varsleren."},
        headers=custodian,
    )
    assert decided.status_code == 200, decided.text
    review = (dt.date.today() + dt.timedelta(days=120)).isoformat()
    held = httpx.post(
        f"{live_server}/api/v1/cases/{worked}/hold",
        json={"reason": "Klagesaken i sentralstyret er ikke avgjort.", "review_on": review},
        headers=handler,
    )
    assert held.status_code == 201, held.text
    added = httpx.post(
        f"{live_server}/api/v1/cases/{worked}/files",
        files=[("files", ("notat fra møtet.txt", b"Notat.", "text/plain"))],
        headers=handler,
    )
    assert added.status_code == 201, added.text
    return Cases(fresh, worked, org["hanne"])


def log_in(page: Page, base: str, language: str, username: str = "hanne") -> None:
    page.goto(f"{base}/{language}/staff/login")
    page.fill("#username", username)
    page.fill("#password", BROWSER_PASSWORD)
    page.locator("form[action$='/staff/login'] button[type=submit]").click()
    page.wait_for_url(f"{base}/{language}/staff/**")


def submit(page: Page, action_end: str) -> None:
    page.locator(f"main form[action$='{action_end}'] button[type=submit]").click()


@pytest.fixture
def staff_axe_page(axe_context: BrowserContext) -> Iterator[Page]:
    page = axe_context.new_page()
    yield page
    page.close()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_case_subpages_have_no_axe_violations(
    staff_axe_page: Page,
    live_server: str,
    cases: Cases,
    axe_violations: Callable[..., list[dict[str, Any]]],
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
    width: int,
) -> None:
    page = staff_axe_page
    page.set_viewport_size({"width": width, "height": 900})
    found: dict[str, str] = {}

    def check(state: str, status: int | None = None) -> None:
        assert page.locator("html").get_attribute("lang") == language, state
        assert page.locator("h1").count() == 1, state
        violations = axe_violations(page)
        if violations:
            found[state] = describe(violations)

    def visit(path: str) -> None:
        response = page.goto(f"{live_server}/{language}/staff/cases/{path}")
        assert response is not None
        assert response.status == 200, f"{path}: {response.status}"

    log_in(page, live_server, language)
    fresh, worked = cases.fresh, cases.worked

    visit(f"{fresh}/upload")
    check("upload")
    submit(page, "/upload")  # no file chosen
    page.wait_for_selector(".error-summary")
    assert page.locator("#case-files").get_attribute("aria-invalid") == "true"
    check("upload, no file")
    visit(f"{fresh}/upload?done=files")
    check("upload, confirmation")

    visit(f"{fresh}/grants")
    check("grants")
    submit(page, "/grants")  # nobody chosen
    page.wait_for_selector(".error-summary")
    check("grants, nobody chosen")
    visit(f"{fresh}/grants?done=granted&granted={cases.handler_id}")
    assert page.locator(".confirmation").count() == 1
    check("grants, confirmation")

    visit(f"{fresh}/identity")
    check("identity, the form")
    submit(page, "/identity")  # no justification
    page.wait_for_selector(".error-summary")
    assert page.locator("#justification").get_attribute("aria-invalid") == "true"
    check("identity, no justification")
    page.fill("#justification", "Skrevet med et skjema som ikke gjelder.")
    page.locator("main input[name=csrf_token]").evaluate("input => { input.value = 'forged'; }")
    submit(page, "/identity")
    page.wait_for_selector(".form-token-notice")
    assert page.locator("#justification").input_value() == "Skrevet med et skjema som ikke gjelder."
    check("identity, form token not accepted")
    visit(f"{worked}/identity")
    assert page.locator("a[href$='?show=identity']").count() == 1
    check("identity, approved")
    visit(f"{worked}/identity?show=identity")
    assert "Per Hansen" in page.locator("main").inner_text()
    check("identity, shown")

    visit(f"{fresh}/hold")
    check("hold, none")
    submit(page, "/hold")  # nothing filled in
    page.wait_for_selector(".error-summary")
    assert page.locator(".error-summary li").count() == 2
    check("hold, nothing filled in")
    visit(f"{worked}/hold?done=held")
    assert page.locator(".confirmation").count() == 1
    check("hold, in force, confirmation")

    visit(f"{worked}/access")
    assert page.locator("main table").count() == 2
    check("access history")

    response = page.goto(f"{live_server}/{language}/staff/cases/{'0' * 32}/access")
    assert response is not None
    assert response.status == 404
    check("not found")

    assert found == {}, "\n".join(f"{state}:\n{text}" for state, text in found.items())


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_subpage_before_declaring_is_an_accessible_409_page(
    axe_context: BrowserContext,
    live_server: str,
    cases: Cases,
    axe_violations: Callable[..., list[dict[str, Any]]],
    describe: Callable[[list[dict[str, Any]]], str],
    language: str,
) -> None:
    page = axe_context.new_page()
    log_in(page, live_server, language, "ola")  # a Vestland handler who has not declared
    response = page.goto(f"{live_server}/{language}/staff/cases/{cases.fresh}/hold")
    assert response is not None
    assert response.status == 409
    assert "Per Hansen" not in page.content()
    violations = axe_violations(page)
    assert violations == [], describe(violations)


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    target = page.locator(selector)
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_ask_for_the_identity_with_the_keyboard_and_no_javascript(
    nojs_context: BrowserContext, live_server: str, org: dict[str, int], cases: Cases
) -> None:
    case_id = new_case(live_server, org["vestland"], api_login(live_server, "hanne"))
    page = nojs_context.new_page()
    log_in(page, live_server, "nb")
    page.goto(f"{live_server}/nb/staff/cases/{case_id}/identity")
    tab_to(page, "#justification")
    page.keyboard.type("Jeg må høre varsleren om\nhvem som var i komiteen.")
    tab_to(page, "main form[action$='/identity'] button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/nb/staff/cases/{case_id}/identity?done=requested")
    assert takes_focus(page, ".confirmation")
    assert "venter på en identitetsforvalter" in page.locator("main").inner_text()
    # Back to the case page, with the keyboard.
    tab_to(page, f"main a[href='/nb/staff/cases/{case_id}']")


def test_the_subpages_reflow_at_320_px(
    context: BrowserContext, live_server: str, cases: Cases
) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": 320, "height": 640})
    log_in(page, live_server, "nn")
    for subpage in ("upload", "grants", "identity", "hold", "access"):
        page.goto(f"{live_server}/nn/staff/cases/{cases.worked}/{subpage}")
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{subpage} scrolls sideways by {overflow}px at 320px"
