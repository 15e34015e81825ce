"""Giving another handler or custodian access to a case, from a key holder's session.

The granting handler's session unwraps the case key and wraps it for the
grantee's certified public key; the server alone could not. Refused, and
audited, for anyone named as involved (by the reporter or by their own
recusal), an uncertified key, and people outside the case's unit chain.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import Role, User
from varsling.accounts.service import StaffPrincipal, key_certified, unit_chain
from varsling.cases import exclusions, keys
from varsling.cases.models import KeyPurpose
from varsling.cases.service import open_case
from varsling.config import Settings
from varsling.errors import Conflict, Forbidden, VarslingError


class GrantRefused(Forbidden):
    code = "grant_refused"


class AlreadyGranted(Conflict):
    code = "already_granted"


def grant_access(
    session: Session,
    settings: Settings,
    principal: StaffPrincipal,
    case_id: str,
    *,
    user_id: int,
    today: dt.date,
) -> None:
    """Wrap the case key for `user_id`, a handler or custodian of the case's unit chain."""
    opened = open_case(session, settings, principal, case_id)
    case = opened.case

    def refuse(error: VarslingError, reason: str) -> VarslingError:
        return error.audited(
            actor=principal.actor,
            action="case.grant_refused",
            case_id=case_id,
            details={"user_id": user_id, "reason": reason},
        )

    user = session.get(User, user_id)
    if user is None or not user.active:
        raise refuse(GrantRefused("There is no active account with that id."), "no_such_user")
    if not user.role_names & {Role.HANDLER.value, Role.CUSTODIAN.value}:
        raise refuse(
            GrantRefused("Only case handlers and identity custodians can be given a case."),
            "not_a_handler_or_custodian",
        )
    chain = {unit.id for unit in unit_chain(session, case.unit_id)}
    if not user.unit_ids & chain:
        raise refuse(
            GrantRefused(
                "That person belongs to no unit on this case's chain (its unit and those above)."
            ),
            "outside_unit_chain",
        )
    if exclusions.is_excluded(session, settings, case_id, user_id):
        raise refuse(
            GrantRefused(
                "That person is named as involved in this case (by the reporter, or by "
                "stepping aside for a conflict of interest): they can never be given it."
            ),
            "excluded",
        )
    if not key_certified(user, settings.signing_public_key):
        raise refuse(
            GrantRefused(
                "That person's key is not certified by this installation, so nothing can be "
                "wrapped for it. Tell the administrator."
            ),
            "key_not_certified",
        )
    if user_id in keys.holders(session, case_id, KeyPurpose.CASE):
        raise AlreadyGranted("That person already has access to this case.")
    keys.wrap_for(
        session,
        settings.signing_public_key,
        case_id,
        user,
        KeyPurpose.CASE,
        opened.key,
        today,
    )
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="case.access_granted",
        case_id=case_id,
        details={"user_id": user_id},
    )
