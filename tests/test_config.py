"""Settings: secrets generated once with 0600, refused when missing or placeholders."""

from __future__ import annotations

import pytest

from varsling.app import create_app
from varsling.config import ConfigError, Settings


def test_production_refuses_missing_secret_and_names_it() -> None:
    settings = Settings(
        environment="production",
        code_pepper=None,
        code_salt="s" * 40,
        web_secret="w" * 40,
        signing_key="k" * 40,
        password_pepper="q" * 40,
    )
    with pytest.raises(ConfigError, match=r"VARSLING_CODE_PEPPER.*token_urlsafe"):
        create_app(settings)


@pytest.mark.parametrize("value", ["change-me", "short"])
def test_production_refuses_placeholder_secret(value: str) -> None:
    settings = Settings(
        environment="production",
        code_pepper="p" * 40,
        code_salt="s" * 40,
        web_secret=value,
        signing_key="k" * 40,
        password_pepper="q" * 40,
    )
    with pytest.raises(ConfigError, match="VARSLING_WEB_SECRET"):
        settings.check()


def test_shipped_argon2_defaults_are_the_designed_ones() -> None:
    params = Settings().argon2
    assert (params.memory_kib, params.time_cost, params.parallelism) == (65536, 3, 1)


@pytest.mark.parametrize(
    "setting",
    [
        {"argon2_memory_kib": 1024 * 1024 + 1},
        {"argon2_time_cost": 21},
        {"argon2_parallelism": 9},
    ],
)
def test_argon2_settings_above_what_a_stored_string_may_ask_for_are_refused(
    setting: dict[str, int],
) -> None:
    """Otherwise new accounts would store parameters that their own login then refuses."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(environment="development", **setting)  # type: ignore[arg-type]
