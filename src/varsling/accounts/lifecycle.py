"""Changing one's own password, and an administrator's password reset.

A change keeps the key pair: the same private key is sealed again under the
new password (new salt, the current Argon2id parameters), so every case
still opens. A reset cannot do that (nobody but the user can open the old
private key), so it makes a NEW key pair under the next key version and
destroys the old sealed key; the account's case access then waits until a
holder of each case key re-grants it (cases/regrants.py), or the recovery
key does (cases/recovery.py). Both end every session of the account, and
both are audited. Two-factor login is left as it is by both: a reset is
about a forgotten password, not a lost phone (an administrator resets
two-factor separately).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from varsling import audit, crypto, throttle
from varsling.accounts.models import LoginSession, User
from varsling.accounts.service import (
    BLOCKED_MESSAGE,
    MIN_PASSWORD_CHARS,
    _derive,
    _existing_user,
    _key_problem,
    _login_record,
    _LoginRecord,
    certify_key,
    current_password_params,
)
from varsling.cases.models import CaseKey
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import InvalidInput, TooManyAttempts, Unauthenticated


class WrongPassword(Unauthenticated):
    code = "wrong_password"


def check_new_password(password: str) -> None:
    """The same rule as `varsling user add`: at least MIN_PASSWORD_CHARS characters."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            f"A password needs at least {MIN_PASSWORD_CHARS} characters.", reason="password_short"
        )


def _end_sessions(session: Session, user_id: int) -> int:
    ended = session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    return int(getattr(ended, "rowcount", 0) or 0)


@dataclass(frozen=True)
class _Change:
    """The outcome of the transaction: done, or refused (the refusal is committed)."""

    done: bool
    sessions_ended: int = 0


def _finish_change(
    session: Session,
    settings: Settings,
    record: _LoginRecord | None,
    current: crypto.LoginSecrets,
    salt: bytes,
    fresh: crypto.LoginSecrets,
    account: bytes,
) -> _Change:
    """Check the current password, then re-seal the same private key under the new one."""
    user = session.get(User, record.user_id, with_for_update=True) if record else None

    def refuse(reason: str) -> _Change:
        throttle.note_account_failure(session, account)
        audit.record(
            session,
            actor=f"user:{record.user_id}" if record else audit.SYSTEM,
            action="user.password_change_failed",
            details={"reason": reason},
        )
        return _Change(False)

    if (
        record is None
        or record.params is None
        or user is None
        or user.password_verifier != record.verifier
        or not crypto.verifier_matches(user.password_verifier, current.verifier)
    ):
        return refuse("wrong_password")
    try:
        private_key = crypto.open_private_key(
            user.sealed_private_key, current.key, owner=f"user:{user.id}"
        )
        problem = _key_problem(settings, user, private_key, peppered=record.params.peppered)
    except crypto.CryptoError:
        problem = "private_key_unreadable"
    if problem is not None:
        return refuse(problem)
    user.password_salt = salt
    user.password_params = current_password_params(settings).encode()
    user.password_verifier = fresh.verifier
    user.sealed_private_key = crypto.seal_private_key(
        private_key, fresh.key, owner=f"user:{user.id}"
    )
    ended = _end_sessions(session, user.id)
    throttle.clear_account(session, account)
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="user.password_changed",
        details={"user_id": user.id, "sessions_ended": ended},
    )
    return _Change(True, ended)


def _username(session: Session, user_id: int) -> str:
    return _existing_user(session, user_id).username


async def change_password(
    maker: sessionmaker[Session],
    settings: Settings,
    *,
    user_id: int,
    current_password: str,
    new_password: str,
) -> int:
    """Change the signed-in user's password; every session of theirs ends. How many ended.

    Like a login: the account's backoff is checked before any Argon2id run, a
    wrong current password counts towards it (and is audited), and Argon2id
    never runs inside a transaction. Raises WrongPassword or TooManyAttempts.
    """
    check_new_password(new_password)
    username = await run_in_threadpool(in_transaction, maker, _username, user_id)
    account = crypto.account_tag(settings.secret("password_pepper"), username)
    remaining = await run_in_threadpool(in_transaction, maker, throttle.backoff_remaining, account)
    if remaining is not None:
        raise TooManyAttempts(remaining, BLOCKED_MESSAGE.format(seconds=remaining))
    record = await run_in_threadpool(in_transaction, maker, _login_record, username)
    current = await run_in_threadpool(_derive, record, current_password, settings)
    salt = crypto.new_salt()
    fresh = await run_in_threadpool(
        partial(
            crypto.derive_login,
            new_password,
            salt,
            settings.argon2,
            pepper=settings.secret("password_pepper"),
        )
    )
    outcome = await run_in_threadpool(
        in_transaction, maker, _finish_change, settings, record, current, salt, fresh, account
    )
    if not outcome.done:
        raise WrongPassword("The current password is wrong; nothing was changed.")
    return outcome.sessions_ended


@dataclass(frozen=True)
class Reset:
    user_id: int
    key_version: int
    sessions_ended: int
    pending_keys: int  # wrapped case keys now waiting for a re-grant


def reset_password(
    session: Session,
    settings: Settings,
    user_id: int,
    *,
    new_password: str,
    actor: str = audit.SYSTEM,
) -> Reset:
    """An administrator sets a new password: a new key pair, the old sealed key destroyed.

    The administrator learns nothing about cases: the account's wrapped case
    keys stay where they are, made for the old key version, and read as
    pending until a key holder (or the recovery key) re-grants them.
    """
    check_new_password(new_password)
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        _existing_user(session, user_id)  # raises the usual NotFound
        raise AssertionError  # pragma: no cover
    if not user.active:
        raise InvalidInput(
            f"The account {user.username!r} is inactive; a reset would not let it log in.",
            reason="inactive_account",
        )
    params = current_password_params(settings)
    salt = crypto.new_salt()
    login = crypto.derive_login(
        new_password, salt, params.argon2, pepper=settings.secret("password_pepper")
    )
    pair = crypto.generate_keypair()
    user.password_salt = salt
    user.password_params = params.encode()
    user.password_verifier = login.verifier
    user.public_key = pair.public_key
    # The old sealed private key is overwritten: nothing opens the old wraps any more.
    user.sealed_private_key = crypto.seal_private_key(
        pair.private_key, login.key, owner=f"user:{user.id}"
    )
    user.key_version += 1
    certify_key(settings, user)
    ended = _end_sessions(session, user.id)
    pending = session.execute(
        select(func.count()).select_from(CaseKey).where(CaseKey.user_id == user.id)
    ).scalar_one()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.password_reset",
        details={
            "user_id": user.id,
            "key_version": user.key_version,
            "sessions_ended": ended,
            "pending_keys": pending,
        },
    )
    return Reset(user.id, user.key_version, ended, pending)
