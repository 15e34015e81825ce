"""Helpers that play a database writer: change the audit tables behind the app's back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from varsling.audit_chain import GENESIS_HASH, chain_hash, reporter_fields, staff_fields

AUDIT_TABLES = ("audit_events", "audit_reporter_events", "audit_checkpoints")
_APPEND_ONLY = "audit events are append-only"


@contextmanager
def unguarded(db: Session) -> Iterator[None]:
    """The owner's powers: the append-only triggers are off until the block commits."""
    if db.get_bind().dialect.name == "postgresql":
        for table in AUDIT_TABLES:
            db.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        yield
        for table in AUDIT_TABLES:
            db.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        db.commit()
        return
    for table in AUDIT_TABLES:
        for verb in ("update", "delete"):
            db.execute(text(f"DROP TRIGGER {table}_no_{verb}"))
    yield
    for table in AUDIT_TABLES:
        for verb in ("update", "delete"):
            db.execute(
                text(
                    f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
                )
            )
    db.commit()


def staff_rows(db: Session) -> list[dict[str, Any]]:
    rows = db.execute(text("SELECT * FROM audit_events ORDER BY seq")).mappings()
    return [dict(r) for r in rows]


def insert_staff_event(db: Session, previous: str, seq: int, action: str) -> str:
    """A forged staff event, correctly chained onto `previous`; returns its hash."""
    fields = staff_fields(
        seq=seq,
        occurred="2026-01-01T00:00:00+00:00",
        actor="system",
        action=action,
        case_id=None,
        details={},
    )
    digest = chain_hash(previous, fields)
    db.execute(
        text(
            "INSERT INTO audit_events (seq, occurred, actor, action, case_id, details, hash) "
            "VALUES (:seq, :occurred, 'system', :action, NULL, '{}', :hash)"
        ),
        {"seq": seq, "occurred": fields["occurred"], "action": action, "hash": digest},
    )
    return digest


def rewrite_from_scratch(db: Session) -> None:
    """Delete both chains and write a plausible history of our own, heads and all."""
    with unguarded(db):
        db.execute(text("DELETE FROM audit_events"))
        db.execute(text("DELETE FROM audit_reporter_events"))
        previous = GENESIS_HASH
        for seq in (1, 2):
            previous = insert_staff_event(db, previous, seq, "unit.created")
        db.execute(text("UPDATE audit_head SET seq = 2, hash = :h WHERE id = 1"), {"h": previous})
        fields = reporter_fields(
            seq=1, day="2026-01-01", action="case.submitted", case_id=None, details={}
        )
        digest = chain_hash(GENESIS_HASH, fields)
        db.execute(
            text(
                "INSERT INTO audit_reporter_events (seq, day, action, case_id, details, hash) "
                "VALUES (1, '2026-01-01', 'case.submitted', NULL, :d, :h)"
            ),
            {"d": json.dumps({}), "h": digest},
        )
        db.execute(text("UPDATE audit_head SET seq = 1, hash = :h WHERE id = 2"), {"h": digest})
