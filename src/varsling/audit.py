"""Append-only, hash-chained audit trail: record() in the action's transaction, verify()."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from varsling.crypto import sha256
from varsling.db import Base

GENESIS_HASH = "0" * 64
REPORTER = "reporter"
SYSTEM = "system"


class AuditEvent(Base):
    """One event. The database refuses UPDATE and DELETE on this table (triggers)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    occurred: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(60), index=True)
    # No foreign key: the trail outlives a deleted case.
    case_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's last sequence number and hash; locked while appending."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


def _canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _event_hash(previous: str, fields: dict[str, Any]) -> str:
    return sha256(bytes.fromhex(previous) + _canonical(fields)).hex()


def _fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "occurred": event.occurred,
        "actor": event.actor,
        "action": event.action,
        "case_id": event.case_id,
        "details": json.loads(event.details),
    }


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    case_id: str | None = None,
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> AuditEvent:
    """Append an event in the caller's transaction.

    Reporter events carry the day only, never the time of day. Details must
    be metadata (ids, statuses, counts), never content, identities or codes.
    """
    moment = now or dt.datetime.now(dt.UTC)
    occurred = (
        moment.date().isoformat()
        if actor == REPORTER
        else moment.replace(microsecond=0).isoformat()
    )
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        session.add(head)
    event = AuditEvent(
        seq=head.seq + 1,
        occurred=occurred,
        actor=actor,
        action=action,
        case_id=case_id,
        details=json.dumps(details or {}, sort_keys=True),
    )
    event.hash = _event_hash(head.hash, _fields(event))
    head.seq, head.hash = event.seq, event.hash
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None


def verify(session: Session) -> Verification:
    """Walk the chain; name the first sequence number whose event does not check out.

    A gap (a removed event), a changed event, a reordering, or a chain that
    ends before the recorded head all break it.
    """
    # Read the head first and walk only up to it: events appended by others
    # while we walk (PostgreSQL reads each statement afresh) are not ours to judge.
    head = session.get(AuditHead, 1)
    last = head.seq if head is not None else None
    previous = GENESIS_HASH
    expected_seq = 1
    count = 0
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if last is not None:
        query = query.where(AuditEvent.seq <= last)
    rows = session.execute(query).scalars()
    for event in rows:
        count += 1
        try:
            fields = _fields(event)
        except (ValueError, TypeError):
            return Verification(False, count, event.seq)
        if event.seq != expected_seq:
            return Verification(False, count, expected_seq)
        if _event_hash(previous, fields) != event.hash:
            return Verification(False, count, event.seq)
        previous = event.hash
        expected_seq += 1
    if head is not None and (head.seq != expected_seq - 1 or head.hash != previous):
        return Verification(False, count, expected_seq)
    return Verification(True, count, None)
