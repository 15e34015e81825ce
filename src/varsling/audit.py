"""Append-only, hash-chained audit trail: record(), verify(), checkpoints and export.

Two chains, each with its own sequence and head row: staff and system events
(with seconds) and reporter events (with the day only), so a reporter event's
place never reveals its time of day. record() only queues an event; the
queue is appended just before the transaction commits (head locked, seq and
hash computed, rows inserted), so long work in the transaction does not hold
the chain's lock, and a rollback drops the events with the action.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, Result, String, Text, event, func, select
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from varsling import crypto
from varsling.audit_chain import (
    GENESIS_HASH,
    REPORTER_CHAIN,
    STAFF_CHAIN,
    Checkpoint,
    chain_hash,
    checkpoint_line,
    export_line,
    reporter_event_bytes,
    reporter_fields,
    sign_checkpoint,
    staff_event_bytes,
    staff_fields,
)
from varsling.db import Base
from varsling.errors import Conflict, VarslingError

__all__ = ["GENESIS_HASH", "REPORTER", "SYSTEM", "Checkpoint"]

REPORTER = "reporter"
SYSTEM = "system"
STAFF_HEAD = 1
REPORTER_HEAD = 2
_PENDING = "varsling.audit.pending"
# Rows read at a time when exporting a chain, and when verifying one.
_BATCH = 1000
_WALK_BATCH = 5000


class AuditEvent(Base):
    """One staff-chain event. The database refuses UPDATE and DELETE on this table."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    occurred: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(60), index=True)
    # No foreign key: the trail outlives a deleted case.
    case_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))


class ReporterAuditEvent(Base):
    """One reporter-chain event: the day only, no time, no actor beyond "reporter"."""

    __tablename__ = "audit_reporter_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    day: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(60), index=True)
    case_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A chain's last sequence number and hash (id 1: staff, 2: reporter); locked to append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed checkpoint as issued; the auditor keeps a copy outside the database."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    reporter_seq: Mapped[int] = mapped_column(Integer)
    reporter_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(100))
    key_fingerprint: Mapped[str] = mapped_column(String(60))

    def as_checkpoint(self) -> Checkpoint:
        return Checkpoint(
            seq=self.seq,
            hash=self.hash,
            reporter_seq=self.reporter_seq,
            reporter_hash=self.reporter_hash,
            signed_at=self.signed_at,
            signature=self.signature,
            key_fingerprint=self.key_fingerprint,
        )


class AuditTrailBroken(VarslingError):
    """The trail cannot be appended to or vouched for; nothing is written or signed."""

    status_code = 500
    code = "audit_trail_broken"


# --------------------------------------------------------------------------
# Appending


@dataclass(frozen=True)
class _Queued:
    actor: str
    action: str
    case_id: str | None
    details: str
    now: dt.datetime | None


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    case_id: str | None = None,
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Queue an event; it is appended in the caller's transaction just before it commits.

    Reporter events go to the reporter chain and carry the day only. Details
    must be metadata (ids, statuses, counts), never content, identities or codes.
    """
    queued = _Queued(actor, action, case_id, json.dumps(details or {}, sort_keys=True), now)
    if not session.in_transaction():
        # Tie the queue to a transaction (no SQL yet), so a rollback or close drops it.
        session.begin()
    session.info.setdefault(_PENDING, []).append(queued)


@event.listens_for(Session, "before_commit")
def _append_queued(session: Session) -> None:
    if session.in_nested_transaction():
        # A savepoint is being released: the events wait for the real commit.
        return
    queued: list[_Queued] = session.info.pop(_PENDING, [])
    if not queued:
        return
    moment = dt.datetime.now(dt.UTC)
    staff = [q for q in queued if q.actor != REPORTER]
    reporter = [q for q in queued if q.actor == REPORTER]
    # Always lock the staff head before the reporter head: no deadlock between the two.
    if staff:
        _append_staff(session, staff, moment)
    if reporter:
        _append_reporter(session, reporter, moment)
    session.flush()


@event.listens_for(Session, "after_transaction_end")
def _drop_queued(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        # Committed (already appended) or rolled back (dropped with the action).
        session.info.pop(_PENDING, None)


def queued_count(session: Session) -> int:
    """How many events wait for the transaction's commit (see `drop_queued_after`)."""
    return len(session.info.get(_PENDING, []))


def drop_queued_after(session: Session, count: int) -> None:
    """Forget the events queued after the first `count`: for a savepoint rolled back
    with the action those events described (record() queues, it does not write)."""
    pending: list[_Queued] = session.info.get(_PENDING, [])
    del pending[count:]


def _locked_head(session: Session, head_id: int) -> AuditHead:
    head = session.execute(
        select(AuditHead)
        .where(AuditHead.id == head_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if head is None:
        raise AuditTrailBroken("The audit trail's head row is missing; nothing can be recorded.")
    return head


def _append_staff(session: Session, queued: list[_Queued], moment: dt.datetime) -> None:
    head = _locked_head(session, STAFF_HEAD)
    for item in queued:
        occurred = (item.now or moment).astimezone(dt.UTC).replace(microsecond=0).isoformat()
        row = AuditEvent(
            seq=head.seq + 1,
            occurred=occurred,
            actor=item.actor,
            action=item.action,
            case_id=item.case_id,
            details=item.details,
        )
        row.hash = chain_hash(head.hash, _staff_fields(row))
        head.seq, head.hash = row.seq, row.hash
        session.add(row)


def _append_reporter(session: Session, queued: list[_Queued], moment: dt.datetime) -> None:
    head = _locked_head(session, REPORTER_HEAD)
    last_day = (
        session.scalar(select(ReporterAuditEvent.day).where(ReporterAuditEvent.seq == head.seq))
        if head.seq
        else None
    )
    for item in queued:
        # Days never go backwards along the chain, so "every event before day D"
        # is a prefix that a checkpoint can sign.
        day = max((item.now or moment).astimezone(dt.UTC).date().isoformat(), last_day or "")
        row = ReporterAuditEvent(
            seq=head.seq + 1,
            day=day,
            action=item.action,
            case_id=item.case_id,
            details=item.details,
        )
        row.hash = chain_hash(head.hash, _reporter_fields(row))
        head.seq, head.hash, last_day = row.seq, row.hash, day
        session.add(row)


def _staff_fields(row: AuditEvent) -> dict[str, Any]:
    return staff_fields(
        seq=row.seq,
        occurred=row.occurred,
        actor=row.actor,
        action=row.action,
        case_id=row.case_id,
        details=json.loads(row.details),
    )


def _reporter_fields(row: ReporterAuditEvent) -> dict[str, Any]:
    return reporter_fields(
        seq=row.seq,
        day=row.day,
        action=row.action,
        case_id=row.case_id,
        details=json.loads(row.details),
    )


# --------------------------------------------------------------------------
# Verifying


@dataclass(frozen=True)
class ChainVerification:
    chain: str
    ok: bool
    events: int
    first_bad: int | None
    reason: str
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None
    chain: str | None
    reason: str
    chains: tuple[ChainVerification, ...]


_CHAINS: tuple[tuple[str, int, type[AuditEvent] | type[ReporterAuditEvent]], ...] = (
    (STAFF_CHAIN, STAFF_HEAD, AuditEvent),
    (REPORTER_CHAIN, REPORTER_HEAD, ReporterAuditEvent),
)


def _head(session: Session, head_id: int) -> AuditHead | None:
    return session.execute(
        select(AuditHead).where(AuditHead.id == head_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _staff_rows(session: Session, up_to: int) -> Result[Any]:
    return session.connection().execute(
        select(
            AuditEvent.seq,
            AuditEvent.hash,
            AuditEvent.occurred,
            AuditEvent.actor,
            AuditEvent.action,
            AuditEvent.case_id,
            AuditEvent.details,
        )
        .where(AuditEvent.seq <= up_to)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=_WALK_BATCH)
    )


def _reporter_rows(session: Session, up_to: int) -> Result[Any]:
    return session.connection().execute(
        select(
            ReporterAuditEvent.seq,
            ReporterAuditEvent.hash,
            ReporterAuditEvent.day,
            ReporterAuditEvent.action,
            ReporterAuditEvent.case_id,
            ReporterAuditEvent.details,
        )
        .where(ReporterAuditEvent.seq <= up_to)
        .order_by(ReporterAuditEvent.seq)
        .execution_options(yield_per=_WALK_BATCH)
    )


# Per chain: its rows (seq and hash first, then what the hash covers) and their bytes.
_WALKS: dict[str, tuple[Callable[[Session, int], Result[Any]], Callable[..., bytes]]] = {
    STAFF_CHAIN: (_staff_rows, staff_event_bytes),
    REPORTER_CHAIN: (_reporter_rows, reporter_event_bytes),
}


def _verify_chain(
    session: Session, chain: str, head_id: int, model: type[AuditEvent] | type[ReporterAuditEvent]
) -> ChainVerification:
    # Read the head first and walk only up to it: events appended by others
    # while we walk (PostgreSQL reads each statement afresh) are not ours to judge.
    head = _head(session, head_id)
    if head is None:
        count = session.scalar(select(func.count()).select_from(model)) or 0
        return ChainVerification(chain, False, count, 1, "the chain's head row is missing")
    # Streamed as plain rows (Core, a server-side cursor on PostgreSQL), one batch in
    # memory at a time, so a million events are walked in constant memory; each
    # event's canonical bytes are written out directly (the same bytes chain_hash()
    # hashes: tests/test_audit_chain.py holds them to it).
    rows_of, event_bytes = _WALKS[chain]
    sha256 = hashlib.sha256
    previous = bytes.fromhex(GENESIS_HASH)
    expected = 1
    count = 0
    with rows_of(session, head.seq) as rows:
        for row in cast("Iterable[Sequence[Any]]", rows):
            seq, event_hash, hashed = row[0], row[1], row[2:]
            count += 1
            if seq != expected:
                return ChainVerification(
                    chain, False, count, expected, f"event {expected} is missing"
                )
            try:
                digest = sha256(previous + event_bytes(seq, *hashed)).digest()
            except (ValueError, TypeError):
                return ChainVerification(chain, False, count, seq, f"event {seq} is malformed")
            if digest.hex() != event_hash:
                return ChainVerification(
                    chain, False, count, seq, f"event {seq} does not match its hash"
                )
            previous = digest
            expected += 1
    if head.seq != expected - 1 or head.hash != previous.hex():
        return ChainVerification(
            chain, False, count, expected, "the chain does not end at its recorded head"
        )
    # Rows past the head were written behind the app's back. Look for them
    # before reading the head again: a row another transaction committed is
    # covered by the head it committed with.
    highest = session.scalar(select(func.max(model.seq)))
    later = _head(session, head_id)
    if highest is not None and (later is None or highest > later.seq):
        first = (later.seq if later is not None else head.seq) + 1
        return ChainVerification(chain, False, count, first, "events lie beyond the chain's head")
    return ChainVerification(chain, True, count, None, "intact", head.seq, head.hash)


def _combine(chains: tuple[ChainVerification, ...]) -> Verification:
    events = sum(c.events for c in chains)
    for result in chains:
        if not result.ok:
            return Verification(
                False, events, result.first_bad, result.chain, result.reason, chains
            )
    return Verification(True, events, None, None, "intact", chains)


def verify(session: Session, *, public_key: bytes | None = None) -> Verification:
    """Walk both chains; name the chain and first sequence number that does not check out.

    A gap (a removed event), a changed event, a reordering, a chain that ends
    before or after its recorded head, or a missing head row all break it.
    With the installation's `public_key`, every stored checkpoint must also
    carry a good signature and still be held by the chains.
    """
    chains = tuple(_verify_chain(session, *spec) for spec in _CHAINS)
    result = _combine(chains)
    if not result.ok or public_key is None:
        return result
    for stored in session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).scalars():
        held = _against_checkpoint(session, chains, stored.as_checkpoint(), public_key)
        if not held.ok:
            return held
    return result


def verify_checkpoint(session: Session, checkpoint: Checkpoint, public_key: bytes) -> Verification:
    """Both chains verify and still hold the checkpoint's heads, which the key signed."""
    chains = tuple(_verify_chain(session, *spec) for spec in _CHAINS)
    result = _combine(chains)
    if not result.ok:
        return result
    return _against_checkpoint(session, chains, checkpoint, public_key)


def _against_checkpoint(
    session: Session,
    chains: tuple[ChainVerification, ...],
    checkpoint: Checkpoint,
    public_key: bytes,
) -> Verification:
    events = sum(c.events for c in chains)
    if not checkpoint.signature_valid(public_key):
        return Verification(
            False,
            events,
            None,
            None,
            f"the checkpoint signed at {checkpoint.signed_at} does not verify with key "
            f"{crypto.key_fingerprint(public_key)}",
            chains,
        )
    staff, reporter = chains
    for result, model, seq, expected in (
        (staff, AuditEvent, checkpoint.seq, checkpoint.hash),
        (reporter, ReporterAuditEvent, checkpoint.reporter_seq, checkpoint.reporter_hash),
    ):
        if result.head_seq < seq:
            return Verification(
                False,
                events,
                result.head_seq + 1,
                result.chain,
                f"the chain ends at event {result.head_seq}, the checkpoint at {seq}",
                chains,
            )
        held = session.scalar(select(model.hash).where(model.seq == seq)) if seq else GENESIS_HASH
        if held != expected:
            return Verification(
                False,
                events,
                seq,
                result.chain,
                f"event {seq} no longer holds the checkpoint's hash",
                chains,
            )
    return Verification(True, events, None, None, "intact and holds the checkpoint", chains)


def latest_checkpoint(session: Session) -> Checkpoint | None:
    """The checkpoint stored last, if any."""
    stored = session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
    ).first()
    return stored.as_checkpoint() if stored is not None else None


def reporter_events_before(session: Session, day: dt.date) -> int:
    """How many reporter events are dated before `day`: what may be told about the
    reporter chain without placing today's events against the time of asking."""
    count = session.scalar(
        select(func.count())
        .select_from(ReporterAuditEvent)
        .where(ReporterAuditEvent.day < day.isoformat())
    )
    return count or 0


# --------------------------------------------------------------------------
# Checkpoints and export


def create_checkpoint(
    session: Session, seed: bytes, *, actor: str, now: dt.datetime | None = None
) -> Checkpoint:
    """Verify both chains, then sign and store their heads (the reporter chain's as of
    the end of the previous day), auditing the signing in the same transaction."""
    checkpoint = _signed_heads(session, seed, now or dt.datetime.now(dt.UTC))
    record(session, actor=actor, action="audit.checkpoint_signed", details={"seq": checkpoint.seq})
    return checkpoint


def _signed_heads(session: Session, seed: bytes, moment: dt.datetime) -> Checkpoint:
    result = verify(session)
    if not result.ok:
        raise Conflict(
            f"The audit trail does not verify ({result.chain} chain, event {result.first_bad}: "
            f"{result.reason}); no checkpoint is signed for it."
        )
    staff, reporter = result.chains
    day = moment.astimezone(dt.UTC).date().isoformat()
    anchor = session.execute(
        select(ReporterAuditEvent.seq, ReporterAuditEvent.hash)
        .where(ReporterAuditEvent.seq <= reporter.head_seq, ReporterAuditEvent.day < day)
        .order_by(ReporterAuditEvent.seq.desc())
        .limit(1)
    ).first()
    reporter_seq, reporter_hash = (anchor[0], anchor[1]) if anchor else (0, GENESIS_HASH)
    checkpoint = sign_checkpoint(
        seed,
        seq=staff.head_seq,
        hash=staff.head_hash,
        reporter_seq=reporter_seq,
        reporter_hash=reporter_hash,
        signed_at=moment,
    )
    session.add(
        AuditCheckpoint(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            reporter_seq=checkpoint.reporter_seq,
            reporter_hash=checkpoint.reporter_hash,
            signed_at=checkpoint.signed_at,
            signature=checkpoint.signature,
            key_fingerprint=checkpoint.key_fingerprint,
        )
    )
    session.flush()
    return checkpoint


@dataclass(frozen=True)
class Export:
    checkpoint: Checkpoint
    staff_events: int
    reporter_events: int
    lines: Iterator[str]


def export(session: Session, seed: bytes, *, actor: str, now: dt.datetime | None = None) -> Export:
    """Every event of both chains as JSON Lines, closed by a fresh signed checkpoint.

    Each chain is exported exactly up to the checkpoint: reporter events of
    the checkpoint's own day wait for a later export, so that the signing
    time never brackets them.
    """
    checkpoint = _signed_heads(session, seed, now or dt.datetime.now(dt.UTC))
    record(
        session,
        actor=actor,
        action="audit.exported",
        details={"seq": checkpoint.seq},
    )

    def lines() -> Iterator[str]:
        staff_rows = session.execute(
            select(AuditEvent)
            .where(AuditEvent.seq <= checkpoint.seq)
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=_BATCH)
        )
        for row in staff_rows.scalars():
            yield export_line(STAFF_CHAIN, _staff_fields(row), row.hash)
        reporter_rows = session.execute(
            select(ReporterAuditEvent)
            .where(ReporterAuditEvent.seq <= checkpoint.reporter_seq)
            .order_by(ReporterAuditEvent.seq)
            .execution_options(yield_per=_BATCH)
        )
        for reporter_row in reporter_rows.scalars():
            yield export_line(REPORTER_CHAIN, _reporter_fields(reporter_row), reporter_row.hash)
        yield checkpoint_line(checkpoint)

    return Export(checkpoint, checkpoint.seq, checkpoint.reporter_seq, lines())
