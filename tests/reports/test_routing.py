"""Who receives a report (reports/routing.py), without the web form around it.

These rules used to be reachable only through the report form's pages; the
form and the API now share them, so they are tested here on their own.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tests.factories import make_unit, make_user
from varsling import crypto
from varsling.accounts.models import User
from varsling.cases.models import Case, CaseKey
from varsling.config import Settings
from varsling.errors import InvalidInput
from varsling.reports import routing, service
from varsling.reports.routing import NoHandlers, NotOffered, Offered


@pytest.fixture
def chain(db: Session, settings: Settings) -> dict[str, int]:
    """Sentralt (Nina) → Nordland (Frode, and Nina again) → Bodø (Kari); Cora holds identities."""
    national = make_unit(db, "Sentralt", kind="national")
    county = make_unit(db, "Nordland fylkesparti", parent_id=national.id, kind="county")
    town = make_unit(db, "Bodø kommuneparti", parent_id=county.id, kind="municipal")
    quiet = make_unit(db, "Rana kommuneparti", parent_id=county.id, kind="municipal")
    nina = make_user(
        db, settings, "nina", units=(national.id, county.id), display_name="Nina Nilsen"
    )
    frode = make_user(db, settings, "frode", units=(county.id,), display_name="Frode Fylke")
    kari = make_user(db, settings, "kari", units=(town.id,), display_name="Kari Kommune")
    cora = make_user(
        db, settings, "cora", roles=("custodian",), units=(county.id,), display_name="Cora"
    )
    return {
        "national": national.id,
        "county": county.id,
        "town": town.id,
        "quiet": quiet.id,
        "nina": nina.id,
        "frode": frode.id,
        "kari": kari.id,
        "cora": cora.id,
    }


def uncertify(db: Session, user_id: int) -> None:
    """What a database writer does: swap someone's public key for one of their own."""
    db.execute(
        update(User)
        .where(User.id == user_id)
        .values(public_key=crypto.generate_keypair().public_key)
    )
    db.commit()


def names(recipients: list[routing.Recipient]) -> list[str]:
    return [r.display_name for r in recipients]


# --------------------------------------------------------------------------
# Fallback levels


def test_fallback_levels_list_each_handler_once_where_first_met(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    levels = routing.fallback_levels(db, chain["town"], verifying_key=settings.signing_public_key)

    assert [(level.unit_name, names(level.recipients), level.first) for level in levels] == [
        ("Bodø kommuneparti", ["Kari Kommune"], True),
        # Nina is a handler of the county too: she is listed there, not again at the top.
        ("Nordland fylkesparti", ["Frode Fylke", "Nina Nilsen"], False),
    ]


def test_fallback_levels_skip_people_already_seen_and_uncertified_keys(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    uncertify(db, chain["frode"])
    seen = {chain["kari"]}

    levels = routing.fallback_levels(
        db, chain["town"], seen, verifying_key=settings.signing_public_key
    )

    assert [(level.unit_name, names(level.recipients)) for level in levels] == [
        ("Nordland fylkesparti", ["Nina Nilsen"])
    ]
    assert levels[0].first
    assert seen == {chain["kari"], chain["nina"]}


def test_fallback_levels_follow_route_when_people_are_left_out(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    """Leaving out every level before one sends the report to exactly that level."""
    key = settings.signing_public_key
    levels = routing.fallback_levels(db, chain["town"], verifying_key=key)
    left_out: set[int] = set()
    for level in levels:
        receiving = routing.route(db, chain["town"], left_out, verifying_key=key)
        assert receiving.unit.name == level.unit_name
        assert sorted(u.id for u in receiving.handlers) == sorted(r.id for r in level.recipients)
        left_out |= {r.id for r in level.recipients}
    with pytest.raises(InvalidInput, match="Nobody would be left"):
        routing.route(db, chain["town"], left_out, verifying_key=key)


# --------------------------------------------------------------------------
# The units offered, and the choices for one


def test_a_unit_is_offered_only_when_someone_can_receive_there(
    db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt", kind="national")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    lonely = make_unit(db, "Oslo", parent_id=national.id, kind="county")
    hanne = make_user(db, settings, "hanne", units=(county.id,))
    make_user(db, settings, "olga", units=(lonely.id,))
    uncertify(db, db.scalars(select(User.id).where(User.username == "olga")).one())
    key = settings.signing_public_key

    listed = routing.list_units(db, verifying_key=key)
    offered = routing.offered_units(db, verifying_key=key)

    assert [u.id for u in listed] == [national.id, county.id, lonely.id]
    assert [u.id for u in offered] == [county.id]
    assert offered[0].recipients == [routing.Recipient(hanne.id, "hanne")]
    assert routing.unit_catalogue(db, verifying_key=key).offered == offered


def test_report_choices_offer_the_national_level_with_its_own_fallbacks(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    catalogue, choices = routing.report_choices(
        db, chain["town"], verifying_key=settings.signing_public_key
    )

    assert choices is not None
    assert catalogue.root is not None
    assert catalogue.root.id == chain["national"]
    assert [(d.value, d.unit.id, d.receiving_unit_name) for d in choices.destinations] == [
        ("unit", chain["town"], "Bodø kommuneparti"),
        ("national", chain["national"], "Sentralt"),
    ]
    assert [
        (level.unit_name, names(level.recipients), level.first, level.national_only)
        for level in choices.levels
    ] == [
        ("Bodø kommuneparti", ["Kari Kommune"], True, False),
        ("Nordland fylkesparti", ["Frode Fylke", "Nina Nilsen"], False, False),
    ]
    # Nina, the national handler, is already listed: the national level adds no one.
    assert names(choices.handlers) == ["Kari Kommune", "Frode Fylke", "Nina Nilsen"]
    assert names(choices.custodians) == ["Cora"]
    assert choices.destination("national").unit.id == chain["national"]
    assert choices.destination("nonsense").unit.id == chain["town"]


def test_report_choices_name_the_unit_that_receives_when_it_has_no_handlers(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    _, choices = routing.report_choices(
        db, chain["quiet"], verifying_key=settings.signing_public_key
    )

    assert choices is not None
    here = choices.destinations[0]
    assert here.unit.name == "Rana kommuneparti"
    assert here.receiving_unit_name == "Nordland fylkesparti"
    assert names(here.recipients) == ["Frode Fylke", "Nina Nilsen"]


def test_national_levels_are_listed_only_when_they_add_someone(
    db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt", kind="national")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    make_user(db, settings, "nina", units=(national.id,), display_name="Nina")
    make_user(db, settings, "hanne", units=(county.id,), display_name="Hanne")
    key = settings.signing_public_key

    _, from_county = routing.report_choices(db, county.id, verifying_key=key)
    _, from_top = routing.report_choices(db, national.id, verifying_key=key)

    assert from_county is not None
    assert from_top is not None
    assert [(lvl.unit_name, lvl.first, lvl.national_only) for lvl in from_county.levels] == [
        ("Vestland", True, False),
        ("Sentralt", False, False),
    ]
    assert [d.value for d in from_top.destinations] == ["unit"]


def test_report_choices_for_an_unknown_unit_are_none(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    catalogue, choices = routing.report_choices(
        db, 999_999, verifying_key=settings.signing_public_key
    )

    assert choices is None
    assert len(catalogue.units) == 4


# --------------------------------------------------------------------------
# Sending only to the people shown


def plan(db: Session, settings: Settings, unit_id: int, **overrides: Any) -> routing.SendingPlan:
    arguments: dict[str, Any] = {
        "destination": "unit",
        "excluded": (),
        "offered_handlers": (),
        "offered_custodians": (),
        "custodians_named": False,
        "verifying_key": settings.signing_public_key,
        **overrides,
    }
    return routing.plan_sending(db, unit_id, **arguments)


def test_a_plan_without_named_people_is_held_to_who_would_be_named_now(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    planned = plan(db, settings, chain["town"], excluded=[chain["kari"], 424_242])

    assert planned.problem is None
    assert planned.offered == Offered(
        frozenset({chain["kari"], chain["frode"], chain["nina"]}), frozenset({chain["cora"]})
    )
    # Someone never offered cannot be "left out": the id is dropped.
    assert planned.excluded == {chain["kari"]}


def test_a_plan_drops_named_ids_that_are_nobody(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    planned = plan(
        db,
        settings,
        chain["town"],
        offered_handlers=[chain["kari"], chain["frode"], chain["nina"], 424_242],
        offered_custodians=[424_243],
        custodians_named=True,
    )

    assert planned.offered.handlers == {chain["kari"], chain["frode"], chain["nina"]}
    assert planned.offered.custodians == frozenset()
    # Cora holds identities here but the form (as posted) named no custodian.
    assert planned.problem == "custodians_not_offered"


@pytest.mark.parametrize(
    ("who", "problem"),
    [
        ("everyone", "nobody_left"),
        ("newcomer", "not_offered"),
        ("new_custodian", "custodians_not_offered"),
    ],
)
def test_a_plan_names_what_stops_sending(
    db: Session, settings: Settings, chain: dict[str, int], who: str, problem: str
) -> None:
    shown = routing.report_choices(db, chain["town"], verifying_key=settings.signing_public_key)[1]
    assert shown is not None
    handlers = [r.id for r in shown.handlers]
    custodians = [r.id for r in shown.custodians]
    excluded: list[int] = []
    if who == "everyone":
        excluded = handlers
    elif who == "newcomer":
        # A handler joins the county after the form was opened; Kari is left out.
        make_user(db, settings, "nils", units=(chain["county"],), display_name="Nils Ny")
        excluded = [chain["kari"]]
    else:
        make_user(db, settings, "cato", roles=("custodian",), units=(chain["national"],))

    planned = plan(
        db,
        settings,
        chain["town"],
        excluded=excluded,
        offered_handlers=handlers,
        offered_custodians=custodians,
        custodians_named=True,
    )

    assert planned.problem == problem


def test_a_plan_for_a_unit_nobody_can_receive_for_says_so(db: Session, settings: Settings) -> None:
    national = make_unit(db, "Sentralt", kind="national")
    nina = make_user(db, settings, "nina", units=(national.id,))
    uncertify(db, nina.id)

    planned = plan(db, settings, national.id)

    assert planned.choices is not None
    assert planned.choices.handlers == []
    assert planned.problem == "nobody_set_up"


def test_a_plan_for_an_unknown_unit_has_no_choices(db: Session, settings: Settings) -> None:
    planned = plan(db, settings, 999_999)

    assert planned.choices is None
    assert planned.problem is None


def test_send_problem_tells_the_refusals_apart() -> None:
    assert routing.send_problem(NoHandlers("x")) == "nobody_set_up"
    assert routing.send_problem(InvalidInput("x")) == "nobody_left"
    assert routing.send_problem(NotOffered("custodians_not_offered")) == "custodians_not_offered"


def test_submit_report_refuses_to_reach_anyone_not_offered_and_stores_nothing(
    db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    """A handler who joined after the form was shown gets no key: nothing is stored at all."""
    shown = Offered(frozenset({chain["kari"]}), frozenset({chain["cora"]}))
    kwargs: dict[str, Any] = {
        "unit_id": chain["town"],
        "category": "harassment",
        "report": {"description": "Noe skjedde."},
        "identity": None,
    }

    with pytest.raises(NotOffered) as refused:
        service.submit_report(db, settings, excluded=[chain["kari"]], offered=shown, **kwargs)
    db.rollback()

    assert refused.value.problem == "not_offered"
    assert db.scalar(select(func.count()).select_from(Case)) == 0
    # The same report, sent to the people shown, goes through.
    service.submit_report(db, settings, offered=shown, **kwargs)
    holders = set(db.scalars(select(CaseKey.user_id).where(CaseKey.purpose == "case")))
    assert holders == {chain["kari"]}
    db.rollback()
