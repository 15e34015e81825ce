"""Conflict-of-interest declarations, recusal and grants, played against a handler with
a stake and a database writer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.factories import declare, login, make_unit, make_user, report
from varsling import audit, crypto
from varsling.accounts.models import User
from varsling.cases.exclusions import is_excluded
from varsling.cases.models import Case, CaseDeclaration, CaseEntry, CaseKey
from varsling.config import Settings

INVOLVED = "Fylkeslederen og nestlederen"


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, Any]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    town = make_unit(db, "Bergen", parent_id=county.id, kind="municipal")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    ids = {
        "national": national.id,
        "county": county.id,
        "town": town.id,
        "other": other.id,
        "tove": make_user(db, settings, "tove", units=(town.id,)).id,
        "trond": make_user(db, settings, "trond", units=(town.id,)).id,
        "kjell": make_user(db, settings, "kjell", units=(county.id,)).id,
        "rita": make_user(db, settings, "rita", units=(other.id,)).id,
        "carl": make_user(db, settings, "carl", roles=("custodian",), units=(county.id,)).id,
    }
    # Trond is left out by the reporter; Tove alone receives the town's report.
    code = client.post(
        "/api/v1/reports",
        json=report(
            town.id,
            description="Det skjedde på årsmøtet.",
            involved=INVOLVED,
            excluded_recipients=[ids["trond"]],
        ),
    ).json()["case_code"]
    tove = login(client, "tove")
    [item] = client.get("/api/v1/cases", headers=tove).json()["items"]
    return {**ids, "code": code, "case_id": item["id"], "item": item}


def _events(engine: Engine, action: str, case_id: str) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = session.execute(
            select(audit.AuditEvent).where(
                audit.AuditEvent.action == action, audit.AuditEvent.case_id == case_id
            )
        ).scalars()
        return [{"actor": r.actor, **json.loads(r.details)} for r in rows]


def _key_holders(engine: Engine, case_id: str) -> set[tuple[int, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(CaseKey.user_id, CaseKey.purpose).where(CaseKey.case_id == case_id)
        )
        return {(user_id, purpose) for user_id, purpose in rows}


def _entry_count(engine: Engine, case_id: str) -> int:
    with Session(engine) as session:
        return (
            session.scalar(
                select(func.count()).select_from(CaseEntry).where(CaseEntry.case_id == case_id)
            )
            or 0
        )


def test_before_declaring_a_handler_sees_only_what_judges_a_conflict(
    client: TestClient, world: dict[str, Any], engine: Engine
) -> None:
    tove = login(client, "tove")
    assert world["item"]["declared"] is False

    response = client.get(f"/api/v1/cases/{world['case_id']}", headers=tove)

    assert response.status_code == 409
    body = response.json()
    assert body["error"]["code"] == "declaration_required"
    assert set(body["case"]) == {
        "id",
        "category",
        "unit_id",
        "priority",
        "received_on",
        "acknowledgement_due",
        "feedback_due",
        "involved",
    }
    assert body["case"]["involved"] == INVOLVED
    assert body["case"]["unit_id"] == world["town"]
    assert "årsmøtet" not in response.text
    # The look was recorded although the answer is a refusal.
    assert [e["actor"] for e in _events(engine, "case.conflict_check_read", world["case_id"])] == [
        f"user:{world['tove']}"
    ]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "/messages", {"body": "Hei"}),
        ("POST", "/notes", {"body": "Notat"}),
        ("POST", "/status", {"status": "acknowledged"}),
        ("POST", "/grants", {"user_id": 1}),
        ("GET", "/files/" + "a" * 32, None),
    ],
)
def test_nothing_of_the_case_opens_or_changes_before_declaring(
    client: TestClient,
    world: dict[str, Any],
    engine: Engine,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
) -> None:
    tove = login(client, "tove")
    before = _entry_count(engine, world["case_id"])

    response = client.request(
        method, f"/api/v1/cases/{world['case_id']}{suffix}", json=body, headers=tove
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "declaration_required"
    assert _entry_count(engine, world["case_id"]) == before
    with Session(engine) as session:
        assert session.get(Case, world["case_id"]).status == "received"  # type: ignore[union-attr]
    refused = _events(engine, "case.access_refused", world["case_id"])
    assert refused == [{"actor": f"user:{world['tove']}", "reason": "declaration_required"}]


def test_declaring_no_conflict_needs_a_risk_assessment_and_opens_the_case_once(
    client: TestClient, world: dict[str, Any], engine: Engine
) -> None:
    tove = login(client, "tove")
    url = f"/api/v1/cases/{world['case_id']}/declaration"

    assert client.post(url, json={"conflict": False}, headers=tove).status_code == 422
    assert client.post(url, json={"conflict": False, "risk": "huge"}, headers=tove).status_code == (
        422
    )
    assert client.post(url, json={"conflict": True}, headers=tove).status_code == 422
    assert _events(engine, "case.declared", world["case_id"]) == []

    declared = client.post(url, json={"conflict": False, "risk": "high"}, headers=tove)

    assert declared.status_code == 201
    assert declared.json()["risk"] == "high"
    case = client.get(f"/api/v1/cases/{world['case_id']}", headers=tove)
    assert case.status_code == 200
    assert case.json()["report"]["description"] == "Det skjedde på årsmøtet."
    assert case.json()["risk"] == "high"
    assert client.get("/api/v1/cases", headers=tove).json()["items"][0]["declared"] is True
    again = client.post(url, json={"conflict": True, "reason": "Nei likevel"}, headers=tove)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_declared"
    assert _events(engine, "case.declared", world["case_id"]) == [
        {"actor": f"user:{world['tove']}", "conflict": False, "risk": "high"}
    ]


def test_a_recused_handler_loses_the_case_for_good_and_it_goes_up(
    client: TestClient, world: dict[str, Any], engine: Engine, settings: Settings
) -> None:
    tove, kjell = login(client, "tove"), login(client, "kjell")
    case_id = world["case_id"]
    assert client.get("/api/v1/cases", headers=kjell).json()["items"] == []

    recused = client.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": True, "reason": "Jeg er gift med en av de involverte."},
        headers=tove,
    )

    # Tove was the only handler left: her session wrapped the case for the county's.
    assert recused.status_code == 201, recused.text
    assert recused.json()["routed_to_unit_id"] == world["county"]
    assert recused.json()["handlers_added"] == 1
    holders = _key_holders(engine, case_id)
    assert all(user != world["tove"] for user, _ in holders)
    assert (world["kjell"], "case") in holders
    assert client.get(f"/api/v1/cases/{case_id}", headers=tove).status_code == 404
    assert client.get("/api/v1/cases", headers=tove).json()["items"] == []
    with Session(engine) as session:
        assert is_excluded(session, settings, case_id, world["tove"])
        assert session.get(Case, case_id).handling_unit_id == world["county"]  # type: ignore[union-attr]
    [event] = _events(engine, "case.recused", case_id)
    assert event["routed_to_unit_id"] == world["county"]
    assert "gift" not in json.dumps(event)

    # The county handler declares, reads why Tove stepped aside, and can never give
    # her the case back.
    declare(client, kjell, case_id)
    case = client.get(f"/api/v1/cases/{case_id}", headers=kjell).json()
    assert case["handling_unit_id"] == world["county"]
    assert [r["reason"] for r in case["recusals"]] == ["Jeg er gift med en av de involverte."]
    assert case["integrity"]["ok"] is True
    regrant = client.post(
        f"/api/v1/cases/{case_id}/grants", json={"user_id": world["tove"]}, headers=kjell
    )
    assert regrant.status_code == 403
    assert regrant.json()["error"]["code"] == "grant_refused"
    assert all(user != world["tove"] for user, _ in _key_holders(engine, case_id))
    assert _events(engine, "case.grant_refused", case_id) == [
        {"actor": f"user:{world['kjell']}", "user_id": world["tove"], "reason": "excluded"}
    ]


def test_a_recusal_that_would_leave_nobody_is_refused_and_changes_nothing(
    client: TestClient, db: Session, settings: Settings, engine: Engine
) -> None:
    national = make_unit(db, "Sentralt")
    make_user(db, settings, "nora", units=(national.id,))
    client.post("/api/v1/reports", json=report(national.id))
    nora = login(client, "nora")
    [item] = client.get("/api/v1/cases", headers=nora).json()["items"]
    before = _key_holders(engine, item["id"])

    refused = client.post(
        f"/api/v1/cases/{item['id']}/declaration",
        json={"conflict": True, "reason": "Inhabil"},
        headers=nora,
    )

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "nobody_left_to_handle"
    assert _key_holders(engine, item["id"]) == before
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(CaseDeclaration)) == 0
    assert _events(engine, "case.recusal_refused", item["id"]) == [
        {"actor": f"user:{_user_id(engine, 'nora')}", "reason": "nobody_left"}
    ]
    # Still closed to her: no declaration, no content.
    assert client.get(f"/api/v1/cases/{item['id']}", headers=nora).status_code == 409


def _user_id(engine: Engine, username: str) -> int:
    with Session(engine) as session:
        user_id = session.scalar(select(User.id).where(User.username == username))
        assert user_id is not None
        return user_id


def test_a_database_writer_cannot_forge_or_move_a_declaration(
    client: TestClient, world: dict[str, Any], engine: Engine
) -> None:
    case_id = world["case_id"]
    kjell = login(client, "kjell")
    tove = login(client, "tove")
    declare(client, tove, case_id)
    # Kjell gets the case from Tove but has not declared; the writer copies Tove's
    # declaration row to him, then tries a row with a made-up tag.
    granted = client.post(
        f"/api/v1/cases/{case_id}/grants", json={"user_id": world["kjell"]}, headers=tove
    )
    assert granted.status_code == 201, granted.text
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO case_declarations "
                "(case_id, user_id, conflict, risk, declared_on, tag) "
                "SELECT case_id, :kjell, conflict, risk, declared_on, tag FROM case_declarations "
                "WHERE case_id = :case AND user_id = :tove"
            ),
            {"kjell": world["kjell"], "tove": world["tove"], "case": case_id},
        )

    copied = client.get(f"/api/v1/cases/{case_id}", headers=kjell)

    assert copied.status_code == 409
    assert copied.json()["error"]["code"] == "declaration_altered"
    with engine.begin() as connection:
        connection.execute(
            update(CaseDeclaration)
            .where(CaseDeclaration.user_id == world["kjell"])
            .values(tag=b"\x00" * 32)
        )
    assert client.get(f"/api/v1/cases/{case_id}", headers=kjell).status_code == 409
    assert "årsmøtet" not in client.get(f"/api/v1/cases/{case_id}", headers=kjell).text


def test_grants_reach_only_eligible_people_of_the_unit_chain(
    client: TestClient, world: dict[str, Any], engine: Engine, db: Session
) -> None:
    case_id = world["case_id"]
    tove = login(client, "tove")
    url = f"/api/v1/cases/{case_id}/grants"
    declare(client, tove, case_id)

    def grant(user_id: int) -> tuple[int, str]:
        response = client.post(url, json={"user_id": user_id}, headers=tove)
        return response.status_code, response.json().get("error", {}).get("code", "")

    assert grant(world["rita"]) == (403, "grant_refused")  # another county
    assert grant(world["trond"]) == (403, "grant_refused")  # left out by the reporter
    assert grant(world["tove"]) == (409, "already_granted")
    assert grant(999_999) == (403, "grant_refused")
    # A database writer swaps Kjell's key for one they hold: nothing is wrapped for it.
    attacker = crypto.generate_keypair()
    original = db.get(User, world["kjell"])
    assert original is not None
    kept = original.public_key
    db.execute(update(User).where(User.id == world["kjell"]).values(public_key=attacker.public_key))
    db.commit()
    assert grant(world["kjell"]) == (403, "grant_refused")
    assert (world["kjell"], "case") not in _key_holders(engine, case_id)
    db.execute(update(User).where(User.id == world["kjell"]).values(public_key=kept))
    db.commit()

    assert grant(world["kjell"]) == (201, "")
    assert grant(world["carl"]) == (201, "")  # a custodian of the chain
    kjell = login(client, "kjell")
    assert client.get(f"/api/v1/cases/{case_id}", headers=kjell).status_code == 409
    declare(client, kjell, case_id)
    assert client.get(f"/api/v1/cases/{case_id}", headers=kjell).status_code == 200
    reasons = [e["reason"] for e in _events(engine, "case.grant_refused", case_id)]
    assert reasons == ["outside_unit_chain", "excluded", "no_such_user", "key_not_certified"]
    granted = [e["user_id"] for e in _events(engine, "case.access_granted", case_id)]
    assert granted == [world["kjell"], world["carl"]]


def test_a_handler_who_has_not_declared_cannot_grant(
    client: TestClient, world: dict[str, Any], engine: Engine
) -> None:
    tove = login(client, "tove")

    response = client.post(
        f"/api/v1/cases/{world['case_id']}/grants", json={"user_id": world["kjell"]}, headers=tove
    )

    assert response.status_code == 409
    assert (world["kjell"], "case") not in _key_holders(engine, world["case_id"])
