"""The reporter's side of the API: units, submission, case codes, the inbox."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases.models import Case, CaseEntry, CaseKey, ReporterAccess
from varsling.config import Settings
from varsling.db import make_engine, migrate

CODE = re.compile(r"\d{4} \d{4} \d{4} \d{4} \d{4}")


def test_units_list_recipients_routing_up_when_a_unit_has_no_handler(
    client: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    ada = make_user(db, settings, "ada", units=(national.id,), display_name="Ada Lovelace")

    response = client.get("/api/v1/units")

    assert response.status_code == 200
    by_id = {u["id"]: u for u in response.json()}
    assert by_id[national.id] == {
        "id": national.id,
        "name": "Sentralt",
        "parent_id": None,
        "kind": "national",
        "recipients": [{"id": ada.id, "display_name": "Ada Lovelace"}],
        "custodians": [],
        "identity_custodian": False,
    }
    assert by_id[county.id]["parent_id"] == national.id
    assert by_id[county.id]["recipients"] == [{"id": ada.id, "display_name": "Ada Lovelace"}]


def test_submission_gives_a_grouped_code_that_opens_the_case_with_identity(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    body = report(
        unit.id,
        identity={"name": "Kari Nordmann", "contact": "kari@example.org"},
        when="March 2026",
        wants_meeting=True,
    )

    response = client.post("/api/v1/reports", json=body)

    assert response.status_code == 201
    code = response.json()["case_code"]
    assert CODE.fullmatch(code)
    headers = reporter_login(client, code.replace(" ", "-"))
    case = client.get("/api/v1/reporter/case", headers=headers).json()
    assert case["status"] == "received"
    assert case["report"]["description"] == body["description"]
    assert case["report"]["category"] == "harassment"
    assert case["report"]["when"] == "March 2026"
    assert case["report"]["wants_meeting"] is True
    assert case["report"]["identity"] == {"name": "Kari Nordmann", "contact": "kari@example.org"}
    assert case["messages"] == []


def test_wrong_or_malformed_case_code_is_401_with_the_same_shape(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    client.post("/api/v1/reports", json=report(unit.id))

    wrong = client.post("/api/v1/reporter/session", json={"case_code": "1" * 20})
    malformed = client.post("/api/v1/reporter/session", json={"case_code": "abc"})

    assert wrong.status_code == malformed.status_code == 401
    assert wrong.json() == malformed.json()
    assert wrong.json()["error"]["code"] == "unauthenticated"


def test_messages_flow_both_ways(client: TestClient, db: Session, settings: Settings) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    reporter = reporter_login(client, code)
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)

    sent = client.post(
        f"/api/v1/cases/{case_id}/messages",
        json={"body": "Thank you, we read it."},
        headers=handler,
    )
    reply = client.post(
        "/api/v1/reporter/case/messages", json={"body": "I can meet on Monday."}, headers=reporter
    )

    assert sent.status_code == reply.status_code == 201
    seen_by_reporter = client.get("/api/v1/reporter/case", headers=reporter).json()["messages"]
    assert [(m["author"], m["body"]) for m in seen_by_reporter] == [
        ("handler", "Thank you, we read it."),
        ("reporter", "I can meet on Monday."),
    ]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", seen_by_reporter[0]["sent_on"])
    seen_by_handler = client.get(f"/api/v1/cases/{case_id}", headers=handler).json()["messages"]
    assert [m["body"] for m in seen_by_handler] == [
        "Thank you, we read it.",
        "I can meet on Monday.",
    ]


def test_reporter_endpoints_need_a_reporter_session(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    staff = login(client, "hanne")

    assert client.get("/api/v1/reporter/case").status_code == 401
    assert (
        client.get("/api/v1/reporter/case", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert client.get("/api/v1/reporter/case", headers=staff).status_code == 401


def test_excluded_handler_gets_no_key_and_the_report_goes_up_when_nobody_is_left(
    client: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    local = make_user(db, settings, "lokal", units=(county.id,))
    central = make_user(db, settings, "sentral", units=(national.id,))

    response = client.post(
        "/api/v1/reports", json=report(county.id, excluded_recipients=[local.id])
    )

    assert response.status_code == 201
    holders = set(db.execute(select(CaseKey.user_id).where(CaseKey.purpose == "case")).scalars())
    assert holders == {central.id}


def test_custodians_on_the_chain_get_the_identity_key_and_handlers_do_not(
    client: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    handler = make_user(db, settings, "hanne", units=(county.id,))
    custodian = make_user(db, settings, "cora", roles=("custodian",), units=(national.id,))

    client.post("/api/v1/reports", json=report(county.id, identity={"name": "Kari"}))

    keys = {(k.user_id, k.purpose) for k in db.execute(select(CaseKey)).scalars()}
    assert keys == {(handler.id, "case"), (custodian.id, "identity")}
    # The national unit has no handler on its chain, so only the county is offered.
    listed = client.get("/api/v1/units").json()
    assert [(u["id"], u["identity_custodian"]) for u in listed] == [(county.id, True)]


BAD_BODIES = [
    ("{not json", 400, "malformed_json"),
    ("", 422, "invalid_input"),
    (
        '{"unit_id": 1, "category": "harassment", "description": "x", "extra": 1}',
        422,
        "invalid_input",
    ),
    ('{"unit_id": "one", "category": "harassment", "description": "x"}', 422, "invalid_input"),
    ('{"unit_id": 1, "category": "gossip", "description": "x"}', 422, "invalid_input"),
    ('{"unit_id": 1, "category": "harassment", "description": "   "}', 422, "invalid_input"),
    ('{"unit_id": 1, "category": "harassment"}', 422, "invalid_input"),
    ("[]", 422, "invalid_input"),
]


def _stored(db: Session) -> tuple[int, int, int]:
    db.rollback()
    return (
        db.scalar(select(func.count()).select_from(Case)) or 0,
        db.scalar(select(func.count()).select_from(CaseEntry)) or 0,
        (db.scalar(select(func.count()).select_from(AuditEvent)) or 0)
        + (db.scalar(select(func.count()).select_from(ReporterAuditEvent)) or 0),
    )


def test_bad_input_is_a_json_4xx_and_stores_nothing(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    lone = make_user(db, settings, "hanne", units=(unit.id,))
    before = _stored(db)
    cases = [
        *BAD_BODIES,
        (report(unit.id + 99), 422, "invalid_input"),
        (report(unit.id, excluded_recipients=[lone.id]), 422, "invalid_input"),
        (report(unit.id, excluded_recipients=[9999]), 422, "invalid_input"),
        (report(unit.id, description="x" * 20_001), 422, "invalid_input"),
        (report(unit.id, identity={"name": ""}), 422, "invalid_input"),
    ]
    for body, status, code in cases:
        if isinstance(body, str):
            response = client.post(
                "/api/v1/reports", content=body, headers={"Content-Type": "application/json"}
            )
        else:
            response = client.post("/api/v1/reports", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
    assert _stored(db) == before


def test_oversize_body_is_413_and_stores_nothing(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    before = _stored(db)
    huge = report(unit.id, description="x" * 10, involved="y" * 1_100_000)

    response = client.post("/api/v1/reports", json=huge)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert _stored(db) == before


def test_repeated_wrong_codes_slow_everyone_down(database_url: str, db: Session) -> None:
    from tests.conftest import make_settings
    from varsling.app import create_app

    settings = make_settings(
        database_url, code_failures_per_minute=2, code_failure_delay_seconds=0.3
    )
    app = create_app(settings)
    import time

    with TestClient(app) as client:
        timings = []
        for _ in range(4):
            start = time.perf_counter()
            response = client.post("/api/v1/reporter/session", json={"case_code": "2" * 20})
            timings.append(time.perf_counter() - start)
            assert response.status_code == 401
    app.state.engine.dispose()
    assert max(timings[:2]) < 0.3
    assert min(timings[2:]) >= 0.3


def test_wrong_types_huge_ids_and_nul_are_refused(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    before = _stored(db)
    for overrides in (
        {"unit_id": str(unit.id)},
        {"unit_id": float(unit.id)},
        {"unit_id": 2**63},
        {"excluded_recipients": [2**63]},
        {"wants_meeting": "yes"},
        {"description": "before\x00after"},
        {"identity": {"name": "Kari\x00"}},
    ):
        response = client.post("/api/v1/reports", json={**report(unit.id), **overrides})
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["error"]["code"] == "invalid_input"
    assert _stored(db) == before


def test_oversize_body_without_declared_length_is_413(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    before = _stored(db)
    body = json.dumps(report(unit.id, involved="y" * 1_100_000)).encode()

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = client.post(
        "/api/v1/reports", content=chunked(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert _stored(db) == before


def test_codes_made_under_older_argon2_parameters_still_open(
    database_url: str, db: Session
) -> None:
    from tests.conftest import make_settings
    from varsling.app import create_app

    old = make_settings(database_url, argon2_memory_kib=64, argon2_time_cost=1)
    new = make_settings(database_url, argon2_memory_kib=128, argon2_time_cost=2)
    unit = make_unit(db)
    make_user(db, old, "hanne", units=(unit.id,))
    old_app = create_app(old)
    with TestClient(old_app) as client:
        old_code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    old_app.state.engine.dispose()

    new_app = create_app(new)
    with TestClient(new_app) as client:
        new_code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
        for code in (old_code, new_code):
            opened = client.get("/api/v1/reporter/case", headers=reporter_login(client, code))
            assert opened.status_code == 200
        # The staff password was set under the old parameters too.
        assert len(client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"]) == 2
    new_app.state.engine.dispose()
    db.rollback()
    params = set(db.execute(select(ReporterAccess.code_params)).scalars())
    assert params == {
        "argon2id$v=19$m=64,t=1,p=1",
        "argon2id$v=19$m=128,t=2,p=1",
    }


def test_submission_event_counts_exclusions_without_naming_anyone(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    accused = make_user(db, settings, "ola", units=(unit.id,))

    client.post("/api/v1/reports", json=report(unit.id, excluded_recipients=[accused.id]))

    db.rollback()
    event = db.execute(
        select(ReporterAuditEvent).where(ReporterAuditEvent.action == "case.submitted")
    ).scalar_one()
    details = json.loads(event.details)
    assert details["excluded_count"] == 1
    assert details["recipients"] == 1
    assert "excluded" not in details


def test_a_unit_nobody_can_receive_for_is_not_offered(
    client: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    make_user(db, settings, "cora", roles=("custodian",), units=(national.id,))
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    make_user(db, settings, "hanne", units=(county.id,))

    listed = client.get("/api/v1/units").json()
    response = client.post("/api/v1/reports", json=report(national.id))

    assert [u["id"] for u in listed] == [county.id]
    assert listed[0]["identity_custodian"] is True
    assert response.status_code == 422
    assert "No case handler is set up" in response.json()["error"]["message"]


def test_the_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "varsling.db"
    migrate(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")
    engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
