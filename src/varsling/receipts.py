"""Reporters' signed receipts: made when a report is stored, checked offline.

Pure: no database, web or settings imports (an import-linter contract keeps it
so), so `varsling receipt verify` runs on a laptop with nothing but the
receipt and the installation's public key.

A receipt is a short text block a reporter can copy or print:

    -----BEGIN VARSLING RECEIPT-----
    Version: 1
    Date: 2025-03-14
    Submission-HMAC-SHA256: 64 hex digits
    Key: the signing key's fingerprint
    Signature: Ed25519, base64url
    -----END VARSLING RECEIPT-----

It proves that this installation received a report on that day, and binds
what was submitted without showing it: the submission value is an HMAC over
a canonical encoding of the report under a key derived from the case key.
Whoever finds the receipt learns the day and the installation, and cannot
confirm a guess at the content, nor find the case: the receipt holds no case
code, no case id, and nothing stored in the database matches it. Only someone
holding the case key (the reporter through their code, the case's handlers)
can recompute the value from the content.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from varsling import crypto

RECEIPT_VERSION = 1
BEGIN = "-----BEGIN VARSLING RECEIPT-----"
END = "-----END VARSLING RECEIPT-----"
_FIELDS = ("Version", "Date", "Submission-HMAC-SHA256", "Key", "Signature")
_SIGNATURE_CHARS = 86  # 64 bytes in unpadded base64url


class ReceiptError(Exception):
    """A receipt that cannot be read, or that does not verify."""


class ReceiptUnreadable(ReceiptError):
    """Not a receipt, or a receipt whose lines were garbled."""


class ReceiptForeignKey(ReceiptError):
    """Signed (it says) by another installation's key than the one given."""


class ReceiptForged(ReceiptError):
    """The signature does not cover this date and hash under this key."""


@dataclass(frozen=True)
class FileDigest:
    """What a receipt binds of one attached file: its plaintext's SHA-256 and metadata."""

    name: str
    content_type: str
    size: int
    sha256: bytes


def blinding_key(case_key: bytes) -> bytes:
    """The HMAC key of a case's submission value, derived from (never stored beside) its key."""
    return crypto.hkdf(case_key, label="varsling/receipt/blinding")


def canonical_submission(
    *,
    unit_id: int,
    category: str,
    report: Mapping[str, Any],
    identity: Mapping[str, Any] | None,
    files: Iterable[FileDigest],
) -> bytes:
    """The one byte form of what a reporter submitted: sorted-key JSON, UTF-8, no spaces."""
    value = {
        "version": RECEIPT_VERSION,
        "unit_id": unit_id,
        "category": category,
        "report": dict(report),
        "identity": dict(identity) if identity else None,
        "files": [
            {
                "name": f.name,
                "content_type": f.content_type,
                "size": f.size,
                "sha256": f.sha256.hex(),
            }
            for f in files
        ],
    }
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def submission_value(case_key: bytes, canonical: bytes) -> bytes:
    """HMAC-SHA256 of the canonical submission under the case's blinding key."""
    return hmac.new(blinding_key(case_key), canonical, hashlib.sha256).digest()


def _message(version: int, day: dt.date, submission: bytes, public_key: bytes) -> bytes:
    return crypto.context("varsling/receipt", version, day.isoformat(), submission, public_key)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_receipt(seed: bytes, *, day: dt.date, submission: bytes) -> str:
    """The signed text block for a report stored on `day` (the day only, never a time)."""
    if len(submission) != 32:
        raise ValueError("a submission value is 32 bytes")
    public_key = crypto.signing_public_key(seed)
    signature = crypto.sign(
        seed, crypto.SIGN_RECEIPT, _message(RECEIPT_VERSION, day, submission, public_key)
    )
    return "\n".join(
        [
            BEGIN,
            f"Version: {RECEIPT_VERSION}",
            f"Date: {day.isoformat()}",
            f"Submission-HMAC-SHA256: {submission.hex()}",
            f"Key: {crypto.key_fingerprint(public_key)}",
            f"Signature: {_b64(signature)}",
            END,
        ]
    )


@dataclass(frozen=True)
class Receipt:
    version: int
    day: dt.date
    submission: bytes
    fingerprint: str
    signature: bytes


def parse(text: str) -> Receipt:
    """Read a receipt out of `text` (it may sit inside a longer e-mail or note)."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index(BEGIN)
        end = lines.index(END, start)
    except ValueError as exc:
        raise ReceiptUnreadable(f"no receipt found: it starts with the line {BEGIN}") from exc
    fields: dict[str, str] = {}
    for line in lines[start + 1 : end]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or name not in _FIELDS or name in fields:
            raise ReceiptUnreadable(f"unexpected line in the receipt: {line[:60]!r}")
        fields[name] = value.strip()
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise ReceiptUnreadable(f"the receipt lacks {', '.join(missing)}")
    if fields["Version"] != str(RECEIPT_VERSION):
        raise ReceiptUnreadable(f"unknown receipt version {fields['Version'][:10]!r}")
    # [0-9], not \d: \d also matches non-ASCII digits, which the parsers accept.
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fields["Date"]):
        raise ReceiptUnreadable("the date is not a day written as YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(fields["Date"])
    except ValueError as exc:
        raise ReceiptUnreadable("the date is not a real day") from exc
    if not re.fullmatch(r"[0-9a-f]{64}", fields["Submission-HMAC-SHA256"]):
        raise ReceiptUnreadable("the submission value is not 64 hexadecimal digits")
    if not re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){7}", fields["Key"]):
        raise ReceiptUnreadable("the key fingerprint is not eight groups of four hex digits")
    encoded = fields["Signature"]
    if not re.fullmatch(rf"[A-Za-z0-9_-]{{{_SIGNATURE_CHARS}}}", encoded):
        raise ReceiptUnreadable("the signature is not 86 characters of base64url")
    try:
        signature = base64.urlsafe_b64decode(encoded + "==")
    except (ValueError, binascii.Error) as exc:
        raise ReceiptUnreadable("the signature is not valid base64url") from exc
    if _b64(signature) != encoded:
        # The last character has spare bits: only the one canonical spelling is accepted.
        raise ReceiptUnreadable("the signature is not valid base64url")
    return Receipt(
        version=RECEIPT_VERSION,
        day=day,
        submission=bytes.fromhex(fields["Submission-HMAC-SHA256"]),
        fingerprint=fields["Key"],
        signature=signature,
    )


def verify(text: str, public_key: bytes) -> Receipt:
    """The receipt in `text` if `public_key` signed exactly its date and submission value."""
    receipt = parse(text)
    if receipt.fingerprint != crypto.key_fingerprint(public_key):
        raise ReceiptForeignKey(
            f"the receipt names the key {receipt.fingerprint}, not the one given "
            f"({crypto.key_fingerprint(public_key)})"
        )
    message = _message(receipt.version, receipt.day, receipt.submission, public_key)
    if not crypto.signature_valid(public_key, crypto.SIGN_RECEIPT, message, receipt.signature):
        raise ReceiptForged(
            "the signature does not match: the date, the submission value or the signature "
            "was changed"
        )
    return receipt
