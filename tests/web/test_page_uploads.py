"""Big bodies on the reporter pages: files are dropped, what was typed is shown again."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import make_unit, make_user
from varsling.app import create_app
from varsling.cases.models import Attachment, Case
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD

TOKEN = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')


@pytest.fixture
def small_site(database_url: str, db: Session) -> Iterator[tuple[TestClient, int]]:
    """Limits small enough to pass them cheaply: 1 kB JSON, 1 file of 1000 bytes."""
    settings = make_settings(
        database_url, max_body_bytes=1024, max_file_bytes=1000, max_files_per_report=1
    )
    unit = make_unit(db, "Sentralt")
    make_user(db, settings, "nina", units=(unit.id,))
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, unit.id
    app.state.engine.dispose()


def _fields(client: TestClient, unit_id: int, **overrides: str) -> dict[str, str]:
    page = client.get(f"/nb/report?unit={unit_id}").text
    token = TOKEN.search(page)
    assert token is not None
    return {
        CSRF_FIELD: html.unescape(token.group(1)),
        "unit": str(unit_id),
        "destination": "unit",
        "category": "harassment",
        "description": "Det skjedde på årsmøtet i mars.",
        "witnesses": "Per og Pål",
        **overrides,
    }


def _stored(db: Session) -> tuple[int, int]:
    db.rollback()
    return (
        db.scalar(select(func.count()).select_from(Case)) or 0,
        db.scalar(select(func.count()).select_from(Attachment)) or 0,
    )


def test_files_past_every_limit_keep_the_text_and_store_nothing(
    small_site: tuple[TestClient, int], db: Session
) -> None:
    client, unit_id = small_site
    files = [("files", (f"bilde{n}.jpg", b"x" * 1500, "image/jpeg")) for n in range(3)]

    response = client.post("/nb/report", data=_fields(client, unit_id), files=files)

    # The body is over the upload limit of the API, but the page answers itself.
    assert response.status_code == 422
    assert "text/html" in response.headers["content-type"]
    assert "Det skjedde på årsmøtet i mars." in response.text
    assert "Per og Pål" in response.text
    assert "bilde0.jpg" in response.text
    assert _stored(db) == (0, 0)


def test_a_text_far_over_the_limit_is_shown_again_not_lost(db: Session, settings: Settings) -> None:
    unit = make_unit(db, "Sentralt")
    make_user(db, settings, "nina", units=(unit.id,))
    long_text = "Først dette. " + "og så videre " * 12_000  # about 156 kB, over the field cap
    app = create_app(settings)
    with TestClient(app) as client:
        response = client.post(
            "/nb/report",
            data=_fields(client, unit.id, description=long_text),
            files=[("files", ("", b"", "application/octet-stream"))],
        )
    app.state.engine.dispose()

    assert response.status_code == 422
    assert "Først dette. og så videre" in response.text
    assert "Per og Pål" in response.text
    assert _stored(db) == (0, 0)


def test_the_api_keeps_its_own_limit_and_a_413_carries_the_security_headers(
    small_site: tuple[TestClient, int],
) -> None:
    client, _ = small_site
    response = client.post(
        "/api/v1/reports",
        content=b"{" + b" " * 5000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_a_unit_nobody_can_receive_for_says_so_and_keeps_the_text(
    db: Session, settings: Settings
) -> None:
    unit = make_unit(db, "Sentralt")
    app = create_app(settings)
    with TestClient(app) as client:
        response = client.post(
            "/nb/report",
            data=_fields(client, unit.id),
            files=[("files", ("", b"", "application/octet-stream"))],
        )
    app.state.engine.dispose()

    assert response.status_code == 422
    assert "Ingen kan ta imot varsler her ennå" in response.text
    assert "Per og Pål" in response.text
    assert _stored(db) == (0, 0)
