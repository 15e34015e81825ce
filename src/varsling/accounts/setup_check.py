"""What an installation lacks or what looks tampered with: the start-up warnings.

`varsling serve` prints them and the admin pages show them; both ask
`setup_warnings`, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling.accounts.models import Role, User, UserRole
from varsling.accounts.service import uncertified_users
from varsling.reports.routing import list_units


@dataclass(frozen=True)
class UnitRef:
    id: int
    name: str


@dataclass(frozen=True)
class AccountRef:
    id: int
    username: str
    display_name: str


@dataclass(frozen=True)
class SetupWarnings:
    # No certified, active case handler on the unit's chain: reporters are not offered it.
    units_without_handlers: list[UnitRef] = field(default_factory=list)
    # Offered, but no identity custodian on its chain: nobody can ever be granted an identity.
    units_without_custodians: list[UnitRef] = field(default_factory=list)
    # The key does not match its certificate: changed behind the service's back.
    rejected_keys: list[AccountRef] = field(default_factory=list)
    # No certificate yet (accounts made before certificates): `varsling user certify-keys`.
    uncertified_keys: list[AccountRef] = field(default_factory=list)
    # Notifications are on, but these active handlers and custodians have no address.
    accounts_without_email: list[AccountRef] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.units_without_handlers
            or self.units_without_custodians
            or self.rejected_keys
            or self.uncertified_keys
            or self.accounts_without_email
        )


def without_email(session: Session) -> list[AccountRef]:
    """Active handlers and custodians that no notification can reach."""
    rows = session.execute(
        select(User.id, User.username, User.display_name)
        .join(UserRole, UserRole.user_id == User.id)
        .where(
            User.active.is_(True),
            User.email.is_(None),
            UserRole.role.in_([Role.HANDLER.value, Role.CUSTODIAN.value]),
        )
        .distinct()
        .order_by(User.id)
    ).all()
    return [AccountRef(user_id, username, name) for user_id, username, name in rows]


def setup_warnings(
    session: Session, *, verifying_key: bytes, notifications: bool = False
) -> SetupWarnings:
    """Units reporters cannot use fully, accounts nothing is encrypted for, and (when
    `notifications` are on) handlers and custodians no mail can reach."""
    units = list_units(session, verifying_key=verifying_key)
    flagged = uncertified_users(session, verifying_key)

    def account(user_id: int, username: str, display_name: str) -> AccountRef:
        return AccountRef(user_id, username, display_name)

    return SetupWarnings(
        units_without_handlers=[UnitRef(u.id, u.name) for u in units if not u.offered],
        units_without_custodians=[
            UnitRef(u.id, u.name) for u in units if u.offered and not u.has_custodian
        ],
        rejected_keys=[
            account(u.id, u.username, u.display_name)
            for u in flagged
            if u.key_certificate is not None
        ],
        uncertified_keys=[
            account(u.id, u.username, u.display_name) for u in flagged if u.key_certificate is None
        ],
        accounts_without_email=without_email(session) if notifications else [],
    )
