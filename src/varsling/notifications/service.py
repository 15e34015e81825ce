"""Tell staff that a case in a unit needs them: queue with the action, send from the jobs.

A reporter's request only writes outbox rows in its own transaction; it never
talks to the mail server, so the server can neither slow it, fail it nor time
it. `deliver` (run by `varsling jobs run`) claims due rows, sends one mail per
recipient over SMTP and removes what was sent. A failed mail stays queued and
is tried again after a growing pause, MAX_ATTEMPTS times at most.

Two runs at once, on one machine or two, never send a notice twice: a run
first claims rows in a short transaction (rows another run is claiming are
skipped on PostgreSQL; SQLite lets one writer in at a time), and a claim
lapses after CLAIM_MINUTES, so a run that died leaves nothing stuck. A run
that sent a mail but died before recording it may cause one repeat mail.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import smtplib
import ssl
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit
from varsling.accounts.models import Role, Unit, User, UserRole
from varsling.config import Settings
from varsling.notifications.models import Notice, NoticeKind
from varsling.web.i18n import LANGUAGE_NAMES, LANGUAGES, N_, Language, load_translations

log = logging.getLogger("varsling.notifications")

# Rows claimed per run; the rest wait for the next run.
BATCH = 500
CLAIM_MINUTES = 15
# A failed mail is tried again after 5, 10, 20 ... minutes (at most 12 hours), this often.
MAX_ATTEMPTS = 8
_FIRST_PAUSE_MINUTES = 5
_LONGEST_PAUSE_MINUTES = 12 * 60

_SUBJECT = N_("Varsling: a case needs you")
_LINES = {
    NoticeKind.NEW_CASE: N_("A case in unit {unit} needs you: new report."),
    NoticeKind.OVERDUE: N_("A case in unit {unit} needs you: a deadline has passed."),
    NoticeKind.IDENTITY_REQUEST: N_(
        "A case in unit {unit} needs you: a case handler asks to see the reporter's identity."
    ),
    NoticeKind.RETALIATION: N_("A case in unit {unit} needs you: a report of retaliation."),
}
_LOG_IN_AT = N_("Log in to Varsling to read it: {url}")
_LOG_IN = N_("Log in to Varsling to read it.")
_NO_CONTENT = N_(
    "This mail holds nothing of the case, by design. Do not answer it: nobody reads the replies."
)


# --------------------------------------------------------------------------
# Queueing, in the transaction of the action


def enqueue(
    session: Session,
    settings: Settings,
    *,
    kind: NoticeKind,
    unit_id: int,
    recipients: Iterable[User],
    today: dt.date,
) -> int:
    """Queue a notice for each staff recipient (none while notifications are off); how many."""
    if not settings.notifications_enabled:
        return 0
    queued = 0
    for user_id in sorted({u.id for u in recipients}):
        session.add(
            Notice(
                id=secrets.token_hex(16),
                recipient_id=user_id,
                kind=kind.value,
                unit_id=unit_id,
                created_on=today,
                attempts=0,
            )
        )
        queued += 1
    if queued:
        session.flush()
    return queued


# --------------------------------------------------------------------------
# Composing: a unit's name and a kind, never anything of the case


def compose(
    settings: Settings, *, to: str, notices: Iterable[tuple[NoticeKind, str]]
) -> EmailMessage:
    """One mail for one recipient: each notice as a line, in bokmål, nynorsk and English."""
    lines = sorted(notices, key=lambda n: (list(NoticeKind).index(n[0]), n[1]))
    parts = []
    for language in LANGUAGES:
        parts.append(_part(settings, language, lines))
    message = EmailMessage()
    message["From"] = settings.smtp_from or ""
    message["To"] = to
    message["Subject"] = " / ".join(
        dict.fromkeys(load_translations(lang).gettext(_SUBJECT) for lang in LANGUAGES)
    )
    message["Date"] = formatdate(localtime=False)
    domain = (settings.smtp_from or "varsling@localhost").rpartition("@")[2]
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n\n".join(parts))
    return message


def _part(settings: Settings, language: Language, lines: list[tuple[NoticeKind, str]]) -> str:
    translate = load_translations(language).gettext
    text = [f"[{LANGUAGE_NAMES[language]}]", ""]
    text += [translate(_LINES[kind]).format(unit=unit) for kind, unit in lines]
    text.append("")
    if settings.public_base_url:
        url = f"{settings.public_base_url.rstrip('/')}/{language}/staff/login"
        text.append(translate(_LOG_IN_AT).format(url=url))
    else:
        text.append(translate(_LOG_IN))
    text.append(translate(_NO_CONTENT))
    return "\n".join(text)


# --------------------------------------------------------------------------
# Delivering, from the jobs


Send = Callable[[Settings, list[EmailMessage]], list[Exception | None]]


@dataclass
class Delivery:
    """What one run did: mails sent, the notices they carried, and what was not sent."""

    mails: int = 0
    notices: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    no_email: int = 0  # notices to an account without an address (or no longer active)
    failed: int = 0  # notices kept for a later run
    abandoned: int = 0  # notices given up on after MAX_ATTEMPTS

    def add(self, other: Delivery) -> None:
        self.mails += other.mails
        self.notices += other.notices
        for kind, count in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + count
        self.no_email += other.no_email
        self.failed += other.failed
        self.abandoned += other.abandoned

    def as_details(self) -> dict[str, object]:
        return {
            "mails": self.mails,
            "notices": self.notices,
            "by_kind": dict(sorted(self.by_kind.items())),
            "skipped_no_email": self.no_email,
            "failed": self.failed,
            "abandoned": self.abandoned,
        }


def _due(now: dt.datetime) -> ColumnElement[bool]:
    return and_(
        or_(Notice.claimed_until.is_(None), Notice.claimed_until < now),
        or_(Notice.next_attempt_at.is_(None), Notice.next_attempt_at <= now),
    )


def _claim(maker: sessionmaker[Session], now: dt.datetime) -> str | None:
    """Claim up to BATCH due rows for this run; the claim, or None when none was due."""
    claim = secrets.token_hex(16)
    with maker.begin() as session:
        ids = list(
            session.execute(
                select(Notice.id)
                .where(_due(now))
                .order_by(Notice.recipient_id, Notice.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not ids:
            return None
        # The due condition again: on PostgreSQL a row claimed meanwhile is re-read and left.
        session.execute(
            update(Notice)
            .where(Notice.id.in_(ids), _due(now))
            .values(claim=claim, claimed_until=now + dt.timedelta(minutes=CLAIM_MINUTES))
            .execution_options(synchronize_session=False)
        )
    return claim


@dataclass(frozen=True)
class _Recipient:
    user_id: int
    email: str | None
    notices: list[Notice]


def _claimed(session: Session, claim: str) -> list[_Recipient]:
    rows = list(
        session.execute(
            select(Notice).where(Notice.claim == claim).order_by(Notice.recipient_id, Notice.id)
        ).scalars()
    )
    by_user: dict[int, list[Notice]] = defaultdict(list)
    for row in rows:
        by_user[row.recipient_id].append(row)
    staff_roles = [Role.HANDLER.value, Role.CUSTODIAN.value]
    reachable = dict(
        session.execute(
            select(User.id, User.email)
            .join(UserRole, UserRole.user_id == User.id)
            .where(
                User.id.in_(list(by_user)),
                User.active.is_(True),
                UserRole.role.in_(staff_roles),
            )
        ).all()
    )
    return [
        _Recipient(user_id, reachable.get(user_id) or None, notices)
        for user_id, notices in by_user.items()
    ]


def send_over_smtp(settings: Settings, messages: list[EmailMessage]) -> list[Exception | None]:
    """Send each message over one SMTP connection; per message, None or what went wrong.

    A failure to connect or log in fails every message; a dropped connection,
    every message not sent yet.
    """
    host = settings.smtp_host or ""
    port = settings.smtp_port_or_default
    timeout = settings.smtp_timeout_seconds
    context = ssl.create_default_context()
    results: list[Exception | None] = []
    try:
        client: smtplib.SMTP
        if settings.smtp_tls == "tls":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if settings.smtp_tls == "starttls":
                client.starttls(context=context)
            if settings.smtp_username and settings.smtp_password:
                client.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            for message in messages:
                try:
                    client.send_message(message)
                except smtplib.SMTPServerDisconnected:
                    raise
                except smtplib.SMTPException as refused:
                    # This recipient or this message only; the connection goes on.
                    results.append(refused)
                    client.rset()
                else:
                    results.append(None)
    except (OSError, smtplib.SMTPException) as failed:
        results += [failed] * (len(messages) - len(results))
    return results


def _unit_names(session: Session, recipients: list[_Recipient]) -> dict[int, str]:
    unit_ids = {n.unit_id for r in recipients for n in r.notices}
    rows = session.execute(select(Unit.id, Unit.name).where(Unit.id.in_(unit_ids))).all()
    return dict(rows)


def _pause(attempts: int) -> dt.timedelta:
    minutes = min(_FIRST_PAUSE_MINUTES * 2 ** (attempts - 1), _LONGEST_PAUSE_MINUTES)
    return dt.timedelta(minutes=minutes)


def _why(problem: Exception) -> str:
    """What went wrong, without the server's words (which may repeat an address)."""
    code = getattr(problem, "smtp_code", None)
    return f"{type(problem).__name__}{f' {code}' if code else ''}"


def deliver(
    maker: sessionmaker[Session],
    settings: Settings,
    *,
    now: dt.datetime,
    send: Send = send_over_smtp,
) -> Delivery:
    """Send the due notices, one mail per recipient and batch; what was done.

    Batch by batch until none is due; each batch's outcome is recorded, with
    its audit event, in one transaction.
    """
    done = Delivery()
    if not settings.notifications_enabled:
        return done
    while (claim := _claim(maker, now)) is not None:
        _deliver_batch(maker, settings, claim, now=now, send=send, done=done)
    return done


def _deliver_batch(
    maker: sessionmaker[Session],
    settings: Settings,
    claim: str,
    *,
    now: dt.datetime,
    send: Send,
    done: Delivery,
) -> None:
    batch = Delivery()
    with maker() as session:
        recipients = _claimed(session, claim)
        names = _unit_names(session, recipients)
    to_send = [r for r in recipients if r.email]
    messages = [
        compose(
            settings,
            to=r.email or "",
            notices=[(NoticeKind(n.kind), names.get(n.unit_id, "?")) for n in r.notices],
        )
        for r in to_send
    ]
    # No transaction is open while the mail server is talked to.
    results = send(settings, messages) if messages else []

    with maker.begin() as session:
        finished: list[str] = []
        for recipient in recipients:
            if not recipient.email:
                batch.no_email += len(recipient.notices)
                finished += [n.id for n in recipient.notices]
        for recipient, problem in zip(to_send, results, strict=True):
            ids = [n.id for n in recipient.notices]
            if problem is None:
                batch.mails += 1
                batch.notices += len(ids)
                for notice in recipient.notices:
                    batch.by_kind[notice.kind] = batch.by_kind.get(notice.kind, 0) + 1
                finished += ids
                continue
            attempts = max(n.attempts for n in recipient.notices) + 1
            if attempts >= MAX_ATTEMPTS:
                batch.abandoned += len(ids)
                finished += ids
                log.error(
                    "Notification mail to user %d failed %d times (%s); given up.",
                    recipient.user_id,
                    attempts,
                    _why(problem),
                )
                continue
            batch.failed += len(ids)
            log.warning(
                "Notification mail to user %d failed (%s); kept for a later run.",
                recipient.user_id,
                _why(problem),
            )
            session.execute(
                update(Notice)
                .where(Notice.id.in_(ids), Notice.claim == claim)
                .values(
                    attempts=attempts,
                    next_attempt_at=now + _pause(attempts),
                    claim=None,
                    claimed_until=None,
                )
                .execution_options(synchronize_session=False)
            )
        if finished:
            session.execute(
                delete(Notice)
                .where(Notice.id.in_(finished), Notice.claim == claim)
                .execution_options(synchronize_session=False)
            )
        # In the reporter chain, which carries the day only: the counts include new
        # reports and retaliation cases, whose time of day a timestamp would bound.
        audit.record(
            session,
            actor=audit.REPORTER,
            action="notifications.delivered",
            details=batch.as_details(),
        )
    done.add(batch)


def summary(done: Delivery) -> str:
    """The jobs' line for this part."""
    return (
        f"Notifications: sent {done.mails} mails ({done.notices} notices); "
        f"{done.no_email} skipped (no email), {done.failed} kept for retry, "
        f"{done.abandoned} given up."
    )
