"""The audit chain: every action appends, nothing alters, tampering is named."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS
from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling import audit
from varsling.audit import AuditEvent
from varsling.config import Settings


def _busy_case(client: TestClient, db: Session, settings: Settings) -> str:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "audun", roles=("auditor",))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    reporter = reporter_login(client, code)
    client.get("/api/v1/reporter/case", headers=reporter)
    client.post("/api/v1/reporter/case/messages", json={"body": "hello"}, headers=reporter)
    handler = login(client, "hanne")
    case_id: str = client.get("/api/v1/cases", headers=handler).json()["items"][0]["id"]
    client.get(f"/api/v1/cases/{case_id}", headers=handler)
    client.post(f"/api/v1/cases/{case_id}/messages", json={"body": "hi"}, headers=handler)
    client.post(f"/api/v1/cases/{case_id}/notes", json={"body": "n"}, headers=handler)
    client.post(f"/api/v1/cases/{case_id}/status", json={"status": "acknowledged"}, headers=handler)
    return case_id


def test_every_action_appends_an_event_in_order(
    client: TestClient, db: Session, settings: Settings
) -> None:
    case_id = _busy_case(client, db, settings)

    events = list(db.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    actions = [e.action for e in events]
    for action in (
        "unit.created",
        "user.created",
        "case.submitted",
        "reporter.login",
        "reporter.case_read",
        "reporter.message_sent",
        "user.login",
        "case.read",
        "case.message_sent",
        "case.note_added",
        "case.status_changed",
    ):
        assert action in actions
    for event in events:
        if event.actor == audit.REPORTER:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", event.occurred), event.occurred
        else:
            assert "T" in event.occurred
    assert {e.case_id for e in events if e.action.startswith(("case.", "reporter."))} == {case_id}
    assert audit.verify(db).ok


def test_database_refuses_update_and_delete_of_events(
    client: TestClient, db: Session, settings: Settings
) -> None:
    make_unit(db)
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(text(statement))
        db.rollback()
    assert audit.verify(db).ok


def _tamper(db: Session, seq: int) -> None:
    """Change one event behind the app's back, past the triggers."""
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        db.execute(text("DROP TRIGGER audit_events_no_update"))
        db.execute(
            text("UPDATE audit_events SET details = '{\"x\": 1}' WHERE seq = :s"), {"s": seq}
        )
        db.execute(
            text(
                "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
            )
        )
    else:
        db.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update"))
        db.execute(
            text("UPDATE audit_events SET details = '{\"x\": 1}' WHERE seq = :s"), {"s": seq}
        )
        db.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update"))
    db.commit()


def test_changed_row_is_named_by_api_and_cli(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    auditor = login(client, "audun")
    assert client.get("/api/v1/audit/verify", headers=auditor).json()["ok"] is True

    _tamper(db, 5)

    result = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert result["ok"] is False
    assert result["first_bad"] == 5
    assert result["events"] >= 5
    env = {
        **os.environ,
        "VARSLING_DATABASE_URL": settings.database_url,
        "VARSLING_SECRETS_FILE": "/nonexistent",
        **{f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()},
    }
    cli = subprocess.run(
        [sys.executable, "-m", "varsling.cli", "audit", "verify"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert cli.returncode == 1
    assert "sequence number 5" in cli.stderr


def test_verify_is_for_auditors_only(client: TestClient, db: Session, settings: Settings) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    assert client.get("/api/v1/audit/verify").status_code == 401
    response = client.get("/api/v1/audit/verify", headers=login(client, "hanne"))
    assert response.status_code == 403


def test_removed_tail_event_is_detected(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    last = db.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        db.execute(text("DROP TRIGGER audit_events_no_delete"))
    else:
        db.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_delete"))
    db.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": last})
    db.commit()

    result = audit.verify(db)

    assert (result.ok, result.first_bad) == (False, last)


def test_events_hold_no_content(client: TestClient, db: Session, settings: Settings) -> None:
    _busy_case(client, db, settings)
    details = " ".join(e.details for e in db.execute(select(AuditEvent)).scalars())
    assert "hello" not in details
    assert "Something happened" not in details
    assert all(
        isinstance(json.loads(e.details), dict) for e in db.execute(select(AuditEvent)).scalars()
    )
