"""Rendering a reporter page: language, language switch, form token, headers."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from babel.dates import format_date, format_timedelta
from babel.units import format_unit
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from varsling.web.i18n import LANGUAGE_NAMES, LANGUAGES, Language, PageTemplates, is_language
from varsling.web.security import PageFormToken


@dataclass(frozen=True)
class LanguageLink:
    """One entry of the language switch."""

    language: Language
    name: str
    url: str
    current: bool


def page_language(lang: str) -> Language:
    """The `{lang:lang}` part of a page's path."""
    if not is_language(lang):
        raise HTTPException(status_code=404)
    return lang


PageLanguage = Annotated[Language, Depends(page_language)]


def path_in_language(path: str, language: Language) -> str:
    """The same page in another language: the path with its language prefix swapped."""
    segments = path.split("/")
    if len(segments) > 1 and is_language(segments[1]):
        segments[1] = language
        return "/".join(segments)
    return f"/{language}/"


def language_links(path: str, current: Language) -> list[LanguageLink]:
    return [
        LanguageLink(
            language=language,
            name=LANGUAGE_NAMES[language],
            url=path_in_language(path, language),
            current=language == current,
        )
        for language in LANGUAGES
    ]


def format_size(size_bytes: int, language: Language) -> str:
    """A file size as the page's language writes it, e.g. "20 MB", "1,5 MB", "3 kB".

    Every page uses this one, so sizes look the same everywhere. Rounded up
    (a limit is never shown smaller than it is); below a megabyte in whole kB.
    """
    kilobyte = 1024
    if size_bytes < kilobyte**2:
        unit, amount = "digital-kilobyte", float(max(1, math.ceil(size_bytes / kilobyte)))
    elif size_bytes < kilobyte**3:
        unit, amount = "digital-megabyte", math.ceil(size_bytes / kilobyte**2 * 10) / 10
    else:
        unit, amount = "digital-gigabyte", math.ceil(size_bytes / kilobyte**3 * 10) / 10
    value: float | int = int(amount) if amount.is_integer() else amount
    text: str = format_unit(value, unit, length="short", locale=language)
    # The number and its unit stay on one line.
    return text.replace(" ", "\u00a0")


def format_day(iso_date: str, language: Language) -> str:
    """A date as the page's language writes it in full, e.g. "3. mars 2026"."""
    return format_date(dt.date.fromisoformat(iso_date), format="long", locale=language)


def format_minutes(minutes: int, language: Language) -> str:
    """A number of minutes in words, e.g. "30 minutter" (never rounded up to hours)."""
    return format_timedelta(
        dt.timedelta(minutes=minutes), granularity="minute", threshold=10_000, locale=language
    )


def format_seconds(seconds: int, language: Language) -> str:
    """A number of seconds in words, e.g. "45 sekunder"."""
    return format_timedelta(
        dt.timedelta(seconds=seconds), granularity="second", threshold=10_000, locale=language
    )


def page_templates(request: Request) -> PageTemplates:
    templates = getattr(request.app.state, "varsling_templates", None)
    if not isinstance(templates, PageTemplates):
        raise RuntimeError("install_web(app, settings) has not been called")
    return templates


def render_page(
    request: Request,
    language: Language,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render `template` in `language` with the context every page needs.

    Templates get `lang`, `language_links`, `csrf_token()` and `csrf_field()`;
    the session cookie is only set when the page asked for a form token.
    The language switch links to the same path with GET, without the query.
    """
    form_token = PageFormToken(request)
    page_context: dict[str, Any] = {
        "lang": language,
        "language_links": language_links(request.url.path, language),
        "csrf_token": form_token.token,
        "csrf_field": form_token.field,
    }
    page_context.update(context or {})
    body = page_templates(request).render(language, template, page_context)
    response = HTMLResponse(body, status_code=status_code)
    form_token.finish(response)
    return response


def too_large_page(request: Request, language: Language) -> HTMLResponse:
    """The 413 page: what was sent was larger than any form takes; nothing was kept."""
    settings = request.app.state.settings
    return render_page(
        request,
        language,
        "too_large.html",
        {
            "max_files": settings.max_files_per_report,
            "max_file_size": format_size(settings.max_file_bytes, language),
        },
        status_code=413,
    )
