"""The audit chains' hashing, signed checkpoints and offline verification of an export.

Pure: no database, web or settings imports (an import-linter contract keeps it
so), so an auditor can check an export on a laptop with nothing but the
installation's public key.

Two chains: the staff chain (events with seconds) and the reporter chain
(events with the day only, in a sequence of their own). A checkpoint signs
the staff chain's head and the reporter chain's last event of an earlier day,
so neither a checkpoint nor an export places a reporter event within its day:
today's reporter events are signed and exported from tomorrow on.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from varsling import crypto

GENESIS_HASH = "0" * 64
STAFF_CHAIN = "staff"
REPORTER_CHAIN = "reporter"
CHAINS = (STAFF_CHAIN, REPORTER_CHAIN)
CHECKPOINT_VERSION = 1


class ChainError(Exception):
    """An export or checkpoint that cannot even be read."""


# json.dumps with these arguments builds a new encoder on every call; one kept
# encoder gives the very same bytes at a fraction of the cost per event.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the one byte form that is hashed or signed."""
    return _CANONICAL.encode(value).encode()


def chain_hash(previous: str, fields: dict[str, Any]) -> str:
    """hash = SHA-256(previous hash ‖ canonical JSON of the event)."""
    return event_digest(bytes.fromhex(previous), fields).hex()


def event_digest(previous: bytes, fields: dict[str, Any]) -> bytes:
    """chain_hash() on raw digests, for walking a long chain without hex round trips."""
    return crypto.sha256(previous + canonical(fields))


def staff_fields(
    *,
    seq: int,
    occurred: str,
    actor: str,
    action: str,
    case_id: str | None,
    details: dict[str, Any],
) -> dict[str, Any]:
    """What a staff-chain event's hash covers (unchanged since the first release)."""
    return {
        "seq": seq,
        "occurred": occurred,
        "actor": actor,
        "action": action,
        "case_id": case_id,
        "details": details,
    }


def reporter_fields(
    *, seq: int, day: str, action: str, case_id: str | None, details: dict[str, Any]
) -> dict[str, Any]:
    """What a reporter-chain event's hash covers; `chain` keeps the two chains apart."""
    return {
        "chain": REPORTER_CHAIN,
        "seq": seq,
        "day": day,
        "action": action,
        "case_id": case_id,
        "details": details,
    }


# What the canonical encoder writes for a string (ensure_ascii=False): the same C function.
_json_string = json.encoder.encode_basestring


# The C scanner and encoder json.loads and _CANONICAL.encode use, called without
# their per-call Python wrapping. No circular-reference markers: what json parsed
# cannot refer to itself.
_scan_json: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_parsed = (
    _c_make_encoder(None, _CANONICAL.default, _json_string, None, ":", ",", True, False, True)
    if _c_make_encoder is not None
    else None
)


def _json_details(stored: str) -> str:
    """The canonical JSON of an event's details, from the JSON text they are stored as:
    _CANONICAL.encode(json.loads(stored)), the same text."""
    if stored == "{}":
        return stored
    try:
        value, end = _scan_json(stored, 0)
    except StopIteration:
        end = -1
    if end != len(stored) or _encode_parsed is None or value.__class__ is str:
        # Surrounding space, trailing text or no JSON at all: json.loads decides
        # (ValueError), and the general encoder writes what it accepts.
        return _CANONICAL.encode(json.loads(stored))
    return "".join(_encode_parsed(value, 0))


def staff_event_bytes(
    seq: int, occurred: str, actor: str, action: str, case_id: str | None, details: str
) -> bytes:
    """canonical(staff_fields(...)) of a stored row (`details` as stored: JSON text),
    written out key by key in sorted order: the same bytes, without building a dict
    and an encoder per event. Raises ValueError when the details are not JSON."""
    try:
        if seq.__class__ is not int:
            raise TypeError(seq)
        text = (
            f'{{"action":{_json_string(action)},"actor":{_json_string(actor)},'
            f'"case_id":{"null" if case_id is None else _json_string(case_id)},'
            f'"details":{_json_details(details)},"occurred":{_json_string(occurred)},'
            f'"seq":{seq}}}'
        )
    except TypeError:
        # A value that is not text (a database writer's doing): the general encoder
        # decides, exactly as chain_hash() would.
        return canonical(
            staff_fields(
                seq=seq,
                occurred=occurred,
                actor=actor,
                action=action,
                case_id=case_id,
                details=json.loads(details),
            )
        )
    return text.encode()


def reporter_event_bytes(
    seq: int, day: str, action: str, case_id: str | None, details: str
) -> bytes:
    """canonical(reporter_fields(...)) of a stored row, as staff_event_bytes()."""
    try:
        if seq.__class__ is not int:
            raise TypeError(seq)
        text = (
            f'{{"action":{_json_string(action)},'
            f'"case_id":{"null" if case_id is None else _json_string(case_id)},'
            f'"chain":"reporter","day":{_json_string(day)},'
            f'"details":{_json_details(details)},"seq":{seq}}}'
        )
    except TypeError:
        return canonical(
            reporter_fields(
                seq=seq, day=day, action=action, case_id=case_id, details=json.loads(details)
            )
        )
    return text.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ChainError("the checkpoint's signature is not base64") from exc


@dataclass(frozen=True)
class Checkpoint:
    """Both chains' heads at one moment, signed with the installation key.

    `reporter_seq`/`reporter_hash` name the reporter chain's last event dated
    before `signed_at`'s day (0 and the genesis hash when there is none).
    """

    seq: int
    hash: str
    reporter_seq: int
    reporter_hash: str
    signed_at: str
    signature: str
    key_fingerprint: str

    @property
    def day(self) -> str:
        return self.signed_at[:10]

    def message(self) -> bytes:
        return checkpoint_message(
            seq=self.seq,
            hash=self.hash,
            reporter_seq=self.reporter_seq,
            reporter_hash=self.reporter_hash,
            signed_at=self.signed_at,
        )

    def signature_valid(self, public_key: bytes) -> bool:
        try:
            signature = _unb64(self.signature)
        except ChainError:
            return False
        return crypto.signature_valid(public_key, crypto.SIGN_CHECKPOINT, self.message(), signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "checkpoint",
            "version": CHECKPOINT_VERSION,
            "seq": self.seq,
            "hash": self.hash,
            "reporter_seq": self.reporter_seq,
            "reporter_hash": self.reporter_hash,
            "signed_at": self.signed_at,
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
        }

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        if not isinstance(data, dict) or data.get("type", "checkpoint") != "checkpoint":
            raise ChainError("not a checkpoint")
        if data.get("version", CHECKPOINT_VERSION) != CHECKPOINT_VERSION:
            raise ChainError(f"unknown checkpoint version {data.get('version')!r}")
        try:
            checkpoint = cls(
                seq=data["seq"],
                hash=data["hash"],
                reporter_seq=data["reporter_seq"],
                reporter_hash=data["reporter_hash"],
                signed_at=data["signed_at"],
                signature=data["signature"],
                key_fingerprint=data.get("key_fingerprint", ""),
            )
        except KeyError as exc:
            raise ChainError(f"the checkpoint lacks {exc.args[0]!r}") from exc
        for name in ("seq", "reporter_seq"):
            value = getattr(checkpoint, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ChainError(f"the checkpoint's {name} is not a sequence number")
        for name in ("hash", "reporter_hash", "signed_at", "signature", "key_fingerprint"):
            if not isinstance(getattr(checkpoint, name), str):
                raise ChainError(f"the checkpoint's {name} is not text")
        return checkpoint


def checkpoint_message(
    *, seq: int, hash: str, reporter_seq: int, reporter_hash: str, signed_at: str
) -> bytes:
    """The exact bytes a checkpoint signature covers (the domain prefix is added by crypto)."""
    return canonical(
        {
            "version": CHECKPOINT_VERSION,
            "seq": seq,
            "hash": hash,
            "reporter_seq": reporter_seq,
            "reporter_hash": reporter_hash,
            "signed_at": signed_at,
        }
    )


def sign_checkpoint(
    seed: bytes,
    *,
    seq: int,
    hash: str,
    reporter_seq: int,
    reporter_hash: str,
    signed_at: dt.datetime,
) -> Checkpoint:
    moment = signed_at.astimezone(dt.UTC).replace(microsecond=0).isoformat()
    message = checkpoint_message(
        seq=seq, hash=hash, reporter_seq=reporter_seq, reporter_hash=reporter_hash, signed_at=moment
    )
    return Checkpoint(
        seq=seq,
        hash=hash,
        reporter_seq=reporter_seq,
        reporter_hash=reporter_hash,
        signed_at=moment,
        signature=_b64(crypto.sign(seed, crypto.SIGN_CHECKPOINT, message)),
        key_fingerprint=crypto.key_fingerprint(crypto.signing_public_key(seed)),
    )


def export_line(chain: str, fields: dict[str, Any], event_hash: str) -> str:
    """One event as a line of an export: its hashed fields, its chain and its hash."""
    line = {**fields, "type": "event", "chain": chain, "hash": event_hash}
    return json.dumps(line, sort_keys=True, ensure_ascii=False)


def checkpoint_line(checkpoint: Checkpoint) -> str:
    return json.dumps(checkpoint.to_json(), sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------
# Offline verification of an export


@dataclass(frozen=True)
class ExportVerification:
    ok: bool
    reason: str
    chain: str | None = None
    first_bad: int | None = None
    events: dict[str, int] = field(default_factory=dict)


@dataclass
class _Walk:
    expected: int = 1
    previous: str = GENESIS_HASH
    hashes: dict[int, str] = field(default_factory=dict)


class _Broken(Exception):
    def __init__(self, chain: str | None, first_bad: int | None, reason: str) -> None:
        super().__init__(reason)
        self.chain = chain
        self.first_bad = first_bad
        self.reason = reason


def _event_fields(chain: str, line: dict[str, Any]) -> dict[str, Any]:
    if chain == STAFF_CHAIN:
        return staff_fields(
            seq=line["seq"],
            occurred=line["occurred"],
            actor=line["actor"],
            action=line["action"],
            case_id=line["case_id"],
            details=line["details"],
        )
    return reporter_fields(
        seq=line["seq"],
        day=line["day"],
        action=line["action"],
        case_id=line["case_id"],
        details=line["details"],
    )


def _parse(lines: Iterable[str]) -> tuple[list[tuple[int, dict[str, Any]]], Checkpoint]:
    parsed: list[tuple[int, dict[str, Any]]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _Broken(None, None, f"line {number} is not JSON") from exc
        if not isinstance(value, dict):
            raise _Broken(None, None, f"line {number} is not a JSON object")
        parsed.append((number, value))
    if not parsed or parsed[-1][1].get("type") != "checkpoint":
        raise _Broken(None, None, "the export does not end with a checkpoint (cut off?)")
    try:
        checkpoint = Checkpoint.from_json(parsed[-1][1])
    except ChainError as exc:
        raise _Broken(None, None, f"the closing checkpoint is unreadable: {exc}") from exc
    return parsed[:-1], checkpoint


def _walk(events: list[tuple[int, dict[str, Any]]]) -> dict[str, _Walk]:
    walks = {chain: _Walk() for chain in CHAINS}
    for number, line in events:
        chain = line.get("chain")
        if line.get("type") != "event" or chain not in walks:
            raise _Broken(None, None, f"line {number} is neither an event nor the checkpoint")
        walk = walks[chain]
        seq = line.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise _Broken(chain, walk.expected, f"line {number} has no sequence number")
        if seq != walk.expected:
            raise _Broken(
                chain, walk.expected, f"expected event {walk.expected}, line {number} has {seq}"
            )
        try:
            computed = chain_hash(walk.previous, _event_fields(chain, line))
        except (KeyError, TypeError, ValueError) as exc:
            raise _Broken(chain, seq, f"event {seq} (line {number}) is malformed") from exc
        if computed != line.get("hash"):
            raise _Broken(chain, seq, f"event {seq} (line {number}) does not match its hash")
        walk.hashes[seq] = computed
        walk.previous = computed
        walk.expected += 1
    return walks


def _check_anchor(walk: _Walk, chain: str, seq: int, expected_hash: str) -> None:
    last = walk.expected - 1
    if last < seq:
        raise _Broken(chain, last + 1, f"the export ends at event {last}, the checkpoint at {seq}")
    held = walk.hashes.get(seq, GENESIS_HASH) if seq else GENESIS_HASH
    if held != expected_hash:
        raise _Broken(chain, seq, f"event {seq} does not hold the checkpoint's hash")
    if last > seq:
        raise _Broken(chain, seq + 1, f"events after the checkpoint's {seq} were added")


def verify_export(lines: Iterable[str], public_key: bytes) -> ExportVerification:
    """Check an export against its own closing checkpoint and the installation's key.

    A changed, removed, inserted or reordered line, a cut tail, or a
    checkpoint that the key did not sign all fail, naming the chain and the
    first sequence number that does not check out.
    """
    try:
        events, checkpoint = _parse(lines)
        if not checkpoint.signature_valid(public_key):
            fingerprint = crypto.key_fingerprint(public_key)
            raise _Broken(
                None, None, f"the checkpoint's signature does not verify with key {fingerprint}"
            )
        walks = _walk(events)
        _check_anchor(walks[STAFF_CHAIN], STAFF_CHAIN, checkpoint.seq, checkpoint.hash)
        _check_anchor(
            walks[REPORTER_CHAIN], REPORTER_CHAIN, checkpoint.reporter_seq, checkpoint.reporter_hash
        )
    except _Broken as broken:
        return ExportVerification(
            ok=False, reason=broken.reason, chain=broken.chain, first_bad=broken.first_bad
        )
    counts = {chain: walks[chain].expected - 1 for chain in CHAINS}
    return ExportVerification(ok=True, reason="intact", events=counts)
