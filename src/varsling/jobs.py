"""`varsling jobs run`: check-ins, overdue flags, retention, expired sessions, notifications.

Safe to run twice and from two machines at once: each check-in and flag is
one row under a unique key, inserted with ON CONFLICT DO NOTHING and audited
only by the run whose row went in; a case is deleted by the run that locked
it (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer at a time).
The cases that get a check-in or a flag are key-share locked, skipping those
a deletion holds, so no row is written for a case deleted meanwhile.
Notifications are claimed before they are sent (notifications/service.py),
so two runs never send the same one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit
from varsling.accounts.models import Role, User
from varsling.accounts.service import purge_expired_sessions
from varsling.cases import keys, retention
from varsling.cases.models import Case, CheckIn, KeyPurpose, OverdueFlag, Status
from varsling.cases.service import add_months, overdue
from varsling.config import Settings
from varsling.notifications import service as notifications
from varsling.notifications.models import NoticeKind

# Cases deleted per transaction: locks stay short, a failure loses little.
RETENTION_BATCH = 50


def _insert_once(session: Session, model: type[Any], **values: Any) -> bool:
    """Insert a row unless its unique key exists (also in a concurrent transaction,
    whose commit it waits for); True if this call inserted it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING, not rowcount: an ORM-enabled INSERT does not report one on psycopg.
    statement = insert(model).values(**values).on_conflict_do_nothing()
    return session.execute(statement.returning(*model.__table__.primary_key)).first() is not None


def due_round(concluded_on: dt.date, rounds: tuple[int, ...], today: dt.date) -> int | None:
    """The latest check-in round (months after concluding) whose day has come."""
    due = [n for n in rounds if add_months(concluded_on, n) <= today]
    return max(due) if due else None


def send_due_checkins(session: Session, settings: Settings, today: dt.date) -> int:
    """Put each due check-in question in its reporter's inbox; how many were sent.

    One round per case and run: the latest due, and only if no round as late
    or later was sent. Rounds missed while the job did not run are skipped,
    not sent in a pile.
    """
    rounds = tuple(sorted(set(settings.checkin_months)))
    if not rounds:
        return 0
    concluded = session.execute(
        select(Case.id, Case.concluded_on)
        .where(
            Case.status.in_([Status.CONCLUDED.value, Status.CLOSED.value]),
            Case.concluded_on.is_not(None),
            Case.concluded_on <= today - dt.timedelta(days=28 * rounds[0]),
        )
        .order_by(Case.id)
        .with_for_update(key_share=True, skip_locked=True)
    ).all()
    sent = 0
    for case_id, concluded_on in concluded:
        round_due = due_round(concluded_on, rounds, today) if concluded_on else None
        if round_due is None:
            continue
        latest_sent = session.execute(
            select(CheckIn.round)
            .where(CheckIn.case_id == case_id)
            .order_by(CheckIn.round.desc())
            .limit(1)
        ).scalar_one_or_none()
        if latest_sent is not None and latest_sent >= round_due:
            continue
        if _insert_once(session, CheckIn, case_id=case_id, round=round_due, sent_on=today):
            audit.record(
                session,
                actor=audit.SYSTEM,
                action="checkin.sent",
                case_id=case_id,
                details={"round": round_due},
            )
            sent += 1
    return sent


def flag_overdue(session: Session, settings: Settings, today: dt.date) -> int:
    """Flag each deadline a case has passed, once per case and deadline; how many.

    Each new flag queues a notice to the case's handlers who may still act on it.
    """
    late = session.execute(
        select(Case)
        .where(
            or_(
                Case.acknowledged_on.is_(None) & (Case.acknowledgement_due < today),
                Case.concluded_on.is_(None) & (Case.feedback_due < today),
            )
        )
        .order_by(Case.id)
        .with_for_update(key_share=True, skip_locked=True)
    ).scalars()
    flagged = 0
    for case in list(late):
        for deadline in overdue(case, today):
            if _insert_once(
                session, OverdueFlag, case_id=case.id, deadline=deadline, flagged_on=today
            ):
                audit.record(
                    session,
                    actor=audit.SYSTEM,
                    action="case.overdue_flagged",
                    case_id=case.id,
                    details={"deadline": deadline},
                )
                notifications.enqueue(
                    session,
                    settings,
                    kind=NoticeKind.OVERDUE,
                    unit_id=keys.handling_unit(case),
                    recipients=_acting_handlers(session, settings, case.id),
                    today=today,
                )
                flagged += 1
    return flagged


def _acting_handlers(session: Session, settings: Settings, case_id: str) -> list[User]:
    """The case's key holders who are handlers: active, certified, not excluded."""
    holders = keys.holders(session, case_id, KeyPurpose.CASE)
    if not holders:
        return []
    users = session.execute(select(User).where(User.id.in_(holders))).scalars()
    handlers = [u for u in users if Role.HANDLER.value in u.role_names]
    return keys.eligible(session, settings, case_id, handlers)


def apply_retention(maker: sessionmaker[Session], settings: Settings, today: dt.date) -> int:
    """Delete every closed case whose retention has passed and that no hold keeps.

    In batches, each in its own transaction; how many this run deleted.
    """
    with maker.begin() as session:
        due = retention.due_for_deletion(session, settings, today)
    deleted = 0
    for start in range(0, len(due), RETENTION_BATCH):
        with maker.begin() as session:
            deleted += retention.delete_due(
                session, settings, due[start : start + RETENTION_BATCH], today
            )
    return deleted


def purge_sessions(session: Session, now: dt.datetime) -> int:
    """Remove expired sessions; audited when there were any (a quiet run writes nothing)."""
    removed = purge_expired_sessions(session, now)
    if removed:
        audit.record(
            session, actor=audit.SYSTEM, action="sessions.purged", details={"count": removed}
        )
    return removed


def run(
    maker: sessionmaker[Session],
    settings: Settings,
    *,
    now: dt.datetime,
    report: Callable[[str], None] = lambda _line: None,
) -> dict[str, int]:
    """Every part in order, each in its own transaction(s); the counts by part."""
    today = now.date()

    def in_transaction(work: Callable[[Session], int]) -> int:
        with maker.begin() as session:
            return work(session)

    counts = {"checkins": in_transaction(lambda s: send_due_checkins(s, settings, today))}
    report(f"Check-ins: sent {counts['checkins']}.")
    counts["overdue"] = in_transaction(lambda s: flag_overdue(s, settings, today))
    report(f"Overdue: flagged {counts['overdue']} passed deadlines.")
    counts["retention"] = apply_retention(maker, settings, today)
    report(f"Retention: deleted {counts['retention']} closed cases.")
    counts["sessions"] = in_transaction(lambda s: purge_sessions(s, now))
    report(f"Sessions: removed {counts['sessions']} expired.")
    # Last, so the overdue flags of this run go out in it.
    delivery = notifications.deliver(maker, settings, now=now)
    counts["notifications"] = delivery.mails
    report(notifications.summary(delivery))
    return counts
