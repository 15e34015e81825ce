"""The database never holds case content, identity, files or the case code in the clear."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from varsling import receipts
from varsling.accounts.service import utcnow
from varsling.cases import recovery
from varsling.cases.models import Case
from varsling.config import Settings


def _needles(*values: str) -> list[bytes]:
    out = []
    for value in values:
        out += [
            value.encode("utf-8"),
            value.encode("utf-16-le"),
            value.encode("utf-8").hex().encode(),
        ]
    return out


def _sqlite_bytes(settings: Settings) -> bytes:
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    blobs = [path.read_bytes()]
    for suffix in ("-wal", "-shm", "-journal"):
        extra = Path(str(path) + suffix)
        if extra.exists():
            blobs.append(extra.read_bytes())
    return b"".join(blobs)


def _postgres_text(db: Session) -> bytes:
    """Every row of every table, as PostgreSQL renders it (bytea as hex)."""
    chunks = []
    for table in inspect(db.get_bind()).get_table_names():
        for row in db.execute(text(f'SELECT t::text FROM "{table}" t')):
            chunks.append(row[0].encode())
    return b"\n".join(chunks)


def test_marker_and_case_code_are_nowhere_in_the_database(
    client: TestClient, db: Session, settings: Settings
) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))
    submitted = client.post(
        "/api/v1/reports",
        json=report(
            unit.id,
            description=f"What happened: {marker}",
            where=f"place {marker}",
            identity={"name": f"name {marker}", "contact": f"{marker}@example.org"},
        ),
    ).json()
    code = submitted["case_code"]
    # Nothing of the receipt is kept either: it would link a found receipt to its case.
    receipt = receipts.parse(submitted["receipt"])
    reporter = reporter_login(client, code)
    client.post(
        "/api/v1/reporter/case/messages", json={"body": f"reply {marker}"}, headers=reporter
    )
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    client.post(
        f"/api/v1/cases/{case_id}/messages", json={"body": f"to reporter {marker}"}, headers=handler
    )
    client.post(f"/api/v1/cases/{case_id}/notes", json={"body": f"note {marker}"}, headers=handler)
    file_bytes = (f"file body {marker} " * 5000).encode()
    uploaded = client.post(
        "/api/v1/reporter/case/files",
        headers=reporter,
        files=[("files", (f"{marker}.txt", file_bytes, "text/plain"))],
    )
    assert uploaded.status_code == 201
    # The marker really went through: the reporter can read it back.
    assert marker in client.get("/api/v1/reporter/case", headers=reporter).text
    # An identity request's justification and the custodian's reason, approved and read.
    asked = client.post(
        f"/api/v1/cases/{case_id}/identity-requests",
        json={"justification": f"why {marker}"},
        headers=handler,
    )
    assert asked.status_code == 201, asked.text
    decided = client.post(
        f"/api/v1/identity-requests/{asked.json()['id']}/decision",
        json={"approve": True, "reason": f"because {marker}"},
        headers=login(client, "cora"),
    )
    assert decided.status_code == 200, decided.text
    assert marker in client.get(f"/api/v1/cases/{case_id}/identity", headers=handler).text
    listed = client.get(f"/api/v1/cases/{case_id}/identity-requests", headers=handler).json()
    assert listed["items"][0]["justification"] == f"why {marker}"
    assert listed["items"][0]["reason"] == f"because {marker}"
    file_id = uploaded.json()["files"][0]["id"]
    downloaded = client.get(f"/api/v1/cases/{case_id}/files/{file_id}", headers=handler)
    assert downloaded.content == file_bytes

    db.rollback()
    if db.get_bind().dialect.name == "sqlite":
        haystack = _sqlite_bytes(settings)
    else:
        haystack = _postgres_text(db)
    assert len(haystack) > 10_000
    digits = code.replace(" ", "")
    tokens = [h["Authorization"].removeprefix("Bearer ") for h in (reporter, handler)]
    for needle in _needles(marker, digits, code, "correct horse battery staple", *tokens):
        assert needle not in haystack, needle
    for value in (receipt.submission, receipt.signature):
        for needle in (value, value.hex().encode(), value.hex().upper().encode()):
            assert needle not in haystack, needle
    # The scan can see plaintext when there is some: unit names are stored in the clear.
    assert b"Sentralt" in haystack


def test_the_recovery_private_key_and_reset_passwords_are_nowhere_in_the_database(
    client: TestClient, db: Session, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "adam", roles=("admin",))
    made = recovery.init_recovery(db, settings, today=utcnow().date())
    db.commit()
    private_key = recovery.read_private_key(made.private_text)
    assert client.post("/api/v1/reports", json=report(unit.id)).status_code == 201
    new_password = "a reset passphrase nobody else knows"
    reset = client.post(
        f"/api/v1/admin/accounts/{hanne.id}/password-reset",
        json={"new_password": new_password},
        headers=login(client, "adam"),
    )
    assert reset.status_code == 200, reset.text
    case_id = db.execute(select(Case.id)).scalar_one()
    recovery.recovery_grant(
        db,
        settings,
        private_key=private_key,
        case_id=case_id,
        username="hanne",
        today=utcnow().date(),
    )
    db.commit()
    # The grant worked: hanne reads the case with the new password.
    assert open_first_case(client, login(client, "hanne", new_password)) == case_id

    db.rollback()
    if db.get_bind().dialect.name == "sqlite":
        haystack = _sqlite_bytes(settings)
    else:
        haystack = _postgres_text(db)
    lines = made.private_text.splitlines()[1:-1]
    for needle in [
        private_key,
        private_key.hex().encode(),
        base64.b64encode(private_key),
        *(line.encode() for line in lines),
        *_needles(new_password),
    ]:
        assert needle not in haystack, needle
    for line in lines:
        assert line not in caplog.text
    assert new_password not in caplog.text
