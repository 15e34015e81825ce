"""Hypothesis property tests: crypto envelopes, case-code normalisation, the audit chain.

Pure functions only (no database), so each runs once; examples are bounded
so the whole file stays within a few seconds.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from varsling import crypto
from varsling.audit_chain import (
    GENESIS_HASH,
    REPORTER_CHAIN,
    STAFF_CHAIN,
    chain_hash,
    checkpoint_line,
    export_line,
    reporter_fields,
    sign_checkpoint,
    staff_fields,
    verify_export,
)

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KEYS = st.binary(min_size=crypto.KEY_BYTES, max_size=crypto.KEY_BYTES)
PLAINTEXTS = st.binary(max_size=512)
CONTEXT_PARTS = st.lists(
    st.one_of(
        st.text(max_size=20), st.integers(min_value=0, max_value=2**40), st.binary(max_size=20)
    ),
    min_size=1,
    max_size=4,
)


# --------------------------------------------------------------------------
# Crypto envelopes


@BOUNDED
@given(key=KEYS, plaintext=PLAINTEXTS, parts=CONTEXT_PARTS)
def test_sealed_content_opens_with_its_key_and_context(
    key: bytes, plaintext: bytes, parts: list[Any]
) -> None:
    context = crypto.context(*parts)
    assert (
        crypto.open_sealed(key, crypto.seal(key, plaintext, context=context), context=context)
        == plaintext
    )


@BOUNDED
@given(key=KEYS, plaintext=PLAINTEXTS, data=st.data())
def test_any_flipped_bit_or_cut_of_a_sealed_blob_fails(
    key: bytes, plaintext: bytes, data: st.DataObject
) -> None:
    context = crypto.content_context("case-1", "report", 1)
    blob = crypto.seal(key, plaintext, context=context)
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1), label="bit")
    flipped = bytearray(blob)
    flipped[bit // 8] ^= 1 << (bit % 8)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="cut")
    for damaged in (bytes(flipped), blob[:cut]):
        with pytest.raises(crypto.CryptoError):
            crypto.open_sealed(key, damaged, context=context)


@BOUNDED
@given(
    key=KEYS,
    other_key=KEYS,
    plaintext=PLAINTEXTS,
    place=st.tuples(st.text(max_size=12), st.text(max_size=12), st.integers(0, 10**6)),
    other_place=st.tuples(st.text(max_size=12), st.text(max_size=12), st.integers(0, 10**6)),
)
def test_a_blob_moved_to_another_place_or_key_fails(
    key: bytes,
    other_key: bytes,
    plaintext: bytes,
    place: tuple[str, str, int],
    other_place: tuple[str, str, int],
) -> None:
    blob = crypto.seal(key, plaintext, context=crypto.content_context(*place))
    if other_place != place:
        with pytest.raises(crypto.CryptoError):
            crypto.open_sealed(key, blob, context=crypto.content_context(*other_place))
    if other_key != key:
        with pytest.raises(crypto.CryptoError):
            crypto.open_sealed(other_key, blob, context=crypto.content_context(*place))


@BOUNDED
@given(first=CONTEXT_PARTS, second=CONTEXT_PARTS)
def test_contexts_of_different_parts_never_collide(first: list[Any], second: list[Any]) -> None:
    def as_bytes(parts: list[Any]) -> list[bytes]:
        return [p if isinstance(p, bytes) else str(p).encode() for p in parts]

    if as_bytes(first) != as_bytes(second):
        assert crypto.context(*first) != crypto.context(*second)


@BOUNDED
@given(
    key=KEYS,
    chunk=PLAINTEXTS,
    index=st.integers(0, 2**32),
    last=st.booleans(),
    other_index=st.integers(0, 2**32),
)
def test_a_file_chunk_opens_only_at_its_position_and_finality(
    key: bytes, chunk: bytes, index: int, last: bool, other_index: int
) -> None:
    context = crypto.content_context("case-1", "file", "f1")
    blob = crypto.seal_chunk(key, chunk, context=context, index=index, last=last)
    assert crypto.open_chunk(key, blob, context=context, index=index, last=last) == chunk
    with pytest.raises(crypto.CryptoError):
        crypto.open_chunk(key, blob, context=context, index=index, last=not last)
    if other_index != index:
        with pytest.raises(crypto.CryptoError):
            crypto.open_chunk(key, blob, context=context, index=other_index, last=last)


# One key pair for every example: ML-KEM key generation is the slow part.
RECIPIENT = crypto.generate_keypair()
NAMES = st.text(min_size=1, max_size=16)


@settings(max_examples=25, deadline=None, database=None)
@given(
    key=KEYS,
    info=st.tuples(NAMES, NAMES, NAMES),
    other_info=st.tuples(NAMES, NAMES, NAMES),
)
def test_a_wrapped_key_opens_only_for_the_case_purpose_and_recipient_it_names(
    key: bytes, info: tuple[str, str, str], other_info: tuple[str, str, str]
) -> None:
    wrapped = crypto.wrap_key(key, RECIPIENT.public_key, info=crypto.wrap_info(*info))
    assert crypto.unwrap_key(wrapped, RECIPIENT.private_key, info=crypto.wrap_info(*info)) == key
    if other_info != info:
        with pytest.raises(crypto.CryptoError):
            crypto.unwrap_key(wrapped, RECIPIENT.private_key, info=crypto.wrap_info(*other_info))
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_key(wrapped[:-1], RECIPIENT.private_key, info=crypto.wrap_info(*info))


# --------------------------------------------------------------------------
# Case codes

CODES = st.text(alphabet="0123456789", min_size=crypto.CASE_CODE_DIGITS, max_size=20)
SEPARATORS = st.text(alphabet=" -\t", max_size=3)


@BOUNDED
@given(code=CODES, data=st.data())
def test_a_code_typed_with_any_spaces_and_dashes_normalises_to_its_digits(
    code: str, data: st.DataObject
) -> None:
    typed = "".join(data.draw(SEPARATORS) + digit for digit in code) + data.draw(SEPARATORS)
    assert crypto.normalize_case_code(typed) == code
    assert crypto.normalize_case_code(crypto.format_case_code(code)) == code
    # Idempotent: the normal form is its own normal form.
    assert crypto.normalize_case_code(code) == code


@BOUNDED
@given(digits=st.text(alphabet="0123456789", max_size=40))
def test_a_code_of_the_wrong_length_is_refused(digits: str) -> None:
    if len(digits) != crypto.CASE_CODE_DIGITS:
        assert crypto.normalize_case_code(digits) is None


@BOUNDED
@given(code=CODES, position=st.integers(0, 19), intruder=st.characters())
def test_any_other_character_in_a_code_is_refused(code: str, position: int, intruder: str) -> None:
    if intruder in "0123456789-" or intruder.isspace():
        return
    # Unicode digits (Arabic-Indic, full-width, ...) included: only ASCII digits make a code.
    typed = code[:position] + intruder + code[position + 1 :]
    assert crypto.normalize_case_code(typed) is None


# --------------------------------------------------------------------------
# The audit chain, as the offline verifier reads an export

SEED = crypto.signing_seed(b"property-test-signing-key-" + b"k" * 32)
PUBLIC = crypto.signing_public_key(SEED)
ACTIONS = st.sampled_from(
    ["case.submitted", "case.read", "user.login", "case.status_changed", "unit.created"]
)
DETAILS = st.dictionaries(
    st.sampled_from(["status", "count", "reason", "unit_id"]),
    st.one_of(st.integers(0, 1000), st.text(max_size=10), st.booleans()),
    max_size=3,
)
EVENTS = st.lists(
    st.tuples(st.booleans(), ACTIONS, DETAILS, st.one_of(st.none(), st.text(max_size=8))),
    min_size=1,
    max_size=12,
)


def _export(events: list[tuple[bool, str, dict[str, Any], str | None]]) -> list[dict[str, Any]]:
    """Events in both chains, interleaved as drawn; each line a dict (the checkpoint apart)."""
    heads = {STAFF_CHAIN: (0, GENESIS_HASH), REPORTER_CHAIN: (0, GENESIS_HASH)}
    lines = []
    for in_staff_chain, action, details, case_id in events:
        chain = STAFF_CHAIN if in_staff_chain else REPORTER_CHAIN
        seq = heads[chain][0] + 1
        fields = (
            staff_fields(
                seq=seq,
                occurred=f"2026-01-01T00:00:{seq % 60:02d}+00:00",
                actor="system",
                action=action,
                case_id=case_id,
                details=details,
            )
            if chain == STAFF_CHAIN
            else reporter_fields(
                seq=seq, day="2026-01-01", action=action, case_id=case_id, details=details
            )
        )
        digest = chain_hash(heads[chain][1], fields)
        heads[chain] = (seq, digest)
        lines.append(json.loads(export_line(chain, fields, digest)))
    return lines


def _verify(lines: list[dict[str, Any]], heads: dict[str, tuple[int, str]]) -> Any:
    checkpoint = sign_checkpoint(
        SEED,
        seq=heads[STAFF_CHAIN][0],
        hash=heads[STAFF_CHAIN][1],
        reporter_seq=heads[REPORTER_CHAIN][0],
        reporter_hash=heads[REPORTER_CHAIN][1],
        signed_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )
    text = [json.dumps(line, sort_keys=True) for line in lines] + [checkpoint_line(checkpoint)]
    return verify_export(text, PUBLIC)


def _heads(lines: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    heads = {STAFF_CHAIN: (0, GENESIS_HASH), REPORTER_CHAIN: (0, GENESIS_HASH)}
    for line in lines:
        heads[line["chain"]] = (line["seq"], line["hash"])
    return heads


@BOUNDED
@given(events=EVENTS)
def test_any_sequence_of_events_verifies(events: list[Any]) -> None:
    lines = _export(events)
    result = _verify(lines, _heads(lines))
    assert result.ok, result.reason


@BOUNDED
@given(events=EVENTS, data=st.data())
def test_a_changed_event_is_named_at_its_sequence_number(
    events: list[Any], data: st.DataObject
) -> None:
    lines = _export(events)
    heads = _heads(lines)
    target = data.draw(st.integers(0, len(lines) - 1), label="target")
    victim = lines[target]
    field = data.draw(st.sampled_from(["action", "details", "case_id"]), label="field")
    victim[field] = {
        "action": victim["action"] + ".forged",
        "details": {**victim["details"], "forged": True},
        "case_id": (victim["case_id"] or "") + "x",
    }[field]

    result = _verify(lines, heads)
    assert not result.ok
    assert (result.chain, result.first_bad) == (victim["chain"], victim["seq"])


@BOUNDED
@given(events=EVENTS, data=st.data())
def test_a_removed_event_is_named_at_its_sequence_number(
    events: list[Any], data: st.DataObject
) -> None:
    lines = _export(events)
    heads = _heads(lines)
    removed = lines.pop(data.draw(st.integers(0, len(lines) - 1), label="removed"))

    result = _verify(lines, heads)
    assert not result.ok
    assert (result.chain, result.first_bad) == (removed["chain"], removed["seq"])


@BOUNDED
@given(events=EVENTS, data=st.data())
def test_two_events_swapped_in_a_chain_are_named_at_the_first(
    events: list[Any], data: st.DataObject
) -> None:
    lines = _export(events)
    heads = _heads(lines)
    chain = data.draw(st.sampled_from([STAFF_CHAIN, REPORTER_CHAIN]), label="chain")
    positions = [n for n, line in enumerate(lines) if line["chain"] == chain]
    if len(positions) < 2:
        return
    first = data.draw(st.integers(0, len(positions) - 2), label="first")
    a, b = positions[first], positions[first + 1]
    lines[a], lines[b] = lines[b], lines[a]

    result = _verify(lines, heads)
    assert not result.ok
    assert (result.chain, result.first_bad) == (chain, first + 1)


@BOUNDED
@given(events=EVENTS, data=st.data(), action=ACTIONS)
def test_an_inserted_event_chained_in_correctly_is_still_caught(
    events: list[Any], data: st.DataObject, action: str
) -> None:
    lines = _export(events)
    heads = _heads(lines)
    staff = [n for n, line in enumerate(lines) if line["chain"] == STAFF_CHAIN]
    total = len(staff)
    # After the k-th staff event (0: at the start), a forged event with the next
    # number, hashed onto its predecessor as the real ones are.
    after = data.draw(st.integers(0, total), label="after")
    previous = lines[staff[after - 1]]["hash"] if after else GENESIS_HASH
    fields = staff_fields(
        seq=after + 1,
        occurred="2026-01-01T00:00:00+00:00",
        actor="system",
        action=action,
        case_id=None,
        details={"forged": True},
    )
    forged = json.loads(export_line(STAFF_CHAIN, fields, chain_hash(previous, fields)))
    position = staff[after - 1] + 1 if after else 0
    lines.insert(position, forged)

    result = _verify(lines, heads)
    assert not result.ok
    # The real event that now follows no longer fits; past the end, the checkpoint says so.
    assert (result.chain, result.first_bad) == (STAFF_CHAIN, min(after + 2, total + 1))
