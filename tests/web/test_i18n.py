"""Every text a reporter reads exists in bokmål, nynorsk and English."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from varsling.web.i18n import LANGUAGES, PageTemplates, load_translations

SRC = Path(__file__).resolve().parents[2] / "src" / "varsling"
LOCALE = SRC / "locale"


def template_messages() -> set[str]:
    """The msgids `make messages` would extract from the templates."""
    found = extract_from_dir(
        str(SRC / "templates"),
        method_map=[("**.html", "jinja2.ext:babel_extract")],
        options_map={"**.html": {"trimmed": "true", "newstyle_gettext": "true"}},
    )
    messages: set[str] = set()
    for _filename, _lineno, message, _comments, _context in found:
        messages.update([message] if isinstance(message, str) else [m for m in message if m])
    return messages


def catalog(language: str) -> dict[str, str]:
    path = LOCALE / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po_file:
        parsed = read_po(po_file, locale=language)
    fuzzy = [m.id for m in parsed if m.id and m.fuzzy]
    assert not fuzzy, f"{language}: fuzzy entries need a translator's check: {fuzzy}"
    entries: dict[str, str] = {}
    for m in parsed:
        if not m.id:
            continue
        if isinstance(m.id, str):
            entries[m.id] = str(m.string)
        else:  # a plural entry: each of its forms, with the translation of that form
            texts = list(m.string) if isinstance(m.string, tuple | list) else [m.string]
            for index, form in enumerate(m.id):
                entries[form] = str(texts[min(index, len(texts) - 1)] or "")
    return entries


def test_templates_have_translatable_text() -> None:
    assert "Quick exit" in template_messages()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_template_message_is_in_the_catalog(language: str) -> None:
    missing = template_messages() - set(catalog(language))
    assert not missing, f"run `make messages`; missing in {language}: {sorted(missing)}"


@pytest.mark.parametrize("language", ["nb", "nn"])
def test_norwegian_catalogs_are_fully_translated(language: str) -> None:
    untranslated = [msgid for msgid, text in catalog(language).items() if not text.strip()]
    assert not untranslated, f"untranslated in {language}: {untranslated}"


def test_glossary_terms_for_quick_exit() -> None:
    assert load_translations("nb").gettext("Quick exit") == "Forlat siden raskt"
    assert load_translations("nn").gettext("Quick exit") == "Forlat sida raskt"
    assert load_translations("en").gettext("Quick exit") == "Quick exit"


def test_page_templates_translate_python_messages() -> None:
    templates = PageTemplates.load()
    assert templates.gettext("nn", "Deadlines") == "Fristar"
    assert templates.gettext("nb", "Deadlines") == "Frister"
    assert templates.gettext("en", "Deadlines") == "Deadlines"


@pytest.mark.parametrize(
    ("language", "heading"),
    [
        ("nb", "Hvem leser varselet ditt"),
        ("nn", "Kven les varselet ditt"),
        ("en", "Who reads your report"),
    ],
)
def test_start_page_is_rendered_in_its_language(language: str, heading: str) -> None:
    context = {"lang": language, "language_links": [], "csrf_token": str, "csrf_field": str}
    html = PageTemplates.load().render(language, "start.html", context)  # type: ignore[arg-type]
    assert heading in html
