"""A small app with only the web side installed, for the page and header tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from varsling.config import Settings
from varsling.web.routes import install_web


def make_web_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "development",
        "code_pepper": "test-pepper-" + "p" * 40,
        "code_salt": "test-salt-" + "s" * 40,
        "web_secret": "test-web-secret-" + "w" * 40,
        "signing_key": "test-signing-key-" + "k" * 40,
        "password_pepper": "test-password-pepper-" + "q" * 40,
        "database_url": f"sqlite:///{tmp_path}/web.db",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(tmp_path: Path) -> SettingsFactory:
    """Settings for a test app; keyword arguments override single settings."""

    def make(**overrides: object) -> Settings:
        return make_web_settings(tmp_path, **overrides)

    return make


@pytest.fixture
def web_settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory()


@pytest.fixture
def web_app(web_settings: Settings) -> FastAPI:
    app = FastAPI()
    install_web(app, web_settings)
    return app


@pytest.fixture
def client(web_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(web_app) as test_client:
        yield test_client
