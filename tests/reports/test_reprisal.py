"""Retaliation cases, sending an unanswered case up, and check-ins (the reporter's side)."""

from __future__ import annotations

import datetime as dt
import json
import struct
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import declare, login, make_unit, make_user, report, reporter_login
from varsling import crypto
from varsling.accounts.models import ReporterSession
from varsling.accounts.service import staff_principal, utcnow
from varsling.audit import ReporterAuditEvent
from varsling.cases import exclusions, keys
from varsling.cases.models import (
    Case,
    CaseKey,
    CheckIn,
    KeyPurpose,
    ReporterAccess,
    ReporterLink,
)
from varsling.cases.service import add_months
from varsling.config import Settings
from varsling.reports import service

RETALIATION = "They removed me from the candidate list after I reported."


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, Any]:
    """A county case reported with identity, leaving out a handler and a custodian."""
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    ids = {
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "ola": make_user(db, settings, "ola", units=(county.id,)).id,
        "nina": make_user(db, settings, "nina", units=(national.id,)).id,
        "rita": make_user(db, settings, "rita", units=(other.id,)).id,
        "cora": make_user(db, settings, "cora", roles=("custodian",), units=(county.id,)).id,
        "cato": make_user(db, settings, "cato", roles=("custodian",), units=(county.id,)).id,
        "karl": make_user(db, settings, "karl", roles=("custodian",), units=(national.id,)).id,
    }
    code = client.post(
        "/api/v1/reports",
        json=report(
            county.id,
            identity={"name": "Kari Nordmann"},
            excluded_recipients=[ids["ola"], ids["cato"]],
        ),
    ).json()["case_code"]
    first = db.scalars(select(Case)).one()
    db.commit()  # end the read: the app writes next
    return {
        "code": code,
        "first": first.id,
        "national": national.id,
        "county": county.id,
        "other": other.id,
        **ids,
    }


def _retaliate(client: TestClient, headers: dict[str, str], body: str = RETALIATION) -> str:
    response = client.post(
        "/api/v1/reporter/case/retaliation", json={"body": body}, headers=headers
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["status"] == "opened"
    assert "case_id" not in answer
    reference: str = answer["reference"]
    return reference


def _linked(db: Session, first: str) -> list[Case]:
    db.commit()
    return list(db.scalars(select(Case).where(Case.linked_case_id == first)))


def _holders(db: Session, case_id: str, purpose: KeyPurpose) -> set[int]:
    db.commit()  # a fresh snapshot
    return keys.holders(db, case_id, purpose)


def _reporter_events(db: Session, action: str) -> list[ReporterAuditEvent]:
    db.commit()
    return list(db.scalars(select(ReporterAuditEvent).where(ReporterAuditEvent.action == action)))


# --------------------------------------------------------------------------
# Retaliation cases


def test_retaliation_case_goes_to_the_same_handlers_and_the_level_above_never_the_excluded(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    reporter = reporter_login(client, world["code"])
    today = utcnow().date()

    _retaliate(client, reporter)

    [linked] = _linked(db, world["first"])
    assert linked.category == "retaliation"
    assert linked.priority == "high"
    assert linked.unit_id == world["county"]
    assert linked.received_on == today
    assert linked.acknowledgement_due == today + dt.timedelta(days=2)
    assert linked.feedback_due == add_months(today + dt.timedelta(days=2), 1)
    assert _holders(db, linked.id, KeyPurpose.CASE) == {world["hanne"], world["nina"]}
    assert _holders(db, linked.id, KeyPurpose.IDENTITY) == {world["cora"], world["karl"]}
    for left_out in ("ola", "cato"):
        assert exclusions.is_excluded(db, settings, linked.id, world[left_out])
    for received in ("hanne", "nina", "cora", "karl"):
        assert not exclusions.is_excluded(db, settings, linked.id, world[received])
    [event] = _reporter_events(db, "case.retaliation_opened")
    details = json.loads(event.details)
    assert event.case_id == linked.id
    assert details["linked_case_id"] == world["first"]
    assert details["recipients"] == 2
    assert details["excluded_count"] == 2
    assert RETALIATION not in event.details

    # The handler of the level above reads it, the identity is there for the custodians.
    nina = login(client, "nina")
    declare(client, nina, linked.id)
    case = client.get(f"/api/v1/cases/{linked.id}", headers=nina).json()
    assert case["report"]["description"] == RETALIATION
    assert case["linked_case_id"] == world["first"]
    assert case["priority"] == "high"
    assert case["has_identity"] is True
    # The original's handler sees the link too.
    hanne = login(client, "hanne")
    declare(client, hanne, world["first"])
    original = client.get(f"/api/v1/cases/{world['first']}", headers=hanne).json()
    assert original["retaliation_cases"] == [linked.id]
    # The excluded handler and another unit's handler see nothing of it.
    for outsider in ("ola", "rita"):
        headers = login(client, outsider)
        assert client.get("/api/v1/cases", headers=headers).json() == {
            "items": [],
            "next": None,
            "total": 0,
        }
        assert client.get(f"/api/v1/cases/{linked.id}", headers=headers).status_code == 404


def test_a_handler_who_recused_from_the_first_case_gets_no_retaliation_case(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    hanne = login(client, "hanne")
    response = client.post(
        f"/api/v1/cases/{world['first']}/declaration",
        json={"conflict": True, "reason": "My brother is named."},
        headers=hanne,
    )
    assert response.status_code == 201, response.text
    # Hanne stepped aside; the case went up to nina.
    reporter = reporter_login(client, world["code"])

    _retaliate(client, reporter)

    [linked] = _linked(db, world["first"])
    assert _holders(db, linked.id, KeyPurpose.CASE) == {world["nina"]}
    assert exclusions.is_excluded(db, settings, linked.id, world["hanne"])


def test_the_link_opens_only_with_the_reporters_code_not_with_a_handlers_keys(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    reporter = reporter_login(client, world["code"])
    _retaliate(client, reporter)
    [linked] = _linked(db, world["first"])
    link = db.get(ReporterLink, linked.id)
    assert link is not None

    # A handler of both cases, with the database, holds: her private key, the first
    # case's key and the new case's key. None of them opens the reporter's link.
    token = login(client, "hanne")["Authorization"].removeprefix("Bearer ")
    db.commit()
    hanne = staff_principal(db, token)
    wrapped = {
        row.case_id: keys.unwrap(row, hanne.private_key)
        for row in db.scalars(select(CaseKey).where(CaseKey.user_id == world["hanne"]))
    }
    first_key, new_key = wrapped[world["first"]], wrapped[linked.id]
    context = crypto.context("varsling/reporter-link", linked.id)
    for guess in (
        first_key,
        new_key,
        hanne.private_key[: crypto.KEY_BYTES],
        crypto.hkdf(first_key, label=service.LINK_KEY_LABEL),
    ):
        with pytest.raises(crypto.CryptoError):
            crypto.open_sealed(guess, link.sealed_keys, context=context)
    # Nothing in the link row names the first case.
    assert world["first"].encode() not in link.lookup + link.sealed_keys

    # The reporter's code does open it, to the very key the handlers were given.
    access = db.get(ReporterAccess, world["first"])
    assert access is not None
    code = crypto.normalize_case_code(world["code"])
    assert code is not None
    code_key = crypto.derive_case_code(
        code,
        pepper=settings.secret("code_pepper"),
        salt=settings.secret("code_salt"),
        params=settings.argon2,
    ).key
    opened = crypto.open_sealed(
        crypto.hkdf(code_key, label=service.LINK_KEY_LABEL), link.sealed_keys, context=context
    )
    assert opened[: crypto.KEY_BYTES] == new_key
    # Copied to another case's row, it does not open (the case id is bound in).
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(
            crypto.hkdf(code_key, label=service.LINK_KEY_LABEL),
            link.sealed_keys,
            context=crypto.context("varsling/reporter-link", world["first"]),
        )


def test_the_reporter_follows_both_cases_with_one_code(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    reporter = reporter_login(client, world["code"])
    reference = _retaliate(client, reporter)
    [linked] = _linked(db, world["first"])
    nina = login(client, "nina")
    declare(client, nina, linked.id)
    assert (
        client.post(
            f"/api/v1/cases/{linked.id}/messages", json={"body": "We are on it."}, headers=nina
        ).status_code
        == 201
    )

    # A new login with the same code: the first case lists the linked one.
    again = reporter_login(client, world["code"])
    first = client.get("/api/v1/reporter/case", headers=again).json()
    assert first["category"] == "harassment"
    assert first["linked_cases"] == [
        {
            "reference": reference,
            "category": "retaliation",
            "status": "received",
            "received_on": linked.received_on.isoformat(),
            "acknowledgement_due": linked.acknowledgement_due.isoformat(),
            "feedback_due": linked.feedback_due.isoformat(),
        }
    ]
    response = client.get(f"/api/v1/reporter/cases/{reference}", headers=again)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["report"]["description"] == RETALIATION
    assert shown["report"]["identity"] == {"name": "Kari Nordmann", "contact": ""}
    assert [m["body"] for m in shown["messages"]] == ["We are on it."]
    assert shown["linked_cases"] == []
    response = client.post(
        f"/api/v1/reporter/cases/{reference}/messages", json={"body": "Thanks."}, headers=again
    )
    assert response.status_code == 201
    case = client.get(f"/api/v1/cases/{linked.id}", headers=nina).json()
    assert [m["body"] for m in case["messages"]] == ["We are on it.", "Thanks."]


def test_another_reporter_cannot_reach_a_linked_case(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    reference = _retaliate(client, reporter_login(client, world["code"]))
    [linked] = _linked(db, world["first"])
    other_code = client.post("/api/v1/reports", json=report(world["county"])).json()["case_code"]
    other = reporter_login(client, other_code)

    assert client.get("/api/v1/reporter/case", headers=other).json()["linked_cases"] == []
    for target in (reference, linked.id, linked.id[:16], "0" * 16, "é" * 16):
        for method, suffix, body in [
            ("GET", "", None),
            ("POST", "/messages", {"body": "hi"}),
            ("POST", "/escalate", None),
        ]:
            response = client.request(
                method, f"/api/v1/reporter/cases/{target}{suffix}", json=body, headers=other
            )
            assert response.status_code == 404, (target, suffix)


def test_retaliation_three_years_after_closing_opens_a_linked_case(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    first = db.get(Case, world["first"])
    assert first is not None
    long_ago = utcnow().date() - dt.timedelta(days=3 * 365 + 30)
    first.received_on = long_ago
    first.acknowledged_on = long_ago + dt.timedelta(days=2)
    first.acknowledgement_due = long_ago + dt.timedelta(days=7)
    first.feedback_due = add_months(long_ago, 3)
    first.concluded_on = long_ago + dt.timedelta(days=60)
    first.closed_on = utcnow().date() - dt.timedelta(days=3 * 365)
    first.status = "closed"
    db.commit()

    _retaliate(client, reporter_login(client, world["code"]))

    [linked] = _linked(db, world["first"])
    assert linked.received_on == utcnow().date()
    assert linked.status == "received"
    assert _holders(db, linked.id, KeyPurpose.CASE) == {world["hanne"], world["nina"]}


def test_a_session_from_before_link_keys_is_asked_to_log_in_again(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    # A session sealed as before: the expiry and the two case keys, no link key.
    headers = reporter_login(client, world["code"])
    token = headers["Authorization"].removeprefix("Bearer ")
    secrets = crypto.derive_token(token, "api")
    db.commit()
    row = db.get(ReporterSession, secrets.lookup)
    assert row is not None
    context = crypto.context("varsling/reporter-session", row.case_id, row.token_lookup)
    opened = crypto.open_sealed(secrets.key, row.sealed_secret, context=context)
    row.sealed_secret = crypto.seal(
        secrets.key, opened[: struct.calcsize(">q") + 2 * crypto.KEY_BYTES], context=context
    )
    db.commit()

    assert client.get("/api/v1/reporter/case", headers=headers).status_code == 200
    response = client.post(
        "/api/v1/reporter/case/retaliation", json={"body": RETALIATION}, headers=headers
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "login_again"
    assert _linked(db, world["first"]) == []


# --------------------------------------------------------------------------
# Sending an unanswered case up


def _set_due(db: Session, case_id: str, due: dt.date) -> None:
    db.commit()
    case = db.get(Case, case_id)
    assert case is not None
    case.acknowledgement_due = due
    db.commit()


def test_send_up_is_refused_before_the_deadline_and_allowed_after(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    reporter = reporter_login(client, world["code"])
    assert client.get("/api/v1/reporter/case", headers=reporter).json()["can_send_up"] is False

    early = client.post("/api/v1/reporter/case/escalate", headers=reporter)

    assert early.status_code == 409
    assert early.json()["error"]["code"] == "acknowledgement_not_yet_due"
    assert _holders(db, world["first"], KeyPurpose.CASE) == {world["hanne"]}
    assert [json.loads(e.details) for e in _reporter_events(db, "reporter.send_up_refused")] == [
        {"reason": "acknowledgement_not_yet_due"}
    ]

    _set_due(db, world["first"], utcnow().date() - dt.timedelta(days=1))
    assert client.get("/api/v1/reporter/case", headers=reporter).json()["can_send_up"] is True
    sent = client.post("/api/v1/reporter/case/escalate", headers=reporter)

    assert sent.status_code == 201, sent.text
    assert sent.json() == {"status": "sent_up"}
    db.commit()
    assert _holders(db, world["first"], KeyPurpose.CASE) == {world["hanne"], world["nina"]}
    [event] = _reporter_events(db, "reporter.case_sent_up")
    assert json.loads(event.details) == {
        "from_unit_id": world["county"],
        "to_unit_id": world["national"],
        "handlers_added": 1,
    }
    # The level above reads it (the reporter's session wrapped the key for them) ...
    nina = login(client, "nina")
    declare(client, nina, world["first"])
    assert client.get(f"/api/v1/cases/{world['first']}", headers=nina).status_code == 200
    # ... and the original handler sees that it went up.
    hanne = login(client, "hanne")
    declare(client, hanne, world["first"])
    case = client.get(f"/api/v1/cases/{world['first']}", headers=hanne).json()
    assert case["escalated_on"] == utcnow().date().isoformat()
    assert case["handling_unit_id"] == world["national"]
    listed = client.get("/api/v1/cases", headers=hanne).json()["items"][0]
    assert listed["escalated_on"] == utcnow().date().isoformat()
    # The top has been reached: nothing further to send it to.
    shown = client.get("/api/v1/reporter/case", headers=reporter).json()
    assert shown["can_send_up"] is False
    assert shown["sent_up_on"] == utcnow().date().isoformat()
    again = client.post("/api/v1/reporter/case/escalate", headers=reporter)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "recently_sent_up"


def test_send_up_is_refused_after_acknowledgement(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    hanne = login(client, "hanne")
    declare(client, hanne, world["first"])
    assert (
        client.post(
            f"/api/v1/cases/{world['first']}/status",
            json={"status": "acknowledged"},
            headers=hanne,
        ).status_code
        == 200
    )
    _set_due(db, world["first"], utcnow().date() - dt.timedelta(days=1))
    reporter = reporter_login(client, world["code"])

    response = client.post("/api/v1/reporter/case/escalate", headers=reporter)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_acknowledged"
    assert _holders(db, world["first"], KeyPurpose.CASE) == {world["hanne"]}


def test_send_up_with_no_level_above_is_refused(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    code = client.post("/api/v1/reports", json=report(world["national"])).json()["case_code"]
    db.commit()
    case = db.scalars(select(Case).where(Case.unit_id == world["national"])).one()
    _set_due(db, case.id, utcnow().date() - dt.timedelta(days=1))
    reporter = reporter_login(client, code)
    assert client.get("/api/v1/reporter/case", headers=reporter).json()["can_send_up"] is False

    response = client.post("/api/v1/reporter/case/escalate", headers=reporter)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_level_above"
    db.commit()
    assert db.get(Case, case.id).escalated_on is None  # type: ignore[union-attr]


def test_send_up_skips_a_level_above_whose_handler_is_excluded(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    code = client.post(
        "/api/v1/reports", json=report(world["county"], excluded_recipients=[world["nina"]])
    ).json()["case_code"]
    db.commit()
    case = db.scalars(
        select(Case).where(Case.id != world["first"], Case.unit_id == world["county"])
    ).one()
    _set_due(db, case.id, utcnow().date() - dt.timedelta(days=1))
    reporter = reporter_login(client, code)

    response = client.post("/api/v1/reporter/case/escalate", headers=reporter)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_level_above"
    assert world["nina"] not in _holders(db, case.id, KeyPurpose.CASE)


# --------------------------------------------------------------------------
# Check-ins


def _checkin(db: Session, case_id: str, round_: int = 1) -> int:
    checkin = CheckIn(case_id=case_id, round=round_, sent_on=utcnow().date())
    db.add(checkin)
    db.commit()
    return checkin.id


def test_a_no_is_recorded_once_for_the_handlers(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    checkin_id = _checkin(db, world["first"])
    reporter = reporter_login(client, world["code"])
    shown = client.get("/api/v1/reporter/case", headers=reporter).json()["checkins"]
    assert shown == [
        {"id": checkin_id, "round": 1, "sent_on": utcnow().date().isoformat(), "answered_on": None}
    ]

    response = client.post(
        f"/api/v1/reporter/case/checkins/{checkin_id}",
        json={"negative_consequences": False, "details": None},
        headers=reporter,
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"status": "answered", "retaliation_reference": None}
    again = client.post(
        f"/api/v1/reporter/case/checkins/{checkin_id}",
        json={"negative_consequences": True, "details": "Changed my mind."},
        headers=reporter,
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_answered"
    assert _linked(db, world["first"]) == []
    shown = client.get("/api/v1/reporter/case", headers=reporter).json()["checkins"]
    assert shown[0]["answered_on"] == utcnow().date().isoformat()
    hanne = login(client, "hanne")
    declare(client, hanne, world["first"])
    case = client.get(f"/api/v1/cases/{world['first']}", headers=hanne).json()
    assert case["checkin_answers"] == [
        {
            "round": 1,
            "sent_on": utcnow().date().isoformat(),
            "answered_on": utcnow().date().isoformat(),
            "negative_consequences": False,
            "details": None,
        }
    ]
    assert case["integrity"]["ok"] is True
    [event] = _reporter_events(db, "reporter.checkin_answered")
    assert "manifest" in event.details


def test_a_yes_opens_a_retaliation_case(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    checkin_id = _checkin(db, world["first"], 3)
    reporter = reporter_login(client, world["code"])

    response = client.post(
        f"/api/v1/reporter/case/checkins/{checkin_id}",
        json={"negative_consequences": True, "details": RETALIATION},
        headers=reporter,
    )

    assert response.status_code == 201, response.text
    reference = response.json()["retaliation_reference"]
    [linked] = _linked(db, world["first"])
    assert linked.category == "retaliation"
    shown = client.get(f"/api/v1/reporter/cases/{reference}", headers=reporter).json()
    assert shown["report"]["description"] == RETALIATION
    assert shown["report"]["checkin_round"] == 3
    hanne = login(client, "hanne")
    declare(client, hanne, world["first"])
    answers = client.get(f"/api/v1/cases/{world['first']}", headers=hanne).json()["checkin_answers"]
    assert [(a["round"], a["negative_consequences"], a["details"]) for a in answers] == [
        (3, True, RETALIATION)
    ]


def test_a_yes_on_a_linked_case_links_to_the_first_case(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    reporter = reporter_login(client, world["code"])
    reference = _retaliate(client, reporter)
    [linked] = _linked(db, world["first"])
    checkin_id = _checkin(db, linked.id)
    # The linked case's question is not the first case's to answer.
    wrong = client.post(
        f"/api/v1/reporter/case/checkins/{checkin_id}",
        json={"negative_consequences": False},
        headers=reporter,
    )
    assert wrong.status_code == 404

    response = client.post(
        f"/api/v1/reporter/cases/{reference}/checkins/{checkin_id}",
        json={"negative_consequences": True, "details": "It goes on."},
        headers=reporter,
    )

    assert response.status_code == 201, response.text
    found = _linked(db, world["first"])
    assert len(found) == 2
    assert all(c.linked_case_id == world["first"] for c in found)
    assert _linked(db, linked.id) == []
    listed = client.get("/api/v1/reporter/case", headers=reporter).json()["linked_cases"]
    assert len(listed) == 2


def test_another_reporter_cannot_answer_a_check_in(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    checkin_id = _checkin(db, world["first"])
    other_code = client.post("/api/v1/reports", json=report(world["county"])).json()["case_code"]
    other = reporter_login(client, other_code)

    for target in (checkin_id, 999_999):
        response = client.post(
            f"/api/v1/reporter/case/checkins/{target}",
            json={"negative_consequences": False},
            headers=other,
        )
        assert response.status_code == 404
    db.commit()
    assert db.get(CheckIn, checkin_id).answered_on is None  # type: ignore[union-attr]
    assert (
        client.post(
            "/api/v1/reporter/case/checkins/99999999999",
            json={"negative_consequences": False},
            headers=other,
        ).status_code
        == 422
    )


def test_a_retaliation_case_has_the_shorter_deadlines_also_after_acknowledgement(
    client: TestClient, db: Session, world: dict[str, Any], settings: Settings
) -> None:
    _retaliate(client, reporter_login(client, world["code"]))
    [linked] = _linked(db, world["first"])
    today = utcnow().date()
    assert linked.priority == "high"
    assert linked.category == "retaliation"
    ack_due = today + dt.timedelta(days=settings.retaliation_acknowledgement_days)
    assert linked.acknowledgement_due == ack_due
    assert linked.feedback_due == add_months(ack_due, settings.retaliation_feedback_months)
    hanne = login(client, "hanne")
    listed = client.get("/api/v1/cases", headers=hanne).json()["items"]
    assert listed[0]["id"] == linked.id  # retaliation cases first

    declare(client, hanne, linked.id)
    acknowledged = client.post(
        f"/api/v1/cases/{linked.id}/status", json={"status": "acknowledged"}, headers=hanne
    )

    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["feedback_due"] == (
        add_months(today, settings.retaliation_feedback_months).isoformat()
    )
    # An ordinary case keeps the directive's three months.
    declare(client, hanne, world["first"])
    ordinary = client.post(
        f"/api/v1/cases/{world['first']}/status", json={"status": "acknowledged"}, headers=hanne
    )
    assert ordinary.json()["feedback_due"] == add_months(today, 3).isoformat()
