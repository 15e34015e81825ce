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
    Role,
    Unit,
    UnitKind,
    User,
    UserRole,
)
from varsling.config import Settings
from varsling.db import in_transaction
from varsling.errors import Conflict, InvalidInput, NotFound, Unauthenticated

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}")
MIN_PASSWORD_CHARS = 12


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------
# Units


def _unit_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("A unit needs a name of 1 to 200 characters.")
    return name


def _refuse_sibling_name(
    session: Session, name: str, parent_id: int | None, *, except_id: int | None = None
) -> None:
    """Two units with one parent and one name would be one choice twice on the form."""
    siblings = select(Unit.id, Unit.name).where(
        Unit.parent_id.is_(None) if parent_id is None else Unit.parent_id == parent_id
    )
    for unit_id, sibling in session.execute(siblings):
        if unit_id != except_id and sibling.casefold() == name.casefold():
            raise Conflict(
                f"The unit {unit_id} under the same parent is already called {sibling!r}; "
                "give this one a name reporters can tell apart."
            )


def _national_unit(session: Session) -> Unit | None:
    return session.execute(
        select(Unit).where(Unit.parent_id.is_(None)).order_by(Unit.id).limit(1)
    ).scalar_one_or_none()


def create_unit(
    session: Session,
    *,
    name: str,
    parent_id: int | None = None,
    kind: str | None = None,
    actor: str = audit.SYSTEM,
) -> Unit:
    """A unit: the one national unit at the root, every other unit under a parent."""
    name = _unit_name(name)
    if kind is None:
        kind = UnitKind.NATIONAL if parent_id is None else UnitKind.MUNICIPAL
    if kind not in set(UnitKind):
        raise InvalidInput(f"Unit kind must be one of {', '.join(UnitKind)}.")
    if parent_id is None:
        if kind != UnitKind.NATIONAL:
            raise InvalidInput(
                f"A {kind} unit needs a parent (--parent): only the national unit has none."
            )
        national = _national_unit(session)
        if national is not None:
            raise Conflict(
                f"There is already a national unit ({national.id}, {national.name!r}); an "
                "installation has one. Add this unit under a parent, or rename the national "
                "unit with `varsling unit rename`."
            )
    else:
        if session.get(Unit, parent_id) is None:
            raise InvalidInput(f"There is no unit with id {parent_id} to be the parent.")
        if kind == UnitKind.NATIONAL:
            raise InvalidInput("The national unit is the root: it cannot have a parent.")
    _refuse_sibling_name(session, name, parent_id)
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


def _existing_unit(session: Session, unit_id: int) -> Unit:
    unit = session.get(Unit, unit_id)
    if unit is None:
        raise NotFound(f"There is no unit with id {unit_id}.")
    return unit


def rename_unit(session: Session, unit_id: int, *, name: str, actor: str = audit.SYSTEM) -> Unit:
    unit = _existing_unit(session, unit_id)
    name = _unit_name(name)
    _refuse_sibling_name(session, name, unit.parent_id, except_id=unit.id)
    unit.name = name
    session.flush()
    audit.record(session, actor=actor, action="unit.renamed", details={"unit_id": unit.id})
    return unit


def move_unit(session: Session, unit_id: int, *, parent_id: int, actor: str = audit.SYSTEM) -> Unit:
    """Put a unit under another parent; never the national unit, never under itself."""
    unit = _existing_unit(session, unit_id)
    if unit.parent_id is None:
        raise InvalidInput("The national unit is the root of every unit; it cannot be moved.")
    parent = session.get(Unit, parent_id)
    if parent is None:
        raise InvalidInput(f"There is no unit with id {parent_id} to be the parent.")
    if unit.id in {u.id for u in unit_chain(session, parent.id)}:
        raise InvalidInput(
            f"Unit {parent.id} is {unit.name!r} itself or lies under it; a unit cannot be "
            "moved under itself."
        )
    _refuse_sibling_name(session, unit.name, parent.id, except_id=unit.id)
    previous = unit.parent_id
    unit.parent_id = parent.id
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="unit.moved",
        details={"unit_id": unit.id, "from_parent_id": previous, "parent_id": parent.id},
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
    units = _checked_units(session, role_set, unit_ids)
    shown = (display_name or "").strip()
    if role_set & _NAMED_TO_REPORTERS and not shown:
        raise InvalidInput(
            "Handlers and custodians are named to reporters on the report form, so they need "
            "the name reporters will see (--display-name), e.g. 'Nina Nilsen'."
        )
    if len(shown) > 200:
        raise InvalidInput("A display name is at most 200 characters.")
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"The username {username!r} is taken.")

    params = settings.argon2
    salt = crypto.new_salt()
    login = crypto.derive_login(password, salt, params)
    pair = crypto.generate_keypair()
    user = User(
        username=username,
        display_name=shown or username,
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


# Reporters see these roles' display names, and only a member of a unit receives for it.
_NAMED_TO_REPORTERS = frozenset({Role.HANDLER.value, Role.CUSTODIAN.value})


def _checked_units(session: Session, roles: set[str], unit_ids: Iterable[int]) -> list[int]:
    units = sorted(set(unit_ids))
    for unit_id in units:
        if session.get(Unit, unit_id) is None:
            raise InvalidInput(f"There is no unit with id {unit_id}.")
    needing = sorted(roles & _NAMED_TO_REPORTERS)
    if needing and not units:
        raise InvalidInput(
            f"A {' and '.join(needing)} acts for a unit: give at least one (--unit ID); "
            "`varsling unit list` shows the ids."
        )
    return units


def _existing_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"There is no account with id {user_id}.")
    return user


def deactivate_user(session: Session, user_id: int, *, actor: str = audit.SYSTEM) -> User:
    """Close an account: no more logins, its sessions end, no new case reaches it."""
    user = _existing_user(session, user_id)
    if not user.active:
        raise Conflict(f"The account {user.username!r} is already inactive.")
    user.active = False
    ended = session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.deactivated",
        details={"user_id": user.id, "sessions_ended": getattr(ended, "rowcount", 0)},
    )
    return user


def set_user_units(
    session: Session, user_id: int, *, unit_ids: Iterable[int], actor: str = audit.SYSTEM
) -> User:
    """Replace the units an account acts for (new reports route by them)."""
    user = _existing_user(session, user_id)
    units = _checked_units(session, user.role_names, unit_ids)
    previous = sorted(user.unit_ids)
    if units == previous:
        raise Conflict(f"The account {user.username!r} already has exactly these units.")
    user.memberships = [m for m in user.memberships if m.unit_id in units]
    user.memberships.extend(Membership(unit_id=u) for u in units if u not in previous)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.units_set",
        details={"user_id": user.id, "from_unit_ids": previous, "unit_ids": units},
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
    session.execute(delete(LoginSession).where(LoginSession.expires_at < now))


def coarse_expiry(now: dt.datetime, minutes: int) -> dt.datetime:
    """`minutes` from now, rounded up to a quarter hour: no exact time of a reporter's visit."""
    moment = now + dt.timedelta(minutes=minutes)
    quarter = 15 * 60
    seconds = (moment.minute * 60 + moment.second) % quarter
    if seconds == 0 and moment.microsecond == 0:
        return moment
    return (moment + dt.timedelta(seconds=quarter - seconds)).replace(microsecond=0)


def find_session(
    session: Session, token: str, channel: str = "api"
) -> tuple[LoginSession, crypto.TokenSecrets]:
    """The live session for a token, or Unauthenticated."""
    token_secrets = crypto.derive_token(token, channel)
    found = session.execute(
        select(LoginSession).where(LoginSession.token_lookup == token_secrets.lookup)
    ).scalar_one_or_none()
    if found is None or as_utc(found.expires_at) <= utcnow():
        raise Unauthenticated("The session has expired or does not exist; log in again.")
    return found, token_secrets


def staff_principal(session: Session, token: str) -> StaffPrincipal:
    found, token_secrets = find_session(session, token)
    if found.user_id is None:
        raise Unauthenticated("This is not a staff session.")
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
    found, _ = find_session(session, token, channel)
    actor = f"user:{found.user_id}" if found.user_id is not None else audit.REPORTER
    session.delete(found)
    audit.record(session, actor=actor, action="session.ended", case_id=found.case_id)


def as_utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
