"""The handler side: what a key holder can read and do with a case."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, not_, or_, select, tuple_
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts.models import Unit, User
from varsling.accounts.service import StaffPrincipal
from varsling.cases import attachments, declarations, keys, manifest, retention
from varsling.cases.models import (
    Attachment,
    Case,
    CaseEntry,
    CaseKey,
    Category,
    CheckIn,
    EntryKind,
    KeyPurpose,
    Priority,
    Status,
)
from varsling.config import Settings
from varsling.errors import Conflict, InvalidInput, NotFound

ACKNOWLEDGEMENT_DAYS = 7
FEEDBACK_MONTHS = 3

NEXT_STATUS = {
    Status.RECEIVED: Status.ACKNOWLEDGED,
    Status.ACKNOWLEDGED: Status.INVESTIGATING,
    Status.INVESTIGATING: Status.CONCLUDED,
    Status.CONCLUDED: Status.CLOSED,
}
MESSAGE_KINDS = (EntryKind.REPORTER_MESSAGE, EntryKind.HANDLER_MESSAGE)


# --------------------------------------------------------------------------
# Deadlines (EU directive art. 9): computed, never typed in


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later, or the month's last day when it is shorter."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return day.replace(
        year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1])
    )


def acknowledgement_due(received_on: dt.date) -> dt.date:
    return received_on + dt.timedelta(days=ACKNOWLEDGEMENT_DAYS)


def feedback_due(received_on: dt.date, acknowledged_on: dt.date | None) -> dt.date:
    start = acknowledged_on or received_on + dt.timedelta(days=ACKNOWLEDGEMENT_DAYS)
    return add_months(start, FEEDBACK_MONTHS)


def overdue(case: Case, today: dt.date) -> list[str]:
    """Which deadlines a case has passed without meeting them."""
    late = []
    if case.acknowledged_on is None and today > case.acknowledgement_due:
        late.append("acknowledgement")
    if case.concluded_on is None and today > case.feedback_due:
        late.append("feedback")
    return late


MET = "met"
MISSED = "missed"
OPEN = "open"


def deadline_outcomes(case: Case, today: dt.date) -> tuple[str, str]:
    """How the case fared against its own acknowledgement and feedback deadlines.

    Each is "met" (done on or before the due day), "missed" (done late, or not
    done and the day has passed) or "open" (not done, not yet due). Feedback
    counts as given when the case was concluded, as in `overdue`. A retaliation
    case is held to its own, shorter deadlines, as stored on the case.
    """

    def outcome(done_on: dt.date | None, due: dt.date) -> str:
        if done_on is not None:
            return MET if done_on <= due else MISSED
        return MISSED if today > due else OPEN

    return (
        outcome(case.acknowledged_on, case.acknowledgement_due),
        outcome(case.concluded_on, case.feedback_due),
    )


# --------------------------------------------------------------------------
# Sealed entries


def entry_context(case_id: str, kind: str, entry_id: int) -> bytes:
    return crypto.content_context(case_id, kind, entry_id)


def add_entry(
    session: Session,
    *,
    case_id: str,
    kind: EntryKind,
    key: bytes,
    payload: dict[str, Any],
    today: dt.date,
    author_id: int | None = None,
    case_key: bytes | None = None,
    in_manifest: bool = True,
) -> CaseEntry:
    """Seal `payload` with `key`, bound to this case, kind and entry id, and add the
    entry to the case's manifest.

    The manifest is sealed under the case key: pass it as `case_key` when `key`
    is another (the identity key). A submission writes its entries with
    `in_manifest=False` and seals the first manifest once, at the end.
    """
    if in_manifest and kind == EntryKind.IDENTITY and case_key is None:
        raise ValueError("the identity entry needs the case key for the manifest")
    entry = CaseEntry(
        case_id=case_id, kind=kind.value, author_id=author_id, created_on=today, ciphertext=b""
    )
    session.add(entry)
    session.flush()
    plaintext = json.dumps(payload, ensure_ascii=False).encode()
    entry.ciphertext = crypto.seal(
        key, plaintext, context=entry_context(case_id, kind.value, entry.id)
    )
    if not in_manifest:
        return entry
    manifest.reseal(
        session,
        case_id,
        case_key or key,
        new_entry=entry,
        actor=f"user:{author_id}" if author_id is not None else audit.REPORTER,
    )
    return entry


def open_entry(entry: CaseEntry, key: bytes) -> dict[str, Any]:
    plaintext = crypto.open_sealed(
        key, entry.ciphertext, context=entry_context(entry.case_id, entry.kind, entry.id)
    )
    payload: dict[str, Any] = json.loads(plaintext)
    return payload


class ContentReader:
    """Opens a case's sealed content for one read, skipping (and counting) what does
    not open, so one bad row is reported as an integrity problem, not a failed read."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.unreadable = 0

    def entry(self, entry: CaseEntry) -> dict[str, Any] | None:
        try:
            return open_entry(entry, self.key)
        except (crypto.CryptoError, ValueError):
            self.unreadable += 1
            return None

    def file(self, attachment: Attachment) -> dict[str, Any] | None:
        try:
            return attachments.describe(attachment, self.key)
        except (crypto.CryptoError, ValueError, KeyError):
            self.unreadable += 1
            return None

    def files(self, session: Session, case_id: str) -> list[dict[str, Any]]:
        described = (self.file(a) for a in attachments.for_case(session, case_id))
        return [d for d in described if d is not None]

    def problem(self, found: str | None) -> str | None:
        """The manifest's finding, or that some content did not open."""
        return found or ("content_unreadable" if self.unreadable else None)


def entries(session: Session, case_id: str, *kinds: EntryKind) -> list[CaseEntry]:
    query = (
        select(CaseEntry)
        .where(CaseEntry.case_id == case_id, CaseEntry.kind.in_([k.value for k in kinds]))
        .order_by(CaseEntry.id)
    )
    return list(session.execute(query).scalars())


def thread(session: Session, case_id: str, reader: ContentReader) -> list[dict[str, Any]]:
    """The messages between reporter and handlers, oldest first."""
    out = []
    for entry in entries(session, case_id, *MESSAGE_KINDS):
        payload = reader.entry(entry)
        if payload is None:
            continue
        out.append(
            {
                "author": "reporter" if entry.kind == EntryKind.REPORTER_MESSAGE else "handler",
                "body": payload["body"],
                "sent_on": entry.created_on.isoformat(),
                "retaliation": bool(payload.get("retaliation", False)),
            }
        )
    return out


def outcome(session: Session, case_id: str, reader: ContentReader) -> str | None:
    for entry in reversed(entries(session, case_id, EntryKind.OUTCOME)):
        payload = reader.entry(entry)
        if payload is not None:
            return str(payload["body"])
    return None


def checkin_answers(session: Session, case_id: str, reader: ContentReader) -> list[dict[str, Any]]:
    """The reporter's answers to the check-ins after the case was concluded."""
    sent = {
        c.id: c
        for c in session.execute(select(CheckIn).where(CheckIn.case_id == case_id)).scalars()
    }
    out = []
    for entry in entries(session, case_id, EntryKind.CHECKIN_ANSWER):
        payload = reader.entry(entry)
        if payload is None:
            continue
        checkin = sent.get(payload.get("checkin_id", -1))
        out.append(
            {
                "round": payload["round"],
                "sent_on": checkin.sent_on.isoformat() if checkin else None,
                "answered_on": entry.created_on.isoformat(),
                "negative_consequences": bool(payload["negative_consequences"]),
                "details": payload.get("details"),
            }
        )
    return out


def retaliation_cases(session: Session, case_id: str) -> list[str]:
    """The ids of the retaliation cases the reporter opened on this case."""
    return list(
        session.execute(
            select(Case.id)
            .where(Case.linked_case_id == case_id)
            .order_by(Case.received_on, Case.id)
        ).scalars()
    )


def first_entry(
    session: Session, case_id: str, kind: EntryKind, reader: ContentReader
) -> dict[str, Any] | None:
    """The report or the identity (there is one of each at most)."""
    found = entries(session, case_id, kind)
    return reader.entry(found[0]) if found else None


# --------------------------------------------------------------------------
# Access: what a caller may read does not exist for them otherwise


_HEX_ID = re.compile("[0-9a-f]{32}")


def is_hex_id(value: str) -> bool:
    """Case and file ids are 32 hex digits; anything else names nothing (and never
    reaches the database, where a NUL byte would be a 500 on PostgreSQL)."""
    return _HEX_ID.fullmatch(value) is not None


def readable_cases(principal: StaffPrincipal) -> Select[Case]:
    granted = select(CaseKey.case_id).where(
        CaseKey.user_id == principal.user_id, keys.current(KeyPurpose.CASE)
    )
    return select(Case).where(Case.id.in_(granted))


@dataclass(frozen=True)
class OpenCase:
    case: Case
    key: bytes


def open_held_case(session: Session, principal: StaffPrincipal, case_id: str) -> OpenCase:
    """The case and its key, if the caller holds a wrapped key for it; else 404.

    Not yet the content: a key holder must declare first (open_case).
    """
    if not is_hex_id(case_id):
        raise NotFound("No such case.")
    case = session.execute(readable_cases(principal).where(Case.id == case_id)).scalar_one_or_none()
    wrapped = keys.held_key(session, case_id, principal.user_id, KeyPurpose.CASE)
    if case is None or wrapped is None:
        raise NotFound("No such case.")
    return OpenCase(case, keys.unwrap(wrapped, principal.private_key))


def open_case(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str
) -> OpenCase:
    """The case and its key for a key holder who declared no conflict; else 404 or 409."""
    opened = open_held_case(session, principal, case_id)
    declarations.require(session, settings, principal, opened.case)
    return opened


def case_summary(case: Case, today: dt.date) -> dict[str, Any]:
    return {
        "id": case.id,
        "status": case.status,
        "unit_id": case.unit_id,
        "handling_unit_id": keys.handling_unit(case),
        "category": case.category,
        "priority": case.priority,
        "linked_case_id": case.linked_case_id,
        "received_on": case.received_on.isoformat(),
        "acknowledged_on": case.acknowledged_on.isoformat() if case.acknowledged_on else None,
        "acknowledgement_due": case.acknowledgement_due.isoformat(),
        "feedback_due": case.feedback_due.isoformat(),
        "overdue": overdue(case, today),
        "escalated_on": case.escalated_on.isoformat() if case.escalated_on else None,
    }


# --------------------------------------------------------------------------
# The case list: filters and keyset paging, for the API and the staff pages alike

PAGE_SIZE = 50  # the staff page's; the API pages only when asked (`limit`)
MAX_PAGE_SIZE = 200
_CURSOR = re.compile(r"(?P<rank>[012])\.(?P<day>\d{4}-\d{2}-\d{2})\.(?P<id>[0-9a-f]{32})")
_UNIT_ID = re.compile(r"[1-9][0-9]{0,9}")


class InvalidCaseQuery(InvalidInput):
    """Filter or paging values that mean nothing; `fields` names each one that is wrong."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            "These filter values are not valid: "
            + ", ".join(fields)
            + ". status: received, acknowledged, investigating, concluded or closed; "
            "unit: a unit id; overdue: true or false; category: sexual_harassment, "
            "harassment, discrimination, abuse_of_power, retaliation or other; "
            "after: the `next` of the page before; limit: 1 to "
            f"{MAX_PAGE_SIZE}."
        )
        self.fields = fields


@dataclass(frozen=True)
class CaseQuery:
    """Which of the caller's cases to list, and from where (the page before's `next`)."""

    status: Status | None = None
    unit_id: int | None = None
    overdue: bool | None = None
    category: Category | None = None
    after: tuple[int, dt.date, str] | None = None
    limit: int | None = None  # None: every case from `after` on, in one answer


def case_query(
    *,
    status: str | None = None,
    unit: str | None = None,
    overdue: str | None = None,
    category: str | None = None,
    after: str | None = None,
    limit: str | None = None,
) -> CaseQuery:
    """Read filter values as sent (query parameters); an empty value filters nothing.

    Raises InvalidCaseQuery naming every value that is not valid.
    """
    wrong: list[str] = []
    found_status = None
    if status:
        try:
            found_status = Status(status)
        except ValueError:
            wrong.append("status")
    unit_id = None
    if unit:
        if _UNIT_ID.fullmatch(unit) and int(unit) < 2**31:
            unit_id = int(unit)
        else:
            wrong.append("unit")
    late = None
    if overdue:
        if overdue in ("true", "false"):
            late = overdue == "true"
        else:
            wrong.append("overdue")
    found_category = None
    if category:
        try:
            found_category = Category(category)
        except ValueError:
            wrong.append("category")
    position = None
    if after:
        match = _CURSOR.fullmatch(after)
        try:
            position = (
                (int(match["rank"]), dt.date.fromisoformat(match["day"]), match["id"])
                if match
                else None
            )
        except ValueError:
            position = None
        if position is None:
            wrong.append("after")
    size = None
    if limit:
        if limit.isdecimal() and 1 <= int(limit) <= MAX_PAGE_SIZE:
            size = int(limit)
        else:
            wrong.append("limit")
    if wrong:
        raise InvalidCaseQuery(wrong)
    return CaseQuery(found_status, unit_id, late, found_category, position, size)


@dataclass(frozen=True)
class CasePage:
    items: list[dict[str, Any]]
    next: str | None  # where the next page starts; None on the last page
    total: int  # every case the filters let through, on all pages


def _held_key(session: Session, principal: StaffPrincipal) -> tuple[Any, ...]:
    """The caller's case keys that open something: made for their current key version
    (one waiting for a re-grant after a password reset is not theirs to list)."""
    version = session.scalar(select(User.key_version).where(User.id == principal.user_id))
    return (
        CaseKey.user_id == principal.user_id,
        CaseKey.purpose == KeyPurpose.CASE.value,
        CaseKey.key_version == version,
    )


def _filters(held_key: tuple[Any, ...], today: dt.date, query: CaseQuery) -> list[Any]:
    """The conditions of the caller's filtered list, paging aside, on their keys' copies
    of the list columns (kept by triggers: models.CaseKey), so that a page and its
    count are read from one index of case_keys without reading a case."""
    conditions: list[Any] = list(held_key)
    if query.status is not None:
        conditions.append(CaseKey.status == query.status.value)
    if query.unit_id is not None:
        conditions.append(CaseKey.unit_id == query.unit_id)
    if query.category is not None:
        conditions.append(CaseKey.category == query.category.value)
    if query.overdue is not None:
        # overdue(): a deadline passed without being met, i.e. the earliest one not
        # yet met lies before today.
        late = CaseKey.late_from < today
        conditions.append(late if query.overdue else or_(CaseKey.late_from.is_(None), not_(late)))
    return conditions


# Retaliation cases (high priority) come first: rank 0, then the normal ones: rank
# 1. Each rank is read on its own, ordered by (received_on, id), so an index with
# (priority, received_on, case_id) behind the caller's keys, or behind a filter's
# column, gives a page without sorting every case the caller holds. Rank 2 holds
# any other priority (only a database writer makes one), so that no held case is
# left out.
_KNOWN_PRIORITIES = (Priority.HIGH.value, Priority.NORMAL.value)
_RANKS = (
    (0, CaseKey.priority == Priority.HIGH.value),
    (1, CaseKey.priority == Priority.NORMAL.value),
    (2, or_(CaseKey.priority.is_(None), CaseKey.priority.not_in(_KNOWN_PRIORITIES))),
)


# What case_summary() reads of a case (with _cursor(): its rank, day and id).
_SUMMARY_COLUMNS = (
    Case.id,
    Case.status,
    Case.unit_id,
    Case.handling_unit_id,
    Case.category,
    Case.priority,
    Case.linked_case_id,
    Case.received_on,
    Case.acknowledged_on,
    Case.concluded_on,
    Case.acknowledgement_due,
    Case.feedback_due,
    Case.escalated_on,
)


def _rank_of(case: Case) -> int:
    if case.priority in _KNOWN_PRIORITIES:
        return _KNOWN_PRIORITIES.index(case.priority)
    return 2


def _cursor(case: Case) -> str:
    return f"{_rank_of(case)}.{case.received_on.isoformat()}.{case.id}"


def list_cases(
    session: Session,
    principal: StaffPrincipal,
    today: dt.date,
    query: CaseQuery | None = None,
) -> CasePage:
    """The caller's cases, retaliation cases first, filtered and one page at a time,
    with the number of cases the filters let through.

    `declared` says which are open to them. Paging is by position (keyset), so a
    case added meanwhile never shifts a page. A page costs one query per rank it
    spans (a walk of the caller's keys in list order, joined to at most 51 cases),
    one count of an index range, and one query for the page's declarations;
    nothing is decrypted.
    """
    query = query or CaseQuery()
    conditions = _filters(_held_key(session, principal), today, query)
    wanted = None if query.limit is None else query.limit + 1  # one more: is there a next?
    # Plain rows of what a summary shows, not ORM objects: the whole list of 100,000
    # cases spent half its time making and tracking objects it only reads.
    found: list[Any] = []
    for rank, in_rank in _RANKS:
        if wanted is not None and len(found) >= wanted:
            break
        where = [*conditions, in_rank]
        if query.after is not None:
            after_rank, after_day, after_id = query.after
            if rank < after_rank:
                continue
            if rank == after_rank:
                where.append(
                    tuple_(CaseKey.received_on, CaseKey.case_id) > tuple_(after_day, after_id)
                )
        select_page = (
            select(*_SUMMARY_COLUMNS)
            .join(CaseKey, CaseKey.case_id == Case.id)
            .where(*where)
            .order_by(CaseKey.received_on, CaseKey.case_id)
        )
        if wanted is not None:
            select_page = select_page.limit(wanted - len(found))
        found += session.execute(select_page)
    more = query.limit is not None and len(found) > query.limit
    found = found[: query.limit]
    total = session.scalar(select(func.count()).select_from(CaseKey).where(*conditions)) or 0
    # A page names its cases (at most 200 ids); the whole list reads every declaration
    # of the caller instead of binding 100,000 ids.
    declared = declarations.declared_cases(
        session,
        principal.user_id,
        case_ids=[c.id for c in found] if query.limit is not None else None,
    )
    items = [{**case_summary(c, today), "declared": c.id in declared} for c in found]
    next_cursor = _cursor(found[-1]) if more and found else None
    return CasePage(items, next_cursor, total)


def case_units(session: Session, principal: StaffPrincipal) -> list[tuple[int, str]]:
    """The units the caller's cases were reported in (id, name), for a unit filter."""
    held = readable_cases(principal).with_only_columns(Case.unit_id).distinct()
    return [
        (unit.id, unit.name)
        for unit in session.execute(
            select(Unit).where(Unit.id.in_(held)).order_by(Unit.name, Unit.id)
        ).scalars()
    ]


def read_case(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str, today: dt.date
) -> dict[str, Any]:
    """The report (never the identity), the thread, notes and outcome, and whether
    they are all there as written; the read is audited.

    Before the caller declared, 409 declaration_required with only what is
    needed to judge a conflict (declarations.conflict_check), audited too.
    """
    opened = open_held_case(session, principal, case_id)
    try:
        declared = declarations.require(session, settings, principal, opened.case)
    except declarations.DeclarationRequired as refused:
        # The one read that shows something before declaring: audited as that look.
        refused.audited(actor=principal.actor, action="case.conflict_check_read", case_id=case_id)
        refused.body_extra = {
            "case": declarations.conflict_check(session, opened.case, opened.key, today=today)
        }
        raise
    found = manifest.check(session, case_id, opened.key)
    reader = ContentReader(opened.key)
    notes = []
    for entry in entries(session, case_id, EntryKind.NOTE):
        payload = reader.entry(entry)
        if payload is not None:
            notes.append(
                {
                    "body": payload["body"],
                    "written_on": entry.created_on.isoformat(),
                    "author_id": entry.author_id,
                }
            )
    answer = {
        **case_summary(opened.case, today),
        "report": first_entry(session, case_id, EntryKind.REPORT, reader),
        "has_identity": bool(entries(session, case_id, EntryKind.IDENTITY)),
        "messages": thread(session, case_id, reader),
        "notes": notes,
        "outcome": outcome(session, case_id, reader),
        "files": reader.files(session, case_id),
        "recusals": [
            {
                "user_id": entry.author_id,
                "reason": payload["body"],
                "written_on": entry.created_on.isoformat(),
            }
            for entry in entries(session, case_id, EntryKind.RECUSAL)
            if (payload := reader.entry(entry)) is not None
        ],
        "risk": declared.risk,
        "retaliation_cases": retaliation_cases(session, case_id),
        "checkin_answers": checkin_answers(session, case_id, reader),
    }
    hold = retention.current_hold(session, opened.case, reader)
    answer |= retention.hold_answer(
        opened.case,
        settings,
        reason=hold.reason if hold else None,
        placed_on=hold.placed_on if hold else None,
        linked=bool(answer["retaliation_cases"]),
    )
    audit.record(session, actor=principal.actor, action="case.read", case_id=case_id)
    answer["integrity"] = manifest.answer(
        session, case_id=case_id, actor=principal.actor, problem=reader.problem(found)
    )
    return answer


def _write(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    kind: EntryKind,
    body: str,
    today: dt.date,
    action: str,
) -> None:
    opened = open_case(session, settings, principal, case_id)
    add_entry(
        session,
        case_id=case_id,
        kind=kind,
        key=opened.key,
        payload={"body": body},
        today=today,
        author_id=principal.user_id,
    )
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        case_id=case_id,
        details=manifest.audit_tag(session, case_id, opened.key),
    )


def write_to_reporter(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    body: str,
    today: dt.date,
) -> None:
    _write(
        session,
        settings,
        principal,
        case_id,
        kind=EntryKind.HANDLER_MESSAGE,
        body=body,
        today=today,
        action="case.message_sent",
    )


def add_note(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    body: str,
    today: dt.date,
) -> None:
    """An internal note: sealed like all content, never shown to the reporter."""
    _write(
        session,
        settings,
        principal,
        case_id,
        kind=EntryKind.NOTE,
        body=body,
        today=today,
        action="case.note_added",
    )


class NoFiles(InvalidInput):
    code = "no_files"


class FilesRefused(InvalidInput):
    """Files over the limits: nothing of the upload is stored. 413 when one is too large."""

    code = "files_refused"

    def __init__(self, message: str, problems: Sequence[attachments.FileProblem]) -> None:
        super().__init__(message)
        self.problems = list(problems)
        if any(p.reason == "too_large" for p in self.problems):
            self.status_code = 413


def add_handler_files(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    files: Sequence[attachments.SealedFile],
    problems: Sequence[attachments.FileProblem] = (),
    today: dt.date,
) -> list[dict[str, Any]]:
    """Store files a handler sealed with the case key, as the reporter's are: in the
    manifest, audited. The reporter sees them on their case page.

    A file over the size limit or past the number allowed (`problems`, from
    reading the upload) refuses the whole upload: nothing is stored.
    """
    opened = open_case(session, settings, principal, case_id)
    if problems:
        names = ", ".join(repr(p.name) for p in problems)
        raise FilesRefused(
            f"Nothing was stored: {names} went past the limits (each file at most "
            f"{settings.max_file_bytes} bytes, at most {settings.max_files_per_report} files "
            "at a time).",
            problems,
        )
    if not files:
        raise NoFiles('Choose at least one file (form field "files").')
    stored = [
        attachments.store(
            session,
            sealed,
            case_id=case_id,
            key=opened.key,
            uploaded_by="handler",
            today=today,
            actor=principal.actor,
        )
        for sealed in files
    ]
    audit.record(
        session,
        actor=principal.actor,
        action="case.files_added",
        case_id=case_id,
        details={"files": len(stored), **manifest.audit_tag(session, case_id, opened.key)},
    )
    return [attachments.describe(a, opened.key) for a in stored]


def change_status(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    status: str,
    outcome_text: str | None,
    today: dt.date,
) -> dict[str, Any]:
    """Move a case one step along its lifecycle; concluding or closing needs an outcome."""
    opened = open_case(session, settings, principal, case_id)
    case = opened.case
    try:
        target = Status(status)
    except ValueError as exc:
        raise InvalidInput(f"Status must be one of {', '.join(Status)}.") from exc
    current = Status(case.status)
    if NEXT_STATUS.get(current) != target:
        raise Conflict(
            f"A case that is {current.value} can only move to "
            f"{NEXT_STATUS[current].value if current in NEXT_STATUS else 'nothing (it is closed)'}."
        )
    if outcome_text and target not in (Status.CONCLUDED, Status.CLOSED):
        raise InvalidInput("An outcome is written when concluding or closing a case.")
    if outcome_text:
        add_entry(
            session,
            case_id=case_id,
            kind=EntryKind.OUTCOME,
            key=opened.key,
            payload={"body": outcome_text},
            today=today,
            author_id=principal.user_id,
        )
    elif target in (Status.CONCLUDED, Status.CLOSED) and not entries(
        session, case_id, EntryKind.OUTCOME
    ):
        raise InvalidInput("Concluding or closing a case needs a written outcome for the reporter.")

    case.status = target.value
    if target == Status.ACKNOWLEDGED:
        case.acknowledged_on = today
        case.feedback_due = (
            add_months(today, settings.retaliation_feedback_months)
            if case.priority == Priority.HIGH.value
            else feedback_due(case.received_on, today)
        )
    elif target == Status.CONCLUDED:
        case.concluded_on = today
    elif target == Status.CLOSED:
        case.closed_on = today
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="case.status_changed",
        case_id=case_id,
        details={
            "from": current.value,
            "to": target.value,
            "outcome_written": bool(outcome_text),
            **(manifest.audit_tag(session, case_id, opened.key) if outcome_text else {}),
        },
    )
    return case_summary(case, today)
