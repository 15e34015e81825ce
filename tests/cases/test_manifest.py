"""A case's entries and files are authenticated as a set: a database writer who
removes, reorders or alters them is noticed by the handler's and the reporter's read."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from varsling import audit
from varsling.accounts.service import staff_principal
from varsling.cases import manifest
from varsling.cases import service as cases
from varsling.config import Settings
from varsling.db import make_sessionmaker

World = dict[str, Any]


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> World:
    """A case with a report, identity, a file, messages both ways, a note and an outcome."""
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    code = client.post(
        "/api/v1/reports", json=report(unit.id, identity={"name": "Kari Nordmann"})
    ).json()["case_code"]
    handler = login(client, "hanne")
    reporter = reporter_login(client, code)
    case_id = open_first_case(client, handler)
    sent = client.post(
        "/api/v1/reporter/case/files",
        files=[("files", ("bilde.jpg", b"x" * 70_000, "image/jpeg"))],
        headers=reporter,
    )
    assert sent.status_code == 201, sent.text
    for path, body, headers in [
        ("/api/v1/reporter/case/messages", "Reporter's first reply", reporter),
        (f"/api/v1/cases/{case_id}/messages", "Handler's first question", handler),
        (f"/api/v1/cases/{case_id}/notes", "A note", handler),
        (f"/api/v1/cases/{case_id}/messages", "Handler's second question", handler),
        ("/api/v1/reporter/case/messages", "Reporter's latest reply", reporter),
    ]:
        assert client.post(path, json={"body": body}, headers=headers).status_code == 201
    for status in ("acknowledged", "investigating"):
        changed = client.post(
            f"/api/v1/cases/{case_id}/status", json={"status": status}, headers=handler
        )
        assert changed.status_code == 200
    concluded = client.post(
        f"/api/v1/cases/{case_id}/status",
        json={"status": "concluded", "outcome": "The outcome"},
        headers=handler,
    )
    assert concluded.status_code == 200
    return {"case_id": case_id, "handler": handler, "reporter": reporter}


def reads(client: TestClient, world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    handler = client.get(f"/api/v1/cases/{world['case_id']}", headers=world["handler"])
    reporter = client.get("/api/v1/reporter/case", headers=world["reporter"])
    assert handler.status_code == 200, handler.text
    assert reporter.status_code == 200, reporter.text
    return handler.json(), reporter.json()


def failures(engine: Engine, case_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The integrity failures audited for the case: staff reads first, then the reporter's
    (their events are in the reporter chain)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(audit.AuditEvent.actor, audit.AuditEvent.details)
            .where(
                audit.AuditEvent.case_id == case_id,
                audit.AuditEvent.action == manifest.FAILED_ACTION,
            )
            .order_by(audit.AuditEvent.seq)
        ).all()
        reporter_rows = connection.execute(
            select(audit.ReporterAuditEvent.details)
            .where(
                audit.ReporterAuditEvent.case_id == case_id,
                audit.ReporterAuditEvent.action == manifest.FAILED_ACTION,
            )
            .order_by(audit.ReporterAuditEvent.seq)
        ).all()
    return [(actor, json.loads(details)) for actor, details in rows] + [
        (audit.REPORTER, json.loads(details)) for (details,) in reporter_rows
    ]


def entry_id(connection: Connection, case_id: str, kind: str, *, last: bool = True) -> int:
    order = "DESC" if last else "ASC"
    found: int = (
        connection.execute(
            text(
                f"SELECT id FROM case_entries WHERE case_id = :c AND kind = :k ORDER BY id {order}"
            ),
            {"c": case_id, "k": kind},
        )
        .scalars()
        .first()
    )
    return found


def file_id(connection: Connection, case_id: str) -> str:
    found: str = connection.execute(
        text("SELECT id FROM attachments WHERE case_id = :c"), {"c": case_id}
    ).scalar_one()
    return found


def delete_entry(kind: str) -> Callable[[Connection, str], None]:
    def tamper(connection: Connection, case_id: str) -> None:
        connection.execute(
            text("DELETE FROM case_entries WHERE id = :i"),
            {"i": entry_id(connection, case_id, kind)},
        )

    return tamper


def change_entry(column: str, value: object) -> Callable[[Connection, str], None]:
    def tamper(connection: Connection, case_id: str) -> None:
        connection.execute(
            text(f"UPDATE case_entries SET {column} = :v WHERE id = :i"),
            {"v": value, "i": entry_id(connection, case_id, "handler_message")},
        )

    return tamper


def change_file(column: str, value: object) -> Callable[[Connection, str], None]:
    def tamper(connection: Connection, case_id: str) -> None:
        connection.execute(
            text(f"UPDATE attachments SET {column} = :v WHERE id = :i"),
            {"v": value, "i": file_id(connection, case_id)},
        )

    return tamper


def delete_file(connection: Connection, case_id: str) -> None:
    connection.execute(
        text("DELETE FROM attachment_chunks WHERE attachment_id = :i"),
        {"i": file_id(connection, case_id)},
    )
    connection.execute(
        text("DELETE FROM attachments WHERE id = :i"), {"i": file_id(connection, case_id)}
    )


def delete_chunk(connection: Connection, case_id: str) -> None:
    connection.execute(
        text('DELETE FROM attachment_chunks WHERE attachment_id = :i AND "index" = 1'),
        {"i": file_id(connection, case_id)},
    )


def swap_handler_messages(connection: Connection, case_id: str) -> None:
    """Two messages of the same kind, author and day trade places."""
    first = entry_id(connection, case_id, "handler_message", last=False)
    second = entry_id(connection, case_id, "handler_message")
    parked = 2_000_000_000
    move = text("UPDATE case_entries SET id = :new WHERE id = :old")
    connection.execute(move, {"new": parked, "old": first})
    connection.execute(move, {"new": first, "old": second})
    connection.execute(move, {"new": second, "old": parked})


TAMPERING = {
    "latest reporter message deleted": (delete_entry("reporter_message"), "entry_missing"),
    "latest handler message deleted": (delete_entry("handler_message"), "entry_missing"),
    "outcome deleted": (delete_entry("outcome"), "entry_missing"),
    "identity entry deleted": (delete_entry("identity"), "entry_missing"),
    "author changed": (change_entry("author_id", None), "entry_changed"),
    "date changed": (change_entry("created_on", dt.date(2020, 1, 1)), "entry_changed"),
    "entries swapped": (swap_handler_messages, "entry_changed"),
    "file deleted": (delete_file, "file_missing"),
    "file chunk deleted": (delete_chunk, "file_chunks_changed"),
    "file size changed": (change_file("size_bytes", 1), "file_changed"),
    "file uploader changed": (change_file("uploaded_by", "handler"), "file_changed"),
}


def test_an_untouched_case_reads_ok(client: TestClient, world: World, engine: Engine) -> None:
    handler, reporter = reads(client, world)

    assert handler["integrity"] == {"ok": True, "problem": None}
    assert reporter["integrity"] == {"ok": True, "problem": None}
    assert len(handler["messages"]) == 4
    assert handler["outcome"] == "The outcome"
    assert len(reporter["files"]) == 1
    assert failures(engine, world["case_id"]) == []


@pytest.mark.parametrize("name", TAMPERING)
def test_tampering_behind_the_apps_back_is_noticed_by_both_reads(
    client: TestClient, world: World, engine: Engine, name: str
) -> None:
    tamper, problem = TAMPERING[name]
    with engine.begin() as connection:
        tamper(connection, world["case_id"])

    handler, reporter = reads(client, world)

    assert handler["integrity"] == {"ok": False, "problem": problem}
    assert reporter["integrity"] == {"ok": False, "problem": problem}
    assert failures(engine, world["case_id"]) == [
        ("user:1", {"problem": problem}),
        ("reporter", {"problem": problem}),
    ]


def test_rolling_the_manifest_back_with_the_newest_entry_is_noticed(
    client: TestClient, world: World, engine: Engine
) -> None:
    with engine.connect() as connection:
        older = connection.execute(
            text("SELECT sealed_manifest FROM cases WHERE id = :c"), {"c": world["case_id"]}
        ).scalar_one()
    sent = client.post(
        "/api/v1/reporter/case/messages", json={"body": "Newest"}, headers=world["reporter"]
    )
    assert sent.status_code == 201
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE cases SET sealed_manifest = :m WHERE id = :c"),
            {"m": older, "c": world["case_id"]},
        )
        delete_entry("reporter_message")(connection, world["case_id"])

    handler, reporter = reads(client, world)

    assert handler["integrity"]["problem"] == "manifest_rolled_back"
    assert reporter["integrity"]["problem"] == "manifest_rolled_back"
    assert len(failures(engine, world["case_id"])) == 2


def test_a_later_write_keeps_the_problem_visible(
    client: TestClient, world: World, engine: Engine
) -> None:
    with engine.begin() as connection:
        delete_entry("handler_message")(connection, world["case_id"])

    sent = client.post(
        "/api/v1/reporter/case/messages", json={"body": "After"}, headers=world["reporter"]
    )

    assert sent.status_code == 201
    again = client.post(
        f"/api/v1/cases/{world['case_id']}/notes", json={"body": "Later"}, headers=world["handler"]
    )
    assert again.status_code == 201
    assert failures(engine, world["case_id"]) == [("reporter", {"problem": "entry_missing"})]
    handler, reporter = reads(client, world)
    assert handler["integrity"]["problem"] == "entry_missing"
    assert reporter["integrity"]["problem"] == "entry_missing"
    assert reporter["messages"][-1]["body"] == "After"


def test_a_removed_manifest_is_not_taken_for_a_case_from_before_manifests(
    client: TestClient, world: World, engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE cases SET sealed_manifest = NULL WHERE id = :c"), {"c": world["case_id"]}
        )

    handler, reporter = reads(client, world)

    assert handler["integrity"]["problem"] == "manifest_missing"
    assert reporter["integrity"]["problem"] == "manifest_missing"


def test_a_case_from_before_manifests_is_protected_from_its_next_write(
    client: TestClient,
    db: Session,
    settings: Settings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    # Stored as before manifests existed: none sealed, no tag in the trail.
    with monkeypatch.context() as before_manifests:
        before_manifests.setattr(manifest, "reseal", lambda *_a, **_k: None)
        before_manifests.setattr(manifest, "seal_new_case", lambda *_a, **_k: {})
        before_manifests.setattr(manifest, "audit_tag", lambda *_a: {})
        code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    world = {"case_id": case_id, "handler": handler, "reporter": reporter_login(client, code)}
    old = client.get(f"/api/v1/cases/{case_id}", headers=handler)
    assert old.json()["integrity"] == {"ok": False, "problem": manifest.NOT_YET_PROTECTED}
    assert failures(engine, case_id) == []

    written = client.post(f"/api/v1/cases/{case_id}/messages", json={"body": "Hi"}, headers=handler)
    assert written.status_code == 201
    handler_read, reporter_read = reads(client, world)
    assert handler_read["integrity"] == {"ok": True, "problem": None}
    assert reporter_read["integrity"] == {"ok": True, "problem": None}
    with engine.begin() as connection:
        delete_entry("handler_message")(connection, case_id)
    assert reads(client, world)[0]["integrity"]["problem"] == "entry_missing"


def test_concurrent_writers_both_land_in_the_manifest(
    client: TestClient,
    world: World,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes its write lock at BEGIN: writers never interleave")
    token = world["handler"]["Authorization"].removeprefix("Bearer ")
    maker = make_sessionmaker(engine)
    # Both writers have stored their entry before either seals the manifest.
    both_written = threading.Barrier(2, timeout=20)
    reseal = manifest.reseal

    def reseal_after_both(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("new_entry") is not None:
            both_written.wait()
        reseal(*args, **kwargs)

    monkeypatch.setattr(manifest, "reseal", reseal_after_both)

    def write(body: str) -> None:
        with maker.begin() as session:
            principal = staff_principal(session, token)
            cases.write_to_reporter(
                session, settings, principal, world["case_id"], body=body, today=dt.date.today()
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(write, "one"), pool.submit(write, "two")]:
            future.result(timeout=60)
    monkeypatch.undo()

    handler, reporter = reads(client, world)
    assert handler["integrity"] == {"ok": True, "problem": None}
    assert {m["body"] for m in reporter["messages"]} >= {"one", "two"}
