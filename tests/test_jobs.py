"""`varsling jobs run`: each check-in, flag and deletion once, also with two runs at once."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS
from tests.factories import login, make_unit, make_user, open_first_case, report
from varsling import audit, jobs
from varsling.accounts.models import LoginSession
from varsling.accounts.service import utcnow
from varsling.cases.models import Case, CheckIn, OverdueFlag, Status
from varsling.cases.service import acknowledgement_due, add_months, feedback_due
from varsling.config import Settings
from varsling.db import make_sessionmaker


def _bare_case(
    unit_id: int,
    *,
    received_on: dt.date,
    status: Status = Status.RECEIVED,
    concluded_on: dt.date | None = None,
    closed_on: dt.date | None = None,
) -> dict[str, Any]:
    """A case row alone (no content, no keys): what the jobs look at."""
    acknowledged_on = received_on + dt.timedelta(days=1) if status != Status.RECEIVED else None
    return {
        "id": uuid.uuid4().hex,
        "unit_id": unit_id,
        "status": status.value,
        "category": "other",
        "received_on": received_on,
        "acknowledged_on": acknowledged_on,
        "concluded_on": concluded_on,
        "closed_on": closed_on,
        "acknowledgement_due": acknowledgement_due(received_on),
        "feedback_due": feedback_due(received_on, acknowledged_on),
    }


def _add_cases(engine: Engine, rows: list[dict[str, Any]]) -> list[str]:
    with make_sessionmaker(engine).begin() as session:
        session.execute(insert(Case), rows)
    return [r["id"] for r in rows]


def _count(db: Session, model: Any) -> int:
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


def _events(db: Session, action: str) -> list[audit.AuditEvent]:
    query = select(audit.AuditEvent).where(audit.AuditEvent.action == action)
    return list(db.execute(query.order_by(audit.AuditEvent.seq)).scalars())


def test_checkins_go_out_once_per_round_after_concluding(
    db: Session, engine: Engine, settings: Settings
) -> None:
    unit = make_unit(db)
    concluded_on = dt.date(2026, 1, 31)
    received_on = dt.date(2025, 12, 1)
    concluded, open_case, late = _add_cases(
        engine,
        [
            _bare_case(
                unit.id, received_on=received_on, status=Status.CONCLUDED, concluded_on=concluded_on
            ),
            _bare_case(unit.id, received_on=received_on, status=Status.INVESTIGATING),
            _bare_case(unit.id, received_on=received_on, status=Status.INVESTIGATING),
        ],
    )
    maker = make_sessionmaker(engine)

    def send(today: dt.date) -> int:
        with maker.begin() as session:
            return jobs.send_due_checkins(session, settings, today)

    assert send(dt.date(2026, 2, 27)) == 0  # not a month yet
    assert send(dt.date(2026, 2, 28)) == 1  # a month after 31 January
    assert send(dt.date(2026, 3, 30)) == 0
    # A case closed (as concluded on 31 January) while no run saw it missed rounds 1
    # and 3: only the latest goes.
    with maker.begin() as session:
        session.execute(
            update(Case)
            .where(Case.id == late)
            .values(status=Status.CLOSED.value, concluded_on=concluded_on, closed_on=concluded_on)
        )
    assert send(dt.date(2026, 5, 1)) == 2
    assert send(dt.date(2026, 5, 1)) == 0

    sent = {(c.case_id, c.round): c.sent_on for c in db.execute(select(CheckIn)).scalars()}
    assert sent == {
        (concluded, 1): dt.date(2026, 2, 28),
        (concluded, 3): dt.date(2026, 5, 1),
        (late, 3): dt.date(2026, 5, 1),
    }
    assert not any(case_id == open_case for case_id, _ in sent)
    events = _events(db, "checkin.sent")
    assert [(e.case_id, json.loads(e.details)) for e in events] == [
        (concluded, {"round": 1}),
        *sorted([(concluded, {"round": 3}), (late, {"round": 3})], key=lambda p: p[0]),
    ]
    assert all(e.actor == audit.SYSTEM for e in events)


def test_overdue_deadlines_are_flagged_once(
    db: Session, engine: Engine, settings: Settings
) -> None:
    unit = make_unit(db)
    received_on = dt.date(2026, 1, 5)
    silent, acknowledged, fresh = _add_cases(
        engine,
        [
            _bare_case(unit.id, received_on=received_on),
            _bare_case(unit.id, received_on=received_on, status=Status.ACKNOWLEDGED),
            _bare_case(unit.id, received_on=dt.date(2026, 5, 1)),
        ],
    )
    maker = make_sessionmaker(engine)
    today = dt.date(2026, 5, 2)

    for expected in (3, 0):
        with maker.begin() as session:
            assert jobs.flag_overdue(session, settings, today) == expected

    flags = {(f.case_id, f.deadline) for f in db.execute(select(OverdueFlag)).scalars()}
    assert flags == {
        (silent, "acknowledgement"),
        (silent, "feedback"),
        (acknowledged, "feedback"),
    }
    assert fresh not in {case_id for case_id, _ in flags}
    assert sorted(
        (e.case_id, json.loads(e.details)["deadline"]) for e in _events(db, "case.overdue_flagged")
    ) == sorted(flags)


def test_a_second_run_changes_nothing(
    client: TestClient, db: Session, engine: Engine, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    client.post("/api/v1/reports", json=report(unit.id))
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    now = utcnow()
    today = now.date()
    _add_cases(
        engine,
        [
            _bare_case(unit.id, received_on=dt.date(2025, 1, 6)),
            _bare_case(
                unit.id,
                received_on=dt.date(2025, 1, 6),
                status=Status.CLOSED,
                concluded_on=add_months(today, -3),
                closed_on=add_months(today, -3),
            ),
        ],
    )
    with make_sessionmaker(engine).begin() as session:
        session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(
                status=Status.CONCLUDED.value,
                acknowledged_on=today,
                concluded_on=add_months(today, -1),
            )
        )
        session.execute(update(LoginSession).values(expires_at=now - dt.timedelta(minutes=1)))
    maker = make_sessionmaker(engine)
    lines: list[str] = []

    first = jobs.run(maker, settings, now=now, report=lines.append)
    tables = {m.__tablename__: _count(db, m) for m in (Case, CheckIn, OverdueFlag, LoginSession)}
    events = _count(db, audit.AuditEvent)
    db.rollback()
    second = jobs.run(maker, settings, now=now)

    # Check-ins: the concluded case (round 1) and the closed one (round 3), before deletion.
    assert first == {
        "checkins": 2,
        "overdue": 2,
        "retention": 1,
        "sessions": 1,
        "notifications": 0,
    }
    assert lines == [
        "Check-ins: sent 2.",
        "Overdue: flagged 2 passed deadlines.",
        "Retention: deleted 1 closed cases.",
        "Sessions: removed 1 expired.",
        # Off (no VARSLING_SMTP_HOST): tests/test_notifications.py has them on.
        "Notifications: sent 0 mails (0 notices); 0 skipped (no email), 0 kept for retry, "
        "0 given up.",
    ]
    assert second == {
        "checkins": 0,
        "overdue": 0,
        "retention": 0,
        "sessions": 0,
        "notifications": 0,
    }
    assert {m.__tablename__: _count(db, m) for m in (Case, CheckIn, OverdueFlag)} == {
        k: v for k, v in tables.items() if k != LoginSession.__tablename__
    }
    assert _count(db, audit.AuditEvent) == events
    assert audit.verify(db).ok


def _env(database_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")},
        "VARSLING_DATABASE_URL": database_url,
        "VARSLING_SECRETS_FILE": "/nonexistent",
        **{f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()},
    }


def _start_jobs(database_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "varsling", "jobs", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(database_url),
    )


def _counts(stdout: str) -> dict[str, int]:
    """The number in each summary line, by its first word."""
    found = {}
    for line in stdout.splitlines():
        head, _, rest = line.partition(":")
        found[head] = int(re.findall(r"\d+", rest)[0])
    return found


def test_two_runs_at_once_send_each_checkin_and_delete_each_case_once(
    db: Session, engine: Engine, database_url: str
) -> None:
    unit = make_unit(db)
    today = utcnow().date()
    concluded_long_ago = add_months(today, -13)
    closed_on = add_months(today, -3)
    received_on = add_months(today, -14)
    concluded = _add_cases(
        engine,
        [
            _bare_case(
                unit.id,
                received_on=received_on,
                status=Status.CONCLUDED,
                concluded_on=concluded_long_ago,
            )
            for _ in range(200)
        ],
    )
    closed = _add_cases(
        engine,
        [
            _bare_case(
                unit.id,
                received_on=received_on,
                status=Status.CLOSED,
                concluded_on=closed_on,
                closed_on=closed_on,
            )
            for _ in range(100)
        ],
    )

    runs = [_start_jobs(database_url), _start_jobs(database_url)]
    outputs = [run.communicate(timeout=300) for run in runs]

    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
        assert list(_counts(stdout)) == [
            "Check-ins",
            "Overdue",
            "Retention",
            "Sessions",
            "Notifications",
        ]
    totals = [_counts(stdout) for stdout, _ in outputs]
    assert sum(t["Check-ins"] for t in totals) == 300
    assert sum(t["Retention"] for t in totals) == 100
    checkins = [(e.case_id, json.loads(e.details)["round"]) for e in _events(db, "checkin.sent")]
    assert sorted(checkins) == sorted([(c, 12) for c in concluded] + [(c, 3) for c in closed])
    rows = db.execute(select(CheckIn.case_id, CheckIn.round)).all()
    assert sorted(map(tuple, rows)) == sorted((c, 12) for c in concluded)
    deleted = [e.case_id for e in _events(db, "case.deleted")]
    assert sorted(deleted) == sorted(closed)
    assert set(db.execute(select(Case.id)).scalars()) == set(concluded)
    assert audit.verify(db).ok
    db.rollback()

    again = _start_jobs(database_url)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert _counts(stdout) == {
        "Check-ins": 0,
        "Overdue": 0,
        "Retention": 0,
        "Sessions": 0,
        "Notifications": 0,
    }


def test_a_case_being_deleted_gets_no_checkin_or_flag_and_blocks_nothing(
    db: Session, engine: Engine, settings: Settings
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite lets one writer in at a time: nothing runs beside a deletion")
    unit = make_unit(db)
    today = utcnow().date()
    case_ids = _add_cases(
        engine,
        [
            _bare_case(
                unit.id,
                received_on=add_months(today, -14),
                status=Status.CONCLUDED,
                concluded_on=add_months(today, -13),
            ),
            _bare_case(unit.id, received_on=add_months(today, -14)),
        ],
    )
    maker = make_sessionmaker(engine)
    with maker() as deleter:
        # Deletions under way: the case rows locked, their rows going.
        deleter.execute(select(Case).where(Case.id.in_(case_ids)).with_for_update())
        with maker.begin() as session:
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            assert jobs.send_due_checkins(session, settings, today) == 0
            assert jobs.flag_overdue(session, settings, today) == 0
        deleter.rollback()

    with maker.begin() as session:
        assert jobs.send_due_checkins(session, settings, today) == 1
        assert jobs.flag_overdue(session, settings, today) == 2
