"""Giving another handler or custodian access to a case, from a key holder's session.

The granting handler's session unwraps the case key and wraps it for the
grantee's certified public key; the server alone could not. Refused, and
audited, for anyone named as involved (by the reporter or by their own
recusal), an uncertified key, and people outside the case's unit chain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import Role, Unit, User
from varsling.accounts.service import StaffPrincipal, key_certified, members_by_unit, unit_chain
from varsling.cases import exclusions, keys
from varsling.cases.models import Case, KeyPurpose
from varsling.cases.service import open_case
from varsling.config import Settings
from varsling.errors import Conflict, Forbidden, VarslingError

# Who may be given a case: these roles, in a unit on the case's chain (its unit and those above).
GRANTABLE_ROLES = (Role.HANDLER, Role.CUSTODIAN)


def _chain(session: Session, case: Case) -> list[Unit]:
    return unit_chain(session, case.unit_id)


class GrantRefused(Forbidden):
    code = "grant_refused"


class AlreadyGranted(Conflict):
    code = "already_granted"


@dataclass(frozen=True)
class Person:
    """Someone on the case's unit chain, as the grant page lists them."""

    user_id: int
    display_name: str
    roles: tuple[str, ...]  # of handler and custodian, the ones they have
    units: tuple[str, ...]  # the names of their units on the chain, nearest first


@dataclass(frozen=True)
class GrantChoices:
    holders: list[Person]  # who holds the case key now (the caller included)
    candidates: list[Person]  # whom the caller may try to give it to


def grant_choices(
    session: Session, settings: Settings, principal: StaffPrincipal, case_id: str
) -> GrantChoices:
    """The active handlers and custodians of the case's unit chain, by name: those who
    hold the case and those who do not yet, for a handler who opened it.

    The candidates are not filtered by the exclusions or key certificates:
    a list without the excluded would tell a handler, unaudited, whom the
    reporter left out. `grant_access` refuses them, audited, and says why.
    """
    opened = open_case(session, settings, principal, case_id)
    chain = _chain(session, opened.case)
    chain_ids = [unit.id for unit in chain]
    unit_names = {unit.id: unit.name for unit in chain}
    people: dict[int, tuple[User, list[str], list[int]]] = {}
    for role in GRANTABLE_ROLES:
        for unit_id, members in members_by_unit(session, chain_ids, role).items():
            for user in members:
                _, roles, units = people.setdefault(user.id, (user, [], []))
                if role.value not in roles:
                    roles.append(role.value)
                if unit_id not in units:
                    units.append(unit_id)
    holding = keys.holders(session, case_id, KeyPurpose.CASE)
    holders: list[Person] = []
    candidates: list[Person] = []
    for user, roles, units in sorted(
        people.values(), key=lambda found: (found[0].display_name.casefold(), found[0].id)
    ):
        person = Person(
            user_id=user.id,
            display_name=user.display_name,
            roles=tuple(r.value for r in GRANTABLE_ROLES if r.value in roles),
            units=tuple(unit_names[u] for u in chain_ids if u in units),
        )
        (holders if user.id in holding else candidates).append(person)
    return GrantChoices(holders, candidates)


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
    if not user.role_names & {role.value for role in GRANTABLE_ROLES}:
        raise refuse(
            GrantRefused("Only case handlers and identity custodians can be given a case."),
            "not_a_handler_or_custodian",
        )
    chain = {unit.id for unit in _chain(session, case)}
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
