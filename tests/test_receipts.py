"""Reporters' signed receipts: what they bind, what they never hold, and the offline check."""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import make_unit, make_user, report
from tests.test_audit_checkpoints import SRC, _cli, _configured_env
from varsling import crypto, receipts
from varsling.cases.models import Case
from varsling.config import Settings
from varsling.reports import service

SEED = crypto.signing_seed(b"the installation's signing key " + b"k" * 32)
OTHER_SEED = crypto.signing_seed(b"another installation's signing key " + b"z" * 20)
DAY = dt.date(2026, 3, 14)
CASE_KEY = b"\x11" * 32


def _edit(receipt: str, field: str, change: object) -> str:
    """The receipt with one field's value passed through `change`."""

    def replace(match: re.Match[str]) -> str:
        return f"{field}: {change(match.group(1))}"  # type: ignore[operator]

    edited = re.sub(rf"^{field}: (.*)$", replace, receipt, count=1, flags=re.M)
    assert edited != receipt
    return edited


def _flip(text: str, at: int = 0) -> str:
    return text[:at] + ("B" if text[at] != "B" else "C") + text[at + 1 :]


def _next_day(text: str) -> str:
    return (dt.date.fromisoformat(text) + dt.timedelta(days=1)).isoformat()


def _other_hex(text: str) -> str:
    return ("0" if text[0] != "0" else "1") + text[1:]


TAMPERINGS = {
    "date": ("Date", _next_day),
    "hash": ("Submission-HMAC-SHA256", _other_hex),
    "signature": ("Signature", _flip),
}


def _canonical(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "unit_id": 3,
        "category": "harassment",
        "report": {"description": "d", "wants_meeting": False},
        "identity": {"name": "Kari", "contact": ""},
        "files": [receipts.FileDigest("a.pdf", "application/pdf", 10, b"\x01" * 32)],
    }
    fields.update(overrides)
    return receipts.canonical_submission(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# The pure module


def test_a_receipt_verifies_and_shows_only_the_day_and_the_key() -> None:
    value = receipts.submission_value(CASE_KEY, _canonical())
    text = receipts.make_receipt(SEED, day=DAY, submission=value)

    checked = receipts.verify(text, crypto.signing_public_key(SEED))

    assert checked.day == DAY
    assert checked.submission == value
    assert checked.fingerprint == crypto.key_fingerprint(crypto.signing_public_key(SEED))
    assert [line.split(":")[0] for line in text.splitlines()[1:-1]] == [
        "Version",
        "Date",
        "Submission-HMAC-SHA256",
        "Key",
        "Signature",
    ]
    assert max(len(line) for line in text.splitlines()) <= 100  # fits a printed line
    # Pasted into an e-mail, with other text and CRLF line ends, it still reads.
    assert (
        receipts.verify(
            f"Hei,\r\n\r\n{text.replace(chr(10), chr(13) + chr(10))}\r\n",
            (crypto.signing_public_key(SEED)),
        ).day
        == DAY
    )


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_changed_date_hash_or_signature_fails(tampering: str) -> None:
    text = receipts.make_receipt(SEED, day=DAY, submission=b"\x22" * 32)
    field, change = TAMPERINGS[tampering]

    with pytest.raises(receipts.ReceiptForged):
        receipts.verify(_edit(text, field, change), crypto.signing_public_key(SEED))


def test_another_spelling_of_the_same_signature_is_refused() -> None:
    text = receipts.make_receipt(SEED, day=DAY, submission=b"\x22" * 32)
    signature = re.search(r"^Signature: (.*)$", text, re.M)
    assert signature is not None
    last = signature.group(1)[-1]
    # The last base64 character carries 2 spare bits: flipping one decodes to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]

    with pytest.raises(receipts.ReceiptError):
        receipts.verify(
            _edit(text, "Signature", lambda s: s[:-1] + twin), crypto.signing_public_key(SEED)
        )


def test_a_receipt_made_with_another_key_or_checked_against_one_fails() -> None:
    ours = crypto.signing_public_key(SEED)
    text = receipts.make_receipt(OTHER_SEED, day=DAY, submission=b"\x22" * 32)

    with pytest.raises(receipts.ReceiptForeignKey):
        receipts.verify(text, ours)
    # Claiming our key's fingerprint does not help: the signature is not ours.
    claimed = _edit(text, "Key", lambda _: crypto.key_fingerprint(ours))
    with pytest.raises(receipts.ReceiptForged):
        receipts.verify(claimed, ours)


@pytest.mark.parametrize(
    "garbled",
    [
        "",
        "just some text",
        receipts.BEGIN + "\nVersion: 1\n" + receipts.END,
        "RECEIPT-MINUS-A-LINE",
        "RECEIPT-WITH-A-LINE-TWICE",
        "RECEIPT-VERSION-2",
        "RECEIPT-WITH-A-TIME",
        "RECEIPT-NOT-A-DAY",
    ],
)
def test_a_garbled_receipt_is_unreadable_not_a_crash(garbled: str) -> None:
    text = receipts.make_receipt(SEED, day=DAY, submission=b"\x22" * 32)
    lines = text.splitlines()
    garbled = {
        "RECEIPT-MINUS-A-LINE": "\n".join(lines[:3] + lines[4:]),
        "RECEIPT-WITH-A-LINE-TWICE": "\n".join([*lines[:3], lines[2], *lines[3:]]),
        "RECEIPT-VERSION-2": text.replace("Version: 1", "Version: 2"),
        "RECEIPT-WITH-A-TIME": text.replace(f"Date: {DAY}", f"Date: {DAY}T12:00"),
        "RECEIPT-NOT-A-DAY": text.replace(f"Date: {DAY}", "Date: 2026-02-30"),
    }.get(garbled, garbled)

    with pytest.raises(receipts.ReceiptUnreadable):
        receipts.verify(garbled, crypto.signing_public_key(SEED))


@pytest.mark.parametrize(
    "change",
    [
        {"unit_id": 4},
        {"category": "discrimination"},
        {"report": {"description": "D", "wants_meeting": False}},
        {"report": {"description": "d", "wants_meeting": True}},
        {"report": {"description": "d", "wants_meeting": False, "where": ""}},
        {"identity": None},
        {"identity": {"name": "Kari", "contact": "k@example.org"}},
        {"files": []},
        {"files": [receipts.FileDigest("b.pdf", "application/pdf", 10, b"\x01" * 32)]},
        {"files": [receipts.FileDigest("a.pdf", "text/plain", 10, b"\x01" * 32)]},
        {"files": [receipts.FileDigest("a.pdf", "application/pdf", 11, b"\x01" * 32)]},
        {"files": [receipts.FileDigest("a.pdf", "application/pdf", 10, b"\x02" * 32)]},
    ],
)
def test_the_value_binds_every_part_of_the_submission(change: dict[str, object]) -> None:
    assert receipts.submission_value(CASE_KEY, _canonical(**change)) != (
        receipts.submission_value(CASE_KEY, _canonical())
    )


def test_without_the_case_key_a_guess_at_the_content_cannot_be_confirmed() -> None:
    canonical = _canonical()
    value = receipts.submission_value(CASE_KEY, canonical)

    assert receipts.submission_value(b"\x12" * 32, canonical) != value
    assert crypto.sha256(canonical) != value


# --------------------------------------------------------------------------
# The API answers a receipt; the real command checks it offline


@pytest.fixture
def receipt_case(client: TestClient, db: Session, settings: Settings) -> dict[str, str]:
    unit = make_unit(db, "Vestland fylkesparti")
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))
    marker = f"MARKER-{uuid.uuid4().hex}"
    sent = {
        "description": f"What happened: {marker}",
        "where": f"place {marker}",
        "identity": {"name": f"name {marker}", "contact": f"{marker}@example.org"},
    }
    answer = client.post("/api/v1/reports", json=report(unit.id, **sent))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"case_code", "receipt"}
    db.rollback()
    case = db.scalars(select(Case)).one()
    return {
        "marker": marker,
        "unit_id": str(unit.id),
        "unit_name": unit.name,
        "case_id": case.id,
        "received_on": case.received_on.isoformat(),
        **body,
    }


def test_the_api_receipt_holds_no_code_case_or_content_and_binds_the_report(
    client: TestClient, db: Session, settings: Settings, receipt_case: dict[str, str]
) -> None:
    text = receipt_case["receipt"]
    digits = receipt_case["case_code"].replace(" ", "")
    for needle in (
        receipt_case["marker"],
        receipt_case["case_id"],
        receipt_case["case_id"].upper(),
        digits,
        receipt_case["case_code"],
        receipt_case["unit_name"],
        "harassment",
    ):
        assert needle not in text
    # Nothing shaped like a case code, outside the two random values (a 64-digit hex
    # HMAC holds such a run of digits about once in a hundred receipts).
    fixed = "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("Submission-HMAC-SHA256:", "Signature:"))
    )
    assert not re.search(r"\d{4}\D?\d{4}\D?\d{4}\D?\d{4}\D?\d{4}", fixed)
    checked = receipts.verify(text, settings.signing_public_key)
    assert checked.day.isoformat() == receipt_case["received_on"]

    # The value is the HMAC, under a key from the case key, of exactly what was sent.
    token = client.post("/api/v1/reporter/session", json={"case_code": receipt_case["case_code"]})
    db.rollback()
    principal = service.reporter_principal(db, token.json()["token"])
    marker = receipt_case["marker"]
    canonical = receipts.canonical_submission(
        unit_id=int(receipt_case["unit_id"]),
        category="harassment",
        report={
            "description": f"What happened: {marker}",
            "where": f"place {marker}",
            "on_behalf_of_someone_else": False,
            "wants_meeting": False,
        },
        identity={"name": f"name {marker}", "contact": f"{marker}@example.org"},
        files=[],
    )
    assert checked.submission == receipts.submission_value(principal.case_key, canonical)


def test_the_openapi_document_describes_the_receipt(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]["CaseCodeOut"]
    assert schema["required"] == ["case_code", "receipt"]
    assert "varsling receipt verify" in schema["properties"]["receipt"]["description"]


def test_the_command_checks_a_receipt_offline_and_every_change_fails(
    receipt_case: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    key = _cli("keys", "public", env=_configured_env(settings))
    assert key.returncode == 0, key.stderr
    key_file = tmp_path / "installation.pub"
    key_file.write_text(key.stdout)
    other_key = tmp_path / "other.pub"
    other_key.write_text(crypto.format_signing_public_key(crypto.signing_public_key(OTHER_SEED)))
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    # No VARSLING_* at all, and no database where the default would look.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    bare |= {"PYTHONPATH": SRC}
    text = receipt_case["receipt"]

    def check(content: str, public: Path = key_file) -> tuple[int, str, str]:
        path = tmp_path / f"receipt-{uuid.uuid4().hex}.txt"
        path.write_text(content)
        done = _cli(
            "receipt", "verify", str(path), "--public-key", str(public), env=bare, cwd=laptop
        )
        return done.returncode, done.stdout, done.stderr

    code, out, err = check(text)
    assert code == 0, err
    fingerprint = crypto.key_fingerprint(settings.signing_public_key)
    assert out.startswith("valid")
    assert receipt_case["received_on"] in out
    assert fingerprint in out
    assert receipt_case["marker"] not in out + err

    for tampering, (field, change) in TAMPERINGS.items():
        code, out, err = check(_edit(text, field, change))
        assert code == 1, tampering
        assert "INVALID: the signature does not match" in err, tampering
        assert "valid" not in out
        assert "Traceback" not in err

    code, out, err = check(text, other_key)
    assert code == 1
    assert f"the receipt names the key {fingerprint}" in err
    for garbled in ("not a receipt at all\n", text.replace("Signature", "Signatur"), "\xff"):
        code, out, err = check(garbled)
        assert code == 1
        assert err.startswith("INVALID:")
        assert "Traceback" not in err
    missing = _cli(
        "receipt",
        "verify",
        str(tmp_path / "nowhere.txt"),
        "--public-key",
        str(key_file),
        env=bare,
        cwd=laptop,
    )
    assert missing.returncode == 1
    assert "INVALID: cannot read" in missing.stderr
    assert list(laptop.iterdir()) == []


def test_the_command_without_a_key_file_uses_the_installation_key(
    receipt_case: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "receipt.txt"
    path.write_text(receipt_case["receipt"])
    ok = _cli("receipt", "verify", str(path), env=_configured_env(settings))
    assert ok.returncode == 0, ok.stderr
    assert f"valid: a report was received on {receipt_case['received_on']}" in ok.stdout

    path.write_text(_edit(receipt_case["receipt"], "Date", _next_day))
    changed = _cli("receipt", "verify", str(path), env=_configured_env(settings))
    assert changed.returncode == 1
    assert "INVALID" in changed.stderr
