"""Wrapping a case's keys for people: only for certified keys, never for the excluded.

The server holds no case key of its own: every wrap here is done with a key
that a session opened (a staff member's, or the reporter's), and every wrap
checks the recipient's key certificate first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from varsling import crypto
from varsling.accounts.models import Role, User
from varsling.accounts.service import key_certified, members_by_unit, unit_chain
from varsling.cases import exclusions
from varsling.cases.models import Case, CaseKey, KeyPurpose
from varsling.config import Settings


def wrap_info(case_id: str, purpose: KeyPurpose, user_id: int, key_version: int = 1) -> bytes:
    """HPKE `info` naming the case, the purpose and the recipient's key (id and version).

    Version 1 keeps the older recipient name, so keys wrapped before key
    versions were recorded still open.
    """
    recipient = f"user:{user_id}" if key_version == 1 else f"user:{user_id}/key:{key_version}"
    return crypto.wrap_info(case_id, purpose.value, recipient)


def wrap_for(
    session: Session,
    verifying_key: bytes,
    case_id: str,
    user: User,
    purpose: KeyPurpose,
    key: bytes,
    today: dt.date,
) -> None:
    """Add `key` wrapped for `user`'s public key; refused for an uncertified key."""
    # Callers have left out uncertified keys already; this is the last line.
    if not key_certified(user, verifying_key):
        raise crypto.CryptoError(f"refusing to wrap for the uncertified key of user {user.id}")
    wrapped_key = crypto.wrap_key(
        key, user.public_key, info=wrap_info(case_id, purpose, user.id, user.key_version)
    )
    # A row left from an older key version (access pending after a reset) is replaced.
    stale = session.execute(
        select(CaseKey).where(
            CaseKey.case_id == case_id,
            CaseKey.user_id == user.id,
            CaseKey.purpose == purpose.value,
        )
    ).scalar_one_or_none()
    if stale is not None:
        stale.wrapped_key = wrapped_key
        stale.key_version = user.key_version
        stale.granted_on = today
        return
    session.add(
        CaseKey(
            case_id=case_id,
            user_id=user.id,
            purpose=purpose.value,
            wrapped_key=wrapped_key,
            granted_on=today,
            key_version=user.key_version,
        )
    )


def unwrap(wrapped: CaseKey, private_key: bytes) -> bytes:
    return crypto.unwrap_key(
        wrapped.wrapped_key,
        private_key,
        info=wrap_info(
            wrapped.case_id, KeyPurpose(wrapped.purpose), wrapped.user_id, wrapped.key_version
        ),
    )


def current(purpose: KeyPurpose) -> ColumnElement[bool]:
    """Rows of `purpose` wrapped for their user's current key version (not pending)."""
    version = select(User.key_version).where(User.id == CaseKey.user_id).scalar_subquery()
    return (CaseKey.purpose == purpose.value) & (CaseKey.key_version == version)


def held_key(session: Session, case_id: str, user_id: int, purpose: KeyPurpose) -> CaseKey | None:
    """The user's wrapped `purpose` key for the case, if made for their current key."""
    return session.execute(
        select(CaseKey).where(
            CaseKey.case_id == case_id, CaseKey.user_id == user_id, current(purpose)
        )
    ).scalar_one_or_none()


def holders(session: Session, case_id: str, purpose: KeyPurpose) -> set[int]:
    """The users who hold a wrapped `purpose` key for the case, for their current key
    (someone whose access waits for a re-grant after a reset is not one)."""
    return set(
        session.execute(
            select(CaseKey.user_id).where(CaseKey.case_id == case_id, current(purpose))
        ).scalars()
    )


def handling_unit(case: Case) -> int:
    """The unit whose handlers received the case (its own unit for older cases)."""
    return case.handling_unit_id if case.handling_unit_id is not None else case.unit_id


def eligible(
    session: Session,
    settings: Settings,
    case_id: str,
    users: Iterable[User],
    *,
    leaving_out: Iterable[int] = (),
) -> list[User]:
    """The users who may be given a key to the case: active, certified, not excluded."""
    left_out = set(leaving_out)
    verifying_key = settings.signing_public_key
    return [
        u
        for u in users
        if u.active
        and u.id not in left_out
        and key_certified(u, verifying_key)
        and not exclusions.is_excluded(session, settings, case_id, u.id)
    ]


def handlers_above(
    session: Session,
    settings: Settings,
    case: Case,
    *,
    leaving_out: Iterable[int] = (),
) -> tuple[int, list[User]] | None:
    """The nearest unit above the case's handling unit with handlers who may receive
    it, and those handlers; None when there is no such unit up to the national level."""
    chain = unit_chain(session, handling_unit(case))[1:]
    by_unit = members_by_unit(session, [u.id for u in chain], Role.HANDLER)
    left_out = list(leaving_out)
    for unit in chain:
        found = eligible(session, settings, case.id, by_unit.get(unit.id, []), leaving_out=left_out)
        if found:
            return unit.id, found
    return None
