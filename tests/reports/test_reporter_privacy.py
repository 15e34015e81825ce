"""What a database reader or writer learns of a reporter: custodians, exclusions, sessions."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Date, create_engine, delete, func, inspect, select, text, update
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling.accounts.models import LoginSession, ReporterSession
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases import exclusions
from varsling.cases.exclusions import ExclusionsAltered, is_excluded
from varsling.cases.models import Case, CaseExclusion, CaseKey
from varsling.config import Settings
from varsling.db import downgrade, migrate


@pytest.fixture
def chain(db: Session, settings: Settings) -> dict[str, int]:
    """National (handler, custodian) → county (handler, custodian)."""
    national = make_unit(db, "Sentralt", kind="national")
    county = make_unit(db, "Nordland", parent_id=national.id, kind="county")
    nina = make_user(db, settings, "nina", units=(national.id,), display_name="Nina")
    frode = make_user(db, settings, "frode", units=(county.id,), display_name="Frode")
    cora = make_user(db, settings, "cora", roles=("custodian",), units=(national.id,))
    kurt = make_user(
        db, settings, "kurt", roles=("custodian",), units=(county.id,), display_name="Kurt"
    )
    return {
        "national": national.id,
        "county": county.id,
        "nina": nina.id,
        "frode": frode.id,
        "cora": cora.id,
        "kurt": kurt.id,
    }


def identity_holders(db: Session) -> set[int]:
    db.rollback()
    rows = db.scalars(select(CaseKey.user_id).where(CaseKey.purpose == "identity"))
    return set(rows)


def only_case_id(db: Session) -> str:
    db.rollback()
    return db.scalars(select(Case.id)).one()


# --------------------------------------------------------------------------
# Custodians the reporter sees and may leave out


def test_units_list_the_custodians_who_would_hold_the_identity(
    client: TestClient, chain: dict[str, int]
) -> None:
    units = {u["id"]: u for u in client.get("/api/v1/units").json()}

    # The unit's own first, then each unit's above.
    assert units[chain["county"]]["custodians"] == [
        {"id": chain["kurt"], "display_name": "Kurt"},
        {"id": chain["cora"], "display_name": "cora"},
    ]
    assert units[chain["national"]]["custodians"] == [{"id": chain["cora"], "display_name": "cora"}]
    assert units[chain["county"]]["identity_custodian"] is True


def test_an_excluded_custodian_never_receives_the_identity_key(
    client: TestClient, db: Session, chain: dict[str, int]
) -> None:
    body = report(chain["county"], identity={"name": "Kari"}, excluded_recipients=[chain["kurt"]])

    assert client.post("/api/v1/reports", json=body).status_code == 201

    assert identity_holders(db) == {chain["cora"]}
    case_id = only_case_id(db)
    # The county handler still receives the report itself.
    items = client.get("/api/v1/cases", headers=login(client, "frode")).json()["items"]
    assert [item["id"] for item in items] == [case_id]


def test_leaving_out_every_custodian_is_accepted_and_nobody_holds_the_identity(
    client: TestClient, db: Session, chain: dict[str, int]
) -> None:
    body = report(
        chain["county"],
        identity={"name": "Kari"},
        excluded_recipients=[chain["kurt"], chain["cora"]],
    )

    response = client.post("/api/v1/reports", json=body)

    assert response.status_code == 201
    assert identity_holders(db) == set()
    # The reporter still sees their own identity.
    own = client.get(
        "/api/v1/reporter/case", headers=reporter_login(client, response.json()["case_code"])
    ).json()
    assert own["report"]["identity"] == {"name": "Kari", "contact": ""}


# --------------------------------------------------------------------------
# Exclusions nobody can read, and nobody can drop unnoticed


def test_no_row_names_who_was_left_out_yet_the_service_still_knows(
    client: TestClient, db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    left_out = [chain["frode"], chain["kurt"]]
    body = report(chain["county"], excluded_recipients=left_out)

    assert client.post("/api/v1/reports", json=body).status_code == 201

    case_id = only_case_id(db)
    row = db.get(CaseExclusion, case_id)
    assert row is not None
    assert set(inspect(CaseExclusion).columns.keys()) == {"case_id", "digests", "tag"}
    # Nothing but keyed hashes: without the configured key they name nobody.
    key = exclusions.exclusion_key(settings.secret("code_pepper"))
    expected = exclusions.exclusion_row(key, case_id, left_out)
    assert (row.digests, row.tag) == (expected.digests, expected.tag)
    assert len(row.digests) == 2 * exclusions.DIGEST_BYTES
    unkeyed = exclusions.exclusion_row(b"\x00" * 32, case_id, left_out)
    assert row.digests != unkeyed.digests
    submitted = [
        *db.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id)),
        *db.scalars(select(ReporterAuditEvent).where(ReporterAuditEvent.case_id == case_id)),
    ]
    for event in submitted:
        details = json.loads(event.details) if event.details else {}
        for value in details.values():
            assert not isinstance(value, list), (event.action, details)
    [created] = [e for e in submitted if e.action == "case.submitted"]
    details = json.loads(created.details)
    assert details["recipients"] == 1  # Nina: everyone below her was left out
    assert details["custodians"] == 1
    assert details["excluded_count"] == 2
    assert is_excluded(db, settings, case_id, chain["frode"])
    assert is_excluded(db, settings, case_id, chain["kurt"])
    assert not is_excluded(db, settings, case_id, chain["nina"])
    assert not is_excluded(db, settings, case_id, chain["cora"])


def test_a_database_writer_cannot_drop_an_exclusion_unnoticed(
    client: TestClient, db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    for excluded in ([chain["frode"]], []):
        body = report(chain["county"], excluded_recipients=excluded)
        assert client.post("/api/v1/reports", json=body).status_code == 201
    db.rollback()
    rows = {r.case_id: r for r in db.scalars(select(CaseExclusion))}
    [with_one] = [case_id for case_id, row in rows.items() if row.digests]
    [with_none] = [case_id for case_id in rows if case_id != with_one]

    # Emptying the list, keeping its MAC: noticed.
    db.execute(update(CaseExclusion).where(CaseExclusion.case_id == with_one).values(digests=b""))
    with pytest.raises(ExclusionsAltered):
        is_excluded(db, settings, with_one, chain["frode"])
    db.rollback()

    # Copying the row of the case where nobody was left out: noticed.
    empty = rows[with_none]
    db.execute(
        update(CaseExclusion)
        .where(CaseExclusion.case_id == with_one)
        .values(digests=empty.digests, tag=empty.tag)
    )
    with pytest.raises(ExclusionsAltered):
        is_excluded(db, settings, with_one, chain["frode"])
    db.rollback()

    # Deleting the row: noticed, not read as "nobody excluded".
    db.execute(delete(CaseExclusion).where(CaseExclusion.case_id == with_one))
    with pytest.raises(ExclusionsAltered):
        is_excluded(db, settings, with_one, chain["frode"])
    db.rollback()

    assert is_excluded(db, settings, with_one, chain["frode"])


def test_more_exclusions_can_be_added_later(
    client: TestClient, db: Session, settings: Settings, chain: dict[str, int]
) -> None:
    body = report(chain["county"], excluded_recipients=[chain["kurt"]])
    assert client.post("/api/v1/reports", json=body).status_code == 201
    case_id = only_case_id(db)

    exclusions.add_exclusions(db, settings, case_id, [chain["frode"]])
    db.commit()

    assert is_excluded(db, settings, case_id, chain["kurt"])
    assert is_excluded(db, settings, case_id, chain["frode"])
    assert not is_excluded(db, settings, case_id, chain["nina"])


def test_the_migration_hashes_existing_exclusions_with_the_configured_key(
    database_url: str, db: Session, settings: Settings
) -> None:
    db.close()
    downgrade(database_url, "0004")
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO units (id, name, kind) VALUES (1, 'Sentralt', 'national')")
        )
        connection.execute(
            text(
                "INSERT INTO users (id, username, display_name, active, created_on, "
                "password_salt, password_params, password_verifier, public_key, "
                "sealed_private_key) VALUES (7, 'ola', 'Ola', true, :day, :b, 'p', :b, :b, :b)"
            ),
            {"day": dt.date(2026, 11, 1), "b": b"x"},
        )
        for case_id in ("a" * 32, "b" * 32):
            connection.execute(
                text(
                    "INSERT INTO cases (id, unit_id, status, category, received_on, "
                    "acknowledgement_due, feedback_due) VALUES "
                    "(:id, 1, 'received', 'other', :day, :day, :day)"
                ),
                {"id": case_id, "day": dt.date(2026, 11, 1)},
            )
        connection.execute(
            text(
                "INSERT INTO case_exclusions (case_id, user_id, reason) VALUES (:id, 7, 'reporter')"
            ),
            {"id": "a" * 32},
        )
    engine.dispose()

    # Without the installation's settings the rows cannot be hashed: it stops.
    with pytest.raises(RuntimeError, match="varsling migrate"):
        migrate(database_url)
    migrate(database_url, settings=settings)

    with Session(create_engine(database_url)) as session:
        assert is_excluded(session, settings, "a" * 32, 7)
        assert not is_excluded(session, settings, "b" * 32, 7)
        assert session.scalar(select(func.count()).select_from(CaseExclusion)) == 2


# --------------------------------------------------------------------------
# Reporter sessions: no time of day, nothing that orders them among staff logins


def test_reporter_session_rows_hold_a_day_at_most_and_stay_apart_from_staff(
    client: TestClient, db: Session, chain: dict[str, int]
) -> None:
    code = client.post("/api/v1/reports", json=report(chain["county"])).json()["case_code"]
    login(client, "nina")
    reporter_login(client, code)
    login(client, "frode")

    db.rollback()
    columns = {c.key: c.type for c in inspect(ReporterSession).columns}
    assert set(columns) == {"token_lookup", "case_id", "sealed_secret", "purge_on"}
    assert isinstance(columns["purge_on"], Date)
    [row] = db.scalars(select(ReporterSession)).all()
    assert type(row.purge_on) is dt.date
    today = dt.datetime.now(dt.UTC).date()
    assert row.purge_on in {today, today + dt.timedelta(days=1)}  # the day it expires
    # Staff sessions are numbered and timed; no reporter session is among them.
    assert db.scalar(select(func.count()).select_from(LoginSession)) == 2
    assert "case_id" not in inspect(LoginSession).columns


def test_an_expired_reporter_session_is_refused_whatever_the_row_says(
    database_url: str, db: Session, chain: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import make_settings
    from varsling.app import create_app

    app = create_app(make_settings(database_url, reporter_session_minutes=1))
    with TestClient(app) as client:
        code = client.post("/api/v1/reports", json=report(chain["county"])).json()["case_code"]
        headers = reporter_login(client, code)
        assert client.get("/api/v1/reporter/case", headers=headers).status_code == 200

        # A database writer moves the day in the clear far ahead: it changes nothing.
        db.execute(update(ReporterSession).values(purge_on=dt.date(2099, 1, 1)))
        db.commit()
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        monkeypatch.setattr("varsling.reports.service.utcnow", lambda: later)

        response = client.get("/api/v1/reporter/case", headers=headers)

        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
    app.state.engine.dispose()


def test_a_sealed_session_secret_moved_to_another_session_opens_nothing(
    client: TestClient, db: Session, chain: dict[str, int]
) -> None:
    code = client.post("/api/v1/reports", json=report(chain["county"])).json()["case_code"]
    first = reporter_login(client, code)
    second = reporter_login(client, code)
    db.rollback()
    rows = db.scalars(select(ReporterSession)).all()
    assert len(rows) == 2
    swapped = {rows[0].token_lookup: rows[1].sealed_secret}
    swapped[rows[1].token_lookup] = rows[0].sealed_secret
    for lookup, sealed in swapped.items():
        db.execute(
            update(ReporterSession)
            .where(ReporterSession.token_lookup == lookup)
            .values(sealed_secret=sealed)
        )
    db.commit()

    for headers in (first, second):
        assert client.get("/api/v1/reporter/case", headers=headers).status_code == 401


def test_reporter_sessions_are_purged_by_their_day_at_every_login(
    client: TestClient, db: Session, chain: dict[str, int]
) -> None:
    code = client.post("/api/v1/reports", json=report(chain["county"])).json()["case_code"]
    old = reporter_login(client, code)
    db.execute(update(ReporterSession).values(purge_on=dt.date(2020, 1, 1)))
    db.commit()

    reporter_login(client, code)

    db.rollback()
    [day] = db.scalars(select(ReporterSession.purge_on)).all()
    assert day >= dt.datetime.now(dt.UTC).date()
    assert client.get("/api/v1/reporter/case", headers=old).status_code == 401


def test_a_reporter_api_session_can_be_ended(
    client: TestClient, db: Session, chain: dict[str, int]
) -> None:
    code = client.post("/api/v1/reports", json=report(chain["county"])).json()["case_code"]
    headers = reporter_login(client, code)

    assert client.delete("/api/v1/sessions/current", headers=headers).status_code == 204

    assert client.get("/api/v1/reporter/case", headers=headers).status_code == 401
    db.rollback()
    assert db.scalar(select(func.count()).select_from(ReporterSession)) == 0
