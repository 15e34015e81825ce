"""Changing an account's roles, and the installation's warnings (CLI and admin pages)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.accounts.test_admin import _refused, _tree
from tests.factories import login, make_unit, make_user, report
from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts.models import User
from varsling.accounts.setup_check import setup_warnings
from varsling.audit import AuditEvent
from varsling.cases.models import CaseKey
from varsling.config import Settings
from varsling.errors import VarslingError


def test_set_roles_replaces_the_roles_and_audits_it(db: Session, settings: Settings) -> None:
    units = _tree(db)
    audun = make_user(db, settings, "audun", roles=("auditor",))
    make_user(db, settings, "ada", roles=("admin",))

    accounts.set_user_roles(db, audun.id, roles=["auditor", "admin"], actor="user:2")
    db.commit()

    user = db.get(User, audun.id)
    assert user is not None
    assert user.role_names == {"auditor", "admin"}
    event = db.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert (event.action, event.actor) == ("user.roles_set", "user:2")
    assert json.loads(event.details) == {
        "user_id": audun.id,
        "from_roles": ["auditor"],
        "roles": ["admin", "auditor"],
    }
    # A unit first, then the handler role.
    _refused(
        db,
        lambda: accounts.set_user_roles(db, audun.id, roles=["handler"]),
        "handler acts for a unit",
    )
    accounts.set_user_units(db, audun.id, unit_ids=[units["county"]])
    accounts.set_user_roles(db, audun.id, roles=["handler"])
    db.commit()
    assert db.get(User, audun.id).role_names == {"handler"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("roles", "reason"),
    [([], "roles"), (["handler", "king"], "roles"), (["auditor"], "same_roles")],
)
def test_set_roles_mistakes_are_refused_with_a_reason(
    db: Session, settings: Settings, roles: list[str], reason: str
) -> None:
    audun = make_user(db, settings, "audun", roles=("auditor",))

    with pytest.raises(VarslingError) as refused:
        accounts.set_user_roles(db, audun.id, roles=roles)
    db.rollback()

    assert refused.value.reason == reason
    assert db.get(User, audun.id).role_names == {"auditor"}  # type: ignore[union-attr]


def test_the_last_active_admin_keeps_the_role_and_the_account(
    db: Session, settings: Settings
) -> None:
    ada = make_user(db, settings, "ada", roles=("admin",))
    other = make_user(db, settings, "arne", roles=("admin", "auditor"))
    accounts.deactivate_user(db, other.id)
    db.commit()

    _refused(db, lambda: accounts.set_user_roles(db, ada.id, roles=["auditor"]), "only active")
    _refused(db, lambda: accounts.deactivate_user(db, ada.id), "only active administrator")

    # With a second active administrator, either is allowed.
    make_user(db, settings, "anne", roles=("admin",))
    accounts.set_user_roles(db, ada.id, roles=["auditor"])
    db.commit()
    assert db.get(User, ada.id).role_names == {"auditor"}  # type: ignore[union-attr]


def test_an_admin_who_makes_themselves_a_handler_gets_no_existing_case(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """Roles say what one may ask for; case keys are wrapped per person at arrival."""
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    ada = make_user(db, settings, "ada", roles=("admin",))
    make_user(db, settings, "anne", roles=("admin",))
    assert client.post("/api/v1/reports", json=report(unit.id)).status_code == 201
    (case_id,) = db.scalars(select(CaseKey.case_id).where(CaseKey.purpose == "case"))

    accounts.set_user_units(db, ada.id, unit_ids=[unit.id], actor=f"user:{ada.id}")
    accounts.set_user_roles(db, ada.id, roles=["admin", "handler"], actor=f"user:{ada.id}")
    db.commit()
    ada_api = login(client, "ada")

    assert client.get("/api/v1/cases", headers=ada_api).json()["items"] == []
    assert client.get(f"/api/v1/cases/{case_id}", headers=ada_api).status_code == 404
    declared = client.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": "low"},
        headers=ada_api,
    )
    assert declared.status_code == 404
    db.rollback()
    assert db.scalars(select(CaseKey).where(CaseKey.user_id == ada.id)).all() == []
    # A report arriving after the change reaches her, as it would any new handler.
    assert client.post("/api/v1/reports", json=report(unit.id)).status_code == 201
    assert len(client.get("/api/v1/cases", headers=ada_api).json()["items"]) == 1


def test_a_custodian_role_given_later_opens_no_existing_identity(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))
    ada = make_user(db, settings, "ada", roles=("admin",))
    body = report(unit.id, identity={"name": "Kari", "contact": "kari@example.org"})
    assert client.post("/api/v1/reports", json=body).status_code == 201

    accounts.set_user_units(db, ada.id, unit_ids=[unit.id])
    accounts.set_user_roles(db, ada.id, roles=["admin", "custodian"])
    db.commit()

    assert db.scalars(select(CaseKey).where(CaseKey.user_id == ada.id)).all() == []
    # Cora holds the identity key; Ada, a custodian only from now on, does not.
    holders = db.scalars(select(CaseKey.user_id).where(CaseKey.purpose == "identity")).all()
    assert holders == [db.scalars(select(User.id).where(User.username == "cora")).one()]


def test_setup_warnings_name_units_and_accounts(db: Session, settings: Settings) -> None:
    national = make_unit(db, "Sentralt")
    vestland = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    oslo = make_unit(db, "Oslo", parent_id=national.id, kind="county")
    hanne = make_user(db, settings, "hanne", units=(vestland.id,), display_name="Hanne")
    cora = make_user(db, settings, "cora", roles=("custodian",), units=(vestland.id,))
    carl = make_user(db, settings, "carl", roles=("auditor",))
    key = settings.signing_public_key

    found = setup_warnings(db, verifying_key=key)

    assert [u.name for u in found.units_without_handlers] == ["Sentralt", "Oslo"]
    assert found.units_without_custodians == []
    assert found.rejected_keys == found.uncertified_keys == []

    # A database writer swaps a key; an old account has no certificate.
    db.execute(
        update(User)
        .where(User.id == cora.id)
        .values(public_key=crypto.generate_keypair().public_key)
    )
    db.execute(update(User).where(User.id == carl.id).values(key_certificate=None))
    db.commit()
    found = setup_warnings(db, verifying_key=key)

    assert [u.username for u in found.rejected_keys] == ["cora"]
    assert [u.username for u in found.uncertified_keys] == ["carl"]
    # Cora's key is rejected, so Vestland has nobody to hold an identity.
    assert [u.id for u in found.units_without_custodians] == [vestland.id]
    assert [u.id for u in found.units_without_handlers] == [national.id, oslo.id]
    assert found
    assert hanne.id not in {a.id for a in found.rejected_keys + found.uncertified_keys}


def test_no_warnings_is_false(db: Session, settings: Settings) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))

    assert not setup_warnings(db, verifying_key=settings.signing_public_key)


def test_unit_tree_lists_each_unit_under_its_parent(db: Session) -> None:
    units = _tree(db)
    accounts.move_unit(db, units["town"], parent_id=units["other"])
    db.commit()

    tree = [(u.id, u.depth) for u in accounts.unit_tree(db)]

    assert tree == [
        (units["national"], 0),
        (units["county"], 1),
        (units["other"], 1),
        (units["town"], 2),
    ]


def test_the_account_list_flags_inactive_accounts_and_rejected_keys(
    db: Session, settings: Settings
) -> None:
    units = _tree(db)
    hanne = make_user(db, settings, "hanne", units=(units["county"], units["national"]))
    carl = make_user(db, settings, "carl", roles=("auditor",))
    accounts.deactivate_user(db, carl.id)
    db.execute(
        update(User)
        .where(User.id == hanne.id)
        .values(public_key=crypto.generate_keypair().public_key)
    )
    db.commit()

    listed = accounts.list_accounts(db, verifying_key=settings.signing_public_key)

    assert [(a.username, a.active, a.key_certified, a.roles) for a in listed] == [
        ("hanne", True, False, ["handler"]),
        ("carl", False, True, ["auditor"]),
    ]
    assert listed[0].unit_ids == sorted([units["county"], units["national"]])
