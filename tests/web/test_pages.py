"""render_page: the shared page context, lazy form tokens and the expired-form notice."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from jinja2 import ChoiceLoader, DictLoader, PackageLoader

from varsling.config import Settings
from varsling.web.i18n import LANGUAGES, PageTemplates, load_translations
from varsling.web.pages import PageLanguage, language_links, path_in_language, render_page
from varsling.web.routes import install_web
from varsling.web.security import CSRF_FIELD, SESSION_COOKIE, CsrfSigner, check_csrf

FORM_PAGE = """{% extends "base.html" %}
{% from "_form_notices.html" import form_token_notice %}
{% block title %}Form{% endblock %}
{% block content %}
{{ form_token_notice(status) }}
<form method="post" action="/{{ lang }}/form">
{{ csrf_field() }}
<label for="what">What happened</label>
<textarea id="what" name="what">{{ what }}</textarea>
<button class="button" type="submit">Send</button>
</form>
{% endblock %}
"""


@pytest.fixture
def form_app(web_settings: Settings) -> FastAPI:
    app = FastAPI()
    install_web(app, web_settings)
    loader = ChoiceLoader(
        [DictLoader({"test_form.html": FORM_PAGE}), PackageLoader("varsling", "templates")]
    )
    app.state.varsling_templates = PageTemplates(
        {language: load_translations(language) for language in LANGUAGES}, loader=loader
    )

    @app.get("/{lang:lang}/form")
    def show(request: Request, language: PageLanguage) -> HTMLResponse:
        return render_page(request, language, "test_form.html", {"status": "ok", "what": ""})

    @app.post("/{lang:lang}/form")
    def send(
        request: Request,
        language: PageLanguage,
        what: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        status = check_csrf(request, csrf_token)
        return render_page(
            request,
            language,
            "test_form.html",
            {"status": status, "what": what},
            status_code=200 if status == "ok" else 400,
        )

    return app


def form_token(html: str) -> str:
    match = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def test_a_page_with_a_form_gets_a_token_and_the_cookie(form_app: FastAPI) -> None:
    client = TestClient(form_app)
    response = client.get("/nb/form")
    assert response.status_code == 200
    assert SESSION_COOKIE in client.cookies
    token = form_token(response.text)
    answer = client.post("/nb/form", data={"what": "x", CSRF_FIELD: token})
    assert answer.status_code == 200
    assert "error-summary" not in answer.text


@pytest.mark.parametrize(
    ("language", "title"),
    [
        ("nb", "Skjemaet var utløpt"),
        ("nn", "Skjemaet hadde gått ut på tid"),
        ("en", "The form had expired"),
    ],
)
def test_expired_form_keeps_the_text_and_explains(
    form_app: FastAPI, language: str, title: str
) -> None:
    client = TestClient(form_app)
    client.get(f"/{language}/form")
    signer: CsrfSigner = form_app.state.varsling_csrf
    old = signer.token(client.cookies[SESSION_COOKIE], now=1_000_000_000)
    typed = "Det skjedde på årsmøtet <b>i fjor</b>"
    answer = client.post(f"/{language}/form", data={"what": typed, CSRF_FIELD: old})
    assert answer.status_code == 400
    assert title in answer.text
    # Kept, and escaped: what a reporter typed is never markup.
    assert "Det skjedde på årsmøtet &lt;b&gt;i fjor&lt;/b&gt;" in answer.text
    assert form_token(answer.text) != old


def test_invalid_form_token_explains_cookies(form_app: FastAPI) -> None:
    client = TestClient(form_app)
    answer = client.post("/en/form", data={"what": "kept", CSRF_FIELD: "forged"})
    assert answer.status_code == 400
    assert "The form could not be sent" in answer.text
    assert ">kept</textarea>" in answer.text


def test_path_in_language_swaps_only_the_prefix() -> None:
    assert path_in_language("/nb/report", "nn") == "/nn/report"
    assert path_in_language("/en/case/messages", "nb") == "/nb/case/messages"
    assert path_in_language("/api/v1/x", "en") == "/en/"


def test_language_links_mark_the_current_language() -> None:
    links = language_links("/nn/follow-up", "nn")
    assert [link.language for link in links] == ["nb", "nn", "en"]
    assert [link.current for link in links] == [False, True, False]
    assert links[2].url == "/en/follow-up"
    assert links[0].name == "Norsk bokmål"
