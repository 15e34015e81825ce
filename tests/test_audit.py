"""The audit chain: every action appends, nothing alters, tampering is named."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS
from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from tests.tamper import insert_staff_event, staff_rows, unguarded
from varsling import audit
from varsling.accounts import service as accounts
from varsling.accounts.models import Unit
from varsling.audit import AuditEvent, AuditHead, ReporterAuditEvent
from varsling.config import Settings
from varsling.db import in_transaction, make_sessionmaker


def _busy_case(client: TestClient, db: Session, settings: Settings) -> str:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "audun", roles=("auditor",))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    reporter = reporter_login(client, code)
    client.get("/api/v1/reporter/case", headers=reporter)
    client.post("/api/v1/reporter/case/messages", json={"body": "hello"}, headers=reporter)
    handler = login(client, "hanne")
    case_id: str = open_first_case(client, handler)
    client.get(f"/api/v1/cases/{case_id}", headers=handler)
    client.post(f"/api/v1/cases/{case_id}/messages", json={"body": "hi"}, headers=handler)
    client.post(f"/api/v1/cases/{case_id}/notes", json={"body": "n"}, headers=handler)
    client.post(f"/api/v1/cases/{case_id}/status", json={"status": "acknowledged"}, headers=handler)
    return case_id


def test_every_action_appends_an_event_in_order(
    client: TestClient, db: Session, settings: Settings
) -> None:
    case_id = _busy_case(client, db, settings)

    staff = list(db.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())
    reporter = list(
        db.execute(select(ReporterAuditEvent).order_by(ReporterAuditEvent.seq)).scalars()
    )

    assert [e.seq for e in staff] == list(range(1, len(staff) + 1))
    assert [e.seq for e in reporter] == list(range(1, len(reporter) + 1))
    staff_actions = [e.action for e in staff]
    for action in (
        "unit.created",
        "user.created",
        "user.login",
        "case.read",
        "case.message_sent",
        "case.note_added",
        "case.status_changed",
    ):
        assert action in staff_actions
    assert [e.action for e in reporter] == [
        "case.submitted",
        "reporter.login",
        "reporter.case_read",
        "reporter.message_sent",
    ]
    assert all(e.actor != audit.REPORTER for e in staff)
    assert all("T" in e.occurred for e in staff)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", e.day) for e in reporter)
    assert {e.case_id for e in staff if e.action.startswith("case.")} == {case_id}
    assert {e.case_id for e in reporter} == {case_id}
    result = audit.verify(db)
    assert result.ok
    assert [(c.chain, c.events) for c in result.chains] == [
        ("staff", len(staff)),
        ("reporter", len(reporter)),
    ]


def test_reporter_chain_rows_hold_nothing_finer_than_the_day(database_url: str) -> None:
    """No column of the reporter chain can carry a time or an order against staff events."""
    engine = create_engine(database_url)
    columns = {c["name"]: c for c in inspect(engine).get_columns("audit_reporter_events")}
    engine.dispose()
    assert set(columns) == {"seq", "day", "action", "case_id", "details", "hash"}
    assert "10" in str(columns["day"]["type"])


def test_database_refuses_update_and_delete_of_events(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "audun", roles=("auditor",))
    assert client.post("/api/v1/reports", json=report(unit.id)).status_code == 201
    checkpoint = client.post("/api/v1/audit/checkpoints", headers=login(client, "audun"))
    assert checkpoint.status_code == 201
    for table in ("audit_events", "audit_reporter_events", "audit_checkpoints"):
        assert db.scalar(text(f"SELECT count(*) FROM {table}"))
        for statement in (f"UPDATE {table} SET hash = 'x'", f"DELETE FROM {table}"):
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
    rows = [
        *db.execute(select(AuditEvent)).scalars(),
        *db.execute(select(ReporterAuditEvent)).scalars(),
    ]
    assert any(isinstance(r, ReporterAuditEvent) for r in rows)
    details = " ".join(r.details for r in rows)
    assert "hello" not in details
    assert "Something happened" not in details
    assert all(isinstance(json.loads(r.details), dict) for r in rows)


@pytest.mark.parametrize("head_id", [1, 2])
def test_a_missing_head_row_fails_verify_and_refuses_new_events(
    client: TestClient, db: Session, settings: Settings, head_id: int
) -> None:
    _busy_case(client, db, settings)
    assert audit.verify(db).ok
    with unguarded(db):
        db.execute(text("DELETE FROM audit_head WHERE id = :i"), {"i": head_id})

    result = audit.verify(db)

    assert not result.ok
    assert (result.chain, result.first_bad) == (("staff", "reporter")[head_id - 1], 1)
    assert "head" in result.reason
    audit.record(db, actor=("system", audit.REPORTER)[head_id - 1], action="unit.created")
    with pytest.raises(audit.AuditTrailBroken):
        db.commit()
    db.rollback()


def test_a_head_moved_back_over_the_tail_fails_verify(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """Hiding the last events by moving the head back (no DELETE needed) is noticed."""
    _busy_case(client, db, settings)
    rows = staff_rows(db)
    db.rollback()
    db.execute(
        text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
        {"s": rows[-3]["seq"], "h": rows[-3]["hash"]},
    )
    db.commit()

    result = audit.verify(db)

    assert (result.ok, result.chain, result.first_bad) == (False, "staff", rows[-2]["seq"])


def test_plain_inserts_past_the_head_fail_verify(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    rows = staff_rows(db)
    db.rollback()
    insert_staff_event(db, rows[-1]["hash"], rows[-1]["seq"] + 1, "user.created")
    db.commit()

    result = audit.verify(db)

    assert (result.ok, result.chain, result.first_bad) == (False, "staff", rows[-1]["seq"] + 1)
    assert "beyond" in result.reason


def test_events_are_appended_at_commit_and_dropped_by_a_rollback(
    db: Session, database_url: str
) -> None:
    audit.record(db, actor="system", action="unit.created")
    audit.record(db, actor=audit.REPORTER, action="case.submitted")
    # Nothing is locked, numbered or written until the transaction commits.
    assert db.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) == 0
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 0
    db.rollback()
    db.commit()
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 0
    assert db.scalar(select(func.count()).select_from(ReporterAuditEvent)) == 0

    audit.record(db, actor="system", action="unit.created")
    audit.record(db, actor=audit.REPORTER, action="case.submitted")
    db.commit()

    heads = {i: seq for i, seq in db.execute(select(AuditHead.id, AuditHead.seq))}
    assert heads == {1: 1, 2: 1}
    assert audit.verify(db).ok


def test_a_failed_action_leaves_no_event(engine: Engine, db: Session) -> None:
    """An action that fails after recording its event rolls the event back with it."""
    maker = make_sessionmaker(engine)

    def failing_action(session: Session) -> None:
        accounts.create_unit(session, name="Vestland")
        audit.record(session, actor=audit.REPORTER, action="case.submitted")
        raise RuntimeError("the action fails after its audit event was recorded")

    with pytest.raises(RuntimeError):
        in_transaction(maker, failing_action)

    assert db.scalar(select(func.count()).select_from(Unit)) == 0
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 0
    assert db.scalar(select(func.count()).select_from(ReporterAuditEvent)) == 0
    db.rollback()
    with maker.begin() as session:
        accounts.create_unit(session, name="Vestland")
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 1
    assert audit.verify(db).ok


def test_reporter_days_never_go_backwards(db: Session) -> None:
    later = dt.datetime(2026, 5, 2, 23, 59, tzinfo=dt.UTC)
    audit.record(db, actor=audit.REPORTER, action="reporter.login", now=later)
    db.commit()
    audit.record(db, actor=audit.REPORTER, action="reporter.login", now=later - dt.timedelta(1))
    db.commit()

    days = db.scalars(select(ReporterAuditEvent.day).order_by(ReporterAuditEvent.seq)).all()

    assert days == ["2026-05-02", "2026-05-02"]
    assert audit.verify(db).ok


def test_verify_answers_for_both_chains(
    client: TestClient, db: Session, settings: Settings
) -> None:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    audit.record(db, actor=audit.REPORTER, action="reporter.login", now=yesterday)
    db.commit()
    _busy_case(client, db, settings)
    auditor = login(client, "audun")

    body = client.get("/api/v1/audit/verify", headers=auditor).json()

    assert body["ok"] is True
    assert [c["chain"] for c in body["chains"]] == ["staff", "reporter"]
    # Today's four reporter events are walked but not counted out loud.
    assert body["chains"][1]["events"] == 1
    assert body["events"] == body["chains"][0]["events"] + 1
    assert audit.verify(db).chains[1].events == 5
    db.rollback()
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "audit.verified")).one()
    assert "staff_events" in json.loads(event.details)
    assert "events" not in json.loads(event.details)


def test_a_long_transaction_does_not_hold_the_chain_while_it_works(engine: Engine) -> None:
    """The head is locked only at commit: another action records and commits meanwhile."""
    maker = make_sessionmaker(engine)
    postgres = engine.dialect.name == "postgresql"
    with maker() as slow, maker() as quick:
        audit.record(slow, actor="user:1", action="case.file_downloaded")
        if postgres:
            # The slow action is mid-transaction (e.g. decrypting a download).
            assert slow.scalar(select(func.count()).select_from(AuditEvent)) == 0
            quick.execute(text("SET LOCAL lock_timeout = '2s'"))
        audit.record(quick, actor="user:2", action="case.read")
        quick.commit()
        slow.commit()

        rows = quick.execute(select(AuditEvent.seq, AuditEvent.actor).order_by(AuditEvent.seq))
        assert [tuple(r) for r in rows] == [(1, "user:2"), (2, "user:1")]
    with maker() as session:
        assert audit.verify(session).ok


def test_an_action_whose_event_cannot_be_appended_is_refused_as_json(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    with unguarded(db):
        db.execute(text("DELETE FROM audit_head WHERE id = 2"))

    response = client.post("/api/v1/reports", json=report(unit.id))

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "audit_trail_broken"
    assert "case_code" not in response.text
    db.rollback()
    assert db.scalar(text("SELECT count(*) FROM cases")) == 0


def test_events_queued_before_any_sql_are_dropped_by_rollback_and_close(db: Session) -> None:
    audit.record(db, actor="system", action="user.login_failed")
    db.rollback()
    audit.record(db, actor=audit.REPORTER, action="reporter.login")
    db.close()
    audit.record(db, actor="system", action="unit.created")
    db.commit()

    assert db.scalars(select(AuditEvent.action)).all() == ["unit.created"]
    assert db.scalar(select(func.count()).select_from(ReporterAuditEvent)) == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("UPDATE audit_events SET details = '{\"x\": 1}' WHERE seq = :s", "does not match"),
        ("UPDATE audit_events SET details = 'not json' WHERE seq = :s", "is malformed"),
        ("DELETE FROM audit_events WHERE seq = :s", "is missing"),
        ("UPDATE audit_reporter_events SET day = '2001-01-01' WHERE seq = :s", "does not match"),
    ],
)
def test_streaming_in_small_batches_finds_what_one_batch_finds(
    client: TestClient,
    db: Session,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
    reason: str,
) -> None:
    """verify() reads the chains a batch at a time; where a batch ends changes nothing."""
    _busy_case(client, db, settings)
    whole = audit.verify(db)
    monkeypatch.setattr(audit, "_WALK_BATCH", 2)
    assert audit.verify(db) == whole
    assert whole.ok
    with unguarded(db):
        db.execute(text(change), {"s": 3})
    monkeypatch.setattr(audit, "_WALK_BATCH", 5000)
    in_one = audit.verify(db)
    monkeypatch.setattr(audit, "_WALK_BATCH", 2)
    in_pairs = audit.verify(db)
    assert in_pairs == in_one
    assert (in_one.ok, in_one.first_bad) == (False, 3)
    assert reason in in_one.reason
