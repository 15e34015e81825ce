"""Flood limits: anonymous reports and uploads, counted for the whole installation."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import make_unit, make_user, report, reporter_login
from tests.web.test_case_pages import logged_in, send
from tests.web.test_page_uploads import _fields
from varsling import crypto
from varsling.app import create_app
from varsling.cases.models import Attachment, Case
from varsling.config import Settings
from varsling.errors import SubmissionsBusy
from varsling.throttle import Flood, FloodCounter, claim_flood_slot


def _count(db: Session, model: type[Case] | type[Attachment]) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def limited(database_url: str, db: Session) -> Iterator[tuple[Settings, int, list[FastAPI]]]:
    """Two reports and two uploads a minute; apps made from it are disposed of at the end."""
    settings = make_settings(database_url, submissions_per_minute=2, uploads_per_minute=2)
    unit = make_unit(db, "Sentralt")
    make_user(db, settings, "nina", units=(unit.id,))
    apps: list[FastAPI] = []
    yield settings, unit.id, apps
    for app in apps:
        app.state.engine.dispose()


def _app(limited: tuple[Settings, int, list[FastAPI]]) -> FastAPI:
    settings, _, apps = limited
    app = create_app(settings)
    apps.append(app)
    return app


def test_reports_over_the_limit_get_429_with_retry_after_and_store_nothing(
    limited: tuple[Settings, int, list[FastAPI]], db: Session
) -> None:
    _, unit_id, _ = limited
    with TestClient(_app(limited)) as client:
        accepted = [client.post("/api/v1/reports", json=report(unit_id)) for _ in range(2)]
        refused = client.post("/api/v1/reports", json=report(unit_id))

    assert [r.status_code for r in accepted] == [201, 201]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "submissions_busy"
    assert "nothing was stored" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert _count(db, Case) == 2


def test_the_limit_is_shared_by_two_app_instances_on_one_database(
    limited: tuple[Settings, int, list[FastAPI]], db: Session
) -> None:
    _, unit_id, _ = limited
    with TestClient(_app(limited)) as first, TestClient(_app(limited)) as second:
        answers = [
            first.post("/api/v1/reports", json=report(unit_id)).status_code,
            second.post("/api/v1/reports", json=report(unit_id)).status_code,
            first.post("/api/v1/reports", json=report(unit_id)).status_code,
            second.post("/api/v1/reports", json=report(unit_id)).status_code,
        ]
    assert answers == [201, 201, 429, 429]
    assert _count(db, Case) == 2


def test_a_refused_report_does_not_count_and_the_next_minute_opens_again(
    limited: tuple[Settings, int, list[FastAPI]], db: Session
) -> None:
    settings, unit_id, _ = limited
    with TestClient(_app(limited)) as client:
        invalid = client.post("/api/v1/reports", json=report(unit_id, category="nonsense"))
        accepted = [client.post("/api/v1/reports", json=report(unit_id)) for _ in range(2)]
    assert invalid.status_code == 422
    assert [r.status_code for r in accepted] == [201, 201]

    db.rollback()
    with pytest.raises(SubmissionsBusy):
        claim_flood_slot(db, settings, Flood.SUBMISSION)
    db.rollback()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    claim_flood_slot(db, settings, Flood.SUBMISSION, now=later)
    db.commit()


def test_the_form_over_the_limit_keeps_the_text_says_why_and_stores_nothing(
    limited: tuple[Settings, int, list[FastAPI]], db: Session
) -> None:
    _, unit_id, _ = limited
    empty_file = [("files", ("", b"", "application/octet-stream"))]
    with TestClient(_app(limited)) as client:
        for _ in range(2):
            sent = client.post("/api/v1/reports", json=report(unit_id))
            assert sent.status_code == 201
        pages = {
            language: client.post(
                f"/{language}/report",
                data=_fields(client, unit_id, description=f"Det som skjedde ({language})"),
                files=empty_file,
            )
            for language in ("nb", "nn", "en")
        }

    for language, page in pages.items():
        assert page.status_code == 429
        assert 1 <= int(page.headers["Retry-After"]) <= 60
        assert "text/html" in page.headers["content-type"]
        assert f"Det som skjedde ({language})</textarea>" in page.text
        assert "Per og Pål" in page.text
    assert "Uvanleg mange" in pages["nn"].text
    assert "Uvanlig mange" in pages["nb"].text
    assert "Unusually many reports" in pages["en"].text
    assert _count(db, Case) == 2


def test_uploads_over_the_limit_get_429_and_store_nothing(
    limited: tuple[Settings, int, list[FastAPI]], db: Session
) -> None:
    _, unit_id, _ = limited
    with TestClient(_app(limited)) as client:
        code = client.post("/api/v1/reports", json=report(unit_id)).json()["case_code"]
        headers = reporter_login(client, code)
        answers = [
            client.post(
                "/api/v1/reporter/case/files",
                files=[("files", (f"bilde{n}.jpg", b"jpeg bytes", "image/jpeg"))],
                headers=headers,
            )
            for n in range(3)
        ]
        # The case page counts its uploads with the API's.
        logged_in(client, code)
        page = send(client, "/case/messages", body="Teksten min", files=[("liten.txt", b"ok")])

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["error"]["code"] == "uploads_busy"
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    assert page.status_code == 429
    assert ">Teksten min</textarea>" in page.text
    assert "Uvanlig mange filer" in page.text
    assert _count(db, Attachment) == 2


def test_the_case_codes_argon2id_runs_while_nobody_waits_on_a_lock(
    limited: tuple[Settings, int, list[FastAPI]],
    db: Session,
    engine: Engine,
    database: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a submission (API and form) stretches its case code, another writer can
    take SQLite's write lock at once, and the flood slot's row on PostgreSQL is free:
    nobody else's report waits for this one's Argon2id. Before, the slot was counted
    in the storing transaction and both were held for the whole stretch."""
    _, unit_id, _ = limited
    probes: list[str] = []
    stretch = crypto.derive_case_code

    def probe(*args: Any, **kwargs: Any) -> crypto.CaseCodeSecrets:
        if database.kind == "sqlite":
            # The write lock at once, or "database is locked".
            other = sqlite3.connect(engine.url.database or "", timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
            finally:
                other.close()
        else:
            with engine.connect() as connection:
                connection.exec_driver_sql("SET lock_timeout = '100ms'")
                row = select(FloodCounter).where(FloodCounter.name == Flood.SUBMISSION.value)
                connection.execute(row.with_for_update()).all()
                connection.rollback()
        probes.append("free")
        return stretch(*args, **kwargs)

    monkeypatch.setattr(crypto, "derive_case_code", probe)
    with TestClient(_app(limited)) as client:
        sent = client.post("/api/v1/reports", json=report(unit_id))
        page = client.post(
            "/en/report",
            data=_fields(client, unit_id, description="What happened"),
            files=[("files", ("", b"", "application/octet-stream"))],
        )
    assert sent.status_code == 201, sent.text
    assert page.status_code == 200, page.text
    assert probes == ["free", "free"]
    assert _count(db, Case) == 2
