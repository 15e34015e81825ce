"""The administrators' pages: units, accounts, warnings; refusals keep what was typed.

Attacker tests play an administrator with a stake: one who gives themselves
the case handler role to read an existing case, and one who looks for case
content anywhere on the admin pages.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tests.factories import PASSWORD, login, make_unit, make_user, report
from tests.staff_web import enrol, form_token, logged_in, staff_web_login
from varsling import crypto
from varsling.accounts import two_factor
from varsling.accounts.models import LoginSession, Unit, User
from varsling.app import create_app
from varsling.audit import AuditEvent
from varsling.cases.models import CaseKey
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD

ADMIN = "/en/staff/admin"


@pytest.fixture
def site(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def org(db: Session, settings: Settings) -> dict[str, int]:
    """Sentralt → Vestland → Bergen, and Oslo; Hanne handles Vestland; Ada administers."""
    national = make_unit(db, "Sentralt", kind="national")
    vestland = make_unit(db, "Vestland fylkesparti", parent_id=national.id, kind="county")
    bergen = make_unit(db, "Bergen kommuneparti", parent_id=vestland.id, kind="municipal")
    oslo = make_unit(db, "Oslo fylkesparti", parent_id=national.id, kind="county")
    hanne = make_user(db, settings, "hanne", units=(vestland.id,), display_name="Hanne Hansen")
    ada = make_user(db, settings, "ada", roles=("admin",), display_name="Ada Admin")
    return {
        "national": national.id,
        "vestland": vestland.id,
        "bergen": bergen.id,
        "oslo": oslo.id,
        "hanne": hanne.id,
        "ada": ada.id,
    }


@pytest.fixture
def admin(site: TestClient, org: dict[str, int]) -> TestClient:
    return logged_in(site, "ada")


def post(client: TestClient, page: str, action: str, data: dict[str, Any]) -> Any:
    """Open `page`, then post its form at `action` with the page's own form token."""
    token = form_token(client.get(page).text)
    return client.post(action, data={CSRF_FIELD: token, **data}, follow_redirects=False)


def state(db: Session) -> tuple[Any, ...]:
    """Units, accounts with roles and units, and the audit trail's length."""
    db.rollback()
    users = db.scalars(select(User).order_by(User.id)).all()
    return (
        sorted((u.id, u.name, u.parent_id, u.kind) for u in db.scalars(select(Unit))),
        [(u.username, u.active, sorted(u.role_names), sorted(u.unit_ids)) for u in users],
        db.scalar(select(func.count()).select_from(AuditEvent)),
    )


def last_event(db: Session) -> AuditEvent:
    db.rollback()
    return db.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()


def summary_links(page: str) -> list[tuple[str, str]]:
    block = re.search(r'<div class="error-summary".*?</div>', page, re.S)
    assert block is not None, "no error summary"
    assert "autofocus" in block.group(0)
    return [
        (a, html.unescape(t))
        for a, t in re.findall(r'<a href="#([^"]+)">(.*?)</a>', block.group(0))
    ]


# --------------------------------------------------------------------------
# Units


def test_the_units_page_shows_the_tree_and_what_needs_attention(
    admin: TestClient, org: dict[str, int]
) -> None:
    page = admin.get(f"{ADMIN}/units")

    assert page.status_code == 200
    text = page.text
    tree = re.search(r'<ul class="unit-tree">.*', text, re.S)
    assert tree is not None
    names = re.findall(r'<a href="/en/staff/admin/units/\d+">([^<]+)</a>', tree.group(0))
    # Depth first: Bergen under Vestland, Oslo after them.
    assert names[:4] == [
        "Sentralt",
        "Vestland fylkesparti",
        "Bergen kommuneparti",
        "Oslo fylkesparti",
    ]
    # Sentralt and Oslo have nobody to receive; no unit has an identity custodian.
    warnings = re.search(r'<section class="notice notice--important".*?</section>', text, re.S)
    assert warnings is not None
    assert "reporters are not offered them" in warnings.group(0)
    assert "Sentralt</a>" in warnings.group(0)
    assert "Oslo fylkesparti</a>" in warnings.group(0)
    assert "nobody can ever be given access to a reporter\u2019s name there" in warnings.group(0)


def test_adding_a_unit_is_audited_as_the_admin(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    answer = post(
        admin,
        f"{ADMIN}/units",
        f"{ADMIN}/units",
        {"name": "Askøy kommuneparti", "parent": str(org["vestland"]), "kind": "municipal"},
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == f"{ADMIN}/units?done=unit-added"
    assert "The unit was added." in admin.get(answer.headers["location"]).text
    db.rollback()
    added = db.scalars(select(Unit).where(Unit.name == "Askøy kommuneparti")).one()
    assert (added.parent_id, added.kind) == (org["vestland"], "municipal")
    event = last_event(db)
    assert (event.action, event.actor) == ("unit.created", f"user:{org['ada']}")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"name": "bergen KOMMUNEPARTI", "kind": "municipal"},
            "name",
            "Another unit under the same parent already has this name.",
        ),
        ({"name": "   ", "kind": "municipal"}, "name", "Write a name of 1 to 200 characters."),
        ({"name": "Ny", "kind": "national"}, "kind", "Only the top of the tree is the national"),
        ({"name": "Ny", "kind": "duke"}, "kind", "Choose what kind of unit it is."),
    ],
)
def test_a_refused_unit_keeps_what_was_typed_and_changes_nothing(
    admin: TestClient,
    db: Session,
    org: dict[str, int],
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    before = state(db)

    answer = post(
        admin, f"{ADMIN}/units", f"{ADMIN}/units", {**data, "parent": str(org["vestland"])}
    )

    assert answer.status_code == 422
    assert state(db) == before
    page = answer.text
    (link,) = summary_links(page)
    assert link[0] == field
    assert message in link[1]
    assert f'value="{html.escape(data["name"])}"' in page
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', page)
    assert f'<option value="{org["vestland"]}" selected>' in page
    assert "<title>Error: Units \u2013 Varsling</title>" in page


def test_moving_a_unit_under_itself_is_refused_with_the_choice_kept(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    before = state(db)
    page = f"{ADMIN}/units/{org['vestland']}"

    answer = post(admin, page, f"{page}/move", {"parent": str(org["bergen"])})

    assert answer.status_code == 422
    assert state(db) == before
    assert summary_links(answer.text) == [
        (
            "parent",
            "A unit cannot be moved under itself, or under a unit that lies under it. "
            "Choose another unit.",
        )
    ]
    assert f'<option value="{org["bergen"]}" selected>' in answer.text
    described = 'aria-describedby="parent-hint parent-error-1" aria-invalid="true"'
    assert f'id="parent" name="parent" {described}' in answer.text


def test_moving_next_to_a_unit_of_the_same_name_points_at_the_parent(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    make_unit(db, "Bergen kommuneparti", parent_id=org["oslo"], kind="municipal")
    page = f"{ADMIN}/units/{org['bergen']}"

    answer = post(admin, page, f"{page}/move", {"parent": str(org["oslo"])})

    assert answer.status_code == 422
    ((field, message),) = summary_links(answer.text)
    assert field == "parent"
    assert message.startswith("A unit under the chosen parent already has the same name")


def test_renaming_and_moving_a_unit(admin: TestClient, db: Session, org: dict[str, int]) -> None:
    page = f"{ADMIN}/units/{org['bergen']}"

    renamed = post(admin, page, f"{page}/rename", {"name": "Bergen sentrum"})
    moved = post(admin, page, f"{page}/move", {"parent": str(org["oslo"])})

    assert renamed.status_code == moved.status_code == 303
    assert moved.headers["location"] == f"{page}?done=unit-moved"
    assert "The unit was moved." in admin.get(moved.headers["location"]).text
    db.rollback()
    unit = db.get(Unit, org["bergen"])
    assert unit is not None
    assert (unit.name, unit.parent_id) == ("Bergen sentrum", org["oslo"])


def test_the_national_level_has_no_move_form(admin: TestClient, org: dict[str, int]) -> None:
    page = admin.get(f"{ADMIN}/units/{org['national']}").text

    assert "The national level is the top of the tree. It cannot be moved." in page
    assert "/move" not in page


@pytest.mark.parametrize("unit", ["999999", "abc", "99999999999999999999"])
def test_a_unit_that_does_not_exist_is_a_404_page(admin: TestClient, unit: str) -> None:
    answer = admin.get(f"{ADMIN}/units/{unit}")

    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in answer.text


# --------------------------------------------------------------------------
# Accounts


def test_the_account_list_shows_roles_units_and_rejected_keys(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    db.execute(
        update(User)
        .where(User.id == org["hanne"])
        .values(public_key=crypto.generate_keypair().public_key)
    )
    db.commit()

    page = admin.get(f"{ADMIN}/accounts").text

    row = re.search(r"<tr>\s*<td><a [^>]*>hanne</a>.*?</tr>", page, re.S)
    assert row is not None
    assert "Hanne Hansen" in row.group(0)
    assert "Case handler" in row.group(0)
    assert "Vestland fylkesparti" in row.group(0)
    assert "Key not certified" in row.group(0)
    assert "does not match its certificate" in page


def test_adding_an_account_with_roles_and_units(
    admin: TestClient, site: TestClient, db: Session, org: dict[str, int]
) -> None:
    answer = post(
        admin,
        f"{ADMIN}/accounts/new",
        f"{ADMIN}/accounts",
        {
            "username": "nina",
            "display_name": "Nina Nilsen",
            "email": "nina@example.org",
            "password": PASSWORD,
            "roles": ["handler", "custodian"],
            "units": [str(org["bergen"]), str(org["oslo"])],
        },
    )

    assert answer.status_code == 303
    db.rollback()
    nina = db.scalars(select(User).where(User.username == "nina")).one()
    assert answer.headers["location"] == f"{ADMIN}/accounts/{nina.id}?done=account-added"
    assert nina.role_names == {"handler", "custodian"}
    assert nina.unit_ids == {org["bergen"], org["oslo"]}
    assert nina.email == "nina@example.org"
    event = last_event(db)
    assert (event.action, event.actor) == ("user.created", f"user:{org['ada']}")
    assert "nina@example.org" not in event.details
    assert PASSWORD not in json.dumps(event.details)
    # The password works (through the API: another client, another session).
    assert login(site, "nina")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"username": "Nina Nilsen"}, "username", "A username is 2 to 63 characters"),
        ({"username": "hanne"}, "username", "This username is taken."),
        ({"password": "short"}, "password", "The password needs at least 12 characters."),
        ({"roles": []}, "roles", "Choose at least one role."),
        ({"units": []}, "units", "A case handler or an identity custodian acts for a unit."),
        ({"display_name": ""}, "display_name", "Write the name reporters will see."),
        ({"units": ["999999"]}, "units", "One of the chosen units does not exist any more."),
        ({"email": "nina at example.org"}, "email", "Write an email address like"),
    ],
)
def test_a_refused_account_keeps_what_was_typed(
    admin: TestClient,
    db: Session,
    org: dict[str, int],
    changes: dict[str, Any],
    field: str,
    message: str,
) -> None:
    data: dict[str, Any] = {
        "username": "nina",
        "display_name": "Nina Nilsen",
        "password": PASSWORD,
        "roles": ["handler"],
        "units": [str(org["bergen"])],
        **changes,
    }
    before = state(db)

    answer = post(admin, f"{ADMIN}/accounts/new", f"{ADMIN}/accounts", data)

    assert answer.status_code == 422
    assert state(db) == before
    page = answer.text
    ((link, text),) = summary_links(page)
    assert link == field
    assert message in text
    assert f'value="{html.escape(data["username"])}"' in page
    assert f'value="{html.escape(data["display_name"])}"' in page
    for role in data["roles"]:
        assert re.search(rf'name="roles" value="{role}" checked', page)
    for unit in data["units"]:
        if unit != "999999":
            assert re.search(rf'name="units" value="{unit}" checked', page)
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', page)


def test_changing_roles_and_units_of_an_account(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    page = f"{ADMIN}/accounts/{org['hanne']}"

    units = post(admin, page, f"{page}/units", {"units": [str(org["vestland"]), str(org["oslo"])]})
    roles = post(admin, page, f"{page}/roles", {"roles": ["handler", "auditor"]})

    assert units.status_code == roles.status_code == 303
    assert roles.headers["location"] == f"{page}?done=roles"
    assert "The roles were saved." in admin.get(roles.headers["location"]).text
    db.rollback()
    hanne = db.get(User, org["hanne"])
    assert hanne is not None
    assert hanne.role_names == {"handler", "auditor"}
    assert hanne.unit_ids == {org["vestland"], org["oslo"]}
    event = last_event(db)
    assert (event.action, event.actor) == ("user.roles_set", f"user:{org['ada']}")


def test_setting_and_removing_an_email_address_on_the_account_page(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    page = f"{ADMIN}/accounts/{org['hanne']}"
    before = state(db)

    refused = post(admin, page, f"{page}/email", {"email": "hanne@example.org, eve@example.org"})

    assert refused.status_code == 422
    assert state(db) == before
    ((field, message),) = summary_links(refused.text)
    assert field == "email"
    assert "Write an email address like nina.nilsen@example.org" in message
    # What was typed stays in the field.
    assert 'value="hanne@example.org, eve@example.org"' in html.unescape(refused.text)

    saved = post(admin, page, f"{page}/email", {"email": "hanne@example.org"})
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{page}?done=email"
    shown = admin.get(saved.headers["location"]).text
    assert "The email address was saved." in shown
    assert 'value="hanne@example.org"' in shown
    db.rollback()
    assert db.get(User, org["hanne"]).email == "hanne@example.org"  # type: ignore[union-attr]
    event = last_event(db)
    assert (event.action, event.actor) == ("user.email_set", f"user:{org['ada']}")
    assert "example.org" not in event.details

    removed = post(admin, page, f"{page}/email", {"email": ""})
    assert removed.status_code == 303
    db.rollback()
    assert db.get(User, org["hanne"]).email is None  # type: ignore[union-attr]


def test_a_role_that_needs_a_unit_says_to_give_one_first(
    admin: TestClient, db: Session, settings: Settings, org: dict[str, int]
) -> None:
    carl = make_user(db, settings, "carl", roles=("auditor",))
    page = f"{ADMIN}/accounts/{carl.id}"
    before = state(db)

    answer = post(admin, page, f"{page}/roles", {"roles": ["auditor", "custodian"]})

    assert answer.status_code == 422
    assert state(db) == before
    ((field, message),) = summary_links(answer.text)
    assert field == "roles"
    assert "Give the account a unit first" in message
    # The boxes as ticked, not as stored.
    assert re.search(r'name="roles" value="custodian" checked', answer.text)


def test_the_last_admin_cannot_drop_the_role_or_deactivate(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    page = f"{ADMIN}/accounts/{org['ada']}"
    before = state(db)

    dropped = post(admin, page, f"{page}/roles", {"roles": ["auditor"]})
    closed = post(admin, page, f"{page}/deactivate", {})

    assert dropped.status_code == closed.status_code == 422
    assert state(db) == before
    assert summary_links(dropped.text)[0][0] == "roles"
    assert summary_links(closed.text) == [
        (
            "deactivate",
            "This is the only active administrator. Give another account the administrator "
            "role first, so that someone can still manage accounts.",
        )
    ]


def test_deactivating_an_account_ends_its_sessions(
    admin: TestClient, db: Session, settings: Settings, org: dict[str, int]
) -> None:
    hanne_api = login(admin, "hanne")
    page = f"{ADMIN}/accounts/{org['hanne']}"

    answer = post(admin, page, f"{page}/deactivate", {})

    assert answer.status_code == 303
    assert admin.get("/api/v1/cases", headers=hanne_api).status_code == 401
    shown = admin.get(answer.headers["location"]).text
    assert "The account was deactivated." in shown
    assert "The account is deactivated." in shown
    again = post(admin, page, f"{page}/roles", {"roles": ["handler"]})
    assert again.status_code == 422  # the same roles: nothing to save


def test_resetting_two_factor_turns_it_off_and_ends_sessions(
    db: Session, settings: Settings, org: dict[str, int], site: TestClient
) -> None:
    """Hanne lost her phone: the admin resets it; her password alone then logs her in."""
    app = site.app
    with TestClient(app) as hanne_browser:
        logged_in(hanne_browser, "hanne")
        enrolment = enrol(hanne_browser)
        db.rollback()
        assert two_factor.state(db, settings, org["hanne"]) == "on"
        admin = logged_in(site, "ada")
        page = f"{ADMIN}/accounts/{org['hanne']}"
        assert '<dd id="two-factor-state">On</dd>' in admin.get(page).text

        answer = post(admin, page, f"{page}/two-factor-reset", {})

        assert answer.status_code == 303
        shown = admin.get(answer.headers["location"]).text
        assert "Two-factor login was reset" in shown
        assert '<dd id="two-factor-state">Off</dd>' in shown
        db.rollback()
        assert two_factor.state(db, settings, org["hanne"]) == "off"
        assert db.scalar(select(func.count()).where(LoginSession.user_id == org["hanne"])) == 0
        assert last_event(db).action == "user.two_factor_reset"
        # Her old browser is logged out; her password alone logs her in again.
        ended = hanne_browser.get("/en/staff/two-factor", follow_redirects=False)
        assert ended.headers["location"].startswith("/en/staff/login")
        assert enrolment.secret
        assert staff_web_login(hanne_browser, "hanne").headers["location"] == "/en/staff/"


def test_a_forged_form_changes_nothing_and_keeps_the_text(
    admin: TestClient, db: Session, org: dict[str, int]
) -> None:
    before = state(db)

    answer = admin.post(
        f"{ADMIN}/accounts",
        data={
            CSRF_FIELD: "forged",
            "username": "nina",
            "display_name": "Nina Nilsen",
            "password": PASSWORD,
            "roles": ["handler"],
            "units": [str(org["bergen"])],
        },
    )

    assert answer.status_code == 400
    assert state(db) == before
    assert "The form could not be sent" in answer.text
    assert 'value="Nina Nilsen"' in answer.text
    assert re.search(rf'name="units" value="{org["bergen"]}" checked', answer.text)


@pytest.mark.parametrize(
    ("lang", "units", "accounts"),
    [
        ("nb", "Partiledd", "Brukerkontoer"),
        ("nn", "Partiledd", "Brukarkontoar"),
        ("en", "Units", "Accounts"),
    ],
)
def test_the_admin_pages_speak_the_page_language(
    site: TestClient, org: dict[str, int], lang: str, units: str, accounts: str
) -> None:
    admin = logged_in(site, "ada", lang=lang)

    assert f"<h1>{units}</h1>" in admin.get(f"/{lang}/staff/admin/units").text
    assert f"<h1>{accounts}</h1>" in admin.get(f"/{lang}/staff/admin/accounts").text


def test_other_staff_get_a_403_page_and_strangers_the_login_page(
    site: TestClient, org: dict[str, int]
) -> None:
    assert site.get(f"{ADMIN}/units", follow_redirects=False).status_code == 303
    handler = logged_in(site, "hanne")

    answer = handler.get(f"{ADMIN}/accounts")

    assert answer.status_code == 403
    assert "<h1>No access</h1>" in answer.text


# --------------------------------------------------------------------------
# An administrator with a stake


def test_an_admin_who_makes_themselves_a_handler_on_the_pages_reads_no_existing_case(
    admin: TestClient, site: TestClient, db: Session, org: dict[str, int]
) -> None:
    secret = "Styrelederen truet meg etter årsmøtet"
    sent = site.post(
        "/api/v1/reports",
        json=report(org["vestland"], description=secret, identity={"name": "Kari", "contact": "k"}),
    )
    assert sent.status_code == 201
    db.rollback()
    (case_id,) = db.scalars(select(CaseKey.case_id).distinct())
    page = f"{ADMIN}/accounts/{org['ada']}"

    assert post(admin, page, f"{page}/units", {"units": [str(org["vestland"])]}).status_code == 303
    given = post(admin, page, f"{page}/roles", {"roles": ["admin", "handler", "custodian"]})

    assert given.status_code == 303
    ada_api = login(site, "ada")
    assert site.get("/api/v1/cases", headers=ada_api).json()["items"] == []
    assert site.get(f"/api/v1/cases/{case_id}", headers=ada_api).status_code == 404
    db.rollback()
    assert db.scalars(select(CaseKey).where(CaseKey.user_id == org["ada"])).all() == []
    # Nothing of the case on any admin page either.
    for path in (
        f"{ADMIN}/units",
        f"{ADMIN}/units/{org['vestland']}",
        f"{ADMIN}/accounts",
        f"{ADMIN}/accounts/{org['hanne']}",
        f"{ADMIN}/accounts/{org['ada']}",
        f"{ADMIN}/accounts/new",
    ):
        shown = admin.get(path)
        assert shown.status_code == 200, path
        assert secret not in shown.text
        assert case_id not in shown.text
        assert "Kari" not in shown.text
