"""Administrators' mistakes are refused with a clear error and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.factories import PASSWORD, login, make_unit, make_user, report
from tests.test_cli import _varsling
from varsling.accounts import service as accounts
from varsling.accounts.models import LoginSession, Unit, User
from varsling.audit import AuditEvent
from varsling.config import Settings
from varsling.errors import VarslingError


def _refused(db: Session, attempt: Callable[[], Any], match: str) -> None:
    """`attempt` raises a domain error saying `match`, and the database is as before."""
    counts = (
        db.scalar(select(func.count()).select_from(Unit)),
        db.scalar(select(func.count()).select_from(User)),
        db.scalar(select(func.count()).select_from(AuditEvent)),
        sorted((u.id, u.name, u.parent_id) for u in db.scalars(select(Unit))),
    )
    with pytest.raises(VarslingError, match=match):
        attempt()
    db.rollback()
    assert counts == (
        db.scalar(select(func.count()).select_from(Unit)),
        db.scalar(select(func.count()).select_from(User)),
        db.scalar(select(func.count()).select_from(AuditEvent)),
        sorted((u.id, u.name, u.parent_id) for u in db.scalars(select(Unit))),
    )


def _tree(db: Session) -> dict[str, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    town = make_unit(db, "Bergen", parent_id=county.id, kind="municipal")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    return {"national": national.id, "county": county.id, "town": town.id, "other": other.id}


def test_unit_mistakes_are_refused(db: Session) -> None:
    units = _tree(db)

    _refused(db, lambda: accounts.create_unit(db, name="Sentralt 2"), "already a national unit")
    _refused(
        db,
        lambda: accounts.create_unit(db, name="Oslo", kind="county"),
        "needs a parent",
    )
    _refused(
        db,
        lambda: accounts.create_unit(
            db, name="Nasjonalt", parent_id=units["county"], kind="national"
        ),
        "cannot have a parent",
    )
    _refused(
        db,
        lambda: accounts.create_unit(
            db, name=" vestland ", parent_id=units["national"], kind="county"
        ),
        "already called 'Vestland'",
    )
    # The same name under another parent is another unit.
    accounts.create_unit(db, name="Bergen", parent_id=units["other"], kind="municipal")
    db.commit()


def test_rename_and_move_correct_units_and_refuse_cycles(db: Session) -> None:
    units = _tree(db)

    _refused(
        db, lambda: accounts.rename_unit(db, units["other"], name="VESTLAND"), "already called"
    )
    _refused(
        db,
        lambda: accounts.move_unit(db, units["national"], parent_id=units["county"]),
        "national unit .* cannot be moved",
    )
    _refused(
        db,
        lambda: accounts.move_unit(db, units["county"], parent_id=units["town"]),
        "cannot be moved under itself",
    )
    _refused(
        db,
        lambda: accounts.move_unit(db, units["county"], parent_id=units["county"]),
        "cannot be moved under itself",
    )
    _refused(db, lambda: accounts.move_unit(db, units["town"], parent_id=999), "no unit with id")

    accounts.rename_unit(db, units["other"], name="Rogaland fylkesparti")
    accounts.move_unit(db, units["town"], parent_id=units["other"])
    db.commit()
    town = db.get(Unit, units["town"])
    assert town is not None
    assert town.parent_id == units["other"]
    actions = list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))
    assert actions[-2:] == ["unit.renamed", "unit.moved"]


def test_user_mistakes_are_refused(db: Session, settings: Settings) -> None:
    units = _tree(db)

    def add(**overrides: Any) -> User:
        values: dict[str, Any] = {
            "username": "nina",
            "password": PASSWORD,
            "roles": ["handler"],
            "unit_ids": [units["county"]],
            "display_name": "Nina Nilsen",
            **overrides,
        }
        return accounts.create_user(db, settings, **values)

    _refused(db, lambda: add(unit_ids=[]), "handler acts for a unit")
    _refused(db, lambda: add(roles=["custodian"], unit_ids=[]), "custodian acts for a unit")
    _refused(db, lambda: add(display_name=None), "--display-name")
    _refused(db, lambda: add(display_name="   "), "--display-name")
    _refused(db, lambda: add(roles=["custodian"], display_name=None), "--display-name")

    # Auditors and administrators are never shown to reporters and act for no unit.
    auditor = add(username="audun", roles=["auditor"], unit_ids=[], display_name=None)
    assert auditor.display_name == "audun"
    assert add().display_name == "Nina Nilsen"
    db.commit()


def test_deactivate_ends_sessions_and_logins(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "nina", units=(unit.id,))
    headers = login(client, "hanne")

    accounts.deactivate_user(db, hanne.id)
    db.commit()

    assert client.get("/api/v1/cases", headers=headers).status_code == 401
    refused = client.post("/api/v1/sessions", json={"username": "hanne", "password": PASSWORD})
    assert refused.status_code == 401
    assert db.scalar(select(func.count()).where(LoginSession.user_id == hanne.id)) == 0
    listed = client.get("/api/v1/units").json()
    names = [r["display_name"] for u in listed for r in u["recipients"]]
    assert names == ["nina"]
    _refused(db, lambda: accounts.deactivate_user(db, hanne.id), "already inactive")
    _refused(db, lambda: accounts.deactivate_user(db, 999), "no account with id 999")


def test_set_units_moves_new_reports_and_keeps_a_unit(
    client: TestClient, db: Session, settings: Settings
) -> None:
    units = _tree(db)
    make_user(db, settings, "nina", units=(units["national"],))
    hanne = make_user(db, settings, "hanne", units=(units["county"],))

    _refused(
        db, lambda: accounts.set_user_units(db, hanne.id, unit_ids=[]), "handler acts for a unit"
    )
    _refused(
        db, lambda: accounts.set_user_units(db, hanne.id, unit_ids=[units["county"]]), "already"
    )

    accounts.set_user_units(db, hanne.id, unit_ids=[units["other"], units["county"]])
    accounts.set_user_units(db, hanne.id, unit_ids=[units["other"]])
    db.commit()
    event = db.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
    assert event.action == "user.units_set"

    assert client.post("/api/v1/reports", json=report(units["other"])).status_code == 201
    assert len(client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"]) == 1
    assert client.post("/api/v1/reports", json=report(units["county"])).status_code == 201
    assert len(client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"]) == 1


def test_corrections_from_the_command_line(database_url: str) -> None:
    national = _varsling(database_url, "unit", "add", "Sentralt").stdout.strip()
    second = _varsling(database_url, "unit", "add", "Sentralt igjen")
    assert second.returncode == 1
    assert "already a national unit" in second.stderr
    county = _varsling(
        database_url, "unit", "add", "Vestland", "--parent", national, "--kind", "county"
    )
    county_id = county.stdout.strip()
    nameless = _varsling(
        database_url, "user", "add", "hanne", "--role", "handler", "--unit", county_id,
        password=PASSWORD,
    )  # fmt: skip
    assert nameless.returncode == 1
    assert "--display-name" in nameless.stderr
    unitless = _varsling(
        database_url, "user", "add", "hanne", "--role", "handler", "--display-name", "Hanne",
        password=PASSWORD,
    )  # fmt: skip
    assert unitless.returncode == 1
    assert "--unit ID" in unitless.stderr
    hanne = _varsling(
        database_url, "user", "add", "hanne", "--role", "handler", "--unit", county_id,
        "--display-name", "Hanne Hansen", password=PASSWORD,
    ).stdout.strip()  # fmt: skip

    assert _varsling(database_url, "unit", "rename", county_id, "Vestland fylke").returncode == 0
    moved = _varsling(database_url, "unit", "move", national, "--parent", county_id)
    assert moved.returncode == 1
    assert "cannot be moved" in moved.stderr
    assert _varsling(database_url, "user", "set-units", hanne, "--unit", national).returncode == 0
    assert _varsling(database_url, "user", "deactivate", hanne).returncode == 0

    assert (
        f"  {county_id}\tVestland fylke (county)" in _varsling(database_url, "unit", "list").stdout
    )
    users = _varsling(database_url, "user", "list").stdout
    assert f"hanne\tHanne Hansen\thandler\t{national} (inactive)" in users
