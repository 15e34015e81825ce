"""The report form and the reporter API give the same answers about who receives a report.

Both call reports/routing.py; these tests hold them to it where it matters most:
units whose handlers are all uncertified or all left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.factories import make_unit, make_user, report
from tests.web.test_report_pages import counts, form_token, full_report, open_form, send
from varsling import crypto
from varsling.accounts.models import User
from varsling.app import create_app
from varsling.config import Settings


@pytest.fixture
def site(settings: Settings) -> Iterator[TestClient]:
    """The whole service, pages and API, as one browser sees it."""
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def org(db: Session, settings: Settings) -> dict[str, int]:
    """Sentralt (Nina) → Vestland (Hanne, Ola) → Bergen; Oslo (Olga); Finnmark (nobody)."""
    national = make_unit(db, "Sentralt", kind="national")
    vestland = make_unit(db, "Vestland fylkesparti", parent_id=national.id, kind="county")
    bergen = make_unit(db, "Bergen kommuneparti", parent_id=vestland.id, kind="municipal")
    oslo = make_unit(db, "Oslo fylkesparti", parent_id=national.id, kind="county")
    finnmark = make_unit(db, "Finnmark fylkesparti", parent_id=national.id, kind="county")
    nina = make_user(db, settings, "nina", units=(national.id,), display_name="Nina Nilsen")
    hanne = make_user(db, settings, "hanne", units=(vestland.id,), display_name="Hanne Hansen")
    ola = make_user(db, settings, "ola", units=(vestland.id,), display_name="Ola Olsen")
    olga = make_user(db, settings, "olga", units=(oslo.id,), display_name="Olga Oslo")
    make_user(db, settings, "cora", roles=("custodian",), units=(national.id,))
    return {
        "national": national.id,
        "vestland": vestland.id,
        "bergen": bergen.id,
        "oslo": oslo.id,
        "finnmark": finnmark.id,
        "nina": nina.id,
        "hanne": hanne.id,
        "ola": ola.id,
        "olga": olga.id,
    }


def uncertify(db: Session, *user_ids: int) -> None:
    """What a database writer does: swap public keys for keys of their own."""
    for user_id in user_ids:
        db.execute(
            update(User)
            .where(User.id == user_id)
            .values(public_key=crypto.generate_keypair().public_key)
        )
    db.commit()


def page_offers(site: TestClient) -> list[int]:
    page = site.get("/en/report").text
    return sorted(int(value) for value in re.findall(r'<option value="(\d+)">', page))


def api_offers(site: TestClient) -> dict[int, list[str]]:
    return {
        unit["id"]: [r["display_name"] for r in unit["recipients"]]
        for unit in site.get("/api/v1/units").json()
    }


def page_recipients(site: TestClient, unit_id: int) -> list[str]:
    """Who the form says receives a report sent to the unit itself."""
    page = open_form(site, unit_id, "en")
    found = re.search(r"Case handlers who receive it: ([^.<]*)\.", page)
    return found.group(1).split(", ") if found else []


@pytest.mark.parametrize(
    "uncertified",
    [(), ("hanne",), ("hanne", "ola"), ("nina",), ("olga", "nina"), ("nina", "hanne", "ola")],
)
def test_the_form_and_the_api_offer_the_same_units_and_people(
    site: TestClient, db: Session, org: dict[str, int], uncertified: tuple[str, ...]
) -> None:
    uncertify(db, *(org[name] for name in uncertified))

    listed = api_offers(site)

    assert page_offers(site) == sorted(listed)
    for unit_id, recipients in listed.items():
        assert page_recipients(site, unit_id) == recipients, unit_id
    # Finnmark has no handler of its own: offered exactly when the national level has one.
    assert (org["finnmark"] in listed) == ("nina" not in uncertified)


def test_a_unit_whose_every_handler_is_uncertified_is_refused_alike(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    """Oslo's only handler and the national one have keys a database writer swapped."""
    uncertify(db, org["olga"], org["nina"])
    before = counts(db)

    api = site.post("/api/v1/reports", json=report(org["oslo"]))
    token = form_token(open_form(site, org["oslo"], "en"))
    page = send(site, "en", full_report(org["oslo"], token))

    assert org["oslo"] not in api_offers(site)
    assert org["oslo"] not in page_offers(site)
    assert api.status_code == 422
    assert "No case handler is set up for this unit" in api.json()["error"]["message"]
    assert page.status_code == 422
    assert "Nobody can receive reports here yet: the ethics committee has not set up" in page.text
    assert counts(db) == before


def test_a_report_leaving_out_every_handler_is_refused_alike(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    everyone = [org["hanne"], org["ola"], org["nina"]]
    before = counts(db)

    api = site.post("/api/v1/reports", json=report(org["bergen"], excluded_recipients=everyone))
    token = form_token(open_form(site, org["bergen"], "en"))
    page = send(site, "en", full_report(org["bergen"], token, excluded=[str(i) for i in everyone]))

    assert api.status_code == 422
    assert "Nobody would be left to receive this report" in api.json()["error"]["message"]
    assert page.status_code == 422
    assert "Nobody would be left to receive the report" in page.text
    assert counts(db) == before


def test_leaving_out_the_remaining_handlers_when_others_are_uncertified_is_refused_alike(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    """Hanne is uncertified; leaving out Ola and Nina leaves nobody, in both."""
    uncertify(db, org["hanne"])
    left_out = [org["ola"], org["nina"]]

    api = site.post("/api/v1/reports", json=report(org["bergen"], excluded_recipients=left_out))
    token = form_token(open_form(site, org["bergen"], "en"))
    page = send(site, "en", full_report(org["bergen"], token, excluded=[str(i) for i in left_out]))

    assert api.status_code == 422
    assert "Nobody would be left" in api.json()["error"]["message"]
    assert page.status_code == 422
    assert "Nobody would be left to receive the report" in page.text
