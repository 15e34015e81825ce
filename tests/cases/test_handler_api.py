"""The handler's side: only key holders see a case; lifecycle and deadlines."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from varsling.cases.service import acknowledgement_due, add_months, feedback_due
from varsling.config import Settings


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, object]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    hanne = make_user(db, settings, "hanne", units=(county.id,))
    ola = make_user(db, settings, "ola", units=(county.id,)).id
    make_user(db, settings, "rita", units=(other.id,))
    make_user(db, settings, "adam", roles=("admin", "auditor"), units=(county.id,))
    code = client.post(
        "/api/v1/reports",
        json=report(county.id, identity={"name": "Kari Nordmann"}, excluded_recipients=[ola]),
    ).json()["case_code"]
    case_id = open_first_case(client, login(client, "hanne"))
    return {"code": code, "case_id": case_id, "county": county.id, "hanne": hanne.id}


def test_handler_reads_report_without_identity(
    client: TestClient, world: dict[str, object]
) -> None:
    headers = login(client, "hanne")

    response = client.get(f"/api/v1/cases/{world['case_id']}", headers=headers)

    assert response.status_code == 200
    case = response.json()
    assert case["report"]["description"] == report(0)["description"]
    assert "identity" not in case["report"]
    assert "Kari" not in response.text
    assert case["has_identity"] is True
    assert case["status"] == "received"
    assert case["unit_id"] == world["county"]


@pytest.mark.parametrize("username", ["rita", "adam", "ola"])
def test_other_unit_admin_and_excluded_handler_get_404(
    client: TestClient, world: dict[str, object], username: str
) -> None:
    headers = login(client, username)

    assert client.get("/api/v1/cases", headers=headers).json() == {
        "items": [],
        "next": None,
        "total": 0,
    }
    for method, suffix, body in [
        ("GET", "", None),
        ("POST", "/messages", {"body": "hi"}),
        ("POST", "/notes", {"body": "hi"}),
        ("POST", "/status", {"status": "acknowledged"}),
    ]:
        response = client.request(
            method, f"/api/v1/cases/{world['case_id']}{suffix}", json=body, headers=headers
        )
        assert response.status_code == 404, (username, suffix)
        assert response.json()["error"]["code"] == "not_found"


def test_unknown_case_is_404_and_no_login_is_401(
    client: TestClient, world: dict[str, object]
) -> None:
    assert client.get("/api/v1/cases/nope", headers=login(client, "hanne")).status_code == 404
    assert client.get(f"/api/v1/cases/{world['case_id']}").status_code == 401
    assert client.get("/api/v1/cases").status_code == 401


def test_wrong_password_is_401(client: TestClient, world: dict[str, object]) -> None:
    for username in ("hanne", "nobody"):
        response = client.post(
            "/api/v1/sessions", json={"username": username, "password": "x" * 12}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


def test_notes_are_never_shown_to_the_reporter(
    client: TestClient, world: dict[str, object]
) -> None:
    headers = login(client, "hanne")
    case_id = world["case_id"]

    assert (
        client.post(
            f"/api/v1/cases/{case_id}/notes",
            json={"body": "Check minutes of 3 May"},
            headers=headers,
        ).status_code
        == 201
    )

    case = client.get(f"/api/v1/cases/{case_id}", headers=headers).json()
    assert [n["body"] for n in case["notes"]] == ["Check minutes of 3 May"]
    reporter = client.get(
        "/api/v1/reporter/case", headers=reporter_login(client, str(world["code"]))
    )
    assert "minutes of 3 May" not in reporter.text


def test_lifecycle_moves_one_step_at_a_time_and_closing_needs_an_outcome(
    client: TestClient, world: dict[str, object]
) -> None:
    headers = login(client, "hanne")
    url = f"/api/v1/cases/{world['case_id']}/status"
    today = dt.datetime.now(dt.UTC).date()

    skipped = client.post(url, json={"status": "investigating"}, headers=headers)
    assert skipped.status_code == 409
    acknowledged = client.post(url, json={"status": "acknowledged"}, headers=headers).json()
    assert acknowledged["acknowledged_on"] == today.isoformat()
    assert acknowledged["feedback_due"] == add_months(today, 3).isoformat()
    assert client.post(url, json={"status": "investigating"}, headers=headers).status_code == 200
    no_outcome = client.post(url, json={"status": "concluded"}, headers=headers)
    assert no_outcome.status_code == 422
    assert client.post(url, json={"status": "bogus"}, headers=headers).status_code == 422
    concluded = client.post(
        url, json={"status": "concluded", "outcome": "The person was warned."}, headers=headers
    )
    assert concluded.status_code == 200
    assert client.post(url, json={"status": "closed"}, headers=headers).json()["status"] == "closed"
    assert client.post(url, json={"status": "closed"}, headers=headers).status_code == 409

    reporter = client.get(
        "/api/v1/reporter/case", headers=reporter_login(client, str(world["code"]))
    )
    assert reporter.json()["status"] == "closed"
    assert reporter.json()["outcome"] == "The person was warned."


def test_deadlines_follow_the_directive() -> None:
    received = dt.date(2026, 1, 31)
    assert acknowledgement_due(received) == dt.date(2026, 2, 7)
    assert feedback_due(received, None) == dt.date(2026, 5, 7)
    assert feedback_due(received, dt.date(2026, 2, 2)) == dt.date(2026, 5, 2)
    assert add_months(dt.date(2026, 11, 30), 3) == dt.date(2027, 2, 28)
    assert add_months(dt.date(2028, 11, 30), 3) == dt.date(2029, 2, 28)
    assert add_months(dt.date(2027, 11, 29), 3) == dt.date(2028, 2, 29)


def test_new_case_lists_its_computed_deadlines(
    client: TestClient, world: dict[str, object]
) -> None:
    item = client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"][0]
    received = dt.date.fromisoformat(item["received_on"])
    assert item["acknowledgement_due"] == (received + dt.timedelta(days=7)).isoformat()
    assert item["feedback_due"] == add_months(received + dt.timedelta(days=7), 3).isoformat()
    assert item["overdue"] == []


def test_an_outcome_belongs_to_concluding_or_closing(
    client: TestClient, world: dict[str, object]
) -> None:
    headers = login(client, "hanne")
    response = client.post(
        f"/api/v1/cases/{world['case_id']}/status",
        json={"status": "acknowledged", "outcome": "Too early"},
        headers=headers,
    )
    assert response.status_code == 422
    reporter = client.get(
        "/api/v1/reporter/case", headers=reporter_login(client, str(world["code"]))
    )
    assert reporter.json()["outcome"] is None
    assert reporter.json()["status"] == "received"


@pytest.mark.parametrize("case_id", ["nope", "a" * 32, "bad%00id", "0" * 31 + "\u00e6"])
def test_malformed_or_unknown_ids_are_404(
    client: TestClient, world: dict[str, object], case_id: str
) -> None:
    headers = login(client, "hanne")
    assert client.get(f"/api/v1/cases/{case_id}", headers=headers).status_code == 404
    real = world["case_id"]
    assert client.get(f"/api/v1/cases/{real}/files/{case_id}", headers=headers).status_code == 404


def test_files_of_a_case_are_404_for_those_without_its_key(
    client: TestClient, world: dict[str, object]
) -> None:
    reporter = reporter_login(client, str(world["code"]))
    uploaded = client.post(
        "/api/v1/reporter/case/files",
        headers=reporter,
        files=[("files", ("a.txt", b"evidence", "text/plain"))],
    ).json()["files"][0]["id"]
    url = f"/api/v1/cases/{world['case_id']}/files/{uploaded}"
    assert client.get(url, headers=login(client, "hanne")).status_code == 200
    for username in ("rita", "adam", "ola"):
        assert client.get(url, headers=login(client, username)).status_code == 404


def test_failed_staff_logins_are_counted_and_audited(
    client: TestClient, world: dict[str, object], db: Session
) -> None:
    from varsling.audit import AuditEvent
    from varsling.throttle import LoginThrottle

    db.rollback()
    before = db.get(LoginThrottle, "staff_login")
    start = before.failures if before else 0
    for username in ("hanne", "nobody"):
        client.post("/api/v1/sessions", json={"username": username, "password": "wrong" * 3})

    db.rollback()
    row = db.get(LoginThrottle, "staff_login")
    assert row is not None
    assert row.failures == start + 2
    failed = (
        db.execute(select(AuditEvent).where(AuditEvent.action == "user.login_failed"))
        .scalars()
        .all()
    )
    assert [e.actor for e in failed] == [f"user:{world['hanne']}", "system"]
    assert all("nobody" not in e.details for e in failed)
