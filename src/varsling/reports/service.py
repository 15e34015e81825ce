"""The reporter side: submission, case-code sessions and the reporter's inbox.

Who receives a report is decided in `reports/routing.py`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit, crypto, receipts, throttle
from varsling.accounts.models import ReporterSession, User
from varsling.accounts.service import purge_expired_sessions, utcnow
from varsling.cases import attachments, exclusions, identity, keys, manifest, recovery
from varsling.cases import service as cases
from varsling.cases.models import (
    Attachment,
    Case,
    EntryKind,
    KeyPurpose,
    ReporterAccess,
    Status,
)
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import InvalidInput, NotFound, Unauthenticated
from varsling.notifications import service as notifications
from varsling.notifications.models import NoticeKind
from varsling.reports.models import SpentSubmission
from varsling.reports.routing import Offered, route_offered

_REPORTER_KEYS_CONTEXT = "varsling/reporter-keys"
_REPORTER_SESSION_CONTEXT = "varsling/reporter-session"
# The reporter-only key that opens the cases they opened from their first one
# (reports/reprisal.py): derived from the case-code key, so only the code opens it.
LINK_KEY_LABEL = "varsling/reporter-link/key"
_RECEIPT_CONTEXT = "varsling/report-receipt"
# How long the browser that sent a report can see its receipt again (a double click).
RECEIPT_MINUTES = 10
_EXPIRY = struct.Struct(">q")  # an exact expiry, as seconds since the epoch, sealed


# --------------------------------------------------------------------------
# Submission


def _reporter_context(case_id: str) -> bytes:
    return crypto.context(_REPORTER_KEYS_CONTEXT, case_id)


@dataclass(frozen=True)
class PreparedCase:
    """A case's id and key made before it exists, so files can be sealed as they arrive."""

    case_id: str
    case_key: bytes

    @classmethod
    def new(cls) -> PreparedCase:
        return cls(uuid.uuid4().hex, crypto.new_key())


class AlreadySent(Exception):
    """This very form was sent before (a reload or a second click).

    `case_code` is the earlier receipt's code, and `receipt` its signed
    receipt, when the same browser sent it less than RECEIPT_MINUTES ago;
    None for anyone else, or later.
    """

    def __init__(self, kept: KeptReceipt | None = None) -> None:
        super().__init__("already sent")
        self.case_code = kept.case_code if kept is not None else None
        self.receipt = kept.receipt if kept is not None else None


@dataclass(frozen=True)
class KeptReceipt:
    """What the browser that sent a form sees again on a second click."""

    case_code: str
    receipt: str | None  # None only for a receipt kept before signed receipts existed


def _submission_digest(settings: Settings, submission_id: str) -> bytes:
    return hmac.new(
        settings.secret("web_secret"), b"submission\x00" + submission_id.encode(), hashlib.sha256
    ).digest()


def _receipt_key(settings: Settings, submission_id: str, browser: str) -> bytes:
    # Both halves live only in the browser that sent the form: its page and its cookie.
    secret = crypto.context(settings.secret("web_secret"), submission_id, browser)
    return crypto.hkdf(secret, label="varsling/report-receipt/key")


def check_unspent(
    session: Session,
    settings: Settings,
    submission_id: str,
    *,
    browser: str | None,
    now: dt.datetime | None = None,
) -> None:
    """Raise AlreadySent if the form was sent (with its code for the browser that sent it)."""
    spent = _spent(session, _submission_digest(settings, submission_id))
    if spent is not None:
        raise AlreadySent(_open_receipt(settings, spent, submission_id, browser, now or utcnow()))


def spend_submission(
    session: Session,
    settings: Settings,
    submission_id: str,
    *,
    browser: str | None,
    now: dt.datetime | None = None,
) -> None:
    """Mark a form's submission id as used, in the transaction that stores the report.

    Raises AlreadySent when it was used, with the earlier case code if
    `browser` (the cookie value) is the one that sent it, within
    RECEIPT_MINUTES. Old marks are cleared on the way: kept receipts after
    a day or so, the marks themselves after two (longer than a form lives).
    """
    now = now or utcnow()
    today = now.date()
    digest = _submission_digest(settings, submission_id)
    session.execute(
        delete(SpentSubmission).where(SpentSubmission.spent_on < today - dt.timedelta(days=2))
    )
    session.execute(
        update(SpentSubmission)
        .where(
            SpentSubmission.spent_on < today - dt.timedelta(days=1),
            SpentSubmission.sealed_receipt.is_not(None),
        )
        .values(sealed_receipt=None)
    )
    spent = _spent(session, digest)
    if spent is None:
        try:
            with session.begin_nested():
                session.add(SpentSubmission(digest=digest, spent_on=today))
        except IntegrityError:
            # A second click racing the first: it has committed by now.
            spent = _spent(session, digest)
            if spent is None:
                raise
        else:
            return
    raise AlreadySent(_open_receipt(settings, spent, submission_id, browser, now))


def _spent(session: Session, digest: bytes) -> SpentSubmission | None:
    return session.execute(
        select(SpentSubmission)
        .where(SpentSubmission.digest == digest)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def keep_receipt(
    session: Session,
    settings: Settings,
    submission_id: str,
    *,
    browser: str | None,
    case_code: str,
    receipt: str,
    now: dt.datetime | None = None,
) -> None:
    """Seal the case code and the signed receipt for the browser that sent the form,
    for RECEIPT_MINUTES."""
    if browser is None:
        return
    now = now or utcnow()
    digest = _submission_digest(settings, submission_id)
    spent = session.get(SpentSubmission, digest)
    if spent is None:
        raise RuntimeError("keep_receipt needs spend_submission first")
    expires = int((now + dt.timedelta(minutes=RECEIPT_MINUTES)).timestamp())
    spent.sealed_receipt = crypto.seal(
        _receipt_key(settings, submission_id, browser),
        _EXPIRY.pack(expires) + case_code.encode() + b"\n" + receipt.encode(),
        context=crypto.context(_RECEIPT_CONTEXT, digest),
    )
    session.flush()


def _open_receipt(
    settings: Settings,
    spent: SpentSubmission,
    submission_id: str,
    browser: str | None,
    now: dt.datetime,
) -> KeptReceipt | None:
    if browser is None or spent.sealed_receipt is None:
        return None
    try:
        opened = crypto.open_sealed(
            _receipt_key(settings, submission_id, browser),
            spent.sealed_receipt,
            context=crypto.context(_RECEIPT_CONTEXT, spent.digest),
        )
    except crypto.CryptoError:
        return None  # another browser
    (expires,) = _EXPIRY.unpack(opened[: _EXPIRY.size])
    if expires <= now.timestamp():
        return None
    case_code, newline, receipt = opened[_EXPIRY.size :].decode().partition("\n")
    return KeptReceipt(case_code, receipt if newline else None)


@dataclass(frozen=True)
class NewCaseCode:
    """A fresh case code and what its Argon2id gave, made before any transaction opens."""

    code: str
    secrets: crypto.CaseCodeSecrets
    params: crypto.Argon2Params


def new_case_code(settings: Settings) -> NewCaseCode:
    """Draw a case code and stretch it (Argon2id, the slow part of a submission).

    Call it with no transaction open: on SQLite a writing transaction holds the
    database's write lock, and on PostgreSQL the submission's flood slot row is
    locked, so a stretch inside one would make every other report wait for it.
    """
    code = crypto.new_case_code()
    params = settings.argon2
    code_secrets = crypto.derive_case_code(
        code,
        pepper=settings.secret("code_pepper"),
        salt=settings.secret("code_salt"),
        params=params,
    )
    return NewCaseCode(code, code_secrets, params)


@dataclass(frozen=True)
class Submission:
    case_id: str
    case_code: str  # formatted; shown once, never stored
    receipt: str  # the signed receipt (receipts.py); never stored either


def submit_report(
    session: Session,
    settings: Settings,
    *,
    unit_id: int,
    category: str,
    report: dict[str, Any],
    identity: dict[str, Any] | None,
    excluded: Iterable[int] = (),
    today: dt.date | None = None,
    prepared: PreparedCase | None = None,
    files: Iterable[attachments.SealedFile] = (),
    offered: Offered | None = None,
    code: NewCaseCode | None = None,
) -> Submission:
    """Seal a report, wrap its keys for its receivers and the reporter; return the case code.

    `prepared` carries the case id and key when files were sealed while the
    form streamed in. `offered` is who the report form named: the report is
    refused (routing.NotOffered) if it would reach anyone else. `code` is the
    case code made by new_case_code() before the transaction began; without
    it, the code is made here, before the first statement of this function
    (the callers that serve reporters make it first, outside any transaction).
    """
    today = today or utcnow().date()
    prepared = prepared or PreparedCase.new()
    files = list(files)
    code = code or new_case_code(settings)
    code_secrets, params = code.secrets, code.params

    excluded_ids = sorted(set(excluded))
    for user_id in excluded_ids:
        if session.get(User, user_id) is None:
            raise InvalidInput(f"There is no recipient with id {user_id} to exclude.")
    verifying_key = settings.signing_public_key
    routing = route_offered(session, unit_id, excluded_ids, offered, verifying_key=verifying_key)

    case_id, case_key = prepared.case_id, prepared.case_key
    identity_key = crypto.new_key()
    case = Case(
        id=case_id,
        unit_id=unit_id,
        status=Status.RECEIVED.value,
        category=category,
        received_on=today,
        acknowledgement_due=cases.acknowledgement_due(today),
        feedback_due=cases.feedback_due(today, None),
        handling_unit_id=routing.unit.id,
    )
    session.add(case)
    session.flush()
    exclusions.record_exclusions(session, settings, case_id, excluded_ids)
    for handler in routing.handlers:
        keys.wrap_for(session, verifying_key, case_id, handler, KeyPurpose.CASE, case_key, today)
    for custodian in routing.custodians:
        keys.wrap_for(
            session, verifying_key, case_id, custodian, KeyPurpose.IDENTITY, identity_key, today
        )
    notifications.enqueue(
        session,
        settings,
        kind=NoticeKind.NEW_CASE,
        unit_id=routing.unit.id,
        recipients=routing.handlers,
        today=today,
    )
    recovery.wrap_for_recovery(
        session,
        settings,
        case_id,
        case_key=case_key,
        identity_key=identity_key,
        actor=audit.REPORTER,
    )
    for user in routing.rejected:
        # In the reporter's chain (the day only): a staff-chain event would time the report.
        audit.record(
            session,
            actor=audit.REPORTER,
            action="key.rejected",
            case_id=case_id,
            details={"user_id": user.id},
        )
    session.add(
        ReporterAccess(
            case_id=case_id,
            lookup=code_secrets.lookup,
            code_params=params.encode(),
            sealed_keys=crypto.seal(
                code_secrets.key, case_key + identity_key, context=_reporter_context(case_id)
            ),
        )
    )
    stored_files, manifest_tag = seal_new_content(
        session,
        case_id=case_id,
        case_key=case_key,
        identity_key=identity_key,
        report={"category": category, **report},
        identity=identity,
        files=files,
        today=today,
    )
    audit.record(
        session,
        actor=audit.REPORTER,
        action="case.submitted",
        case_id=case_id,
        details={
            "unit_id": unit_id,
            "routed_to_unit_id": routing.unit.id,
            # Counts only: who received it, set against the unit's people, would
            # name who was left out, and so the likely accused.
            "recipients": len(routing.handlers),
            "custodians": len(routing.custodians),
            "excluded_count": len(excluded_ids),
            "with_identity": bool(identity),
            "files": len(stored_files),
            **manifest_tag,
        },
    )
    receipt = _receipt(
        settings,
        case_key=case_key,
        today=today,
        unit_id=unit_id,
        category=category,
        report=report,
        identity=identity,
        files=files,
    )
    return Submission(case_id, crypto.format_case_code(code.code), receipt)


def _receipt(
    settings: Settings,
    *,
    case_key: bytes,
    today: dt.date,
    unit_id: int,
    category: str,
    report: dict[str, Any],
    identity: dict[str, Any] | None,
    files: list[attachments.SealedFile],
) -> str:
    """The reporter's signed receipt over what they submitted and the day.

    Nothing of it is stored: the value it signs is keyed with the case key,
    so it cannot be matched to the case without that key.
    """
    canonical = receipts.canonical_submission(
        unit_id=unit_id,
        category=category,
        report=report,
        identity=identity,
        files=[receipts.FileDigest(f.name, f.content_type, f.size, f.sha256) for f in files],
    )
    return receipts.make_receipt(
        settings.signing_seed,
        day=today,
        submission=receipts.submission_value(case_key, canonical),
    )


def seal_new_content(
    session: Session,
    *,
    case_id: str,
    case_key: bytes,
    identity_key: bytes,
    report: dict[str, Any],
    identity: dict[str, Any] | None,
    files: Iterable[attachments.SealedFile],
    today: dt.date,
) -> tuple[list[Attachment], dict[str, str]]:
    """A new case's report, its files and the identity, sealed, and its first manifest
    over all of them; the stored files and the manifest's audit tag."""
    report_entry = cases.add_entry(
        session,
        case_id=case_id,
        kind=EntryKind.REPORT,
        key=case_key,
        payload=report,
        today=today,
        in_manifest=False,
    )
    written = [report_entry]
    if report.get("involved"):
        # Sealed again on its own: a handler reads only this (with category, unit and
        # dates) to judge a conflict of interest before the case opens to them.
        written.append(
            cases.add_entry(
                session,
                case_id=case_id,
                kind=EntryKind.INVOLVED,
                key=case_key,
                payload={"involved": report["involved"]},
                today=today,
                in_manifest=False,
            )
        )
    stored_files = [
        attachments.store(
            session,
            sealed,
            case_id=case_id,
            key=case_key,
            uploaded_by="reporter",
            today=today,
            entry_id=report_entry.id,
            in_manifest=False,
        )
        for sealed in files
    ]
    if identity:
        written.append(
            cases.add_entry(
                session,
                case_id=case_id,
                kind=EntryKind.IDENTITY,
                key=identity_key,
                payload=identity,
                today=today,
                in_manifest=False,
            )
        )
    tag = manifest.seal_new_case(session, case_id, case_key, entries=written, files=stored_files)
    return stored_files, tag


# --------------------------------------------------------------------------
# Case-code sessions


def code_params_in_use(session: Session, settings: Settings) -> list[crypto.Argon2Params]:
    """The current Argon2id parameters, then any older ones codes were made under."""
    stored = session.execute(select(ReporterAccess.code_params).distinct()).scalars()
    current = settings.argon2
    older = {crypto.Argon2Params.decode(p) for p in stored} - {current}
    return [current, *sorted(older, key=lambda p: p.encode())]


def derive_code_candidates(
    case_code: str, settings: Settings, params: list[crypto.Argon2Params]
) -> list[crypto.CaseCodeSecrets] | None:
    """Argon2id of the typed code under each parameter set in use; None if malformed.

    Run outside any transaction: it is the slow part.
    """
    code = crypto.normalize_case_code(case_code)
    if code is None:
        return None
    pepper, salt = settings.secret("code_pepper"), settings.secret("code_salt")
    return [crypto.derive_case_code(code, pepper=pepper, salt=salt, params=p) for p in params]


def open_reporter_session(
    session: Session,
    settings: Settings,
    candidates: list[crypto.CaseCodeSecrets] | None,
    token: str | None = None,
    channel: str = "api",
) -> str | None:
    """A session token for a right code; None for a wrong one (counted for everyone).

    The web pages pass a fresh, server-made session-cookie value as `token`;
    the API gets a new one. A None return must still be committed.
    """
    found = None
    for candidate in candidates or []:
        found = _lookup(session, candidate)
        if found is not None:
            break
    if found is None:
        throttle.note_failure(session, throttle.Counter.CASE_CODE)
        return None
    access, code_key = found
    keys = crypto.open_sealed(
        code_key, access.sealed_keys, context=_reporter_context(access.case_id)
    ) + crypto.hkdf(code_key, label=LINK_KEY_LABEL)
    token = token or crypto.new_token()
    token_secrets = crypto.derive_token(token, channel)
    now = utcnow()
    purge_expired_sessions(session, now)
    expires = now + dt.timedelta(minutes=settings.reporter_session_minutes)
    session.add(
        ReporterSession(
            token_lookup=token_secrets.lookup,
            case_id=access.case_id,
            # The exact expiry is sealed with the keys; only the day is in the clear.
            sealed_secret=crypto.seal(
                token_secrets.key,
                _EXPIRY.pack(int(expires.timestamp())) + keys,
                context=_session_context(access.case_id, token_secrets.lookup),
            ),
            purge_on=expires.date(),
        )
    )
    audit.record(session, actor=audit.REPORTER, action="reporter.login", case_id=access.case_id)
    return token


async def sign_in_reporter(
    maker: sessionmaker[Session],
    settings: Settings,
    *,
    case_code: str,
    token: str | None = None,
    channel: str = "api",
) -> str | None:
    """The whole case-code login, for async routes.

    Waits out the global throttle, runs Argon2id outside any transaction
    (the same work for a right and a wrong code), then checks and opens the
    session in a short transaction that commits either way.
    """
    await throttle.pause(maker, settings, throttle.Counter.CASE_CODE)
    params = await run_in_threadpool(in_transaction, maker, code_params_in_use, settings)
    candidates = await run_in_threadpool(derive_code_candidates, case_code, settings, params)
    return await run_in_threadpool(
        in_transaction, maker, open_reporter_session, settings, candidates, token, channel
    )


def _lookup(
    session: Session, code_secrets: crypto.CaseCodeSecrets
) -> tuple[ReporterAccess, bytes] | None:
    access = session.execute(
        select(ReporterAccess).where(ReporterAccess.lookup == code_secrets.lookup)
    ).scalar_one_or_none()
    return (access, code_secrets.key) if access is not None else None


def _session_context(case_id: str, lookup: bytes) -> bytes:
    return crypto.context(_REPORTER_SESSION_CONTEXT, case_id, lookup)


@dataclass(frozen=True)
class ReporterPrincipal:
    case_id: str
    case_key: bytes
    identity_key: bytes
    # Opens the reporter's linked cases (reports/reprisal.py); None for a session
    # opened before link keys existed: such a reporter must log in again.
    link_key: bytes | None = None
    # Set when this principal acts on a linked case: the case the code opens.
    first_case_id: str | None = None


@dataclass(frozen=True)
class LiveReporterSession:
    principal: ReporterPrincipal
    expires_at: dt.datetime  # exact, from inside the sealed secret


def reporter_session(session: Session, token: str, channel: str = "api") -> LiveReporterSession:
    """The live reporter session for a token and the case keys it opens.

    The expiry checked is the one sealed under the token's key: a database
    writer can neither read it nor move it.
    """
    token_secrets = crypto.derive_token(token, channel)
    found = session.get(ReporterSession, token_secrets.lookup)
    opened = None
    if found is not None:
        try:
            opened = crypto.open_sealed(
                token_secrets.key,
                found.sealed_secret,
                context=_session_context(found.case_id, found.token_lookup),
            )
        except crypto.CryptoError:
            opened = None
    if found is None or opened is None:
        raise Unauthenticated("The session has expired or does not exist; log in again.")
    (expires,) = _EXPIRY.unpack(opened[: _EXPIRY.size])
    expires_at = dt.datetime.fromtimestamp(expires, dt.UTC)
    if expires_at <= utcnow():
        raise Unauthenticated("The session has expired or does not exist; log in again.")
    keys = opened[_EXPIRY.size :]
    k = crypto.KEY_BYTES
    principal = ReporterPrincipal(
        found.case_id, keys[:k], keys[k : 2 * k], link_key=keys[2 * k : 3 * k] or None
    )
    return LiveReporterSession(principal, expires_at)


def reporter_principal(session: Session, token: str, channel: str = "api") -> ReporterPrincipal:
    return reporter_session(session, token, channel).principal


def end_reporter_session(session: Session, token: str, channel: str = "api") -> bool:
    """Delete the reporter session behind `token`, if there is one; True if there was."""
    found = session.get(ReporterSession, crypto.derive_token(token, channel).lookup)
    if found is None:
        return False
    session.delete(found)
    audit.record(session, actor=audit.REPORTER, action="session.ended", case_id=found.case_id)
    return True


# --------------------------------------------------------------------------
# The reporter's inbox


def reporter_case(session: Session, principal: ReporterPrincipal) -> dict[str, Any]:
    """What the reporter sees: status, deadlines, their report with identity, the thread,
    and whether it is all there as written."""
    case = session.get(Case, principal.case_id)
    if case is None:
        raise NotFound("This case no longer exists.")
    found = manifest.check(session, case.id, principal.case_key)
    reader = cases.ContentReader(principal.case_key)
    report = cases.first_entry(session, case.id, EntryKind.REPORT, reader) or {}
    identity_reader = cases.ContentReader(principal.identity_key)
    given_identity = cases.first_entry(session, case.id, EntryKind.IDENTITY, identity_reader)
    # Each time a custodian let a case handler see the identity, with their reason.
    notices, unreadable_notices = identity.reporter_notices(
        session, case.id, principal.identity_key
    )
    identity_reader.unreadable += unreadable_notices
    answer: dict[str, Any] = {
        "status": case.status,
        "received_on": case.received_on.isoformat(),
        "acknowledgement_due": case.acknowledgement_due.isoformat(),
        "feedback_due": case.feedback_due.isoformat(),
        "report": {**report, "identity": given_identity},
        "messages": [
            {k: m[k] for k in ("author", "body", "sent_on", "retaliation")}
            for m in cases.thread(session, case.id, reader)
        ],
        "outcome": cases.outcome(session, case.id, reader),
        "files": reader.files(session, case.id),
        "identity_notices": notices,
    }
    audit.record(session, actor=audit.REPORTER, action="reporter.case_read", case_id=case.id)
    answer["integrity"] = manifest.answer(
        session,
        case_id=case.id,
        actor=audit.REPORTER,
        problem=reader.problem(found) or identity_reader.problem(None),
    )
    return answer


def add_reporter_message(
    session: Session,
    principal: ReporterPrincipal,
    *,
    body: str,
    retaliation: bool = False,
    today: dt.date | None = None,
    files: Iterable[attachments.SealedFile] = (),
) -> None:
    today = today or utcnow().date()
    if session.get(Case, principal.case_id) is None:
        raise NotFound("This case no longer exists.")
    entry = cases.add_entry(
        session,
        case_id=principal.case_id,
        kind=EntryKind.REPORTER_MESSAGE,
        key=principal.case_key,
        payload={"body": body, "retaliation": retaliation},
        today=today,
    )
    stored = add_reporter_files(session, principal, files=files, today=today, entry_id=entry.id)
    audit.record(
        session,
        actor=audit.REPORTER,
        action="reporter.message_sent",
        case_id=principal.case_id,
        details={
            "retaliation": retaliation,
            "files": len(stored),
            **manifest.audit_tag(session, principal.case_id, principal.case_key),
        },
    )


def add_reporter_files(
    session: Session,
    principal: ReporterPrincipal,
    *,
    files: Iterable[attachments.SealedFile],
    today: dt.date | None = None,
    entry_id: int | None = None,
) -> list[dict[str, Any]]:
    """Store files the reporter sealed with their case key; audited when not part of a message."""
    today = today or utcnow().date()
    if session.get(Case, principal.case_id) is None:
        raise NotFound("This case no longer exists.")
    stored = [
        attachments.store(
            session,
            sealed,
            case_id=principal.case_id,
            key=principal.case_key,
            uploaded_by="reporter",
            today=today,
            entry_id=entry_id,
        )
        for sealed in files
    ]
    if entry_id is None and stored:
        audit.record(
            session,
            actor=audit.REPORTER,
            action="reporter.files_added",
            case_id=principal.case_id,
            details={
                "files": len(stored),
                **manifest.audit_tag(session, principal.case_id, principal.case_key),
            },
        )
    return [attachments.describe(a, principal.case_key) for a in stored]
