"""Languages of the reporter pages.

The gettext catalogs are `.po` files compiled in memory at start-up, so no
compiled `.mo` file is kept in the repository. Each language gets its own
Jinja2 environment with its translations installed once; after that an
environment is only read, so rendering is safe from any thread.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from io import BytesIO
from typing import Any, Final, Literal, TypeGuard

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import BaseLoader, Environment, PackageLoader, StrictUndefined
from starlette.convertors import Convertor, register_url_convertor

Language = Literal["nb", "nn", "en"]
LANGUAGES: Final[tuple[Language, ...]] = ("nb", "nn", "en")
DEFAULT_LANGUAGE: Final[Language] = "nb"
# Each name in its own language, as the language switch shows it.
LANGUAGE_NAMES: Final[Mapping[Language, str]] = {
    "nb": "Norsk bokmål",
    "nn": "Norsk nynorsk",
    "en": "English",
}
DOMAIN: Final = "messages"


def is_language(value: str) -> TypeGuard[Language]:
    return value in LANGUAGES


def N_(message: str) -> str:
    """Mark a message in Python code for extraction; translate it when rendering."""
    return message


class LanguageConvertor(Convertor[str]):
    """`{lang:lang}` in a route path: matches only the languages we serve."""

    regex = "|".join(LANGUAGES)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        if not is_language(value):
            raise ValueError(f"not a page language: {value!r}")
        return value


register_url_convertor("lang", LanguageConvertor())


@functools.cache
def load_translations(language: Language) -> Translations:
    """Compile `locale/<language>/LC_MESSAGES/messages.po` in memory, once per process
    (about 40 ms each; every app and every notification mail asks). Nothing changes
    a Translations after it is made."""
    po_path = resources.files("varsling") / "locale" / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    # Fuzzy entries are guesses by `pybabel update`; a reporter never sees them.
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(fp=compiled, domain=DOMAIN)


def _environment(translations: Translations, loader: BaseLoader) -> Environment:
    environment = Environment(
        loader=loader,
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    # Whitespace inside {% trans %} blocks is folded, so msgids are one line.
    environment.policies["ext.i18n.trimmed"] = True
    # Added to the environment by the i18n extension, hence unknown to mypy.
    environment.install_gettext_translations(  # type: ignore[attr-defined]
        translations, newstyle=True
    )
    return environment


class PageTemplates:
    """The page templates in every language."""

    def __init__(
        self,
        translations: Mapping[Language, Translations],
        loader: BaseLoader | None = None,
    ) -> None:
        shared_loader = loader or PackageLoader("varsling", "templates")
        self._translations = dict(translations)
        self._environments = {
            language: _environment(translations[language], shared_loader) for language in LANGUAGES
        }

    @classmethod
    def load(cls) -> PageTemplates:
        return cls({language: load_translations(language) for language in LANGUAGES})

    def render(self, language: Language, template: str, context: Mapping[str, Any]) -> str:
        return self._environments[language].get_template(template).render(context)

    def gettext(self, language: Language, message: str) -> str:
        """Translate a message marked with `N_` in Python code."""
        return self._translations[language].gettext(message)
