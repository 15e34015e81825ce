"""Units, users with roles and unit membership, login sessions, settings."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from varsling.db import Base


class Role(enum.StrEnum):
    HANDLER = "handler"
    CUSTODIAN = "custodian"
    AUDITOR = "auditor"
    ADMIN = "admin"


class UnitKind(enum.StrEnum):
    NATIONAL = "national"
    COUNTY = "county"
    MUNICIPAL = "municipal"
    YOUTH = "youth"
    STUDENT = "student"


class Unit(Base):
    __tablename__ = "units"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_on: Mapped[dt.date] = mapped_column(Date)
    # Where notifications go (notifications/): staff personal data, set by an admin;
    # None: this account gets no mail. Reporters have no account, so no address.
    email: Mapped[str | None] = mapped_column(String(254))
    # One Argon2id(password) gives the verifier and the key sealing the private key.
    password_salt: Mapped[bytes] = mapped_column(LargeBinary)
    password_params: Mapped[str] = mapped_column(String(100))
    password_verifier: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The installation signing key's certificate over (id, username, key_version,
    # public_key): nothing is wrapped for a key whose certificate fails. None for
    # accounts made before certificates existed.
    key_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    key_certificate: Mapped[bytes | None] = mapped_column(LargeBinary)

    # Loaded when asked for: routing loads many users and needs neither.
    roles: Mapped[list[UserRole]] = relationship(cascade="all, delete-orphan")
    memberships: Mapped[list[Membership]] = relationship(cascade="all, delete-orphan")

    @property
    def role_names(self) -> set[str]:
        return {r.role for r in self.roles}

    @property
    def unit_ids(self) -> set[int]:
        return {m.unit_id for m in self.memberships}


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True, index=True)


class LoginSession(Base):
    """A staff session: only the token's hash and the private key sealed under the token."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_lookup: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Pushed forward by each request; the session ends at whichever comes first.
    idle_until: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # "full", or "enrol": the password was right but two-factor must be set up first.
    scope: Mapped[str] = mapped_column(String(10), default="full", server_default="full")


class TwoFactor(Base):
    """A staff member's second factor, one row per account from its creation.

    The TOTP secret is sealed under a key derived from the password pepper
    (configuration, not database); the recovery codes are kept as keyed
    digests. `tag` is a MAC over the whole row and the account id, so a
    database writer cannot delete the row, empty it (turning two-factor off)
    or copy another account's row without the login refusing.
    """

    __tablename__ = "two_factor"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The last time step used: a code is never accepted twice.
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    # Concatenated 32-byte digests of the unused recovery codes.
    recovery_digests: Mapped[bytes] = mapped_column(LargeBinary)
    # Counts enrolments and resets, so an older row of the same account is told apart in
    # the audit trail (see docs/staff-web.md for what a replayed row can and cannot do).
    generation: Mapped[int] = mapped_column(Integer, default=0)
    tag: Mapped[bytes] = mapped_column(LargeBinary)


class ReporterSession(Base):
    """A reporter's case-code session, kept apart from staff sessions.

    Keyed by the token's hash (no counter that would order it among staff
    logins); the exact expiry is sealed with the case keys under a key derived
    from the token, and only the day it may be purged is in the clear.
    """

    __tablename__ = "reporter_sessions"

    token_lookup: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    purge_on: Mapped[dt.date] = mapped_column(Date, index=True)


class InstallationSetting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
