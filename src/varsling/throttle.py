"""Limits on password and case-code guessing, and on floods of anonymous reports.

Failures are counted for everyone at once, never per IP address: onion
service users all share one, and we record no addresses at all. Once
guessing is under way, every attempt claims the next free time slot, so the
rate of attempts that are checked stays bounded however many arrive at once.
Staff accounts also back off one by one, keyed by a keyed hash of the
username, never the username itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import math
from collections.abc import Mapping

from sqlalchemy import DateTime, Integer, LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from starlette.concurrency import run_in_threadpool

from varsling.config import Settings
from varsling.db import Base, in_transaction
from varsling.errors import SubmissionsBusy, TooManyAttempts, UploadsBusy

WINDOW = dt.timedelta(minutes=1)
# An attempt waits for at most this many slots; one that would wait longer is refused.
QUEUED_SLOTS = 5

# Per-account backoff: after this many failures, each further one doubles the wait.
BACKOFF_AFTER_FAILURES = 5
BACKOFF_FIRST = dt.timedelta(seconds=30)
BACKOFF_MAX = dt.timedelta(minutes=15)
# Failures this old are forgotten (and their rows removed).
BACKOFF_FORGET = dt.timedelta(days=1)


class Counter(enum.StrEnum):
    CASE_CODE = "case_code"
    STAFF_LOGIN = "staff_login"


class LoginThrottle(Base):
    """Failed logins of one kind in the current minute. Rows are made by the migration."""

    __tablename__ = "login_throttle"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer)
    # The last time slot handed out while the limit is on.
    next_slot: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LoginBackoff(Base):
    """Recent failed logins of one staff username, keyed by a keyed hash of it."""

    __tablename__ = "login_backoff"

    account: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class FloodCounter(Base):
    """Anonymous submissions or uploads of the current minute, installation-wide."""

    __tablename__ = "flood_counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(Integer)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _seconds(delta: dt.timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


# --------------------------------------------------------------------------
# The global limit


def claim_slot(
    session: Session, settings: Settings, counter: Counter, now: dt.datetime | None = None
) -> float:
    """Seconds this attempt must wait before it is checked (0 while no guessing is seen).

    Row-locked: concurrent attempts each get their own slot, `delay` apart.
    Raises TooManyAttempts (nothing changed) when the free slot is too far away.
    """
    now = now or dt.datetime.now(dt.UTC)
    row = session.get(LoginThrottle, counter.value, with_for_update=True)
    if row is None or now - _utc(row.window_start) > WINDOW:
        return 0.0
    if row.failures < settings.code_failures_per_minute:
        return 0.0
    delay = dt.timedelta(seconds=settings.code_failure_delay_seconds)
    start = max(now, _utc(row.next_slot)) if row.next_slot is not None else now
    slot = start + delay
    if slot - now > QUEUED_SLOTS * delay:
        raise TooManyAttempts(_seconds(slot - now - QUEUED_SLOTS * delay))
    row.next_slot = slot
    session.flush()
    return (slot - now).total_seconds()


async def pause(maker: sessionmaker[Session], settings: Settings, counter: Counter) -> None:
    """Claim a slot and wait for it without holding a worker thread or a transaction."""
    wait = await run_in_threadpool(in_transaction, maker, claim_slot, settings, counter)
    if wait > 0:
        await asyncio.sleep(wait)


def note_failure(session: Session, counter: Counter) -> None:
    """Count a failure in the caller's transaction (which must commit: answer, don't raise)."""
    now = dt.datetime.now(dt.UTC)
    row = session.get(LoginThrottle, counter.value, with_for_update=True)
    if row is None:
        session.add(LoginThrottle(name=counter.value, window_start=now, failures=1))
    elif now - _utc(row.window_start) > WINDOW:
        row.window_start, row.failures = now, 1
    else:
        row.failures += 1
    session.flush()


# --------------------------------------------------------------------------
# Per-account backoff


def backoff_remaining(
    session: Session, account: bytes, now: dt.datetime | None = None
) -> int | None:
    """Seconds until this account may try again, or None when it may now."""
    now = now or dt.datetime.now(dt.UTC)
    row = session.get(LoginBackoff, account)
    if row is None or row.blocked_until is None or _utc(row.blocked_until) <= now:
        return None
    return _seconds(_utc(row.blocked_until) - now)


def backoff_for(failures: int) -> dt.timedelta | None:
    """The wait after `failures` failures in a row: none, then doubling up to the cap."""
    if failures < BACKOFF_AFTER_FAILURES:
        return None
    doublings = min(failures - BACKOFF_AFTER_FAILURES, 16)
    wait: dt.timedelta = BACKOFF_FIRST * (1 << doublings)
    return min(wait, BACKOFF_MAX)


def _insert_if_missing(
    session: Session, table: type[LoginBackoff | FloodCounter], values: Mapping[str, object]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the session's own dialect.

    The dialect is imported here: the commands that load this module but never
    take a slot need not load PostgreSQL's on SQLite (some 30 ms of their start).
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        session.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects import sqlite

        session.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())


def _locked_account(session: Session, account: bytes, now: dt.datetime) -> LoginBackoff:
    """The account's row, made if missing, locked until the caller's transaction ends."""
    values = {"account": account, "failures": 0, "last_failure": now}
    # Concurrent first attempts must not race an insert: make the row, then lock it.
    _insert_if_missing(session, LoginBackoff, values)
    return session.execute(
        select(LoginBackoff)
        .where(LoginBackoff.account == account)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def claim_account(session: Session, account: bytes, now: dt.datetime | None = None) -> int | None:
    """Lock the account's count for this check; seconds to wait if it is (now) blocked.

    Checked again, row-locked, just before the password is: attempts that
    passed the first check together are then judged one after the other,
    so a burst in parallel learns no more than the same attempts in a row.
    """
    now = now or dt.datetime.now(dt.UTC)
    row = _locked_account(session, account, now)
    if row.blocked_until is None or _utc(row.blocked_until) <= now:
        return None
    return _seconds(_utc(row.blocked_until) - now)


def note_account_failure(session: Session, account: bytes, now: dt.datetime | None = None) -> None:
    """Count a failed login for one account, in the caller's transaction."""
    now = now or dt.datetime.now(dt.UTC)
    session.execute(delete(LoginBackoff).where(LoginBackoff.last_failure < now - BACKOFF_FORGET))
    row = _locked_account(session, account, now)
    row.failures += 1
    row.last_failure = now
    wait = backoff_for(row.failures)
    row.blocked_until = now + wait if wait is not None else None
    session.flush()


def clear_account(session: Session, account: bytes) -> None:
    """A successful login forgets the account's failures."""
    session.execute(delete(LoginBackoff).where(LoginBackoff.account == account))


# --------------------------------------------------------------------------
# Flood limits: anonymous submissions and uploads, installation-wide


class Flood(enum.StrEnum):
    SUBMISSION = "submission"
    UPLOAD = "upload"


def claim_flood_slot(
    session: Session, settings: Settings, flood: Flood, now: dt.datetime | None = None
) -> None:
    """Count one anonymous report (or upload) in the caller's transaction.

    At most the setting's number a minute, for the whole installation (never
    per address: none is recorded). Over it, raises SubmissionsBusy or
    UploadsBusy with the seconds until the minute ends; the caller's
    transaction then rolls back, storing nothing. The row stays locked until
    that transaction ends, so replicas on one database share the count.
    """
    now = now or dt.datetime.now(dt.UTC)
    limit = (
        settings.submissions_per_minute
        if flood is Flood.SUBMISSION
        else settings.uploads_per_minute
    )
    values = {"name": flood.value, "window_start": now, "count": 0}
    _insert_if_missing(session, FloodCounter, values)
    row = session.execute(
        select(FloodCounter)
        .where(FloodCounter.name == flood.value)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if now - _utc(row.window_start) >= WINDOW:
        row.window_start, row.count = now, 0
    if row.count >= limit:
        wait = _seconds(_utc(row.window_start) + WINDOW - now)
        raise SubmissionsBusy(wait) if flood is Flood.SUBMISSION else UploadsBusy(wait)
    row.count += 1
    session.flush()
