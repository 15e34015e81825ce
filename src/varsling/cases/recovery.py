"""The organisation's recovery key: every new case's keys also wrapped for it.

`varsling recovery init` makes an HPKE key pair (the users' suite), stores
the public half certified by the installation signing key (its own signature
domain) and prints the private half once; it is never stored. From then on
every case creation wraps the case key (DEK) and the identity key (IK) for
it too. Nothing is wrapped for a recovery key whose certificate fails: a
database writer who swaps it gets nothing, and the swap is audited.
`varsling recovery grant`, given the private half, re-grants a case to a
user's current certified key. Cases made before `init` are not covered.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts.models import Role, User
from varsling.accounts.service import key_certified, unit_chain
from varsling.audit import AuditEvent
from varsling.cases import exclusions, keys
from varsling.cases.models import Case, KeyPurpose, RecoveryKey, RecoveryWrap
from varsling.config import Settings
from varsling.errors import Conflict, Forbidden, InvalidInput, NotFound

log = logging.getLogger(__name__)


class RecoveryKeyExists(Conflict):
    code = "recovery_key_exists"


class RecoveryRefused(Forbidden):
    code = "recovery_refused"


def wrap_info(case_id: str, purpose: KeyPurpose, key_id: int) -> bytes:
    return crypto.wrap_info(case_id, purpose.value, f"recovery:{key_id}")


def recovery_key(session: Session) -> RecoveryKey | None:
    """The installation's recovery key row, if one was made (the newest)."""
    return session.execute(
        select(RecoveryKey).order_by(RecoveryKey.id.desc()).limit(1)
    ).scalar_one_or_none()


def was_initialised(session: Session) -> bool:
    """Whether the staff audit chain records a `recovery init`: a database writer who
    deletes the recovery key row cannot also delete that event without breaking the chain."""
    found = session.execute(
        select(AuditEvent.seq).where(AuditEvent.action == "recovery.initialised").limit(1)
    ).first()
    return found is not None


def problem(session: Session, verifying_key: bytes) -> str | None:
    """What is wrong with the recovery key as stored ("missing", "not_certified"), or None."""
    row = recovery_key(session)
    if row is None:
        return "missing" if was_initialised(session) else None
    return None if certified(row, verifying_key) else "not_certified"


def certified(row: RecoveryKey, verifying_key: bytes) -> bool:
    return crypto.recovery_key_certified(
        verifying_key, key_id=row.id, public_key=row.public_key, certificate=row.certificate
    )


@dataclass(frozen=True)
class Initialised:
    key_id: int
    fingerprint: str
    private_text: str  # shown once, never stored


def init_recovery(
    session: Session, settings: Settings, *, today: dt.date, actor: str = audit.SYSTEM
) -> Initialised:
    """Make the recovery key pair; the private half is only in what this returns."""
    existing = recovery_key(session)
    if existing is not None:
        raise RecoveryKeyExists(
            f"There is already a recovery key (id {existing.id}, fingerprint "
            f"{crypto.key_fingerprint(existing.public_key)}). Rotating it is not built yet.",
            reason="recovery_key_exists",
        )
    pair = crypto.generate_keypair()
    row = RecoveryKey(public_key=pair.public_key, certificate=b"", created_on=today)
    session.add(row)
    session.flush()
    row.certificate = crypto.certify_recovery_key(
        settings.signing_seed, key_id=row.id, public_key=pair.public_key
    )
    fingerprint = crypto.key_fingerprint(pair.public_key)
    audit.record(
        session,
        actor=actor,
        action="recovery.initialised",
        details={"recovery_key_id": row.id, "fingerprint": fingerprint},
    )
    return Initialised(row.id, fingerprint, crypto.encode_recovery_private_key(pair.private_key))


def wrap_for_recovery(
    session: Session,
    settings: Settings,
    case_id: str,
    *,
    case_key: bytes,
    identity_key: bytes,
    actor: str,
) -> bool:
    """At case creation: wrap the DEK and the IK for the recovery key, if there is one.

    False when nothing was wrapped. A recovery key whose certificate fails gets
    nothing; the case is still made (a report is never lost for this) and the
    refusal is audited in `actor`'s chain and logged.
    """
    row = recovery_key(session)
    if row is None:
        if was_initialised(session):
            # The row was deleted behind the service's back: say so, every time.
            log.error("the recovery key was made but is no longer in the database")
            audit.record(session, actor=actor, action="recovery.key_missing", case_id=case_id)
        return False
    if not certified(row, settings.signing_public_key):
        log.error("refusing to wrap case keys for the uncertified recovery key %s", row.id)
        audit.record(
            session,
            actor=actor,
            action="recovery.key_rejected",
            case_id=case_id,
            details={"recovery_key_id": row.id},
        )
        return False
    for purpose, key in ((KeyPurpose.CASE, case_key), (KeyPurpose.IDENTITY, identity_key)):
        session.add(
            RecoveryWrap(
                case_id=case_id,
                purpose=purpose.value,
                recovery_key_id=row.id,
                wrapped_key=crypto.wrap_key(
                    key, row.public_key, info=wrap_info(case_id, purpose, row.id)
                ),
            )
        )
    return True


def read_private_key(text: str) -> bytes:
    try:
        return crypto.parse_recovery_private_key(text)
    except crypto.CryptoError as exc:
        raise InvalidInput(
            f"That is not a readable recovery key: {exc}.", reason="recovery_key_unreadable"
        ) from exc


# Which key each role is given at case creation, and so by the recovery key.
_ROLE_KEYS = ((Role.HANDLER, KeyPurpose.CASE), (Role.CUSTODIAN, KeyPurpose.IDENTITY))


@dataclass(frozen=True)
class Granted:
    user_id: int
    purposes: tuple[str, ...]


def recovery_grant(
    session: Session,
    settings: Settings,
    *,
    private_key: bytes,
    case_id: str,
    username: str,
    today: dt.date,
    actor: str = audit.SYSTEM,
) -> Granted:
    """Unwrap the case's keys with the recovery private key and wrap them for `username`'s
    current certified key: the DEK for a handler, the IK for a custodian (both for
    someone with both roles), on the case's unit chain and not named as involved."""
    row = recovery_key(session)
    if row is None:
        raise NotFound("This installation has no recovery key.", reason="no_recovery_key")
    if not certified(row, settings.signing_public_key):
        raise RecoveryRefused(
            "The stored recovery public key is not the one this installation certified: "
            "it was changed in the database. Nothing was done.",
            reason="recovery_key_not_certified",
        )
    try:
        matches = crypto.public_key_of(private_key) == row.public_key
    except crypto.CryptoError:
        matches = False
    if not matches:
        raise RecoveryRefused(
            "That private key does not belong to this installation's recovery key.",
            reason="recovery_key_mismatch",
        )
    case = session.get(Case, case_id) if _is_case_id(case_id) else None
    if case is None:
        raise NotFound(f"There is no case {case_id}.", reason="no_case")
    # Read afresh: the key to wrap for is the one certified now, not one loaded earlier.
    user = session.execute(
        select(User)
        .where(User.username == username.strip().lower())
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if user is None or not user.active:
        raise NotFound(f"There is no active account {username!r}.", reason="no_account")
    wanted = [
        purpose
        for role, purpose in (
            (Role.HANDLER, KeyPurpose.CASE),
            (Role.CUSTODIAN, KeyPurpose.IDENTITY),
        )
        if role.value in user.role_names
    ]
    if not wanted:
        raise RecoveryRefused(
            "Only case handlers and identity custodians can be given a case.",
            reason="not_a_handler_or_custodian",
        )
    if not user.unit_ids & {unit.id for unit in unit_chain(session, case.unit_id)}:
        raise RecoveryRefused(
            "That person belongs to no unit on this case's chain (its unit and those above).",
            reason="outside_unit_chain",
        )
    if exclusions.is_excluded(session, settings, case.id, user.id):
        raise RecoveryRefused(
            "That person is named as involved in this case: they can never be given it.",
            reason="excluded",
        )
    if not key_certified(user, settings.signing_public_key):
        raise RecoveryRefused(
            "That person's key is not certified by this installation.",
            reason="key_not_certified",
        )
    granted: list[str] = []
    for purpose in wanted:
        if keys.held_key(session, case.id, user.id, purpose) is not None:
            continue
        wrap = session.get(RecoveryWrap, (case.id, purpose.value, row.id))
        if wrap is None:
            raise NotFound(
                "This case's keys were not wrapped for the recovery key (it was made before "
                "`varsling recovery init`, or the key was refused then); a holder of the case "
                "key must grant it instead.",
                reason="not_covered",
            )
        try:
            key = crypto.unwrap_key(
                wrap.wrapped_key, private_key, info=wrap_info(case.id, purpose, row.id)
            )
        except crypto.CryptoError as exc:
            raise RecoveryRefused(
                "The case key wrapped for the recovery key does not open: it was changed.",
                reason="recovery_wrap_unreadable",
            ) from exc
        keys.wrap_for(session, settings.signing_public_key, case.id, user, purpose, key, today)
        granted.append(purpose.value)
    if not granted:
        raise Conflict("That person already holds this case's keys.", reason="already_granted")
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="recovery.granted",
        case_id=case.id,
        details={"user_id": user.id, "purposes": granted, "key_version": user.key_version},
    )
    return Granted(user.id, tuple(granted))


def _is_case_id(case_id: str) -> bool:
    """Case ids are 32 hex digits; anything else names nothing."""
    return len(case_id) == 32 and all(c in "0123456789abcdef" for c in case_id)
