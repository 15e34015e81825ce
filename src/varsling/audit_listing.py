"""The auditors' reading of the trail: one chain at a time, filtered, in keyset pages.

Pages are cut by sequence number (`before` for older events, `after` for
newer ones), never by offset: an event appended while an auditor pages never
shifts a page, so nothing is skipped or shown twice.

The reporter chain keeps its promise here as in checkpoints and exports:
its events carry the day only, and only events of days before today are
listed, so that an auditor asking again and again cannot place today's
reporter events against the time of asking. Events are shown as the trail
holds them (details included: they are metadata by construction); nothing
is joined from cases or accounts.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, and_, select
from sqlalchemy.orm import Session

from varsling import audit
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.audit_chain import CHAINS, REPORTER_CHAIN, STAFF_CHAIN
from varsling.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

_CASE_ID = re.compile(r"[0-9a-f]{32}")
_ACTOR = re.compile(r"user:[0-9]{1,12}|system")
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")


class InvalidFilter(InvalidInput):
    """A filter or paging value that does not check out; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class EventFilter:
    """What an auditor narrows the trail to; every field is checked by `parse`."""

    chain: str = STAFF_CHAIN
    case_id: str | None = None
    actor: str | None = None
    action: str | None = None
    from_day: dt.date | None = None
    to_day: dt.date | None = None

    @classmethod
    def parse(
        cls,
        *,
        chain: str | None = None,
        case_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        from_day: str | None = None,
        to_day: str | None = None,
    ) -> EventFilter:
        """Check typed filter values; a blank value means no filter. Raises InvalidInput."""
        chain = _blank(chain) or STAFF_CHAIN
        if chain not in CHAINS:
            raise InvalidFilter("chain", f"The chain must be one of {', '.join(CHAINS)}.")
        case_id = _blank(case_id)
        if case_id is not None:
            case_id = case_id.lower()
            if not _CASE_ID.fullmatch(case_id):
                raise InvalidFilter("case_id", "A case id is 32 characters 0-9 and a-f.")
        actor = _blank(actor)
        if actor is not None:
            if chain == REPORTER_CHAIN:
                raise InvalidFilter(
                    "actor", "Reporter events name no actor; leave the actor empty."
                )
            if not _ACTOR.fullmatch(actor):
                raise InvalidFilter("actor", "An actor is written user:<number> or system.")
        action = _blank(action)
        if action is not None and (len(action) > 60 or not _ACTION.fullmatch(action)):
            raise InvalidFilter(
                "action", "An action is written like case.read (lower-case, with dots)."
            )
        first = _day(from_day, "from")
        last = _day(to_day, "to")
        if first is not None and last is not None and first > last:
            raise InvalidFilter("to", "The first day comes after the last day.")
        return cls(chain, case_id, actor, action, first, last)

    def as_details(self) -> dict[str, Any]:
        """The filter as audit details: ids, names and days only."""
        return {
            "chain": self.chain,
            "case_id": self.case_id,
            "actor": self.actor,
            "action": self.action,
            "from": self.from_day.isoformat() if self.from_day else None,
            "to": self.to_day.isoformat() if self.to_day else None,
        }


def _blank(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _day(value: str | None, which: str) -> dt.date | None:
    value = _blank(value)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidFilter(which, f"The {which} day must be a date written YYYY-MM-DD.") from exc


def parse_cursor(value: str | int | None, name: str) -> int | None:
    """A paging cursor: a sequence number, or nothing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidFilter(name, f"'{name}' must be an event's sequence number.") from exc
    if number < 0:
        raise InvalidFilter(name, f"'{name}' must be an event's sequence number.")
    return number


def parse_limit(value: str | int | None) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_LIMIT
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidFilter(
            "limit", f"The page size must be a number from 1 to {MAX_LIMIT}."
        ) from exc
    if not 1 <= number <= MAX_LIMIT:
        raise InvalidFilter("limit", f"The page size must be a number from 1 to {MAX_LIMIT}.")
    return number


@dataclass(frozen=True)
class ListedEvent:
    """An event as the trail holds it; a reporter event has a day and no time or actor."""

    chain: str
    seq: int
    day: str
    occurred: str | None
    actor: str
    action: str
    case_id: str | None
    details: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class EventPage:
    """Events newest first; `older` is the `before` cursor of the next older page and
    `newer` the `after` cursor of the next newer page (None: there is none)."""

    filter: EventFilter
    limit: int
    events: list[ListedEvent]
    older: int | None
    newer: int | None


def _conditions(
    flt: EventFilter, today: dt.date
) -> tuple[type[AuditEvent] | type[ReporterAuditEvent], list[ColumnElement[bool]]]:
    conditions: list[ColumnElement[bool]] = []
    if flt.chain == STAFF_CHAIN:
        if flt.actor is not None:
            conditions.append(AuditEvent.actor == flt.actor)
        if flt.from_day is not None:
            conditions.append(AuditEvent.occurred >= flt.from_day.isoformat())
        if flt.to_day is not None:
            conditions.append(AuditEvent.occurred < (flt.to_day + dt.timedelta(days=1)).isoformat())
        staff: type[AuditEvent] | type[ReporterAuditEvent] = AuditEvent
        model = staff
    else:
        # Today's reporter events wait for tomorrow (as in checkpoints and exports).
        conditions.append(ReporterAuditEvent.day < today.isoformat())
        if flt.from_day is not None:
            conditions.append(ReporterAuditEvent.day >= flt.from_day.isoformat())
        if flt.to_day is not None:
            conditions.append(ReporterAuditEvent.day <= flt.to_day.isoformat())
        model = ReporterAuditEvent
    if flt.case_id is not None:
        conditions.append(model.case_id == flt.case_id)
    if flt.action is not None:
        conditions.append(model.action == flt.action)
    return model, conditions


def _listed(row: AuditEvent | ReporterAuditEvent) -> ListedEvent:
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {}
    if isinstance(row, AuditEvent):
        return ListedEvent(
            STAFF_CHAIN,
            row.seq,
            row.occurred[:10],
            row.occurred,
            row.actor,
            row.action,
            row.case_id,
            details if isinstance(details, dict) else {},
            row.hash,
        )
    return ListedEvent(
        REPORTER_CHAIN,
        row.seq,
        row.day,
        None,
        audit.REPORTER,
        row.action,
        row.case_id,
        details if isinstance(details, dict) else {},
        row.hash,
    )


def _exists(session: Session, query: Select[Any]) -> bool:
    return session.execute(query.limit(1)).first() is not None


def list_events(
    session: Session,
    flt: EventFilter,
    *,
    actor: str,
    limit: int = DEFAULT_LIMIT,
    after: int | None = None,
    before: int | None = None,
    today: dt.date | None = None,
) -> EventPage:
    """One page of one chain, newest first, and the listing audited in the same transaction.

    Without a cursor: the newest events. `before`: the events just older than
    that sequence number; `after`: the events just newer than it.
    """
    if after is not None and before is not None:
        raise InvalidFilter("before", "Page with either 'after' or 'before', not both.")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"The page size must be a number from 1 to {MAX_LIMIT}.")
    today = today or dt.datetime.now(dt.UTC).date()
    model, conditions = _conditions(flt, today)
    base = and_(*conditions) if conditions else None

    def matching(*extra: ColumnElement[bool]) -> Select[Any]:
        query = select(model.seq)
        if base is not None:
            query = query.where(base)
        return query.where(*extra)

    query: Select[Any] = select(model)
    if base is not None:
        query = query.where(base)
    if after is not None:
        rows = list(
            session.scalars(query.where(model.seq > after).order_by(model.seq).limit(limit))
        )
        rows.reverse()
    elif before is not None:
        rows = list(
            session.scalars(query.where(model.seq < before).order_by(model.seq.desc()).limit(limit))
        )
    else:
        rows = list(session.scalars(query.order_by(model.seq.desc()).limit(limit)))

    rows = cast("list[AuditEvent | ReporterAuditEvent]", rows)
    if rows:
        newest, oldest = rows[0].seq, rows[-1].seq
        older = oldest if _exists(session, matching(model.seq < oldest)) else None
        newer = newest if _exists(session, matching(model.seq > newest)) else None
    else:
        # An empty page still leads back to where the auditor came from.
        older = (
            after + 1
            if after is not None and _exists(session, matching(model.seq <= after))
            else None
        )
        newer = (
            before - 1
            if before is not None and _exists(session, matching(model.seq >= before))
            else None
        )

    audit.record(
        session,
        actor=actor,
        action="audit.listed",
        details={**flt.as_details(), "after": after, "before": before, "events": len(rows)},
    )
    return EventPage(flt, limit, [_listed(row) for row in rows], older, newer)
