"""Identity custody: a handler asks with a justification, a second person decides, the
reporter is told first, and only then does the database hold the key for the handler."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.factories import declare, login, make_unit, make_user, report, reporter_login
from varsling.accounts.service import staff_principal
from varsling.audit import AuditEvent
from varsling.cases import identity
from varsling.cases.models import CaseKey, IdentityRequest, IdentityRequestKey
from varsling.config import Settings
from varsling.db import make_sessionmaker

JUSTIFICATION = "We must interview the reporter in person about the meeting"
REASON = "Needed to hear the reporter; the handler has declared no conflict"
NAME = "Kari Nordmann"


@dataclass
class World:
    case_id: str
    code: str
    users: dict[str, int]
    county: int
    national: int
    other: int


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> World:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    users = {
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "ola": make_user(db, settings, "ola", units=(county.id,)).id,
        # A handler and custodian at once: holds both keys, still needs a second person.
        "hugo": make_user(
            db, settings, "hugo", roles=("handler", "custodian"), units=(county.id,)
        ).id,
        "cora": make_user(db, settings, "cora", roles=("custodian",), units=(national.id,)).id,
        # A custodian the reporter named as involved: never given the identity key.
        "cato": make_user(db, settings, "cato", roles=("custodian",), units=(county.id,)).id,
        # A custodian of another unit's chain: no identity key for this case.
        "cita": make_user(db, settings, "cita", roles=("custodian",), units=(other.id,)).id,
        "adam": make_user(db, settings, "adam", roles=("admin", "auditor"), units=(county.id,)).id,
    }
    code = client.post(
        "/api/v1/reports",
        json=report(
            county.id,
            identity={"name": NAME, "contact": "kari@example.org"},
            excluded_recipients=[users["cato"]],
        ),
    ).json()["case_code"]
    [case_id] = [
        c["id"] for c in client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"]
    ]
    for name in ("hanne", "ola", "hugo"):
        declare(client, login(client, name), case_id)
    return World(case_id, code, users, county.id, national.id, other.id)


def ask(client: TestClient, world: World, username: str = "hanne") -> Any:
    return client.post(
        f"/api/v1/cases/{world.case_id}/identity-requests",
        json={"justification": JUSTIFICATION},
        headers=login(client, username),
    )


def decide(
    client: TestClient, request_id: int, username: str, *, approve: bool, reason: str = REASON
) -> Any:
    return client.post(
        f"/api/v1/identity-requests/{request_id}/decision",
        json={"approve": approve, "reason": reason},
        headers=login(client, username),
    )


def read_identity(client: TestClient, world: World, username: str = "hanne") -> Any:
    return client.get(f"/api/v1/cases/{world.case_id}/identity", headers=login(client, username))


def identity_keys(db: Session, world: World) -> set[int]:
    db.rollback()
    return set(
        db.execute(
            select(CaseKey.user_id).where(
                CaseKey.case_id == world.case_id, CaseKey.purpose == "identity"
            )
        ).scalars()
    )


def events(db: Session, action: str) -> list[dict[str, Any]]:
    db.rollback()
    rows = db.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars()
    return [{"actor": r.actor, "case_id": r.case_id, **json.loads(r.details)} for r in rows]


def test_before_approval_the_identity_is_refused_and_no_key_is_wrapped(
    client: TestClient, db: Session, world: World
) -> None:
    refused = read_identity(client, world)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "identity_not_granted"

    asked = ask(client, world)
    assert asked.status_code == 201, asked.text
    assert asked.json() == {"id": asked.json()["id"], "status": "pending"}

    refused = read_identity(client, world)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "identity_not_granted"
    assert NAME not in refused.text
    # Even with the database: no identity key is wrapped for the handler.
    assert world.users["hanne"] not in identity_keys(db, world)
    assert identity_keys(db, world) == {world.users["cora"], world.users["hugo"]}
    assert [e["reason"] for e in events(db, "case.identity_refused")] == [
        "no_approved_request",
        "no_approved_request",
    ]


def test_approval_tells_the_reporter_first_then_the_handler_reads(
    client: TestClient, db: Session, world: World
) -> None:
    request_id = ask(client, world).json()["id"]
    cora = login(client, "cora")
    [pending] = client.get("/api/v1/identity-requests", headers=cora).json()["items"]
    assert pending["justification"] == JUSTIFICATION
    assert pending["case_id"] == world.case_id
    assert (pending["category"], pending["unit_id"], pending["status"]) == (
        "harassment",
        world.county,
        "pending",
    )
    # A custodian decides on the justification alone: the case stays closed to them.
    assert client.get(f"/api/v1/cases/{world.case_id}", headers=cora).status_code == 404

    decided = decide(client, request_id, "cora", approve=True)
    assert decided.status_code == 200, decided.text
    today = dt.date.today().isoformat()
    assert decided.json() == {"id": request_id, "status": "approved", "decided_on": today}

    # The reporter's inbox holds the notice before the handler reads the identity.
    reporter = reporter_login(client, world.code)
    inbox = client.get("/api/v1/reporter/case", headers=reporter).json()
    assert inbox["identity_notices"] == [{"decided_on": today, "reason": REASON}]
    assert inbox["integrity"]["ok"] is True
    assert not events(db, "case.identity_read")

    answer = read_identity(client, world)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"identity": {"name": NAME, "contact": "kari@example.org"}}
    read_identity(client, world)
    assert len(events(db, "case.identity_read")) == 2
    assert events(db, "case.identity_read")[0]["request_id"] == request_id
    assert world.users["hanne"] in identity_keys(db, world)
    [approved] = events(db, "identity.approved")
    assert approved == {
        "actor": f"user:{world.users['cora']}",
        "case_id": world.case_id,
        "request_id": request_id,
        "requester_id": world.users["hanne"],
    }

    # The requester and a co-handler see the request and its outcome; the co-handler
    # still cannot read the identity.
    for name in ("hanne", "ola"):
        [seen] = client.get(
            f"/api/v1/cases/{world.case_id}/identity-requests", headers=login(client, name)
        ).json()["items"]
        assert (seen["justification"], seen["reason"], seen["status"]) == (
            JUSTIFICATION,
            REASON,
            "approved",
        )
        assert seen["requester_id"] == world.users["hanne"]
    assert read_identity(client, world, "ola").json()["error"]["code"] == "identity_not_granted"

    # Cora's listing now shows it among the ones she decided.
    [mine] = client.get("/api/v1/identity-requests", headers=cora).json()["items"]
    assert (mine["status"], mine["decided_by_me"], mine["reason"]) == ("approved", True, REASON)
    assert decide(client, request_id, "cora", approve=False).json()["error"]["code"] == (
        "already_decided"
    )


@pytest.mark.parametrize("tamper", ["delete", "replace"])
def test_without_the_reporters_notice_the_identity_does_not_open(
    client: TestClient, db: Session, world: World, tamper: str
) -> None:
    request_id = ask(client, world).json()["id"]
    assert decide(client, request_id, "cora", approve=True).status_code == 200
    assert read_identity(client, world).status_code == 200
    db.rollback()
    if tamper == "delete":
        # A database writer removes the notice, to disclose silently.
        db.execute(
            update(IdentityRequest)
            .where(IdentityRequest.id == request_id)
            .values(sealed_notice=None)
        )
    else:
        # Or puts in a blob that is not a notice sealed under the identity key.
        db.execute(
            update(IdentityRequest)
            .where(IdentityRequest.id == request_id)
            .values(sealed_notice=b"\x01" + b"\x00" * 60)
        )
    db.commit()

    refused = read_identity(client, world)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "identity_not_granted"
    assert NAME not in refused.text
    assert events(db, "case.identity_refused")[-1]["reason"] == "reporter_not_told"
    reporter = reporter_login(client, world.code)
    inbox = client.get("/api/v1/reporter/case", headers=reporter).json()
    assert inbox["identity_notices"] == []
    if tamper == "replace":
        assert inbox["integrity"]["ok"] is False


def test_a_custodian_without_the_identity_key_gets_404(
    client: TestClient, db: Session, world: World
) -> None:
    request_id = ask(client, world).json()["id"]
    for name in ("cita", "cato"):  # another chain; named as involved by the reporter
        headers = login(client, name)
        assert client.get("/api/v1/identity-requests", headers=headers).json() == {"items": []}
        refused = decide(client, request_id, name, approve=True)
        assert refused.status_code == 404, name
        assert refused.json()["error"]["code"] == "not_found"
    assert decide(client, 999_999, "cora", approve=True).status_code == 404
    assert [e["reason"] for e in events(db, "identity.decision_refused")] == [
        "identity_key_not_held",
        "identity_key_not_held",
        "no_such_request",
    ]
    assert world.users["hanne"] not in identity_keys(db, world)
    db.rollback()
    assert db.get(IdentityRequest, request_id).status == "pending"  # type: ignore[union-attr]
    # The request key went to neither of them either.
    holders = set(
        db.execute(
            select(IdentityRequestKey.user_id).where(IdentityRequestKey.request_id == request_id)
        ).scalars()
    )
    assert holders == {world.users[n] for n in ("hanne", "ola", "hugo", "cora")}


def test_the_requester_cannot_approve_their_own_request(
    client: TestClient, db: Session, world: World
) -> None:
    # Hugo is a handler and a custodian of the case: he holds both keys already.
    request_id = ask(client, world, "hugo").json()["id"]
    assert "hugo" in [u for u, i in world.users.items() if i in identity_keys(db, world)]

    own = decide(client, request_id, "hugo", approve=True)
    assert own.status_code == 403
    assert own.json()["error"]["code"] == "second_person_required"
    assert read_identity(client, world, "hugo").json()["error"]["code"] == "identity_not_granted"
    [refusal] = events(db, "identity.decision_refused")
    assert refusal["reason"] == "second_person_required"
    reporter = reporter_login(client, world.code)
    assert client.get("/api/v1/reporter/case", headers=reporter).json()["identity_notices"] == []

    assert decide(client, request_id, "cora", approve=True).status_code == 200
    assert read_identity(client, world, "hugo").status_code == 200


def test_a_refused_request_wraps_nothing_and_the_reporter_gets_no_notice(
    client: TestClient, db: Session, world: World
) -> None:
    request_id = ask(client, world).json()["id"]
    before = identity_keys(db, world)

    refused = decide(client, request_id, "cora", approve=False, reason="Not needed yet")
    assert refused.status_code == 200
    assert refused.json()["status"] == "refused"

    assert identity_keys(db, world) == before
    assert read_identity(client, world).json()["error"]["code"] == "identity_not_granted"
    reporter = reporter_login(client, world.code)
    assert client.get("/api/v1/reporter/case", headers=reporter).json()["identity_notices"] == []
    [seen] = client.get(
        f"/api/v1/cases/{world.case_id}/identity-requests", headers=login(client, "hanne")
    ).json()["items"]
    assert (seen["status"], seen["reason"]) == ("refused", "Not needed yet")
    assert len(events(db, "identity.refused")) == 1
    # A refusal ends the request: the handler may ask again, with better reasons.
    assert ask(client, world).status_code == 201


def test_approval_is_refused_when_the_requester_lost_the_case(
    client: TestClient, db: Session, world: World
) -> None:
    request_id = ask(client, world).json()["id"]
    db.rollback()
    db.execute(
        delete(CaseKey).where(
            CaseKey.case_id == world.case_id, CaseKey.user_id == world.users["hanne"]
        )
    )
    db.commit()

    refused = decide(client, request_id, "cora", approve=True)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "requester_ineligible"
    assert world.users["hanne"] not in identity_keys(db, world)
    db.rollback()
    request = db.get(IdentityRequest, request_id)
    assert request is not None
    assert (request.status, request.sealed_notice, request.sealed_decision) == (
        "pending",
        None,
        None,
    )
    assert events(db, "identity.decision_refused")[-1]["reason"] == "requester_has_no_case_key"


def test_refused_requests_change_nothing_and_are_audited(
    client: TestClient, db: Session, world: World
) -> None:
    assert ask(client, world).status_code == 201
    again = ask(client, world)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "request_pending"

    # A report without identity, and one that left out every custodian of its chain.
    hanne = login(client, "hanne")
    known = {world.case_id}
    found = []
    for body in (
        report(world.county),
        report(
            world.county,
            identity={"name": NAME},
            excluded_recipients=[world.users[n] for n in ("cora", "cato", "hugo")],
        ),
    ):
        assert client.post("/api/v1/reports", json=body).status_code == 201
        [new] = {
            c["id"] for c in client.get("/api/v1/cases", headers=hanne).json()["items"]
        } - known
        known.add(new)
        declare(client, hanne, new)
        found.append(new)
    bare, lonely = found
    for case_id, code in [(bare, "no_identity"), (lonely, "no_custodian")]:
        refused = client.post(
            f"/api/v1/cases/{case_id}/identity-requests",
            json={"justification": JUSTIFICATION},
            headers=hanne,
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == code
    db.rollback()
    assert len(db.execute(select(IdentityRequest)).all()) == 1
    assert [e["reason"] for e in events(db, "identity.request_refused")] == [
        "request_pending",
        "no_identity",
        "no_custodian",
    ]
    assert len(events(db, "identity.requested")) == 1


def test_who_may_ask_list_and_decide(client: TestClient, db: Session, world: World) -> None:
    # Not declared, another unit, no login: the case does not open.
    for name, status in (("adam", 404), ("cora", 404)):
        assert ask(client, world, name).status_code == status
    request_id = ask(client, world).json()["id"]
    for name in ("hanne", "adam"):
        headers = login(client, name)
        listed = client.get("/api/v1/identity-requests", headers=headers)
        assert listed.status_code == 403, name
        assert decide(client, request_id, name, approve=True).status_code == 403
    assert client.get("/api/v1/identity-requests").status_code == 401
    assert client.get(f"/api/v1/cases/{world.case_id}/identity").status_code == 401
    cora = login(client, "cora")
    assert client.get(f"/api/v1/cases/{world.case_id}/identity", headers=cora).status_code == 404
    assert (
        client.get(f"/api/v1/cases/{world.case_id}/identity-requests", headers=cora).status_code
        == 404
    )


def test_no_text_reaches_the_audit_trail(client: TestClient, db: Session, world: World) -> None:
    request_id = ask(client, world).json()["id"]
    decide(client, request_id, "cora", approve=True)
    read_identity(client, world)
    db.rollback()
    details = " ".join(r.details for r in db.execute(select(AuditEvent)).scalars())
    for text in (JUSTIFICATION, REASON, NAME, "Kari"):
        assert text not in details


def test_two_custodians_deciding_at_once_decide_once(
    client: TestClient, db: Session, engine: Engine, settings: Settings, world: World
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes its write lock at BEGIN: deciders never interleave")
    request_id = ask(client, world).json()["id"]
    tokens = {
        name: login(client, name)["Authorization"].removeprefix("Bearer ")
        for name in ("cora", "hugo")
    }
    maker = make_sessionmaker(engine)
    today = dt.date.today()

    def decide_in(session: Session, name: str) -> None:
        principal = staff_principal(session, tokens[name])
        identity.decide(
            session, settings, principal, request_id, approve=True, reason=REASON, today=today
        )

    with maker() as first:
        decide_in(first, "cora")  # holds the request's row lock, not yet committed
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(lambda: _decide_committed(maker, decide_in, "hugo"))
            time.sleep(0.5)
            assert not second.done()  # waiting for the lock
            first.commit()
            with pytest.raises(identity.AlreadyDecided):
                second.result(timeout=30)
    assert len(events(db, "identity.approved")) == 1
    reporter = reporter_login(client, world.code)
    notices = client.get("/api/v1/reporter/case", headers=reporter).json()["identity_notices"]
    assert len(notices) == 1
    assert read_identity(client, world).status_code == 200


def _decide_committed(
    maker: sessionmaker[Session], decide_in: Callable[[Session, str], None], name: str
) -> None:
    with maker.begin() as session:
        decide_in(session, name)


def test_a_handler_who_steps_aside_loses_the_keys_to_the_cases_requests_too(
    client: TestClient, db: Session, settings: Settings, world: World
) -> None:
    kjell = make_user(db, settings, "kjell", units=(world.county,)).id
    granted = client.post(
        f"/api/v1/cases/{world.case_id}/grants",
        json={"user_id": kjell},
        headers=login(client, "hanne"),
    )
    assert granted.status_code == 201, granted.text
    request_id = ask(client, world).json()["id"]
    db.rollback()
    assert db.get(IdentityRequestKey, (request_id, kjell)) is not None

    recused = client.post(
        f"/api/v1/cases/{world.case_id}/declaration",
        json={"conflict": True, "reason": "Nabo av en av de involverte"},
        headers=login(client, "kjell"),
    )

    assert recused.status_code == 201, recused.text
    db.rollback()
    assert db.get(IdentityRequestKey, (request_id, kjell)) is None
    assert db.get(IdentityRequestKey, (request_id, world.users["hanne"])) is not None
    assert kjell not in set(
        db.execute(select(CaseKey.user_id).where(CaseKey.case_id == world.case_id)).scalars()
    )
