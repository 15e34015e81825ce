"""Security headers, the form token (CSRF) and the basic page contract."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Form, Request, Response
from fastapi.testclient import TestClient

from varsling.config import Settings
from varsling.web.routes import install_web
from varsling.web.security import (
    CONTENT_SECURITY_POLICY,
    CSRF_FIELD,
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    CsrfSigner,
    check_csrf,
    issue_csrf_token,
    rotate_session_cookie,
)

PAGES = ["/nb/", "/nn/", "/en/"]
TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "varsling" / "templates"


def assert_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in headers["content-security-policy"]
    assert "unsafe" not in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    permissions = headers["permissions-policy"]
    for feature in ("camera", "microphone", "geolocation", "interest-cohort", "payment"):
        assert f"{feature}=()" in permissions


@pytest.mark.parametrize("path", PAGES)
def test_html_pages_have_security_headers_and_are_never_stored(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/", "/static/varsling.css", "/no-such-page", "/de/"])
def test_other_answers_have_security_headers_too(client: TestClient, path: str) -> None:
    assert_security_headers(client.get(path, follow_redirects=False))


def test_static_css_is_served_and_revalidated(client: TestClient) -> None:
    response = client.get("/static/varsling.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["cache-control"] == "no-cache"


def test_root_redirects_to_bokmaal(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"] == "/nb/"


@pytest.mark.parametrize("path", ["/", "/nb/", "/nn/", "/en/"])
def test_head_answers_like_get(client: TestClient, path: str) -> None:
    got = client.get(path, follow_redirects=False)
    head = client.head(path, follow_redirects=False)
    assert head.status_code == got.status_code
    assert head.status_code != 405
    for header in ("location", "content-type", "content-security-policy", "cache-control"):
        assert head.headers.get(header) == got.headers.get(header)
    assert head.content == b""


def test_language_without_slash_redirects_to_its_start_page(client: TestClient) -> None:
    response = client.get("/nn", follow_redirects=False)
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["location"].endswith("/nn/")


def test_unknown_language_is_not_found(client: TestClient) -> None:
    assert client.get("/de/").status_code == 404


@pytest.mark.parametrize("language", ["nb", "nn", "en"])
def test_page_has_lang_and_a_switch_to_the_other_languages(
    client: TestClient, language: str
) -> None:
    html = client.get(f"/{language}/").text
    assert f'<html lang="{language}">' in html
    for other in {"nb", "nn", "en"} - {language}:
        assert f'<a href="/{other}/" lang="{other}" hreflang="{other}">' in html
    assert f'lang="{language}" aria-current="true"' in html


@pytest.mark.parametrize(
    ("language", "expected"),
    [("nb", "Forlat siden raskt"), ("nn", "Forlat sida raskt"), ("en", "Quick exit")],
)
def test_quick_exit_leaves_for_a_neutral_site(
    client: TestClient, language: str, expected: str
) -> None:
    html = client.get(f"/{language}/").text
    assert (
        f'<a class="quick-exit" href="https://www.yr.no/" rel="noreferrer">{expected}</a>' in html
    )


@pytest.mark.parametrize("language", ["nb", "nn", "en"])
def test_start_page_links_to_the_form_and_follow_up(client: TestClient, language: str) -> None:
    html = client.get(f"/{language}/").text
    assert f'href="/{language}/report"' in html
    assert f'href="/{language}/follow-up"' in html
    assert '<a class="skip-link" href="#main">' in html
    assert '<main id="main"' in html


def test_a_page_without_a_form_sets_no_cookie(client: TestClient) -> None:
    response = client.get("/nb/")
    assert "set-cookie" not in response.headers
    assert CSRF_FIELD not in response.text


def test_templates_have_no_inline_style_or_script() -> None:
    templates = list(TEMPLATES.rglob("*.html"))
    assert templates
    for template in templates:
        text = template.read_text()
        assert not re.search(r"\sstyle\s*=", text, re.IGNORECASE), template
        assert not re.search(r"<\s*style\b", text, re.IGNORECASE), template
        # Scripts only as files of our own, never inline.
        for tag in re.findall(r"<\s*script\b[^>]*>", text, re.IGNORECASE):
            assert re.fullmatch(r'<script src="/static/[a-z-]+\.js" defer>', tag), template
        assert not re.search(r"\son[a-z]+\s*=", text, re.IGNORECASE), template
        # Nothing loaded from another host: only plain links may point elsewhere.
        assert not re.search(r"(src|srcset)\s*=\s*\"(https?:)?//", text), template
        assert not re.search(r"<link[^>]+href=\"(https?:)?//", text), template


# Form tokens ----------------------------------------------------------------


@pytest.fixture
def form_app(web_settings: Settings) -> FastAPI:
    app = FastAPI()
    install_web(app, web_settings)

    @app.get("/form")
    def form(request: Request, response: Response) -> dict[str, str]:
        return {"token": issue_csrf_token(request, response)}

    @app.get("/two-forms")
    def two_forms(request: Request, response: Response) -> dict[str, str]:
        return {
            "first": issue_csrf_token(request, response),
            "second": issue_csrf_token(request, response),
        }

    @app.post("/form")
    def submit(request: Request, csrf_token: Annotated[str, Form()] = "") -> dict[str, str]:
        return {"result": check_csrf(request, csrf_token)}

    @app.post("/login")
    def login(request: Request, response: Response) -> dict[str, str]:
        rotate_session_cookie(request, response)
        return {"token": issue_csrf_token(request, response)}

    return app


@pytest.fixture
def form_client(form_app: FastAPI) -> TestClient:
    return TestClient(form_app)


def submit(client: TestClient, token: str) -> str:
    response = client.post("/form", data={CSRF_FIELD: token})
    assert response.status_code == 200
    result: str = response.json()["result"]
    return result


def test_token_from_the_same_browser_is_ok(form_client: TestClient) -> None:
    token = form_client.get("/form").json()["token"]
    assert submit(form_client, token) == "ok"
    # A token may be used again while it is fresh (a re-rendered form keeps it).
    assert submit(form_client, token) == "ok"


def test_session_cookie_is_the_only_cookie_and_is_locked_down(form_client: TestClient) -> None:
    response = form_client.get("/form")
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert "max-age=7200" in attributes
    assert "secure" not in attributes


def _cookie_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    install_web(app, settings)

    @app.get("/form")
    def form(request: Request, response: Response) -> dict[str, str]:
        return {"token": issue_csrf_token(request, response)}

    @app.post("/form")
    def submit(request: Request, csrf_token: Annotated[str, Form()] = "") -> dict[str, str]:
        return {"result": check_csrf(request, csrf_token)}

    return app


def test_in_production_the_cookie_is_secure_host_only_and_pages_send_hsts(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(environment="production")
    assert settings.secure_transport
    browser = TestClient(_cookie_app(settings), base_url="https://testserver")

    response = browser.get("/form")

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SECURE_SESSION_COOKIE}=")
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "secure" in attributes
    assert "path=/" in attributes
    assert not any(a.startswith("domain") for a in attributes)
    hsts = response.headers["strict-transport-security"]
    assert int(re.fullmatch(r"max-age=([0-9]+)", hsts).group(1)) >= 31536000  # type: ignore[union-attr]
    # The browser sends the prefixed cookie back, and the form token checks out against it.
    assert browser.post("/form", data={CSRF_FIELD: response.json()["token"]}).json() == {
        "result": "ok"
    }


@pytest.mark.parametrize(
    "overrides",
    [{"environment": "development"}, {"environment": "production", "secure_cookies": False}],
)
def test_development_or_an_explicit_false_serves_plain_http(
    settings_factory: Callable[..., Settings], overrides: dict[str, object]
) -> None:
    settings = settings_factory(**overrides)
    assert not settings.secure_transport
    browser = TestClient(_cookie_app(settings))

    response = browser.get("/form")

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "secure" not in cookie.lower().split("; ")
    assert "strict-transport-security" not in response.headers
    assert browser.post("/form", data={CSRF_FIELD: response.json()["token"]}).json() == {
        "result": "ok"
    }


def test_secure_cookies_can_be_turned_on_in_development(
    settings_factory: Callable[..., Settings],
) -> None:
    response = TestClient(
        _cookie_app(settings_factory(secure_cookies=True)), base_url="https://testserver"
    ).get("/form")
    assert response.headers["set-cookie"].startswith(f"{SECURE_SESSION_COOKIE}=")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


def test_two_forms_in_one_page_share_one_cookie(form_client: TestClient) -> None:
    tokens = form_client.get("/two-forms").json()
    assert submit(form_client, tokens["first"]) == "ok"
    assert submit(form_client, tokens["second"]) == "ok"


def test_old_token_is_expired_not_invalid(form_app: FastAPI, form_client: TestClient) -> None:
    form_client.get("/form")
    signer: CsrfSigner = form_app.state.varsling_csrf
    browser = form_client.cookies[SESSION_COOKIE]
    old = signer.token(browser, now=time.time() - signer.lifetime_seconds - 5)
    assert submit(form_client, old) == "expired"


def test_old_token_is_expired_even_after_the_cookie_is_gone(
    form_app: FastAPI, form_client: TestClient
) -> None:
    form_client.get("/form")
    signer: CsrfSigner = form_app.state.varsling_csrf
    old = signer.token(form_client.cookies[SESSION_COOKIE], now=time.time() - 3 * 3600)
    form_client.cookies.clear()
    assert submit(form_client, old) == "expired"


def test_token_from_another_browser_is_invalid(form_app: FastAPI) -> None:
    attacker = TestClient(form_app)
    victim = TestClient(form_app)
    token = attacker.get("/form").json()["token"]
    victim.get("/form")
    assert submit(victim, token) == "invalid"


def test_fresh_token_without_the_cookie_is_invalid(form_client: TestClient) -> None:
    token = form_client.get("/form").json()["token"]
    form_client.cookies.clear()
    assert submit(form_client, token) == "invalid"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: "",
        lambda t: "not-a-token",
        lambda t: t + "x",
        lambda t: t.replace(t.split(".")[0], str(int(t.split(".")[0]) - 1), 1),
        lambda t: ".".join([*t.split(".")[:2], "A" * 43]),
        lambda t: ".".join([t.split(".")[0], "A" * 43, t.split(".")[2]]),
    ],
    ids=["empty", "garbage", "suffix", "other-time", "forged-binding", "forged-stamp"],
)
def test_altered_tokens_are_invalid(form_client: TestClient, tamper: object) -> None:
    token = form_client.get("/form").json()["token"]
    assert submit(form_client, tamper(token)) == "invalid"  # type: ignore[operator]


def test_forged_old_token_is_invalid_not_expired(form_client: TestClient) -> None:
    form_client.get("/form")
    other = CsrfSigner(secret=b"another installation's secret")
    forged = other.token(form_client.cookies[SESSION_COOKIE], now=time.time() - 3 * 3600)
    assert submit(form_client, forged) == "invalid"


def test_token_from_the_future_is_invalid(form_app: FastAPI, form_client: TestClient) -> None:
    form_client.get("/form")
    signer: CsrfSigner = form_app.state.varsling_csrf
    future = signer.token(form_client.cookies[SESSION_COOKIE], now=time.time() + 3600)
    assert submit(form_client, future) == "invalid"


def test_login_rotates_the_cookie_and_old_tokens_stop_working(form_client: TestClient) -> None:
    before = form_client.get("/form").json()["token"]
    old_cookie = form_client.cookies[SESSION_COOKIE]
    after = form_client.post("/login").json()["token"]
    assert form_client.cookies[SESSION_COOKIE] != old_cookie
    assert submit(form_client, before) == "invalid"
    assert submit(form_client, after) == "ok"


def test_check_csrf_accepts_an_explicit_clock(form_app: FastAPI) -> None:
    signer: CsrfSigner = form_app.state.varsling_csrf
    now = 1_900_000_000.0
    token = signer.token("b" * 43, now=now)
    assert signer.check("b" * 43, token, now=now + signer.lifetime_seconds) == "ok"
    assert signer.check("b" * 43, token, now=now + signer.lifetime_seconds + 1) == "expired"
    assert signer.check("c" * 43, token, now=now + 10) == "invalid"
    assert signer.check(None, token, now=now + 10) == "invalid"
    assert signer.check("b" * 43, None, now=now) == "invalid"


def test_signer_never_shows_its_secret() -> None:
    assert "topsecret" not in repr(CsrfSigner(secret=b"topsecret"))


@pytest.mark.parametrize(
    ("language", "promised", "not_built"),
    [
        (
            "en",
            ["Anyone you leave out gets no key to the report", "The case handlers cannot see it."],
            ["loses access", "approves", "before that happens"],
        ),
        (
            "nb",
            ["Den du holder utenfor, får ingen nøkkel", "Saksbehandlerne kan ikke se det."],
            ["mister tilgangen", "godkjenner", "før det skjer"],
        ),
        (
            "nn",
            ["Den du held utanfor, får ingen nøkkel", "Sakshandsamarane kan ikkje sjå det."],
            ["mistar tilgangen", "godkjenner", "før det skjer"],
        ),
    ],
)
def test_start_page_promises_only_what_the_service_does(
    client: TestClient, language: str, promised: list[str], not_built: list[str]
) -> None:
    """No custodian approval or later conflict marking exists yet: neither is promised."""
    page = client.get(f"/{language}/").text
    for sentence in promised:
        assert sentence in page
    for claim in not_built:
        assert claim not in page
