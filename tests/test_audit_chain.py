"""The pure audit chain module: a fixed message format, and nothing but crypto imported."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from varsling import crypto
from varsling.audit_chain import (
    GENESIS_HASH,
    ChainError,
    Checkpoint,
    canonical,
    chain_hash,
    checkpoint_message,
    reporter_event_bytes,
    reporter_fields,
    sign_checkpoint,
    staff_event_bytes,
    staff_fields,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
SEED = crypto.signing_seed(b"a test installation's signing key " + b"k" * 20)


def test_the_signed_message_is_fixed_canonical_json() -> None:
    """Auditors' own tools can rebuild exactly these bytes."""
    message = checkpoint_message(
        seq=7, hash="ab" * 32, reporter_seq=2, reporter_hash="cd" * 32, signed_at="2026-12-03"
    )
    assert message == (
        b'{"hash":"' + b"ab" * 32 + b'","reporter_hash":"' + b"cd" * 32 + b'",'
        b'"reporter_seq":2,"seq":7,"signed_at":"2026-12-03","version":1}'
    )


def test_the_staff_hash_is_unchanged_for_existing_rows() -> None:
    """Rows written before the reporter chain existed still verify."""
    fields = staff_fields(
        seq=1,
        occurred="2026-01-01T00:00:00+00:00",
        actor="system",
        action="unit.created",
        case_id=None,
        details={"unit_id": 1},
    )
    expected = crypto.sha256(
        bytes(32)
        + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hex()
    assert chain_hash(GENESIS_HASH, fields) == expected


STORED_DETAILS = [
    "{}",
    json.dumps({"unit_id": 1}, sort_keys=True),
    json.dumps({"z": [1, 2.5, None, True], "a": 'quote " slash \\ \n tab\t'}, sort_keys=True),
    json.dumps({"navn": "Ærlig øl på Å", "emoji": "\U0001f600", "nul": "\u0000"}, sort_keys=True),
    json.dumps({"nested": {"b": {"y": 1, "x": -0.0}, "a": 1e300}}, sort_keys=True),
    '  { "spaced" : 1 }  ',  # a database writer's text: json.loads still reads it
    '"just a string"',
    "[3, 2, 1]",
    "12345678901234567890123",
]


@pytest.mark.parametrize("details", STORED_DETAILS)
@pytest.mark.parametrize("case_id", [None, "ab" * 16, 'odd"\\id'])
def test_the_verifier_s_event_bytes_are_exactly_the_hashed_canonical_json(
    details: str, case_id: str | None
) -> None:
    """verify() writes each event's bytes out directly; they must be the very bytes
    chain_hash() hashes, or existing trails would stop verifying."""
    staff = staff_fields(
        seq=42,
        occurred="2026-12-03T10:00:00+00:00",
        actor="user:7",
        action="case.ré\u2028ad",
        case_id=case_id,
        details=json.loads(details),
    )
    assert staff_event_bytes(
        42, staff["occurred"], staff["actor"], staff["action"], case_id, details
    ) == canonical(staff)
    reporter = reporter_fields(
        seq=9,
        day="2026-12-03",
        action="case.submitted",
        case_id=case_id,
        details=json.loads(details),
    )
    assert reporter_event_bytes(9, "2026-12-03", "case.submitted", case_id, details) == canonical(
        reporter
    )


def test_event_bytes_of_values_that_are_not_text_follow_the_general_encoder() -> None:
    """A database writer's non-text value is encoded as chain_hash() would encode it."""
    fields = staff_fields(
        seq=3,
        occurred="t",
        actor="system",
        action="x",
        case_id=17,
        details={"a": 1},  # type: ignore[arg-type]
    )
    assert staff_event_bytes(3, "t", "system", "x", 17, '{"a": 1}') == canonical(fields)  # type: ignore[arg-type]
    for broken in ("", "{", "{} trailing", "NaN garbage"):
        with pytest.raises(json.JSONDecodeError):
            staff_event_bytes(3, "t", "system", "x", None, broken)


def test_a_checkpoint_round_trips_and_rejects_bad_shapes() -> None:
    made = sign_checkpoint(
        SEED,
        seq=3,
        hash="ab" * 32,
        reporter_seq=0,
        reporter_hash=GENESIS_HASH,
        signed_at=dt.datetime(2026, 12, 3, 14, 0, 5, 123, tzinfo=dt.UTC),
    )
    assert made.signed_at == "2026-12-03T14:00:05+00:00"
    again = Checkpoint.from_json(json.loads(json.dumps(made.to_json())))
    assert again == made
    assert again.signature_valid(crypto.signing_public_key(SEED))
    for bad in ({**made.to_json(), "seq": "3"}, {**made.to_json(), "type": "event"}, {"seq": 1}):
        with pytest.raises(ChainError):
            Checkpoint.from_json(bad)


def test_the_offline_verifier_loads_no_database_web_or_settings_code() -> None:
    probe = (
        "import sys, varsling.audit_chain; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'fastapi', 'starlette', 'pydantic', 'pydantic_settings', 'alembic'} "
        "or m in {'varsling.db', 'varsling.config', 'varsling.app', 'varsling.audit'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC},
        check=True,
    )
    assert result.stdout.strip() == "[]"
