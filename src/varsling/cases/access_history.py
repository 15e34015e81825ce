"""The access history of a case: who did what with it, and when, from the audit trail.

For a handler who opened the case (key held, no conflict declared), so the
people working on a case can see who else has read it. What it tells:

- Staff and service events on the case (the staff chain): who (a display
  name), what (the action's code; the pages say it in plain words) and when,
  to the second. Never an event's details: a refused grant's details name
  the person the reporter left out, and that must not reach the handlers.
- The reporter's events (the reporter chain) only by day, never a time
  (that chain keeps none), and only those whose fact the case page shows
  anyway: the report, messages, files, answers to check-ins, a report of
  retaliation, sending the case up. When the reporter logged in, read the
  case or downloaded a file is left out: it would tell a handler when the
  reporter was at a computer, which can help pick them out.

Reading the history is audited (`case.access_history_read`), so it shows in
the history itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import User
from varsling.accounts.service import StaffPrincipal
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases import service
from varsling.config import Settings

PAGE_SIZE: Final = 50

# Reporter-chain actions whose fact the handlers already see on the case page.
REPORTER_ACTIONS_SHOWN: Final = frozenset(
    {
        "case.submitted",
        "case.retaliation_opened",
        "reporter.message_sent",
        "reporter.files_added",
        "reporter.checkin_answered",
        "reporter.retaliation_reported",
        "reporter.case_sent_up",
    }
)


@dataclass(frozen=True)
class StaffEvent:
    """A staff or service event: `actor` is "user:<id>" or "system"."""

    actor: str
    actor_name: str | None  # the display name of a staff actor, None for the service
    action: str
    occurred: str  # ISO 8601, UTC, to the second


@dataclass(frozen=True)
class ReporterEvent:
    action: str
    day: str  # ISO date, and nothing finer


@dataclass(frozen=True)
class AccessHistory:
    staff_events: list[StaffEvent]  # newest first, one page of them
    reporter_events: list[ReporterEvent]  # oldest first
    page: int
    pages: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def display_names(session: Session, user_ids: Iterable[int]) -> dict[int, str]:
    """The display names of staff accounts, by id (deactivated accounts included)."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.display_name).where(User.id.in_(wanted)))
    return {user_id: name for user_id, name in rows}


def _user_id(actor: str) -> int | None:
    prefix, _, number = actor.partition(":")
    return int(number) if prefix == "user" and number.isdigit() else None


def case_access_history(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    page: int = 1,
) -> AccessHistory:
    """One page of the case's history for a handler who opened it; else 404 or 409."""
    service.open_case(session, settings, principal, case_id)
    total = session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.case_id == case_id)
    )
    pages = max(1, -(-(total or 0) // PAGE_SIZE))
    page = min(max(1, page), pages)
    rows = list(
        session.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.occurred)
            .where(AuditEvent.case_id == case_id)
            .order_by(AuditEvent.seq.desc())
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        )
    )
    names = display_names(session, (uid for a, _, _ in rows if (uid := _user_id(a)) is not None))
    staff_events = [
        StaffEvent(
            actor=actor,
            actor_name=names.get(uid, "") if (uid := _user_id(actor)) is not None else None,
            action=action,
            occurred=occurred,
        )
        for actor, action, occurred in rows
    ]
    reporter_events = [
        ReporterEvent(action=action, day=day)
        for action, day in session.execute(
            select(ReporterAuditEvent.action, ReporterAuditEvent.day)
            .where(
                ReporterAuditEvent.case_id == case_id,
                ReporterAuditEvent.action.in_(REPORTER_ACTIONS_SHOWN),
            )
            # By day, then by action: their order within a day is not told either.
            .order_by(ReporterAuditEvent.day, ReporterAuditEvent.action)
        )
    ]
    audit.record(
        session,
        actor=principal.actor,
        action="case.access_history_read",
        case_id=case_id,
        details={"page": page},
    )
    return AccessHistory(staff_events, reporter_events, page, pages)
