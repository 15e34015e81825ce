"""Restoring a reset account's access to cases, from a key holder's session.

After an administrator resets a password the account has a new key pair;
its wrapped case keys were made for the old key version and no longer open.
That access is "pending", derived from the rows themselves (a wrapped key
whose key version is older than the account's certified one), never from a
flag. A holder of the case key (the DEK) or the identity key (the IK) unwraps
it in their session and wraps it for the account's current certified key;
the server alone could not. Refused, and audited, like a grant: for anyone
named as involved, an uncertified key, the IK for someone who is not a
custodian.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import Role, User
from varsling.accounts.service import StaffPrincipal, key_certified
from varsling.cases import exclusions, keys
from varsling.cases.models import CaseKey, KeyPurpose
from varsling.cases.service import is_hex_id, open_case
from varsling.config import Settings
from varsling.errors import Forbidden, NotFound, VarslingError


class RegrantRefused(Forbidden):
    code = "regrant_refused"


@dataclass(frozen=True)
class PendingGrant:
    """Someone whose access to a case key waits for the caller to re-grant it."""

    case_id: str
    purpose: str
    user_id: int
    display_name: str


def pending_grants(session: Session, principal: StaffPrincipal) -> list[PendingGrant]:
    """The (case, person, key) the caller can resolve: they hold that key of that case
    for their current key; the person's row is for an older key version."""
    found: list[PendingGrant] = []
    for purpose in KeyPurpose:
        mine = select(CaseKey.case_id).where(
            CaseKey.user_id == principal.user_id, keys.current(purpose)
        )
        rows = session.execute(
            select(CaseKey.case_id, User.id, User.display_name)
            .join(User, User.id == CaseKey.user_id)
            .where(
                CaseKey.case_id.in_(mine),
                CaseKey.purpose == purpose.value,
                CaseKey.key_version < User.key_version,
                CaseKey.user_id != principal.user_id,
                User.active,
            )
            .order_by(CaseKey.case_id, User.display_name, User.id)
        )
        found.extend(
            PendingGrant(case_id, purpose.value, user_id, name) for case_id, user_id, name in rows
        )
    return found


@dataclass(frozen=True)
class OwnPending:
    """A case key of the caller's that waits for someone to re-grant it."""

    case_id: str
    purpose: str


def own_pending(session: Session, principal: StaffPrincipal) -> list[OwnPending]:
    rows = session.execute(
        select(CaseKey.case_id, CaseKey.purpose)
        .join(User, User.id == CaseKey.user_id)
        .where(CaseKey.user_id == principal.user_id, CaseKey.key_version < User.key_version)
        .order_by(CaseKey.case_id, CaseKey.purpose)
    )
    return [OwnPending(case_id, purpose) for case_id, purpose in rows]


def regrant(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    *,
    case_id: str,
    user_id: int,
    purpose: KeyPurpose,
    today: dt.date,
) -> None:
    """Wrap the caller's `purpose` key of the case for `user_id`'s current certified key,
    replacing their row for an older key version."""
    if not is_hex_id(case_id):
        raise NotFound("No such case.")
    user = session.get(User, user_id, populate_existing=True)
    stale = session.execute(
        select(CaseKey).where(
            CaseKey.case_id == case_id,
            CaseKey.user_id == user_id,
            CaseKey.purpose == purpose.value,
        )
    ).scalar_one_or_none()
    if user is None or stale is None or stale.key_version >= user.key_version:
        raise NotFound("That person has no access to this case waiting to be re-granted.")
    # The caller's own key first: who does not hold it learns nothing more (404).
    if purpose is KeyPurpose.CASE:
        key = open_case(session, settings, principal, case_id).key
    else:
        held = keys.held_key(session, case_id, principal.user_id, purpose)
        if held is None:
            raise NotFound("No such case.")
        key = keys.unwrap(held, principal.private_key)

    def refuse(message: str, reason: str) -> VarslingError:
        return RegrantRefused(message, reason=reason).audited(
            actor=principal.actor,
            action="case.regrant_refused",
            case_id=case_id,
            details={"user_id": user_id, "purpose": purpose.value, "reason": reason},
        )

    if not user.active:
        raise refuse("That account is inactive.", "inactive")
    allowed = {Role.CUSTODIAN.value}
    if purpose is KeyPurpose.CASE:
        allowed.add(Role.HANDLER.value)
    if not user.role_names & allowed:
        raise refuse("That person no longer has a role that may hold this key.", "role_not_allowed")
    if exclusions.is_excluded(session, settings, case_id, user_id):
        raise refuse(
            "That person is named as involved in this case (by the reporter, or by stepping "
            "aside for a conflict of interest): they can never be given it.",
            "excluded",
        )
    if not key_certified(user, settings.signing_public_key):
        raise refuse(
            "That person's key is not certified by this installation, so nothing can be "
            "wrapped for it. Tell the administrator.",
            "key_not_certified",
        )
    keys.wrap_for(session, settings.signing_public_key, case_id, user, purpose, key, today)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="case.key_regranted",
        case_id=case_id,
        details={"user_id": user_id, "purpose": purpose.value, "key_version": user.key_version},
    )
