"""Staff sessions: logout and expiry end access; a staff token is no reporter token."""

from __future__ import annotations

import datetime as dt
import json
import os

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling.accounts import service as accounts
from varsling.accounts.models import LoginSession, ReporterSession
from varsling.audit import AuditEvent
from varsling.cases.models import Case
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


def _expired_session(
    db: Session, *, user_id: int | None = None, case_id: str | None = None
) -> bytes:
    """A session row that ran out yesterday, left behind by a browser that never logged out."""
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    row: LoginSession | ReporterSession
    if case_id is not None:
        row = ReporterSession(
            token_lookup=os.urandom(32),
            case_id=case_id,
            sealed_secret=b"sealed",
            purge_on=yesterday.date(),
        )
    else:
        assert user_id is not None
        row = LoginSession(
            token_lookup=os.urandom(32),
            user_id=user_id,
            sealed_secret=b"sealed",
            expires_at=yesterday,
            idle_until=yesterday,
        )
    db.add(row)
    db.commit()
    return row.token_lookup


def _sessions(db: Session) -> set[bytes]:
    db.rollback()
    staff = set(db.scalars(select(LoginSession.token_lookup)))
    return staff | set(db.scalars(select(ReporterSession.token_lookup)))


def test_a_staff_login_purges_expired_sessions(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    assert client.post("/api/v1/reports", json=report(unit.id)).status_code == 201
    case_id = db.scalars(select(Case.id)).one()
    stale = {_expired_session(db, user_id=hanne.id), _expired_session(db, case_id=case_id)}

    live = login(client, "hanne")

    assert client.get("/api/v1/cases", headers=live).status_code == 200
    remaining = _sessions(db)
    assert not stale & remaining
    assert len(remaining) == 1


def test_a_reporter_login_purges_expired_sessions(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    stale = _expired_session(db, user_id=hanne.id)

    reporter_login(client, code)

    remaining = _sessions(db)
    assert stale not in remaining
    assert len(remaining) == 1


def test_sessions_purge_removes_expired_ones_and_is_audited(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    live = login(client, "hanne")
    stale = {_expired_session(db, user_id=hanne.id) for _ in range(3)}

    removed = accounts.purge_sessions(db)
    db.commit()

    assert removed == 3
    assert not stale & _sessions(db)
    assert client.get("/api/v1/cases", headers=live).status_code == 200
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "sessions.purged")).one()
    assert (event.actor, json.loads(event.details)) == ("system", {"count": 3})
