"""Who receives a report: routing up the unit tree, what reporters are offered, fallbacks.

One implementation for the API (`GET /api/v1/units`, `POST /api/v1/reports`)
and the report form (`web/report_pages.py`): which units are offered, who
would receive a report made about a unit and who would hold its identity key,
the levels a report falls back to when people are left out, and the check
that a report reaches nobody the form did not name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling.accounts.models import Role, Unit, UnitKind, User
from varsling.accounts.service import key_certified, members_by_unit, unit_chain
from varsling.errors import InvalidInput

# The destination that sends a report straight to the national level (the root).
NATIONAL: Final = "national"
# The destination that sends it to the chosen unit (and up from there).
UNIT: Final = "unit"


@dataclass(frozen=True)
class Recipient:
    id: int
    display_name: str


@dataclass(frozen=True)
class Routing:
    unit: Unit  # the unit whose handlers receive the report
    handlers: list[User]
    custodians: list[User]
    # People who would have received it but whose key certificate fails: never wrapped for.
    rejected: list[User] = field(default_factory=list)


class NoHandlers(InvalidInput):
    """Nobody at all can receive reports for a unit: an installation problem."""


def route(
    session: Session, unit_id: int, excluded: Iterable[int] = (), *, verifying_key: bytes
) -> Routing:
    """Who receives a report made about `unit_id`, leaving out the excluded.

    The unit's handlers receive it; when none is left, the parent's, and so
    on up. Custodians of the unit and every ancestor receive the identity key.
    Someone whose public key the installation has not certified (`verifying_key`)
    cannot receive, exactly as if excluded, and is named in `rejected`.
    """
    chain = unit_chain(session, unit_id)
    if not chain:
        raise InvalidInput(f"There is no unit with id {unit_id}.")
    left_out = set(excluded)
    unit_ids = [unit.id for unit in chain]
    custodians_by_unit = members_by_unit(session, unit_ids, Role.CUSTODIAN)
    handlers_by_unit = members_by_unit(session, unit_ids, Role.HANDLER)
    certified = _certification(
        [*custodians_by_unit.values(), *handlers_by_unit.values()], verifying_key
    )
    rejected: dict[int, User] = {}
    custodians: dict[int, User] = {}
    for unit in chain:
        for u in custodians_by_unit.get(unit.id, []):
            if u.id not in left_out:
                (custodians if certified[u.id] else rejected)[u.id] = u
    for unit in chain:
        handlers = []
        for u in handlers_by_unit.get(unit.id, []):
            if u.id not in left_out:
                if certified[u.id]:
                    handlers.append(u)
                else:
                    rejected[u.id] = u
        if handlers:
            return Routing(unit, handlers, list(custodians.values()), list(rejected.values()))
    if not any(certified[u.id] for users in handlers_by_unit.values() for u in users):
        raise NoHandlers(
            "No case handler is set up for this unit or any unit above it, so nobody can "
            "receive the report. The ethics committee must add one."
        )
    raise InvalidInput(
        "Nobody would be left to receive this report: every case handler up to the national "
        "level is excluded. Exclude fewer people."
    )


def _certification(groups: Iterable[list[User]], verifying_key: bytes) -> dict[int, bool]:
    """Each user's certificate checked once."""
    return {u.id: key_certified(u, verifying_key) for users in groups for u in users}


def custodians_on_chain(session: Session, unit_id: int, *, verifying_key: bytes) -> list[User]:
    """Identity custodians of the unit and its ancestors whose keys are certified."""
    chain = [unit.id for unit in unit_chain(session, unit_id)]
    found = members_by_unit(session, chain, Role.CUSTODIAN)
    return list(
        {
            u.id: u
            for unit in chain
            for u in found.get(unit, [])
            if key_certified(u, verifying_key)
        }.values()
    )


# --------------------------------------------------------------------------
# The units reporters are offered


@dataclass(frozen=True)
class UnitListing:
    id: int
    name: str
    kind: str
    parent_id: int | None
    recipients: list[Recipient]
    # Who would hold the identity key of a report made here (the unit's chain).
    custodians: list[Recipient]

    @property
    def has_custodian(self) -> bool:
        return bool(self.custodians)

    @property
    def offered(self) -> bool:
        """Whether reporters are offered the unit: someone can receive a report made there."""
        return bool(self.recipients)


def list_units(session: Session, *, verifying_key: bytes) -> list[UnitListing]:
    """Every unit with the handlers who would receive a report made there, and its custodians.

    Units nobody can receive for are listed too (with no recipients): they are
    not offered to reporters (`UnitListing.offered`), but the start-up warnings
    name them.
    """
    out = []
    for unit in session.execute(select(Unit).order_by(Unit.id)).scalars():
        try:
            routing = route(session, unit.id, verifying_key=verifying_key)
            handlers, holders = routing.handlers, routing.custodians
        except InvalidInput:
            # Nobody can receive here; the custodians of the chain are still shown.
            handlers = []
            holders = custodians_on_chain(session, unit.id, verifying_key=verifying_key)
        recipients = [Recipient(u.id, u.display_name) for u in handlers]
        custodians = [Recipient(u.id, u.display_name) for u in holders]
        out.append(
            UnitListing(unit.id, unit.name, unit.kind, unit.parent_id, recipients, custodians)
        )
    return out


def offered_units(session: Session, *, verifying_key: bytes) -> list[UnitListing]:
    """The units a reporter may choose: those someone can receive a report for."""
    return [u for u in list_units(session, verifying_key=verifying_key) if u.offered]


@dataclass(frozen=True)
class UnitCatalogue:
    """Every unit as `list_units` lists it, with the root a report can go "straight" to."""

    units: list[UnitListing]

    @property
    def offered(self) -> list[UnitListing]:
        return [u for u in self.units if u.offered]

    @property
    def root(self) -> UnitListing | None:
        roots = [u for u in self.units if u.parent_id is None]
        national = [u for u in roots if u.kind == UnitKind.NATIONAL]
        candidates = national or roots
        return candidates[0] if candidates else None

    def find(self, unit_id: int) -> UnitListing | None:
        return next((u for u in self.units if u.id == unit_id), None)


def unit_catalogue(session: Session, *, verifying_key: bytes) -> UnitCatalogue:
    return UnitCatalogue(list_units(session, verifying_key=verifying_key))


# --------------------------------------------------------------------------
# Where a report about one unit can go, and who can be left out


@dataclass(frozen=True)
class Destination:
    """One place the report can be sent: the chosen unit, or straight to the national level."""

    value: str  # UNIT or NATIONAL
    unit: UnitListing
    receiving_unit_name: str  # the unit whose handlers receive it (the unit or one above)
    recipients: list[Recipient]


@dataclass(frozen=True)
class FallbackLevel:
    """The case handlers of one unit on the way up, listed where they are first met.

    The first level receives the report when nobody is left out; each later one
    receives it when everyone listed before it is left out (DESIGN: "and so on up").
    """

    unit_name: str
    recipients: list[Recipient]
    first: bool  # receives the report when nobody is left out
    national_only: bool = False  # reached only when sending straight to the national level


@dataclass(frozen=True)
class ReportChoices:
    """What a reporter may choose for a report about `unit`: where it goes, who is left out."""

    unit: UnitListing
    destinations: list[Destination]
    levels: list[FallbackLevel] = field(default_factory=list)

    @property
    def handlers(self) -> list[Recipient]:
        """Everyone who could receive the report, once each: the people one can leave out."""
        return [recipient for level in self.levels for recipient in level.recipients]

    @property
    def custodians(self) -> list[Recipient]:
        """Everyone who would hold the identity key, for any destination, once each."""
        found: dict[int, Recipient] = {}
        for destination in self.destinations:
            for custodian in destination.unit.custodians:
                found.setdefault(custodian.id, custodian)
        return list(found.values())

    def destination(self, value: str) -> Destination:
        for destination in self.destinations:
            if destination.value == value:
                return destination
        return self.destinations[0]


def report_choices(
    session: Session, unit_id: int, *, verifying_key: bytes
) -> tuple[UnitCatalogue, ReportChoices | None]:
    """The catalogue, and the choices for a report about `unit_id` (None: no such unit)."""
    catalogue = unit_catalogue(session, verifying_key=verifying_key)
    unit = catalogue.find(unit_id)
    if unit is None:
        return catalogue, None
    destinations = [_destination(session, verifying_key, UNIT, unit)]
    root = catalogue.root
    if root is not None and root.id != unit.id:
        here = {r.id for r in unit.recipients}
        there = {r.id for r in root.recipients}
        # When the report already goes to the national level, there is nothing to choose.
        if here != there:
            destinations.append(_destination(session, verifying_key, NATIONAL, root))
    seen: set[int] = set()
    levels = fallback_levels(session, unit.id, seen, verifying_key=verifying_key)
    if len(destinations) > 1:
        levels += [
            FallbackLevel(level.unit_name, level.recipients, first=False, national_only=True)
            for level in fallback_levels(
                session, destinations[1].unit.id, seen, verifying_key=verifying_key
            )
        ]
    return catalogue, ReportChoices(unit, destinations, levels)


def fallback_levels(
    session: Session, unit_id: int, seen: set[int] | None = None, *, verifying_key: bytes
) -> list[FallbackLevel]:
    """The unit's case handlers, then each unit above with people not yet in `seen`.

    This is the order `route` follows: a unit whose handlers are all listed
    already is reached only when they are all left out, so it is skipped.
    Nobody whose key is not certified is listed: they cannot receive.
    `seen` gains everyone listed.
    """
    seen = set() if seen is None else seen
    levels: list[FallbackLevel] = []
    chain = unit_chain(session, unit_id)
    handlers = members_by_unit(session, [unit.id for unit in chain], Role.HANDLER)
    for unit in chain:
        new = [
            Recipient(user.id, user.display_name)
            for user in handlers.get(unit.id, [])
            if user.id not in seen and key_certified(user, verifying_key)
        ]
        if new:
            seen.update(r.id for r in new)
            levels.append(FallbackLevel(unit.name, new, first=not levels))
    return levels


def _destination(
    session: Session, verifying_key: bytes, value: str, unit: UnitListing
) -> Destination:
    try:
        receiving = route(session, unit.id, verifying_key=verifying_key).unit.name
    except InvalidInput:
        receiving = unit.name
    return Destination(value, unit, receiving, unit.recipients)


# --------------------------------------------------------------------------
# Sending only to the people the reporter was shown

SendProblem = Literal[
    "nobody_left", "nobody_set_up", "not_offered", "custodians_not_offered", "not_stored"
]


class NotOffered(InvalidInput):
    """The report would reach someone the form did not name (people changed meanwhile)."""

    def __init__(self, problem: SendProblem = "not_offered") -> None:
        super().__init__(
            "The people who would receive this report have changed since the form was "
            "opened; nothing was sent."
        )
        self.problem: SendProblem = problem


@dataclass(frozen=True)
class Offered:
    """Who a reporter was shown: the case handlers and the identity custodians."""

    handlers: frozenset[int]
    custodians: frozenset[int]

    def check(self, routing: Routing) -> None:
        """Raise NotOffered if `routing` reaches anyone not shown, the identity key included."""
        if any(handler.id not in self.handlers for handler in routing.handlers):
            raise NotOffered("not_offered")
        if any(custodian.id not in self.custodians for custodian in routing.custodians):
            raise NotOffered("custodians_not_offered")


def route_offered(
    session: Session,
    unit_id: int,
    excluded: Iterable[int],
    offered: Offered | None,
    *,
    verifying_key: bytes,
) -> Routing:
    """`route`, refused (NotOffered) if it reaches someone outside `offered` (None: anyone)."""
    routing = route(session, unit_id, excluded, verifying_key=verifying_key)
    if offered is not None:
        offered.check(routing)
    return routing


def send_problem(refusal: InvalidInput) -> SendProblem:
    """What a refusal of `route` or `route_offered` means for the reporter."""
    if isinstance(refusal, NotOffered):
        return refusal.problem
    if isinstance(refusal, NoHandlers):
        return "nobody_set_up"
    return "nobody_left"


@dataclass(frozen=True)
class SendingPlan:
    """A posted form held to what it offered: who may be left out, and what stops sending."""

    catalogue: UnitCatalogue
    choices: ReportChoices | None  # None: no such unit
    excluded: frozenset[int] = frozenset()
    offered: Offered = Offered(frozenset(), frozenset())
    problem: SendProblem | None = None


def plan_sending(
    session: Session,
    unit_id: int,
    *,
    destination: str,
    excluded: Iterable[int],
    offered_handlers: Iterable[int],
    offered_custodians: Iterable[int],
    custodians_named: bool,
    verifying_key: bytes,
) -> SendingPlan:
    """The form's choices, the people left out cut to those offered, and what stops sending.

    `offered_handlers`/`offered_custodians` are who the form the reporter saw
    named; a post without handlers (not from our form) is held to who the form
    would name now, and so is one without `custodians_named` for custodians.
    """
    catalogue, choices = report_choices(session, unit_id, verifying_key=verifying_key)
    if choices is None:
        return SendingPlan(catalogue, None)
    now_handlers = {r.id for r in choices.handlers}
    now_custodians = {r.id for r in choices.custodians}
    handlers, custodians = set(offered_handlers), set(offered_custodians)
    named = handlers | custodians
    known = set(session.scalars(select(User.id).where(User.id.in_(named)))) if named else set()
    handlers = handlers & known if handlers else set(now_handlers)
    custodians = custodians & known if custodians_named else set(now_custodians)
    # Every person the form offered can be left out; anything else is not ours.
    left_out = set(excluded) & (handlers | now_handlers | custodians | now_custodians)
    offered = Offered(frozenset(handlers), frozenset(custodians))
    problem: SendProblem | None = None
    try:
        route_offered(
            session,
            choices.destination(destination).unit.id,
            left_out,
            offered,
            verifying_key=verifying_key,
        )
    except InvalidInput as refused:
        problem = send_problem(refused)
    return SendingPlan(catalogue, choices, frozenset(left_out), offered, problem)
