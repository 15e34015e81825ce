"""Signed checkpoints, export and offline verification, against a database writer."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS
from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from tests.tamper import insert_staff_event, rewrite_from_scratch, staff_rows, unguarded
from varsling import audit, crypto
from varsling.audit import AuditCheckpoint, AuditEvent, Checkpoint
from varsling.audit_chain import sign_checkpoint, verify_export
from varsling.config import Settings

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Reporter events are signed from the day after they happened on.
TOMORROW = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def _busy_case(client: TestClient, db: Session, settings: Settings) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "audun", roles=("auditor",))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    reporter = reporter_login(client, code)
    client.post("/api/v1/reporter/case/messages", json={"body": "hello"}, headers=reporter)
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    client.get(f"/api/v1/cases/{case_id}", headers=handler)
    client.post(f"/api/v1/cases/{case_id}/notes", json={"body": "n"}, headers=handler)
    db.rollback()


def _checkpoint(db: Session, settings: Settings, now: dt.datetime = TOMORROW) -> Checkpoint:
    made = audit.create_checkpoint(db, settings.signing_seed, actor="system", now=now)
    db.commit()
    return made


def _other_key() -> bytes:
    return crypto.signing_seed(b"another installation's signing key " + b"z" * 20)


def _cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "varsling.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def _configured_env(settings: Settings) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")},
        "PYTHONPATH": SRC,
        "VARSLING_DATABASE_URL": settings.database_url,
        "VARSLING_ENVIRONMENT": "development",
        "VARSLING_SECRETS_FILE": "/nonexistent",
        **{f"VARSLING_{k.upper()}": v for k, v in TEST_SECRETS.items()},
    }


# --------------------------------------------------------------------------
# Issuing checkpoints


def test_checkpoints_are_for_auditors_and_are_signed_and_kept(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    assert client.post("/api/v1/audit/checkpoints").status_code == 401
    assert client.post("/api/v1/audit/checkpoints", headers=login(client, "hanne")).status_code == (
        403
    )
    head = db.scalar(select(audit.AuditHead.seq).where(audit.AuditHead.id == 1))
    db.rollback()

    response = client.post("/api/v1/audit/checkpoints", headers=login(client, "audun"))

    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"seq", "hash", "reporter_seq", "reporter_hash", "signed_at", "signature"}
    made = Checkpoint.from_json(body)
    assert made.signature_valid(settings.signing_public_key)
    assert not made.signature_valid(crypto.signing_public_key(_other_key()))
    assert body["key_fingerprint"] == crypto.key_fingerprint(settings.signing_public_key)
    # The auditor's own login came after the head we read; the checkpoint covers it.
    assert made.seq > (head or 0)
    # Today's reporter events are not placed against the signing time.
    assert (made.reporter_seq, made.reporter_hash) == (0, audit.GENESIS_HASH)
    stored = db.scalars(select(AuditCheckpoint)).one()
    assert stored.as_checkpoint() == made
    signed = db.scalars(select(AuditEvent).where(AuditEvent.action == "audit.checkpoint_signed"))
    assert json.loads(signed.one().details) == {"seq": made.seq}


def test_a_checkpoint_signs_the_reporter_chain_up_to_the_previous_day(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    reporter_head = db.get(audit.AuditHead, 2)
    assert reporter_head is not None
    assert reporter_head.seq == 3

    made = _checkpoint(db, settings)

    assert (made.reporter_seq, made.reporter_hash) == (reporter_head.seq, reporter_head.hash)
    assert audit.verify_checkpoint(db, made, settings.signing_public_key).ok


def test_no_checkpoint_is_signed_for_a_broken_chain(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    with unguarded(db):
        db.execute(text("UPDATE audit_events SET details = '{\"x\": 1}' WHERE seq = 2"))

    response = client.post("/api/v1/audit/checkpoints", headers=login(client, "audun"))

    assert response.status_code == 409
    assert "event 2" in response.json()["error"]["message"]
    db.rollback()
    assert db.scalars(select(AuditCheckpoint)).all() == []


# --------------------------------------------------------------------------
# A database writer against a checkpoint


def _cut_staff_tail_and_delete_head(db: Session) -> tuple[str, int]:
    rows = staff_rows(db)
    with unguarded(db):
        db.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": rows[-2]["seq"]})
        db.execute(text("DELETE FROM audit_head WHERE id = 1"))
    return "staff", 1


def _cut_staff_tail_and_move_head(db: Session) -> tuple[str, int]:
    # The last event is the checkpoint's own signing, after the signed head.
    rows = staff_rows(db)
    with unguarded(db):
        db.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": rows[-2]["seq"]})
        db.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
            {"s": rows[-3]["seq"], "h": rows[-3]["hash"]},
        )
    return "staff", rows[-2]["seq"]


def _cut_reporter_tail_and_move_head(db: Session) -> tuple[str, int]:
    rows = [
        dict(r)
        for r in db.execute(text("SELECT * FROM audit_reporter_events ORDER BY seq")).mappings()
    ]
    with unguarded(db):
        db.execute(text("DELETE FROM audit_reporter_events WHERE seq = :s"), {"s": rows[-1]["seq"]})
        db.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 2"),
            {"s": rows[-2]["seq"], "h": rows[-2]["hash"]},
        )
    return "reporter", rows[-1]["seq"]


def _inserts_and_head_moved_back(db: Session) -> tuple[str, int]:
    """No DELETE, no trigger touched: the head is moved back over the real tail and a
    forged event is INSERTed past it."""
    rows = staff_rows(db)
    db.rollback()
    insert_staff_event(db, rows[-1]["hash"], rows[-1]["seq"] + 1, "user.created")
    db.execute(
        text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
        {"s": rows[-3]["seq"], "h": rows[-3]["hash"]},
    )
    db.commit()
    return "staff", rows[-2]["seq"]


def _changed_event(db: Session) -> tuple[str, int]:
    with unguarded(db):
        db.execute(text("UPDATE audit_events SET action = 'case.read' WHERE seq = 3"))
    return "staff", 3


def _changed_reporter_event(db: Session) -> tuple[str, int]:
    with unguarded(db):
        db.execute(text("UPDATE audit_reporter_events SET day = '2020-01-01' WHERE seq = 2"))
    return "reporter", 2


@pytest.mark.parametrize(
    "attack",
    [
        _cut_staff_tail_and_delete_head,
        _cut_staff_tail_and_move_head,
        _cut_reporter_tail_and_move_head,
        _inserts_and_head_moved_back,
        _changed_event,
        _changed_reporter_event,
    ],
)
def test_tampering_fails_against_a_checkpoint(
    client: TestClient, db: Session, settings: Settings, attack: Any
) -> None:
    _busy_case(client, db, settings)
    made = _checkpoint(db, settings)
    assert audit.verify_checkpoint(db, made, settings.signing_public_key).ok

    chain, first_bad = attack(db)
    result = audit.verify_checkpoint(db, made, settings.signing_public_key)

    assert (result.ok, result.chain, result.first_bad) == (False, chain, first_bad), result.reason


def test_a_chain_rewritten_from_scratch_passes_plain_verify_but_not_a_checkpoint(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """The owner switches the triggers off (replication role on PostgreSQL, dropped
    triggers on SQLite) and writes a consistent history of their own."""
    _busy_case(client, db, settings)
    made = _checkpoint(db, settings)

    rewrite_from_scratch(db)

    assert audit.verify(db).ok
    result = audit.verify_checkpoint(db, made, settings.signing_public_key)
    assert (result.ok, result.chain) == (False, "staff")
    assert "checkpoint" in result.reason
    # The server's own verify also holds the chains to every stored checkpoint.
    auditor = login(client, "audun")
    body = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert body["ok"] is False
    assert body["chain"] == "staff"


def test_a_forged_or_foreign_checkpoint_fails(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    made = _checkpoint(db, settings)
    public = settings.signing_public_key
    forged = Checkpoint.from_json({**made.to_json(), "seq": made.seq - 1})
    head = db.get(audit.AuditHead, 1)
    assert head is not None
    foreign = sign_checkpoint(
        _other_key(),
        seq=head.seq,
        hash=head.hash,
        reporter_seq=made.reporter_seq,
        reporter_hash=made.reporter_hash,
        signed_at=TOMORROW,
    )
    bad_signature = Checkpoint.from_json({**made.to_json(), "signature": "A" * 86})

    for checkpoint in (forged, foreign, bad_signature):
        result = audit.verify_checkpoint(db, checkpoint, public)
        assert not result.ok
        assert "does not verify" in result.reason
    assert audit.verify_checkpoint(db, foreign, crypto.signing_public_key(_other_key())).ok


def test_a_stored_checkpoint_with_a_bad_signature_fails_the_servers_verify(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    made = _checkpoint(db, settings)
    db.add(
        AuditCheckpoint(
            seq=made.seq,
            hash=made.hash,
            reporter_seq=made.reporter_seq,
            reporter_hash=made.reporter_hash,
            signed_at=made.signed_at,
            signature="B" * 86,
            key_fingerprint=made.key_fingerprint,
        )
    )
    db.commit()

    body = client.get("/api/v1/audit/verify", headers=login(client, "audun")).json()

    assert body["ok"] is False
    assert "does not verify" in body["reason"]


# --------------------------------------------------------------------------
# The command line: checkpoint, verify --checkpoint, export, verify --export


def test_cli_checkpoint_then_verify_against_it(
    client: TestClient, db: Session, settings: Settings, tmp_path: Path
) -> None:
    _busy_case(client, db, settings)
    env = _configured_env(settings)

    issued = _cli("audit", "checkpoint", env=env)

    assert issued.returncode == 0, issued.stderr
    body = json.loads(issued.stdout)
    assert body["seq"] >= 1
    assert body["signature"]
    saved = tmp_path / "checkpoint.json"
    saved.write_text(issued.stdout)
    assert db.scalars(select(AuditCheckpoint)).one().signature == body["signature"]
    ok = _cli("audit", "verify", "--checkpoint", str(saved), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "holds checkpoint" in ok.stdout
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**body, "seq": body["seq"] - 1}))
    refused = _cli("audit", "verify", "--checkpoint", str(forged), env=env)
    assert refused.returncode == 1
    assert "does not verify" in refused.stderr

    db.rollback()
    _cut_staff_tail_and_move_head(db)
    broken = _cli("audit", "verify", "--checkpoint", str(saved), env=env)

    assert broken.returncode == 1
    assert f"staff chain breaks at sequence number {body['seq']}" in broken.stderr


def test_cli_export_verifies_offline_with_no_settings_and_no_database(
    client: TestClient, db: Session, settings: Settings, tmp_path: Path
) -> None:
    _busy_case(client, db, settings)
    exported = tmp_path / "audit.jsonl"
    made = _cli("audit", "export", "--output", str(exported), env=_configured_env(settings))
    assert made.returncode == 0, made.stderr
    assert exported.stat().st_mode & 0o777 == 0o600
    lines = exported.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "checkpoint"
    assert {json.loads(line).get("chain") for line in lines[:-1]} == {"staff"}
    assert db.scalars(select(AuditCheckpoint)).one().signature == json.loads(lines[-1])["signature"]
    key = _cli("keys", "public", env=_configured_env(settings))
    key_file = tmp_path / "installation.pub"
    key_file.write_text(key.stdout)
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    bare = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    # No VARSLING_* at all: the default database path (var/varsling.db) does not exist here.
    bare |= {"PYTHONPATH": SRC}

    ok = _cli(
        "audit",
        "verify",
        "--export",
        str(exported),
        "--public-key",
        str(key_file),
        env=bare,
        cwd=laptop,
    )
    exported.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    reordered = _cli(
        "audit",
        "verify",
        "--export",
        str(exported),
        "--public-key",
        str(key_file),
        env=bare,
        cwd=laptop,
    )

    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    without_key = _cli("audit", "verify", "--export", str(exported), env=bare, cwd=laptop)
    assert without_key.returncode == 2
    assert reordered.returncode == 1
    assert "staff chain breaks at sequence number 1" in reordered.stderr
    assert list(laptop.iterdir()) == []


# --------------------------------------------------------------------------
# Offline: every kind of edit to an export is named


def _export_lines(db: Session, settings: Settings) -> list[str]:
    made = audit.export(db, settings.signing_seed, actor="system", now=TOMORROW)
    lines = list(made.lines)
    db.commit()
    return lines


def _index(lines: list[str], chain: str, seq: int) -> int:
    for i, line in enumerate(lines):
        value = json.loads(line)
        if value.get("chain") == chain and value.get("seq") == seq:
            return i
    raise AssertionError(f"no {chain} event {seq}")


def _edit(lines: list[str], i: int, **changes: Any) -> str:
    return json.dumps({**json.loads(lines[i]), **changes})


def test_an_export_verifies_and_every_edit_names_the_first_bad_event(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    lines = _export_lines(db, settings)
    public = settings.signing_public_key
    result = verify_export(lines, public)
    assert result.ok, result.reason
    staff_last = result.events["staff"]
    reporter_last = result.events["reporter"]
    assert reporter_last == 3
    s3, s4 = _index(lines, "staff", 3), _index(lines, "staff", 4)
    r2 = _index(lines, "reporter", 2)
    last_staff = _index(lines, "staff", staff_last)
    last_reporter = _index(lines, "reporter", reporter_last)
    forged = _edit(lines, s3, action="unit.created")

    cases: dict[str, tuple[list[str], str, int]] = {
        "removed": ([*lines[:s3], *lines[s3 + 1 :]], "staff", 3),
        "reordered": ([*lines[:s3], lines[s4], lines[s3], *lines[s4 + 1 :]], "staff", 3),
        "changed": (
            [*lines[:s4], _edit(lines, s4, action="case.read"), *lines[s4 + 1 :]],
            "staff",
            4,
        ),
        "inserted": ([*lines[:s3], forged, *lines[s3:]], "staff", 3),
        "cut staff tail": ([*lines[:last_staff], *lines[last_staff + 1 :]], "staff", staff_last),
        "removed reporter": ([*lines[:r2], *lines[r2 + 1 :]], "reporter", 2),
        "changed reporter": (
            [*lines[:r2], _edit(lines, r2, day="2020-01-01"), *lines[r2 + 1 :]],
            "reporter",
            2,
        ),
        "cut reporter tail": (
            [*lines[:last_reporter], *lines[last_reporter + 1 :]],
            "reporter",
            reporter_last,
        ),
    }
    for name, (edited, chain, first_bad) in cases.items():
        broken = verify_export(edited, public)
        assert (broken.ok, broken.chain, broken.first_bad) == (False, chain, first_bad), name


def test_an_export_with_a_forged_checkpoint_or_the_wrong_key_fails(
    client: TestClient, db: Session, settings: Settings
) -> None:
    _busy_case(client, db, settings)
    lines = _export_lines(db, settings)
    public = settings.signing_public_key
    checkpoint = json.loads(lines[-1])
    signature = checkpoint["signature"]
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]

    forged_signature = [*lines[:-1], json.dumps({**checkpoint, "signature": flipped})]
    moved_head = [*lines[:-1], json.dumps({**checkpoint, "seq": checkpoint["seq"] - 1})]
    without_checkpoint = lines[:-1]

    for edited in (forged_signature, moved_head):
        result = verify_export(edited, public)
        assert not result.ok
        assert "signature does not verify" in result.reason
    assert "does not end with a checkpoint" in verify_export(without_checkpoint, public).reason
    wrong = verify_export(lines, crypto.signing_public_key(_other_key()))
    assert not wrong.ok
    assert "signature does not verify" in wrong.reason
