"""Installation-wide counters that slow password and case-code guessing.

Failures are counted for everyone at once, never per IP address: onion
service users all share one, and we record no addresses at all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from varsling.config import Settings
from varsling.db import Base

WINDOW = dt.timedelta(minutes=1)


class Counter(enum.StrEnum):
    CASE_CODE = "case_code"
    STAFF_LOGIN = "staff_login"


class LoginThrottle(Base):
    """Failed logins of one kind in the current minute. Rows are made by the migration."""

    __tablename__ = "login_throttle"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def current_delay(maker: sessionmaker[Session], settings: Settings, counter: Counter) -> float:
    """Seconds every attempt should wait now: non-zero once guessing is under way."""
    with maker.begin() as session:
        row = session.get(LoginThrottle, counter.value)
        if row is None or dt.datetime.now(dt.UTC) - _utc(row.window_start) > WINDOW:
            return 0.0
        if row.failures < settings.code_failures_per_minute:
            return 0.0
        return settings.code_failure_delay_seconds


async def pause(maker: sessionmaker[Session], settings: Settings, counter: Counter) -> None:
    """Wait out the current delay without holding a worker thread or a transaction."""
    delay = await run_in_threadpool(current_delay, maker, settings, counter)
    if delay:
        await asyncio.sleep(delay)


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
