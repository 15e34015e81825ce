"""Units and accounts, staff login and sessions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit, crypto, throttle
from varsling.accounts.models import (
    LoginSession,
    Membership,
    ReporterSession,
    Role,
    Unit,
    UnitKind,
    User,
    UserRole,
)
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import Conflict, InvalidInput, Unauthenticated

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}")
MIN_PASSWORD_CHARS = 12


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------
# Units


def create_unit(
    session: Session,
    *,
    name: str,
    parent_id: int | None = None,
    kind: str | None = None,
    actor: str = audit.SYSTEM,
) -> Unit:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("A unit needs a name of 1 to 200 characters.")
    if parent_id is not None and session.get(Unit, parent_id) is None:
        raise InvalidInput(f"There is no unit with id {parent_id} to be the parent.")
    if kind is None:
        kind = UnitKind.NATIONAL if parent_id is None else UnitKind.MUNICIPAL
    if kind not in set(UnitKind):
        raise InvalidInput(f"Unit kind must be one of {', '.join(UnitKind)}.")
    unit = Unit(name=name, parent_id=parent_id, kind=kind)
    session.add(unit)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="unit.created",
        details={"unit_id": unit.id, "parent_id": parent_id, "kind": kind},
    )
    return unit


def unit_chain(session: Session, unit_id: int) -> list[Unit]:
    """The unit and its ancestors, nearest first."""
    chain: list[Unit] = []
    seen: set[int] = set()
    current = session.get(Unit, unit_id)
    while current is not None and current.id not in seen:
        chain.append(current)
        seen.add(current.id)
        current = session.get(Unit, current.parent_id) if current.parent_id else None
    return chain


def members_by_unit(session: Session, unit_ids: Iterable[int], role: Role) -> dict[int, list[User]]:
    """Active members with `role` of each unit, in one query, ordered by name."""
    query = (
        select(Membership.unit_id, User)
        .join(User, Membership.user_id == User.id)
        .join(UserRole, UserRole.user_id == User.id)
        .where(Membership.unit_id.in_(list(unit_ids)), UserRole.role == role.value, User.active)
        .order_by(User.display_name, User.id)
    )
    members: dict[int, list[User]] = {}
    for unit_id, user in session.execute(query):
        members.setdefault(unit_id, []).append(user)
    return members


# --------------------------------------------------------------------------
# Accounts


def create_user(
    session: Session,
    settings: Settings,
    *,
    username: str,
    password: str,
    roles: Iterable[str],
    unit_ids: Iterable[int] = (),
    display_name: str | None = None,
    actor: str = audit.SYSTEM,
) -> User:
    """A new account with its HPKE key pair, the private half sealed under the password."""
    username = username.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidInput(
            "A username is 2 to 63 characters: lower-case letters, digits, '.', '_' or '-'."
        )
    role_set = set(roles)
    unknown = role_set - set(Role)
    if not role_set or unknown:
        raise InvalidInput(f"Roles must be among {', '.join(Role)}.")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    units = sorted(set(unit_ids))
    for unit_id in units:
        if session.get(Unit, unit_id) is None:
            raise InvalidInput(f"There is no unit with id {unit_id}.")
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"The username {username!r} is taken.")

    params = settings.argon2
    salt = crypto.new_salt()
    login = crypto.derive_login(password, salt, params)
    pair = crypto.generate_keypair()
    user = User(
        username=username,
        display_name=(display_name or username).strip()[:200],
        active=True,
        created_on=utcnow().date(),
        password_salt=salt,
        password_params=params.encode(),
        password_verifier=login.verifier,
        public_key=pair.public_key,
        sealed_private_key=b"",
        roles=[UserRole(role=r) for r in sorted(role_set)],
        memberships=[Membership(unit_id=u) for u in units],
    )
    session.add(user)
    session.flush()
    user.sealed_private_key = crypto.seal_private_key(
        pair.private_key, login.key, owner=f"user:{user.id}"
    )
    audit.record(
        session,
        actor=actor,
        action="user.created",
        details={"user_id": user.id, "roles": sorted(role_set), "unit_ids": units},
    )
    return user


# --------------------------------------------------------------------------
# Staff login and sessions

# Used to spend the same Argon2id time for an unknown username as for a known one.
_DUMMY_SALT = b"varsling-no-user"


@dataclass(frozen=True)
class StaffPrincipal:
    user_id: int
    roles: frozenset[str]
    unit_ids: frozenset[int]
    private_key: bytes

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"


@dataclass(frozen=True)
class _LoginRecord:
    user_id: int
    salt: bytes
    params: crypto.Argon2Params
    verifier: bytes


def _login_record(session: Session, username: str) -> _LoginRecord | None:
    user = session.execute(
        select(User).where(User.username == username.strip().lower())
    ).scalar_one_or_none()
    if user is None or not user.active:
        return None
    params = crypto.Argon2Params.decode(user.password_params)
    return _LoginRecord(user.id, user.password_salt, params, user.password_verifier)


def _derive(record: _LoginRecord | None, password: str, settings: Settings) -> crypto.LoginSecrets:
    # An unknown username costs the same Argon2id run as a known one.
    if record is None:
        return crypto.derive_login(password, _DUMMY_SALT, settings.argon2)
    return crypto.derive_login(password, record.salt, record.params)


def finish_login(
    session: Session,
    settings: Settings,
    record: _LoginRecord | None,
    secrets: crypto.LoginSecrets,
) -> str | None:
    """Check the verifier, open the private key and start a session; None when wrong.

    A failure is counted and audited, so the caller must commit, not raise.
    """
    user = session.get(User, record.user_id) if record is not None else None
    if (
        record is None
        or user is None
        or not user.active
        or not crypto.verifier_matches(user.password_verifier, secrets.verifier)
    ):
        throttle.note_failure(session, throttle.Counter.STAFF_LOGIN)
        audit.record(
            session,
            actor=f"user:{record.user_id}" if record is not None else audit.SYSTEM,
            action="user.login_failed",
        )
        return None
    private_key = crypto.open_private_key(
        user.sealed_private_key, secrets.key, owner=f"user:{user.id}"
    )
    token = crypto.new_token()
    token_secrets = crypto.derive_token(token)
    now = utcnow()
    purge_expired_sessions(session, now)
    session.add(
        LoginSession(
            token_lookup=token_secrets.lookup,
            user_id=user.id,
            sealed_secret=crypto.seal_private_key(
                private_key, token_secrets.key, owner=f"session:user:{user.id}"
            ),
            expires_at=now + dt.timedelta(minutes=settings.session_minutes),
        )
    )
    audit.record(session, actor=f"user:{user.id}", action="user.login")
    return token


async def sign_in_staff(
    maker: sessionmaker[Session], settings: Settings, *, username: str, password: str
) -> str | None:
    """The whole staff login, for async routes: Argon2id never runs inside a transaction."""
    await throttle.pause(maker, settings, throttle.Counter.STAFF_LOGIN)
    record = await run_in_threadpool(in_transaction, maker, _login_record, username)
    secrets = await run_in_threadpool(_derive, record, password, settings)
    return await run_in_threadpool(in_transaction, maker, finish_login, settings, record, secrets)


def purge_expired_sessions(session: Session, now: dt.datetime) -> None:
    """Delete expired staff sessions, and reporter sessions whose purge day has passed."""
    session.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    session.execute(delete(ReporterSession).where(ReporterSession.purge_on < now.date()))


def find_session(
    session: Session, token: str, channel: str = "api"
) -> tuple[LoginSession, crypto.TokenSecrets]:
    """The live staff session for a token, or Unauthenticated."""
    token_secrets = crypto.derive_token(token, channel)
    found = session.execute(
        select(LoginSession).where(LoginSession.token_lookup == token_secrets.lookup)
    ).scalar_one_or_none()
    if found is None or as_utc(found.expires_at) <= utcnow():
        raise Unauthenticated("The session has expired or does not exist; log in again.")
    return found, token_secrets


def staff_principal(session: Session, token: str) -> StaffPrincipal:
    found, token_secrets = find_session(session, token)
    user = session.get(User, found.user_id)
    if user is None or not user.active:
        raise Unauthenticated("The account is not active.")
    private_key = crypto.open_private_key(
        found.sealed_secret, token_secrets.key, owner=f"session:user:{user.id}"
    )
    return StaffPrincipal(
        user_id=user.id,
        roles=frozenset(user.role_names),
        unit_ids=frozenset(user.unit_ids),
        private_key=private_key,
    )


def logout(session: Session, token: str, channel: str = "api") -> None:
    """End the staff or reporter session behind `token`."""
    lookup = crypto.derive_token(token, channel).lookup
    reporter = session.get(ReporterSession, lookup)
    if reporter is not None:
        # Its expiry is sealed; ending it early needs no check of it.
        session.delete(reporter)
        audit.record(
            session, actor=audit.REPORTER, action="session.ended", case_id=reporter.case_id
        )
        return
    found, _ = find_session(session, token, channel)
    session.delete(found)
    audit.record(session, actor=f"user:{found.user_id}", action="session.ended")


def as_utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
