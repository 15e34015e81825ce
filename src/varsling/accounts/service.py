"""Units and accounts, staff login and sessions."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from varsling import audit, crypto, throttle
from varsling.accounts import two_factor
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
from varsling.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthenticated

log = logging.getLogger(__name__)

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}")
# A plain address for notifications: printable ASCII, no spaces, quotes, commas or
# brackets, so it can never carry a second recipient or a header into a mail.
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
MAX_EMAIL_CHARS = 254
MIN_PASSWORD_CHARS = 12
# The channel a session token is bound to: the API's bearer token, or the staff pages' cookie.
API_CHANNEL = "api"
STAFF_WEB_CHANNEL = "staff-web"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------
# Units


def _unit_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("A unit needs a name of 1 to 200 characters.", reason="unit_name")
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
                "give this one a name reporters can tell apart.",
                reason="sibling_name",
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
        raise InvalidInput(f"Unit kind must be one of {', '.join(UnitKind)}.", reason="unit_kind")
    if parent_id is None:
        if kind != UnitKind.NATIONAL:
            raise InvalidInput(
                f"A {kind} unit needs a parent (--parent): only the national unit has none.",
                reason="needs_parent",
            )
        national = _national_unit(session)
        if national is not None:
            raise Conflict(
                f"There is already a national unit ({national.id}, {national.name!r}); an "
                "installation has one. Add this unit under a parent, or rename the national "
                "unit with `varsling unit rename`.",
                reason="national_exists",
            )
    else:
        if session.get(Unit, parent_id) is None:
            raise InvalidInput(
                f"There is no unit with id {parent_id} to be the parent.", reason="no_parent_unit"
            )
        if kind == UnitKind.NATIONAL:
            raise InvalidInput(
                "The national unit is the root: it cannot have a parent.",
                reason="national_has_no_parent",
            )
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
        raise NotFound(f"There is no unit with id {unit_id}.", reason="no_unit")
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
        raise InvalidInput(
            "The national unit is the root of every unit; it cannot be moved.",
            reason="national_cannot_move",
        )
    parent = session.get(Unit, parent_id)
    if parent is None:
        raise InvalidInput(
            f"There is no unit with id {parent_id} to be the parent.", reason="no_parent_unit"
        )
    if unit.id in {u.id for u in unit_chain(session, parent.id)}:
        raise InvalidInput(
            f"Unit {parent.id} is {unit.name!r} itself or lies under it; a unit cannot be "
            "moved under itself.",
            reason="under_itself",
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


@dataclass(frozen=True)
class UnitNode:
    """One unit in the tree, with how deep it lies (the national unit is 0)."""

    id: int
    name: str
    kind: str
    parent_id: int | None
    depth: int


def unit_tree(session: Session) -> list[UnitNode]:
    """Every unit, each followed by the units under it (depth first, in order of creation)."""
    units = list(session.execute(select(Unit).order_by(Unit.id)).scalars())
    known = {unit.id for unit in units}
    children: dict[int | None, list[Unit]] = {}
    for unit in units:
        # A parent that does not exist would hide the unit: show it at the top instead.
        parent = unit.parent_id if unit.parent_id in known else None
        children.setdefault(parent, []).append(unit)
    out: list[UnitNode] = []
    placed: set[int] = set()

    def walk(parent: int | None, depth: int) -> None:
        for unit in children.get(parent, []):
            if unit.id in placed:
                continue
            placed.add(unit.id)
            out.append(UnitNode(unit.id, unit.name, unit.kind, unit.parent_id, depth))
            walk(unit.id, depth + 1)

    walk(None, 0)
    # Units in a cycle (only a database writer makes one) are listed last, not lost.
    for unit in units:
        if unit.id not in placed:
            placed.add(unit.id)
            out.append(UnitNode(unit.id, unit.name, unit.kind, unit.parent_id, 0))
    return out


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
    email: str | None = None,
    actor: str = audit.SYSTEM,
) -> User:
    """A new account with its HPKE key pair, the private half sealed under the password."""
    username = username.strip().lower()
    if not _USERNAME.fullmatch(username):
        raise InvalidInput(
            "A username is 2 to 63 characters: lower-case letters, digits, '.', '_' or '-'.",
            reason="username",
        )
    role_set = set(roles)
    unknown = role_set - set(Role)
    if not role_set or unknown:
        raise InvalidInput(f"Roles must be among {', '.join(Role)}.", reason="roles")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(
            f"A password needs at least {MIN_PASSWORD_CHARS} characters.", reason="password_short"
        )
    units = _checked_units(session, role_set, unit_ids)
    shown = (display_name or "").strip()
    if role_set & _NAMED_TO_REPORTERS and not shown:
        raise InvalidInput(
            "Handlers and custodians are named to reporters on the report form, so they need "
            "the name reporters will see (--display-name), e.g. 'Nina Nilsen'.",
            reason="display_name_needed",
        )
    if len(shown) > 200:
        raise InvalidInput("A display name is at most 200 characters.", reason="display_name_long")
    if session.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"The username {username!r} is taken.", reason="username_taken")
    address = checked_email(email)

    params = current_password_params(settings)
    salt = crypto.new_salt()
    login = crypto.derive_login(
        password, salt, params.argon2, pepper=settings.secret("password_pepper")
    )
    pair = crypto.generate_keypair()
    user = User(
        username=username,
        display_name=shown or username,
        email=address,
        active=True,
        created_on=utcnow().date(),
        password_salt=salt,
        password_params=params.encode(),
        password_verifier=login.verifier,
        public_key=pair.public_key,
        sealed_private_key=b"",
        key_version=1,
        roles=[UserRole(role=r) for r in sorted(role_set)],
        memberships=[Membership(unit_id=u) for u in units],
    )
    session.add(user)
    session.flush()
    user.sealed_private_key = crypto.seal_private_key(
        pair.private_key, login.key, owner=f"user:{user.id}"
    )
    certify_key(settings, user)
    session.add(two_factor.new_row(settings, user.id))
    audit.record(
        session,
        actor=actor,
        action="user.created",
        details={
            "user_id": user.id,
            "roles": sorted(role_set),
            "unit_ids": units,
            "key_version": user.key_version,
            # Whether, never which: the address is personal data the trail need not keep.
            "email_set": address is not None,
        },
    )
    return user


def checked_email(email: str | None) -> str | None:
    """A staff member's address as stored, or None for none; refused if it is not plain."""
    address = (email or "").strip()
    if not address:
        return None
    if len(address) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(address):
        raise InvalidInput(
            "An email address looks like nina.nilsen@example.org: no spaces, quotes, commas "
            f"or brackets, at most {MAX_EMAIL_CHARS} characters.",
            reason="email_invalid",
        )
    return address


def set_user_email(
    session: Session, user_id: int, *, email: str | None, actor: str = audit.SYSTEM
) -> User:
    """Set or clear where an account's notifications go (None or "": no mail)."""
    user = _existing_user(session, user_id)
    address = checked_email(email)
    if address == user.email:
        raise Conflict(
            f"The account {user.username!r} already has this email address.", reason="same_email"
        )
    had = user.email is not None
    user.email = address
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.email_set",
        details={"user_id": user.id, "had_email": had, "email_set": address is not None},
    )
    return user


# Reporters see these roles' display names, and only a member of a unit receives for it.
_NAMED_TO_REPORTERS = frozenset({Role.HANDLER.value, Role.CUSTODIAN.value})


def _checked_units(session: Session, roles: set[str], unit_ids: Iterable[int]) -> list[int]:
    units = sorted(set(unit_ids))
    for unit_id in units:
        if session.get(Unit, unit_id) is None:
            raise InvalidInput(f"There is no unit with id {unit_id}.", reason="no_unit")
    needing = sorted(roles & _NAMED_TO_REPORTERS)
    if needing and not units:
        raise InvalidInput(
            f"A {' and '.join(needing)} acts for a unit: give at least one (--unit ID); "
            "`varsling unit list` shows the ids.",
            reason="needs_unit",
        )
    return units


@dataclass(frozen=True)
class AccountSummary:
    """An account as administrators see it: never anything about cases."""

    id: int
    username: str
    display_name: str
    active: bool
    roles: list[str]
    unit_ids: list[int]
    key_certified: bool
    email: str | None = None


def list_accounts(session: Session, *, verifying_key: bytes) -> list[AccountSummary]:
    """Every account in order of creation, with its roles, units and whether its key holds."""
    return [
        _summary(user, verifying_key)
        for user in session.execute(select(User).order_by(User.id)).scalars()
    ]


def account_summary(session: Session, user_id: int, *, verifying_key: bytes) -> AccountSummary:
    return _summary(_existing_user(session, user_id), verifying_key)


def _summary(user: User, verifying_key: bytes) -> AccountSummary:
    return AccountSummary(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        active=user.active,
        roles=sorted(user.role_names),
        unit_ids=sorted(user.unit_ids),
        key_certified=key_certified(user, verifying_key),
        email=user.email,
    )


def _existing_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"There is no account with id {user_id}.", reason="no_account")
    return user


def deactivate_user(session: Session, user_id: int, *, actor: str = audit.SYSTEM) -> User:
    """Close an account: no more logins, its sessions end, no new case reaches it."""
    user = _existing_user(session, user_id)
    if not user.active:
        raise Conflict(
            f"The account {user.username!r} is already inactive.", reason="already_inactive"
        )
    if Role.ADMIN.value in user.role_names:
        _refuse_losing_the_last_admin(session, user)
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
        raise Conflict(
            f"The account {user.username!r} already has exactly these units.", reason="same_units"
        )
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


def set_user_roles(
    session: Session, user_id: int, *, roles: Iterable[str], actor: str = audit.SYSTEM
) -> User:
    """Replace an account's roles.

    Roles decide what an account may ask for, never what it can read: case
    keys are wrapped per person when a report arrives, so an account that
    becomes a case handler or custodian receives new reports for its units
    only, and no case or identity it did not hold before.
    """
    user = _existing_user(session, user_id)
    role_set = set(roles)
    unknown = role_set - set(Role)
    if not role_set or unknown:
        raise InvalidInput(f"Roles must be among {', '.join(Role)}.", reason="roles")
    previous = sorted(user.role_names)
    wanted = sorted(role_set)
    if wanted == previous:
        raise Conflict(
            f"The account {user.username!r} already has exactly these roles.", reason="same_roles"
        )
    _checked_units(session, role_set, user.unit_ids)
    if Role.ADMIN.value in previous and Role.ADMIN.value not in role_set:
        _refuse_losing_the_last_admin(session, user)
    user.roles = [r for r in user.roles if r.role in role_set]
    user.roles.extend(UserRole(role=r) for r in wanted if r not in previous)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.roles_set",
        details={"user_id": user.id, "from_roles": previous, "roles": wanted},
    )
    return user


def _refuse_losing_the_last_admin(session: Session, user: User) -> None:
    """Without an active administrator nobody could manage accounts on the web."""
    others = session.execute(
        select(User.id)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role == Role.ADMIN.value, User.active, User.id != user.id)
        .limit(1)
    ).first()
    if others is None:
        raise Conflict(
            f"The account {user.username!r} is the only active administrator; give another "
            "account the admin role first.",
            reason="last_admin",
        )


# --------------------------------------------------------------------------
# Certified public keys


def certify_key(settings: Settings, user: User) -> None:
    """Certify the user's current public key, id, username and key version.

    Call wherever a key is made or changed; the caller audits it.
    """
    user.key_certificate = crypto.certify_user_key(
        settings.signing_seed,
        user_id=user.id,
        username=user.username,
        key_version=user.key_version,
        public_key=user.public_key,
    )


def key_certified(user: User, verifying_key: bytes) -> bool:
    """Whether the user's stored key is the one the installation certified for them."""
    return crypto.user_key_certified(
        verifying_key,
        user_id=user.id,
        username=user.username,
        key_version=user.key_version,
        public_key=user.public_key,
        certificate=user.key_certificate,
    )


def uncertified_users(session: Session, verifying_key: bytes) -> list[User]:
    """Every account whose public key certificate is missing or fails."""
    users = session.execute(select(User).order_by(User.id)).scalars()
    return [u for u in users if not key_certified(u, verifying_key)]


def certify_existing_keys(session: Session, settings: Settings, *, actor: str) -> list[User]:
    """Certify the keys of accounts that have no certificate yet (made before certificates).

    For upgrading an installation whose database is known to be intact: it
    trusts the stored keys as they are. Accounts whose certificate exists but
    fails are left alone: that is tampering, not age.
    """
    certified = []
    for user in session.execute(
        select(User).where(User.key_certificate.is_(None)).order_by(User.id)
    ).scalars():
        certify_key(settings, user)
        audit.record(
            session,
            actor=actor,
            action="user.key_certified",
            details={"user_id": user.id, "key_version": user.key_version, "how": "command"},
        )
        certified.append(user)
    session.flush()
    return certified


# --------------------------------------------------------------------------
# Staff login and sessions

# Used to spend the same Argon2id time for an unknown username as for a known one.
_DUMMY_SALT = b"varsling-no-user"
BLOCKED_MESSAGE = "Too many failed logins for this account; try again in {seconds} seconds."


def current_password_params(settings: Settings) -> crypto.PasswordParams:
    """The scheme new and re-derived password verifiers are made with: peppered."""
    return crypto.PasswordParams(settings.argon2, peppered=True)


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
    params: crypto.PasswordParams | None  # None: the stored string is refused
    verifier: bytes


def _login_record(session: Session, username: str) -> _LoginRecord | None:
    user = session.execute(
        select(User).where(User.username == username.strip().lower())
    ).scalar_one_or_none()
    if user is None or not user.active:
        return None
    try:
        params: crypto.PasswordParams | None = crypto.PasswordParams.decode(user.password_params)
    except crypto.CryptoError:
        # A database writer may have asked for a terabyte of memory: never run it.
        log.error("refusing the stored password parameters of user %s", user.id)
        params = None
    return _LoginRecord(user.id, user.password_salt, params, user.password_verifier)


def _derive(record: _LoginRecord | None, password: str, settings: Settings) -> crypto.LoginSecrets:
    pepper = settings.secret("password_pepper")
    # An unknown username (or refused parameters) costs the same Argon2id run as a known one.
    if record is None or record.params is None:
        return crypto.derive_login(password, _DUMMY_SALT, settings.argon2, pepper=pepper)
    return crypto.derive_login(
        password,
        record.salt,
        record.params.argon2,
        pepper=pepper if record.params.peppered else None,
    )


def check_backoff(session: Session, account: bytes, username: str) -> int | None:
    """Seconds the account must still wait (audited), or None; before any Argon2id run."""
    remaining = throttle.backoff_remaining(session, account)
    if remaining is None:
        return None
    user_id = session.execute(
        select(User.id).where(User.username == username.strip().lower())
    ).scalar_one_or_none()
    _audit_blocked(session, f"user:{user_id}" if user_id is not None else audit.SYSTEM, remaining)
    return remaining


def _audit_blocked(session: Session, actor: str, remaining: int) -> None:
    audit.record(
        session, actor=actor, action="user.login_blocked", details={"retry_after": remaining}
    )


@dataclass(frozen=True)
class LoginOutcome:
    """A session token (None when refused), the private key when the password verifier
    must be made again under the current scheme, or the seconds to wait when blocked.

    `scope` is "enrol" for a session that may only set up two-factor (the role
    requires it and the account has none yet); `enrolment_required` says the
    same to an API login, which gets no session then.
    """

    token: str | None
    rehash_private_key: bytes | None = None
    retry_after: int | None = None
    scope: str = "full"
    enrolment_required: bool = False


def _refuse(
    session: Session, account: bytes, actor: str, action: str, details: dict[str, object]
) -> LoginOutcome:
    throttle.note_failure(session, throttle.Counter.STAFF_LOGIN)
    throttle.note_account_failure(session, account)
    audit.record(session, actor=actor, action=action, details=details)
    return LoginOutcome(None)


def finish_login(
    session: Session,
    settings: Settings,
    record: _LoginRecord | None,
    secrets: crypto.LoginSecrets,
    account: bytes,
    *,
    code: str | None = None,
    channel: str = API_CHANNEL,
    token: str | None = None,
    now: float | None = None,
) -> LoginOutcome:
    """Check the verifier, open the private key, check it is the certified one, check the
    second factor, start a session.

    A refusal is counted and audited, so the caller must commit, not raise.
    """
    # Another attempt may have started the backoff while this one ran Argon2id.
    remaining = throttle.claim_account(session, account)
    if remaining is not None:
        actor = f"user:{record.user_id}" if record is not None else audit.SYSTEM
        _audit_blocked(session, actor, remaining)
        return LoginOutcome(None, retry_after=remaining)
    user = session.get(User, record.user_id) if record is not None else None
    if record is not None and record.params is None:
        return _refuse(
            session,
            account,
            f"user:{record.user_id}",
            "user.login_failed",
            {"reason": "password_params_refused"},
        )
    if (
        record is None
        or record.params is None
        or user is None
        or not user.active
        or not crypto.verifier_matches(user.password_verifier, secrets.verifier)
    ):
        return _refuse(
            session,
            account,
            f"user:{record.user_id}" if record is not None else audit.SYSTEM,
            "user.login_failed",
            {},
        )
    try:
        private_key = crypto.open_private_key(
            user.sealed_private_key, secrets.key, owner=f"user:{user.id}"
        )
        problem = _key_problem(settings, user, private_key, peppered=record.params.peppered)
    except crypto.CryptoError:
        # The right password, yet the sealed key does not open: it was replaced.
        problem = "private_key_unreadable"
    if problem is not None:
        # Answered like a wrong password: the caller learns nothing about why.
        return _refuse(
            session,
            account,
            f"user:{user.id}",
            "user.login_refused_key",
            {"user_id": user.id, "reason": problem},
        )
    second = _second_factor(session, settings, user, account, code, now=now)
    if isinstance(second, LoginOutcome):
        return second
    scope = second
    if scope == "enrol" and channel == API_CHANNEL:
        audit.record(
            session,
            actor=f"user:{user.id}",
            action="user.login_refused_two_factor",
            details={"user_id": user.id, "reason": "not_enrolled"},
        )
        return LoginOutcome(None, enrolment_required=True)
    if user.key_certificate is None:
        certify_key(settings, user)
        audit.record(
            session,
            actor=f"user:{user.id}",
            action="user.key_certified",
            details={"user_id": user.id, "key_version": user.key_version, "how": "login"},
        )
    throttle.clear_account(session, account)
    token = token or crypto.new_token()
    token_secrets = crypto.derive_token(token, channel)
    started = utcnow()
    purge_expired_sessions(session, started)
    expires_at = started + dt.timedelta(minutes=settings.session_minutes)
    session.add(
        LoginSession(
            token_lookup=token_secrets.lookup,
            user_id=user.id,
            sealed_secret=crypto.seal_private_key(
                private_key, token_secrets.key, owner=f"session:user:{user.id}"
            ),
            expires_at=expires_at,
            idle_until=min(
                expires_at, started + dt.timedelta(minutes=settings.session_idle_minutes)
            ),
            scope=scope,
        )
    )
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="user.login",
        details={"channel": channel, "scope": scope},
    )
    rehash = record.params != current_password_params(settings)
    return LoginOutcome(token, private_key if rehash else None, scope=scope)


def _second_factor(
    session: Session,
    settings: Settings,
    user: User,
    account: bytes,
    code: str | None,
    *,
    now: float | None,
) -> LoginOutcome | str:
    """The session scope the second factor allows ("full" or "enrol"), or the refusal."""
    try:
        row = two_factor.checked_row(session, settings, user.id)
    except two_factor.TwoFactorAltered:
        # Answered like a wrong password; the audit trail says why.
        return _refuse(
            session,
            account,
            f"user:{user.id}",
            "user.login_refused_two_factor",
            {"user_id": user.id, "reason": "altered"},
        )
    if two_factor.is_enrolled(row):
        moment = time.time() if now is None else now
        if not code or two_factor.check_code(session, settings, row, code, now=moment) is None:
            return _refuse(
                session,
                account,
                f"user:{user.id}",
                "user.login_failed",
                {"reason": "second_factor"},
            )
        return "full"
    return "enrol" if two_factor.is_required(settings, user.role_names) else "full"


def _key_problem(
    settings: Settings, user: User, private_key: bytes, *, peppered: bool
) -> str | None:
    """Why the opened private key may not be used, or None when it may.

    The private key opened with the password proves possession: its public
    half must be the stored key, and the stored key must be certified. An
    account made before certificates (no certificate at all) is certified at
    this login, but only when the password checked out under the pepper: the
    older scheme needs no secret, so a database writer could forge it.
    """
    if crypto.public_key_of(private_key) != user.public_key:
        return "key_mismatch"
    if user.key_certificate is None:
        return None if peppered else "not_certified"
    if not key_certified(user, settings.signing_public_key):
        return "certificate_invalid"
    return None


def store_rehash(
    session: Session,
    settings: Settings,
    user_id: int,
    old_verifier: bytes,
    salt: bytes,
    secrets: crypto.LoginSecrets,
    private_key: bytes,
) -> None:
    """Store a password verifier made again under the current scheme, re-sealing the key."""
    user = session.get(User, user_id, with_for_update=True)
    if user is None or user.password_verifier != old_verifier:
        return  # the password changed meanwhile: leave the newer one be
    params = current_password_params(settings)
    user.password_salt = salt
    user.password_params = params.encode()
    user.password_verifier = secrets.verifier
    user.sealed_private_key = crypto.seal_private_key(
        private_key, secrets.key, owner=f"user:{user.id}"
    )
    audit.record(
        session,
        actor=f"user:{user.id}",
        action="user.password_rehashed",
        details={"user_id": user.id, "params": params.encode()},
    )


async def sign_in_staff(
    maker: sessionmaker[Session],
    settings: Settings,
    *,
    username: str,
    password: str,
    code: str | None = None,
    channel: str = API_CHANNEL,
    token: str | None = None,
) -> LoginOutcome:
    """The whole staff login, for async routes: Argon2id never runs inside a transaction.

    The account's backoff is checked first and, while it lasts, refuses
    without running Argon2id (TooManyAttempts); then the global limit. The
    outcome's token is None when the login was refused.
    """
    account = crypto.account_tag(settings.secret("password_pepper"), username)
    blocked = await run_in_threadpool(in_transaction, maker, check_backoff, account, username)
    if blocked is not None:
        raise TooManyAttempts(blocked, BLOCKED_MESSAGE.format(seconds=blocked))
    await throttle.pause(maker, settings, throttle.Counter.STAFF_LOGIN)
    record = await run_in_threadpool(in_transaction, maker, _login_record, username)
    secrets = await run_in_threadpool(_derive, record, password, settings)
    outcome = await run_in_threadpool(
        in_transaction,
        maker,
        partial(finish_login, code=code, channel=channel, token=token),
        settings,
        record,
        secrets,
        account,
    )
    if outcome.retry_after is not None:
        raise TooManyAttempts(
            outcome.retry_after, BLOCKED_MESSAGE.format(seconds=outcome.retry_after)
        )
    if outcome.rehash_private_key is not None and record is not None:
        salt = crypto.new_salt()
        fresh = await run_in_threadpool(
            partial(
                crypto.derive_login,
                password,
                salt,
                settings.argon2,
                pepper=settings.secret("password_pepper"),
            )
        )
        await run_in_threadpool(
            in_transaction,
            maker,
            store_rehash,
            settings,
            record.user_id,
            record.verifier,
            salt,
            fresh,
            outcome.rehash_private_key,
        )
    return outcome


def purge_expired_sessions(session: Session, now: dt.datetime) -> int:
    """Delete expired staff sessions, and reporter sessions whose purge day has passed
    (done at each login); how many."""
    staff = session.execute(
        delete(LoginSession).where(
            or_(LoginSession.expires_at < now, LoginSession.idle_until < now)
        )
    )
    reporters = session.execute(
        delete(ReporterSession).where(ReporterSession.purge_on < now.date())
    )
    return sum(int(cast("CursorResult[Any]", r).rowcount) for r in (staff, reporters))


def purge_sessions(session: Session, now: dt.datetime | None = None) -> int:
    """`varsling sessions purge`: the expired sessions removed, audited with their count."""
    removed = purge_expired_sessions(session, now or utcnow())
    audit.record(session, actor=audit.SYSTEM, action="sessions.purged", details={"count": removed})
    return removed


def find_session(
    session: Session, token: str, channel: str = API_CHANNEL
) -> tuple[LoginSession, crypto.TokenSecrets]:
    """The live staff session for a token, or Unauthenticated."""
    token_secrets = crypto.derive_token(token, channel)
    found = session.execute(
        select(LoginSession).where(LoginSession.token_lookup == token_secrets.lookup)
    ).scalar_one_or_none()
    now = utcnow()
    if found is None or as_utc(found.expires_at) <= now:
        raise Unauthenticated("The session has expired or does not exist; log in again.")
    if as_utc(found.idle_until) <= now:
        raise Unauthenticated("The session ended after a while without use; log in again.")
    return found, token_secrets


def staff_principal(
    session: Session,
    token: str,
    channel: str = API_CHANNEL,
    *,
    settings: Settings | None = None,
    scope: str = "full",
) -> StaffPrincipal:
    """The staff member behind a live session of `scope`; each use keeps it from idling out.

    `settings` gives the idle time; without them the idle deadline is left as it is.
    """
    found, token_secrets = find_session(session, token, channel)
    if found.scope != scope:
        raise Unauthenticated("Set up two-factor login on the web pages first.")
    user = session.get(User, found.user_id)
    if user is None or not user.active:
        raise Unauthenticated("The account is not active.")
    private_key = crypto.open_private_key(
        found.sealed_secret, token_secrets.key, owner=f"session:user:{user.id}"
    )
    if settings is not None:
        found.idle_until = min(
            as_utc(found.expires_at),
            utcnow() + dt.timedelta(minutes=settings.session_idle_minutes),
        )
    return StaffPrincipal(
        user_id=user.id,
        roles=frozenset(user.role_names),
        unit_ids=frozenset(user.unit_ids),
        private_key=private_key,
    )


def session_ends_at(session: Session, token: str, channel: str) -> dt.datetime:
    """When the session behind `token` ends at the latest (its absolute expiry)."""
    found, _ = find_session(session, token, channel)
    return as_utc(found.expires_at)


def logout(session: Session, token: str, channel: str = API_CHANNEL) -> None:
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
