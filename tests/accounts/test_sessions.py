"""Staff sessions: logout and expiry end access; a staff token is no reporter token."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user
from varsling.accounts.models import LoginSession
from varsling.config import Settings


def test_logout_ends_the_session(client: TestClient, db: Session, settings: Settings) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    headers = login(client, "hanne")
    assert client.get("/api/v1/cases", headers=headers).status_code == 200

    assert client.delete("/api/v1/sessions/current", headers=headers).status_code == 204

    assert client.get("/api/v1/cases", headers=headers).status_code == 401


def test_an_expired_session_is_refused(client: TestClient, db: Session, settings: Settings) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    headers = login(client, "hanne")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    db.execute(update(LoginSession).values(expires_at=past))
    db.commit()

    response = client.get("/api/v1/cases", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_staff_token_opens_no_reporter_inbox(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    assert client.get("/api/v1/reporter/case", headers=login(client, "hanne")).status_code == 401
