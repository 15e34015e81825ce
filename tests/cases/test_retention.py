"""Retention: a deleted case opens with no stored key; holds keep a case; discard at triage."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.factories import declare, login, make_unit, make_user, report, reporter_login
from varsling import audit, crypto, jobs
from varsling.accounts.models import ReporterSession
from varsling.accounts.service import staff_principal, utcnow
from varsling.cases import keys, retention
from varsling.cases.models import (
    Attachment,
    AttachmentChunk,
    Case,
    CaseDeclaration,
    CaseEntry,
    CaseExclusion,
    CaseKey,
    CheckIn,
    IdentityRequest,
    IdentityRequestKey,
    KeyPurpose,
    OverdueFlag,
    ReporterAccess,
    ReporterLink,
)
from varsling.cases.service import add_months, open_entry
from varsling.config import Settings
from varsling.db import make_sessionmaker
from varsling.models import Base
from varsling.reports import service as reports

CASE_TABLES = (
    CaseKey,
    ReporterAccess,
    ReporterSession,
    ReporterLink,
    IdentityRequest,
    CaseEntry,
    Attachment,
    CaseExclusion,
    CaseDeclaration,
    CheckIn,
    OverdueFlag,
)


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _close(client: TestClient, headers: dict[str, str], case_id: str) -> None:
    for status, outcome in [
        ("acknowledged", None),
        ("investigating", None),
        ("concluded", "We spoke to those involved."),
        ("closed", None),
    ]:
        response = client.post(
            f"/api/v1/cases/{case_id}/status",
            json={"status": status, **({"outcome": outcome} if outcome else {})},
            headers=headers,
        )
        assert response.status_code == 200, response.text


def _case_ids(client: TestClient, headers: dict[str, str]) -> list[str]:
    return [c["id"] for c in client.get("/api/v1/cases", headers=headers).json()["items"]]


def _back_date_closing(engine: Engine, case_id: str, closed_on: dt.date) -> None:
    with make_sessionmaker(engine).begin() as session:
        session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(closed_on=closed_on, concluded_on=closed_on)
        )


def _events(db: Session, action: str, case_id: str | None = None) -> list[audit.AuditEvent]:
    query = select(audit.AuditEvent).where(audit.AuditEvent.action == action)
    if case_id is not None:
        query = query.where(audit.AuditEvent.case_id == case_id)
    return list(db.execute(query).scalars())


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, Any]:
    unit = make_unit(db, "Sentralt")
    for name, roles in [("hanne", ("handler",)), ("hugo", ("handler",)), ("kari", ("custodian",))]:
        make_user(db, settings, name, roles=roles, units=(unit.id,))
    doomed = client.post(
        "/api/v1/reports", json=report(unit.id, identity={"name": "Kari Nordmann"})
    ).json()["case_code"]
    hanne = login(client, "hanne")
    (doomed_id,) = _case_ids(client, hanne)
    kept = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    kept_id = next(c for c in _case_ids(client, hanne) if c != doomed_id)
    for case_id in (doomed_id, kept_id):
        declare(client, hanne, case_id)
    return {
        "unit": unit.id,
        "hanne": hanne,
        "doomed": doomed,
        "doomed_id": doomed_id,
        "kept": kept,
        "kept_id": kept_id,
    }


def test_a_deleted_case_opens_with_no_stored_key_and_its_code_opens_nothing(
    client: TestClient, db: Session, engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    reporter = reporter_login(client, world["doomed"])
    sent = client.post(
        "/api/v1/reporter/case/files",
        files=[("files", ("evidence.pdf", b"%PDF secret evidence", "application/pdf"))],
        headers=reporter,
    )
    assert sent.status_code == 201, sent.text
    _close(client, hanne, case_id)
    tokens = {name: _token(login(client, name)) for name in ("hanne", "hugo", "kari")}
    principals = {name: staff_principal(db, token) for name, token in tokens.items()}
    hanne_id = principals["hanne"].user_id
    # What the other mechanisms of this issue add to a case, written as they would.
    request = IdentityRequest(
        case_id=case_id,
        requester_id=hanne_id,
        status="pending",
        requested_on=dt.date(2026, 1, 5),
        sealed_request=b"sealed",
    )
    db.add(request)
    db.flush()
    db.add(
        IdentityRequestKey(
            request_id=request.id, user_id=principals["kari"].user_id, wrapped_key=b"wrapped"
        )
    )
    db.add(ReporterLink(case_id=case_id, lookup=b"l" * 32, sealed_keys=b"sealed"))
    db.add(CheckIn(case_id=case_id, round=1, sent_on=dt.date(2026, 1, 5)))
    db.add(OverdueFlag(case_id=case_id, deadline="feedback", flagged_on=dt.date(2026, 1, 5)))
    db.commit()
    request_id = request.id

    # Everything an attacker with the database could copy before the deletion.
    case_key = keys.unwrap(
        db.execute(
            select(CaseKey).where(
                CaseKey.case_id == case_id,
                CaseKey.user_id == hanne_id,
                CaseKey.purpose == KeyPurpose.CASE.value,
            )
        ).scalar_one(),
        principals["hanne"].private_key,
    )
    old_entries = list(db.execute(select(CaseEntry).where(CaseEntry.case_id == case_id)).scalars())
    assert open_entry(old_entries[0], case_key)  # the copy does open with the case key
    copied = [(e.id, e.kind, e.ciphertext) for e in old_entries]
    chunk_ids = select(Attachment.id).where(Attachment.case_id == case_id)
    assert db.scalar(
        select(func.count())
        .select_from(AttachmentChunk)
        .where(AttachmentChunk.attachment_id.in_(chunk_ids))
    )
    for model in CASE_TABLES:
        assert db.scalar(select(func.count()).select_from(model).where(model.case_id == case_id))
    db.rollback()

    today = utcnow().date()
    _back_date_closing(engine, case_id, add_months(today, -settings.retention_months))
    assert jobs.apply_retention(make_sessionmaker(engine), settings, today) == 1

    for model in (*CASE_TABLES, Case):
        column = model.id if model is Case else model.case_id
        assert db.scalar(select(func.count()).select_from(model).where(column == case_id)) == 0
    assert (
        db.scalar(
            select(func.count())
            .select_from(IdentityRequestKey)
            .where(IdentityRequestKey.request_id == request_id)
        )
        == 0
    )
    assert db.scalar(select(func.count()).select_from(AttachmentChunk)) == 0  # kept had none
    # Every key still stored, opened every way a key holder could, opens none of it.
    remaining = list(db.execute(select(CaseKey)).scalars())
    assert remaining  # the other case's keys
    candidate_keys = []
    for wrapped in remaining:
        for private_key in (p.private_key for p in principals.values()):
            for info in (
                keys.wrap_info(wrapped.case_id, KeyPurpose(wrapped.purpose), wrapped.user_id),
                keys.wrap_info(case_id, KeyPurpose(wrapped.purpose), wrapped.user_id),
            ):
                try:
                    candidate_keys.append(
                        crypto.unwrap_key(wrapped.wrapped_key, private_key, info=info)
                    )
                except crypto.CryptoError:
                    continue
    assert candidate_keys  # the kept case's keys do open
    for key in candidate_keys:
        for entry_id, kind, ciphertext in copied:
            with pytest.raises(crypto.CryptoError):
                crypto.open_sealed(
                    key, ciphertext, context=crypto.content_context(case_id, kind, entry_id)
                )
    # The reporter's code: no access row answers to it, none opens with it.
    code_secrets = reports.derive_code_candidates(
        world["doomed"], settings, reports.code_params_in_use(db, settings)
    )
    assert code_secrets is not None
    for access in db.execute(select(ReporterAccess)).scalars():
        assert access.lookup != code_secrets[0].lookup
        with pytest.raises(crypto.CryptoError):
            crypto.open_sealed(
                code_secrets[0].key,
                access.sealed_keys,
                context=reports._reporter_context(access.case_id),
            )
    gone = client.post("/api/v1/reporter/session", json={"case_code": world["doomed"]})
    assert gone.status_code == 401
    assert client.get("/api/v1/reporter/case", headers=reporter).status_code == 401
    assert reporter_login(client, world["kept"])  # the other case lives on
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 404

    (deleted,) = _events(db, "case.deleted", case_id)
    details = json.loads(deleted.details)
    assert details == {
        "reason": "retention",
        "category": "harassment",
        "received_on": today.isoformat(),
        "closed_on": add_months(today, -settings.retention_months).isoformat(),
    }
    assert deleted.actor == audit.SYSTEM
    assert audit.verify(db).ok


def test_a_hold_keeps_a_closed_case_past_retention_until_after_its_review_day(
    client: TestClient, db: Session, engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    _close(client, hanne, case_id)
    today = utcnow().date()
    review_on = today + dt.timedelta(days=90)  # past the retention period

    placed = client.post(
        f"/api/v1/cases/{case_id}/hold",
        json={"reason": "A lawsuit is expected.", "review_on": review_on.isoformat()},
        headers=hanne,
    )

    assert placed.status_code == 201, placed.text
    assert placed.json() == {
        "hold": {
            "review_on": review_on.isoformat(),
            "reason": "A lawsuit is expected.",
            "placed_on": today.isoformat(),
        },
        "deletion_due": (review_on + dt.timedelta(days=1)).isoformat(),
    }
    read = client.get(f"/api/v1/cases/{case_id}", headers=hanne).json()
    assert read["hold"]["reason"] == "A lawsuit is expected."
    assert read["integrity"]["ok"] is True
    (event,) = _events(db, "case.hold_placed", case_id)
    assert set(json.loads(event.details)) == {"review_on", "manifest"}
    assert "lawsuit" not in event.details

    _back_date_closing(engine, case_id, add_months(today, -6))
    maker = make_sessionmaker(engine)
    assert jobs.apply_retention(maker, settings, today) == 0
    assert jobs.apply_retention(maker, settings, review_on) == 0
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 200
    assert jobs.apply_retention(maker, settings, review_on + dt.timedelta(days=1)) == 1
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 404
    assert client.get(f"/api/v1/cases/{world['kept_id']}", headers=hanne).status_code == 200


def test_closed_cases_go_when_retention_has_passed_not_before(
    client: TestClient, engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    _close(client, hanne, case_id)
    closed_on = dt.date(2026, 1, 31)
    _back_date_closing(engine, case_id, closed_on)
    due = add_months(closed_on, settings.retention_months)  # 2026-03-31
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).json()["deletion_due"] == (
        due.isoformat()
    )
    maker = make_sessionmaker(engine)

    assert jobs.apply_retention(maker, settings, due - dt.timedelta(days=1)) == 0
    assert jobs.apply_retention(maker, settings, due) == 1
    assert jobs.apply_retention(maker, settings, due) == 0
    # An open case is never deleted, however old.
    assert client.get(f"/api/v1/cases/{world['kept_id']}", headers=hanne).status_code == 200


def test_lifting_a_hold_returns_the_case_to_retention(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    review_on = (utcnow().date() + dt.timedelta(days=400)).isoformat()
    held = client.post(
        f"/api/v1/cases/{case_id}/hold",
        json={"reason": "Police asked us to keep it.", "review_on": review_on},
        headers=hanne,
    )
    assert held.status_code == 201
    assert held.json()["deletion_due"] is None  # not closed yet

    lifted = client.delete(f"/api/v1/cases/{case_id}/hold", headers=hanne)

    assert lifted.status_code == 200
    assert lifted.json() == {"hold": None, "deletion_due": None}
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).json()["hold"] is None
    again = client.delete(f"/api/v1/cases/{case_id}/hold", headers=hanne)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "no_hold"
    (event,) = _events(db, "case.hold_lifted", case_id)
    assert json.loads(event.details) == {"review_on": review_on}


@pytest.mark.parametrize("days", [-1, 0, 3653 + 1])
def test_a_hold_needs_a_review_day_ahead_and_within_ten_years(
    client: TestClient, db: Session, world: dict[str, Any], days: int
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    review_on = utcnow().date() + dt.timedelta(days=days)

    response = client.post(
        f"/api/v1/cases/{case_id}/hold",
        json={"reason": "Keep it.", "review_on": review_on.isoformat()},
        headers=hanne,
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_review_date"
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).json()["hold"] is None
    assert len(_events(db, "case.hold_refused", case_id)) == 1
    assert _events(db, "case.hold_placed") == []


def test_hold_and_discard_are_for_handlers_who_opened_the_case(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    case_id = world["doomed_id"]
    other = make_unit(db, "Rogaland", parent_id=world["unit"], kind="county")
    make_user(db, settings, "rita", units=(other.id,))
    hugo, rita = login(client, "hugo"), login(client, "rita")  # hugo has not declared
    review_on = (utcnow().date() + dt.timedelta(days=10)).isoformat()
    for method, suffix, body in [
        ("POST", "/hold", {"reason": "Keep it.", "review_on": review_on}),
        ("DELETE", "/hold", None),
        ("POST", "/discard", {"reason": "duplicate"}),
    ]:
        url = f"/api/v1/cases/{case_id}{suffix}"
        undeclared = client.request(method, url, json=body, headers=hugo)
        assert undeclared.status_code == 409, suffix
        assert undeclared.json()["error"]["code"] == "declaration_required"
        assert client.request(method, url, json=body, headers=rita).status_code == 404
        assert client.request(method, url, json=body).status_code == 401
    assert client.get(f"/api/v1/cases/{case_id}", headers=world["hanne"]).status_code == 200


def test_discard_deletes_a_report_at_once_with_its_reason_code(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]

    response = client.post(
        f"/api/v1/cases/{case_id}/discard", json={"reason": "test_or_spam"}, headers=hanne
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "deleted", "reason": "test_or_spam"}
    assert _case_ids(client, hanne) == [world["kept_id"]]
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 404
    assert (
        client.post("/api/v1/reporter/session", json={"case_code": world["doomed"]}).status_code
        == 401
    )
    for model in (CaseKey, ReporterAccess, CaseEntry):
        assert (
            db.scalar(select(func.count()).select_from(model).where(model.case_id == case_id)) == 0
        )
    (event,) = _events(db, "case.deleted", case_id)
    assert event.actor.startswith("user:")
    assert json.loads(event.details) == {
        "reason": "discarded",
        "discard_reason": "test_or_spam",
        "status": "received",
        "category": "harassment",
        "received_on": utcnow().date().isoformat(),
        "closed_on": None,
    }
    assert audit.verify(db).ok


def test_discard_is_refused_once_the_case_is_being_investigated(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    for status in ("acknowledged", "investigating"):
        moved = client.post(
            f"/api/v1/cases/{case_id}/status", json={"status": status}, headers=hanne
        )
        assert moved.status_code == 200

    response = client.post(
        f"/api/v1/cases/{case_id}/discard",
        json={"reason": "not_a_whistleblowing_matter"},
        headers=hanne,
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_discardable"
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 200
    assert _events(db, "case.deleted") == []
    (refused,) = _events(db, "case.discard_refused", case_id)
    assert json.loads(refused.details)["status"] == "investigating"
    bad = client.post(
        f"/api/v1/cases/{world['kept_id']}/discard", json={"reason": "boring"}, headers=hanne
    )
    assert bad.status_code == 422


def test_discard_is_allowed_after_acknowledgement(
    client: TestClient, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    client.post(f"/api/v1/cases/{case_id}/status", json={"status": "acknowledged"}, headers=hanne)

    response = client.post(
        f"/api/v1/cases/{case_id}/discard", json={"reason": "duplicate"}, headers=hanne
    )

    assert response.status_code == 200
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 404


def test_a_case_with_a_live_retaliation_case_stays_and_cannot_be_discarded(
    client: TestClient, db: Session, engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    case_id, hanne = world["doomed_id"], world["hanne"]
    reporter = reporter_login(client, world["doomed"])
    opened = client.post(
        "/api/v1/reporter/case/retaliation",
        json={"body": "I was moved off the board after reporting."},
        headers=reporter,
    )
    assert opened.status_code == 201, opened.text
    (linked_id,) = client.get(f"/api/v1/cases/{case_id}", headers=hanne).json()["retaliation_cases"]
    refused = client.post(
        f"/api/v1/cases/{case_id}/discard", json={"reason": "duplicate"}, headers=hanne
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_discardable"

    _close(client, hanne, case_id)
    today = utcnow().date()
    _back_date_closing(engine, case_id, add_months(today, -6))
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).json()["deletion_due"] is None
    maker = make_sessionmaker(engine)

    assert jobs.apply_retention(maker, settings, today) == 0
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 200
    # Once the retaliation case is gone (closed and past retention too), the first goes.
    declare(client, hanne, linked_id)
    _close(client, hanne, linked_id)
    _back_date_closing(engine, linked_id, add_months(today, -6))
    assert jobs.apply_retention(maker, settings, today) == 1
    assert jobs.apply_retention(maker, settings, today) == 1
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 404
    assert [e.case_id for e in _events(db, "case.deleted")] == [linked_id, case_id]


KEY_TABLES = {
    "case_keys",
    "recovery_wraps",
    "reporter_access",
    "reporter_sessions",
    "reporter_links",
    "identity_request_keys",
}


def _tables_of_a_case() -> set[str]:
    """Every table that refers to cases, directly or through another such table."""
    found = {"cases"}
    grew = True
    while grew:
        before = len(found)
        for table in Base.metadata.sorted_tables:
            if any(fk.column.table.name in found for fk in table.foreign_keys):
                found.add(table.name)
        grew = len(found) > before
    return found


def test_deletion_destroys_every_key_before_any_content_and_leaves_no_row(
    client: TestClient, db: Session, engine: Engine, world: dict[str, Any]
) -> None:
    case_id = world["doomed_id"]
    reporter_login(client, world["doomed"])
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("DELETE", "UPDATE")):
            statements.append(statement)

    with make_sessionmaker(engine).begin() as session:
        event.listen(engine, "before_cursor_execute", note)
        try:
            assert retention.delete_case(
                session, case_id, reason=retention.DeletionReason.RETENTION, actor=audit.SYSTEM
            )
        finally:
            event.remove(engine, "before_cursor_execute", note)

    touched = [
        re.split(r"\s+", s.strip())[2 if s.lstrip().upper().startswith("DELETE") else 1]
        for s in statements
    ]
    first_content = next(i for i, t in enumerate(touched) if t not in KEY_TABLES)
    assert set(touched[:first_content]) == KEY_TABLES
    assert touched[-1] == "cases"
    # No table that refers to a case (now or added later) keeps a row of it.
    assert set(touched) >= _tables_of_a_case()
    for name in _tables_of_a_case():
        table = Base.metadata.tables[name]
        if "case_id" in table.c:
            assert (
                db.scalar(select(func.count()).select_from(table).where(table.c.case_id == case_id))
                == 0
            ), name
