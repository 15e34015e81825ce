"""Settings: secrets generated once with 0600, refused when missing or placeholders."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from varsling.app import create_app
from varsling.config import ConfigError, Settings, ensure_secrets_file, load_settings


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


def test_secrets_file_is_generated_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CODE_PEPPER", "CODE_SALT", "WEB_SECRET", "SIGNING_KEY", "PASSWORD_PEPPER"):
        monkeypatch.delenv(f"VARSLING_{name}", raising=False)
    path = tmp_path / "var" / "secrets.env"
    monkeypatch.setenv("VARSLING_SECRETS_FILE", str(path))

    assert ensure_secrets_file(path) is True
    first = path.read_text()
    assert ensure_secrets_file(path) is False

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first
    settings = load_settings()
    settings.check()
    assert settings.secret("code_pepper").decode() in first
    assert settings.code_pepper is not None
    assert settings.code_pepper.get_secret_value() not in repr(settings)


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
