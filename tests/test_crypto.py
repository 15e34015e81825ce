"""Tests for varsling.crypto: sealing, chunks, Argon2id, key wrapping, tokens, case codes."""

from __future__ import annotations

import dataclasses
import re
import secrets

import pytest

from varsling import crypto
from varsling.crypto import (
    CASE_CODE_DIGITS,
    DEFAULT_SUITE,
    KEY_BYTES,
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    Argon2Params,
    CryptoError,
)

# Small Argon2id costs keep the suite fast; the defaults are checked separately.
FAST = Argon2Params(time_cost=1, memory_kib=8, parallelism=1)
SALT = b"s" * 16
OTHER_SALT = b"t" * 16
PEPPER = b"p" * 32
CODE = "12345678901234567890"

SUITES = [SUITE_MLKEM768_X25519, SUITE_X25519]

_NONCE_END = 1 + 12  # version byte, then a 96-bit nonce
_TAG_BYTES = 16


def flip(blob: bytes, index: int, bit: int = 0) -> bytes:
    """`blob` with one bit flipped."""
    out = bytearray(blob)
    out[index] ^= 1 << bit
    return bytes(out)


@pytest.fixture
def key() -> bytes:
    return crypto.new_key()


# --------------------------------------------------------------------------
# seal / open_sealed


def test_seal_round_trip(key: bytes) -> None:
    ad = crypto.content_context("case-1", "report", 1)
    for plaintext in (b"", b"x", "Rapport om varsling æøå".encode(), bytes(range(256)) * 40):
        assert crypto.open_sealed(key, crypto.seal(key, plaintext, context=ad), context=ad) == (
            plaintext
        )


def test_new_key_is_random_256_bits() -> None:
    first, second = crypto.new_key(), crypto.new_key()
    assert len(first) == KEY_BYTES == 32
    assert first != second


def test_sealed_blob_starts_with_version_byte_1(key: bytes) -> None:
    blob = crypto.seal(key, b"hello", context=b"ad")
    assert blob[0] == 0x01
    assert len(blob) == 1 + 12 + len(b"hello") + _TAG_BYTES


def test_two_seals_of_same_plaintext_differ(key: bytes) -> None:
    first = crypto.seal(key, b"same", context=b"ad")
    second = crypto.seal(key, b"same", context=b"ad")
    assert first != second
    assert first[1:_NONCE_END] != second[1:_NONCE_END]


@pytest.mark.parametrize(
    ("case_id", "kind", "entry_id"),
    [
        ("case-2", "report", 1),  # another case
        ("case-1", "message", 1),  # another kind
        ("case-1", "report", 2),  # another entry
        ("case-1", "report", "1x"),
    ],
)
def test_open_with_other_content_context_fails(
    key: bytes, case_id: str, kind: str, entry_id: str | int
) -> None:
    blob = crypto.seal(key, b"secret", context=crypto.content_context("case-1", "report", 1))
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, blob, context=crypto.content_context(case_id, kind, entry_id))


def test_open_with_wrong_key_fails(key: bytes) -> None:
    blob = crypto.seal(key, b"secret", context=b"ad")
    with pytest.raises(CryptoError):
        crypto.open_sealed(crypto.new_key(), blob, context=b"ad")


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(0, id="version"),
        pytest.param(1, id="nonce-first"),
        pytest.param(_NONCE_END - 1, id="nonce-last"),
        pytest.param(_NONCE_END, id="body-first"),
        pytest.param(_NONCE_END + 5, id="body-last"),
        pytest.param(-_TAG_BYTES, id="tag-first"),
        pytest.param(-1, id="tag-last"),
    ],
)
def test_flipped_bit_in_each_part_fails(key: bytes, position: int) -> None:
    blob = crypto.seal(key, b"secret", context=b"ad")
    assert crypto.open_sealed(key, blob, context=b"ad") == b"secret"
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, flip(blob, position), context=b"ad")


def test_every_single_bit_flip_fails(key: bytes) -> None:
    blob = crypto.seal(key, b"ten bytes!", context=b"ad")
    for index in range(len(blob)):
        for bit in range(8):
            with pytest.raises(CryptoError):
                crypto.open_sealed(key, flip(blob, index, bit), context=b"ad")


@pytest.mark.parametrize("length", [0, 1, 12, 13, 28])
def test_truncated_blob_fails(key: bytes, length: int) -> None:
    blob = crypto.seal(key, b"", context=b"ad")
    assert len(blob) == 29
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, blob[:length], context=b"ad")


def test_appended_byte_fails(key: bytes) -> None:
    blob = crypto.seal(key, b"secret", context=b"ad")
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, blob + b"\x00", context=b"ad")


# --------------------------------------------------------------------------
# context


def test_context_is_unambiguous() -> None:
    assert crypto.context("ab", "c") != crypto.context("a", "bc")
    assert crypto.context("a", "") != crypto.context("a")
    assert crypto.context("", "a") != crypto.context("a", "")
    assert crypto.context("a", "b") != crypto.context("b", "a")


def test_context_accepts_str_int_and_bytes() -> None:
    assert crypto.context("x", 7, b"\x00\xff") == (
        b"\x00\x00\x00\x01x" + b"\x00\x00\x00\x017" + b"\x00\x00\x00\x02\x00\xff"
    )


def test_content_context_separates_fields() -> None:
    assert crypto.content_context("case-1", "report", 1) != crypto.content_context(
        "case-1", "repor", "t1"
    )
    assert crypto.content_context("c", "k", 1) == crypto.content_context("c", "k", "1")


# --------------------------------------------------------------------------
# seal_chunk / open_chunk


def _seal_stream(key: bytes, ad: bytes, chunks: list[bytes]) -> list[bytes]:
    return [
        crypto.seal_chunk(key, chunk, context=ad, index=i, last=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
    ]


def _open_stream(key: bytes, ad: bytes, blobs: list[bytes]) -> bytes:
    return b"".join(
        crypto.open_chunk(key, blob, context=ad, index=i, last=i == len(blobs) - 1)
        for i, blob in enumerate(blobs)
    )


CHUNKS = [b"first chunk", b"second chunk", b"third chunk", b"end"]
FILE_AD = crypto.content_context("case-1", "file", 9)


def test_chunk_stream_round_trip(key: bytes) -> None:
    blobs = _seal_stream(key, FILE_AD, CHUNKS)
    assert _open_stream(key, FILE_AD, blobs) == b"".join(CHUNKS)


def test_single_chunk_stream_round_trip(key: bytes) -> None:
    blob = crypto.seal_chunk(key, b"only", context=FILE_AD, index=0, last=True)
    assert crypto.open_chunk(key, blob, context=FILE_AD, index=0, last=True) == b"only"


def test_swapped_chunks_fail(key: bytes) -> None:
    blobs = _seal_stream(key, FILE_AD, CHUNKS)
    blobs[1], blobs[2] = blobs[2], blobs[1]
    with pytest.raises(CryptoError):
        _open_stream(key, FILE_AD, blobs)


def test_dropped_middle_chunk_fails(key: bytes) -> None:
    blobs = _seal_stream(key, FILE_AD, CHUNKS)
    with pytest.raises(CryptoError):
        _open_stream(key, FILE_AD, blobs[:1] + blobs[2:])


def test_truncated_stream_fails(key: bytes) -> None:
    blobs = _seal_stream(key, FILE_AD, CHUNKS)
    # The reader of a stream cut after chunk 1 expects chunk 1 to be the last one.
    with pytest.raises(CryptoError):
        _open_stream(key, FILE_AD, blobs[:2])
    with pytest.raises(CryptoError):
        crypto.open_chunk(key, blobs[1], context=FILE_AD, index=1, last=True)


def test_last_chunk_opened_as_not_last_fails(key: bytes) -> None:
    blobs = _seal_stream(key, FILE_AD, CHUNKS)
    last = len(CHUNKS) - 1
    with pytest.raises(CryptoError):
        crypto.open_chunk(key, blobs[last], context=FILE_AD, index=last, last=False)


def test_chunk_of_another_file_fails(key: bytes) -> None:
    blobs = _seal_stream(key, FILE_AD, CHUNKS)
    other = crypto.content_context("case-1", "file", 10)
    with pytest.raises(CryptoError):
        crypto.open_chunk(key, blobs[0], context=other, index=0, last=False)


def test_chunk_does_not_open_as_plain_seal(key: bytes) -> None:
    blob = crypto.seal_chunk(key, b"data", context=FILE_AD, index=0, last=True)
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, blob, context=FILE_AD)


# --------------------------------------------------------------------------
# Argon2id and its parameters


def test_argon2_defaults_are_64_mib_3_passes_1_lane() -> None:
    defaults = Argon2Params()
    assert defaults.memory_kib == 64 * 1024
    assert defaults.time_cost == 3
    assert defaults.parallelism == 1


def test_argon2_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAST.time_cost = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "params",
    [
        Argon2Params(),
        FAST,
        Argon2Params(time_cost=4, memory_kib=262144, parallelism=4),
    ],
)
def test_argon2_params_encode_decode_round_trip(params: Argon2Params) -> None:
    encoded = params.encode()
    assert encoded.startswith("argon2id$v=19$")
    assert Argon2Params.decode(encoded) == params


def test_argon2_params_encoding_is_phc_style() -> None:
    assert Argon2Params().encode() == "argon2id$v=19$m=65536,t=3,p=1"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "argon2i$v=19$m=65536,t=3,p=1",
        "argon2d$v=19$m=65536,t=3,p=1",
        "argon2id$v=16$m=65536,t=3,p=1",
        "argon2id$v=19$m=65536,t=3",
        "argon2id$v=19$t=3,m=65536,p=1",
        "argon2id$v=19$m=65536,t=3,p=1$",
        " argon2id$v=19$m=65536,t=3,p=1",
        "argon2id$v=19$m=65536,t=3,p=1\n",
        "argon2id$v=19$m=-1,t=3,p=1",
        "argon2id$v=19$m=1.5,t=3,p=1",
        "argon2id$v=19$m=,t=3,p=1",
        # Non-ASCII digits (Arabic-Indic) are digits to \d and int(), not to us.
        "argon2id$v=19$m=\u0668,t=\u0661,p=\u0661",
        # Values Argon2 itself refuses.
        "argon2id$v=19$m=65536,t=0,p=1",
        "argon2id$v=19$m=65536,t=3,p=0",
        "argon2id$v=19$m=7,t=3,p=1",
        "argon2id$v=19$m=15,t=1,p=2",
    ],
)
def test_argon2_params_decode_rejects_garbage(text: str) -> None:
    with pytest.raises(CryptoError):
        Argon2Params.decode(text)


def test_argon2id_is_deterministic_and_sized() -> None:
    first = crypto.argon2id(b"secret", SALT, FAST)
    assert first == crypto.argon2id(b"secret", SALT, FAST)
    assert len(first) == KEY_BYTES
    assert len(crypto.argon2id(b"secret", SALT, FAST, length=64)) == 64


@pytest.mark.parametrize(
    "other",
    [
        Argon2Params(time_cost=2, memory_kib=8, parallelism=1),
        Argon2Params(time_cost=1, memory_kib=16, parallelism=1),
        Argon2Params(time_cost=1, memory_kib=16, parallelism=2),
    ],
)
def test_argon2id_output_depends_on_params(other: Argon2Params) -> None:
    assert crypto.argon2id(b"secret", SALT, FAST) != crypto.argon2id(b"secret", SALT, other)


def test_argon2id_output_depends_on_secret_and_salt() -> None:
    base = crypto.argon2id(b"secret", SALT, FAST)
    assert base != crypto.argon2id(b"secreT", SALT, FAST)
    assert base != crypto.argon2id(b"secret", OTHER_SALT, FAST)


def test_stored_argon2_params_are_honoured() -> None:
    # Derived when the installation used `stored`; the settings now say `current`.
    stored = Argon2Params(time_cost=2, memory_kib=16, parallelism=1)
    current = Argon2Params(time_cost=1, memory_kib=32, parallelism=1)
    at_signup = crypto.derive_login("correct horse", SALT, stored)
    saved = stored.encode()

    at_login = crypto.derive_login("correct horse", SALT, Argon2Params.decode(saved))
    assert at_login == at_signup
    assert crypto.derive_login("correct horse", SALT, current) != at_signup


# --------------------------------------------------------------------------
# Login secrets


def test_derive_login_is_deterministic() -> None:
    first = crypto.derive_login("correct horse", SALT, FAST)
    second = crypto.derive_login("correct horse", SALT, FAST)
    assert first == second
    assert len(first.verifier) == len(first.key) == KEY_BYTES


def test_login_verifier_is_not_the_key() -> None:
    secrets_ = crypto.derive_login("correct horse", SALT, FAST)
    assert secrets_.verifier != secrets_.key


def test_derive_login_depends_on_password_and_salt() -> None:
    base = crypto.derive_login("correct horse", SALT, FAST)
    other_password = crypto.derive_login("correct horsf", SALT, FAST)
    other_salt = crypto.derive_login("correct horse", OTHER_SALT, FAST)
    for other in (other_password, other_salt):
        assert other.verifier != base.verifier
        assert other.key != base.key


def test_new_salt_is_random_16_bytes() -> None:
    first, second = crypto.new_salt(), crypto.new_salt()
    assert len(first) == 16
    assert first != second


def test_verifier_matches() -> None:
    right = crypto.derive_login("correct horse", SALT, FAST).verifier
    wrong = crypto.derive_login("wrong horse", SALT, FAST).verifier
    assert crypto.verifier_matches(right, right)
    assert crypto.verifier_matches(right, bytes(right))
    assert not crypto.verifier_matches(right, wrong)
    assert not crypto.verifier_matches(wrong, right)
    assert not crypto.verifier_matches(right, right[:-1])
    assert not crypto.verifier_matches(right, flip(right, 0))


# --------------------------------------------------------------------------
# Key pairs and HPKE key wrapping


@pytest.fixture(params=SUITES, ids=["mlkem768-x25519", "x25519"])
def suite(request: pytest.FixtureRequest) -> int:
    return int(request.param)


INFO = crypto.wrap_info("case-1", "case-key", "user-1")


def test_default_suite_is_mlkem_hybrid() -> None:
    assert DEFAULT_SUITE == SUITE_MLKEM768_X25519 == 0x02
    pair = crypto.generate_keypair()
    assert pair.public_key[0] == 0x02
    assert pair.private_key[0] == 0x02
    assert len(pair.public_key) == 1 + 1184 + 32
    assert len(pair.private_key) == 1 + 64 + 32


def test_x25519_suite_key_shape() -> None:
    pair = crypto.generate_keypair(SUITE_X25519)
    assert pair.public_key[0] == pair.private_key[0] == 0x01
    assert len(pair.public_key) == len(pair.private_key) == 1 + 32


def test_generate_keypair_is_random(suite: int) -> None:
    first, second = crypto.generate_keypair(suite), crypto.generate_keypair(suite)
    assert first.private_key != second.private_key
    assert first.public_key != second.public_key


def test_generate_keypair_rejects_unknown_suite() -> None:
    with pytest.raises(CryptoError):
        crypto.generate_keypair(0x03)


def test_wrap_unwrap_round_trip(suite: int, key: bytes) -> None:
    pair = crypto.generate_keypair(suite)
    wrapped = crypto.wrap_key(key, pair.public_key, info=INFO)
    assert wrapped[0] == suite
    assert key not in wrapped
    assert crypto.unwrap_key(wrapped, pair.private_key, info=INFO) == key


def test_two_wraps_of_same_key_differ(suite: int, key: bytes) -> None:
    pair = crypto.generate_keypair(suite)
    first = crypto.wrap_key(key, pair.public_key, info=INFO)
    second = crypto.wrap_key(key, pair.public_key, info=INFO)
    assert first != second
    assert crypto.unwrap_key(second, pair.private_key, info=INFO) == key


def test_unwrap_with_another_users_private_key_fails(suite: int, key: bytes) -> None:
    alice, mallory = crypto.generate_keypair(suite), crypto.generate_keypair(suite)
    wrapped = crypto.wrap_key(key, alice.public_key, info=INFO)
    with pytest.raises(CryptoError):
        crypto.unwrap_key(wrapped, mallory.private_key, info=INFO)


@pytest.mark.parametrize(
    "other_info",
    [
        pytest.param(crypto.wrap_info("case-2", "case-key", "user-1"), id="other-case"),
        pytest.param(crypto.wrap_info("case-1", "identity-key", "user-1"), id="other-purpose"),
        pytest.param(crypto.wrap_info("case-1", "case-key", "user-2"), id="other-recipient"),
        pytest.param(b"", id="empty"),
    ],
)
def test_unwrap_with_other_info_fails(suite: int, key: bytes, other_info: bytes) -> None:
    pair = crypto.generate_keypair(suite)
    wrapped = crypto.wrap_key(key, pair.public_key, info=INFO)
    with pytest.raises(CryptoError):
        crypto.unwrap_key(wrapped, pair.private_key, info=other_info)


def test_wrap_info_is_unambiguous() -> None:
    assert crypto.wrap_info("case-1", "case-key", "user-1") != crypto.wrap_info(
        "case-1", "case-keyuser-1", ""
    )


@pytest.mark.parametrize("position", [0, 1, 40, -17, -1])
def test_tampered_wrapped_key_fails(suite: int, key: bytes, position: int) -> None:
    pair = crypto.generate_keypair(suite)
    wrapped = crypto.wrap_key(key, pair.public_key, info=INFO)
    with pytest.raises(CryptoError):
        crypto.unwrap_key(flip(wrapped, position), pair.private_key, info=INFO)


@pytest.mark.parametrize("length", [0, 1, 20])
def test_truncated_wrapped_key_fails(suite: int, key: bytes, length: int) -> None:
    pair = crypto.generate_keypair(suite)
    wrapped = crypto.wrap_key(key, pair.public_key, info=INFO)
    with pytest.raises(CryptoError):
        crypto.unwrap_key(wrapped[:length], pair.private_key, info=INFO)


@pytest.mark.parametrize(
    ("wrap_suite", "unwrap_suite"),
    [(SUITE_X25519, SUITE_MLKEM768_X25519), (SUITE_MLKEM768_X25519, SUITE_X25519)],
)
def test_wrapped_key_of_other_suite_fails(key: bytes, wrap_suite: int, unwrap_suite: int) -> None:
    recipient = crypto.generate_keypair(wrap_suite)
    other = crypto.generate_keypair(unwrap_suite)
    wrapped = crypto.wrap_key(key, recipient.public_key, info=INFO)
    with pytest.raises(CryptoError):
        crypto.unwrap_key(wrapped, other.private_key, info=INFO)
    # Relabelling the suite byte does not help either.
    relabelled = bytes([unwrap_suite]) + wrapped[1:]
    with pytest.raises(CryptoError):
        crypto.unwrap_key(relabelled, other.private_key, info=INFO)


def test_wrap_rejects_malformed_public_keys(key: bytes) -> None:
    x_pair = crypto.generate_keypair(SUITE_X25519)
    ml_pair = crypto.generate_keypair(SUITE_MLKEM768_X25519)
    malformed = [
        b"",
        b"\x01",
        b"\x03" + x_pair.public_key[1:],  # unknown suite
        b"\x02" + x_pair.public_key[1:],  # X25519 body under the hybrid tag
        b"\x01" + ml_pair.public_key[1:],  # hybrid body under the X25519 tag
        x_pair.public_key[:-1],
        ml_pair.public_key + b"\x00",
        b"\x02" + b"\xff" * (1184 + 32),  # not a valid ML-KEM encoding
        b"\x01" + b"\x00" * 32,  # low-order X25519 point
    ]
    for public_key in malformed:
        with pytest.raises(CryptoError):
            crypto.wrap_key(key, public_key, info=INFO)


def test_unwrap_rejects_malformed_private_keys(key: bytes) -> None:
    pair = crypto.generate_keypair()
    wrapped = crypto.wrap_key(key, pair.public_key, info=INFO)
    for private_key in (b"", b"\x02", pair.private_key[:-1], pair.private_key + b"\x00"):
        with pytest.raises(CryptoError):
            crypto.unwrap_key(wrapped, private_key, info=INFO)


# --------------------------------------------------------------------------
# Private keys at rest


def test_private_key_seal_round_trip(suite: int) -> None:
    pair = crypto.generate_keypair(suite)
    login = crypto.derive_login("correct horse", SALT, FAST)
    sealed = crypto.seal_private_key(pair.private_key, login.key, owner="user-1")
    assert pair.private_key not in sealed
    assert crypto.open_private_key(sealed, login.key, owner="user-1") == pair.private_key


def test_private_key_is_bound_to_owner(key: bytes) -> None:
    private_key = crypto.generate_keypair().private_key
    sealed = crypto.seal_private_key(private_key, key, owner="user-1")
    with pytest.raises(CryptoError):
        crypto.open_private_key(sealed, key, owner="user-2")


def test_private_key_does_not_open_with_other_key(key: bytes) -> None:
    private_key = crypto.generate_keypair().private_key
    sealed = crypto.seal_private_key(private_key, key, owner="user-1")
    wrong = crypto.derive_login("wrong horse", SALT, FAST).key
    with pytest.raises(CryptoError):
        crypto.open_private_key(sealed, wrong, owner="user-1")


def test_sealed_private_key_is_not_case_content(key: bytes) -> None:
    private_key = crypto.generate_keypair().private_key
    sealed = crypto.seal_private_key(private_key, key, owner="user-1")
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, sealed, context=crypto.context("user-1"))


# --------------------------------------------------------------------------
# Session tokens


def test_new_token_is_random_and_url_safe() -> None:
    tokens = {crypto.new_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_derive_token() -> None:
    token = crypto.new_token()
    first = crypto.derive_token(token)
    assert first == crypto.derive_token(token)
    assert first.lookup != first.key
    assert len(first.lookup) == len(first.key) == KEY_BYTES
    other = crypto.derive_token(crypto.new_token())
    assert other.lookup != first.lookup
    assert other.key != first.key


def test_token_lookup_is_not_plain_sha256() -> None:
    token = crypto.new_token()
    assert crypto.derive_token(token).lookup != crypto.sha256(token.encode())


def test_token_key_seals_session_secret() -> None:
    token = crypto.new_token()
    private_key = crypto.generate_keypair().private_key
    sealed = crypto.seal_private_key(private_key, crypto.derive_token(token).key, owner="u")
    key_again = crypto.derive_token(token).key
    assert crypto.open_private_key(sealed, key_again, owner="u") == private_key
    with pytest.raises(CryptoError):
        crypto.open_private_key(sealed, crypto.derive_token(token + "x").key, owner="u")


# --------------------------------------------------------------------------
# Case codes


def test_new_case_code_is_20_ascii_digits() -> None:
    codes = [crypto.new_case_code() for _ in range(50)]
    for code in codes:
        assert len(code) == CASE_CODE_DIGITS == 20
        assert re.fullmatch(r"[0-9]{20}", code)
    assert len(set(codes)) == len(codes)


def test_new_case_code_keeps_leading_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbelow", lambda _bound: 42)
    assert crypto.new_case_code() == "00000000000000000042"


def test_new_case_code_covers_full_range(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[int] = []

    def fake_randbelow(bound: int) -> int:
        bounds.append(bound)
        return bound - 1

    monkeypatch.setattr(secrets, "randbelow", fake_randbelow)
    assert crypto.new_case_code() == "9" * 20
    assert bounds == [10**20]


def test_format_case_code() -> None:
    assert crypto.format_case_code(CODE) == "1234 5678 9012 3456 7890"
    formatted = crypto.format_case_code(crypto.new_case_code())
    assert re.fullmatch(r"[0-9]{4}( [0-9]{4}){4}", formatted)


@pytest.mark.parametrize(
    "typed",
    [
        "12345678901234567890",
        "1234 5678 9012 3456 7890",
        "1234-5678-9012-3456-7890",
        "  1234 5678-9012  3456--7890 ",
        "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0",
    ],
)
def test_normalize_case_code_accepts_spaces_and_dashes(typed: str) -> None:
    assert crypto.normalize_case_code(typed) == CODE


def test_normalize_inverts_format() -> None:
    code = crypto.new_case_code()
    assert crypto.normalize_case_code(crypto.format_case_code(code)) == code


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("", id="empty"),
        pytest.param("1234 5678 9012 3456 789", id="19-digits"),
        pytest.param("1234 5678 9012 3456 78901", id="21-digits"),
        pytest.param("1234 5678 9012 3456 789O", id="letter-O"),
        pytest.param("abcd efgh ijkl mnop qrst", id="letters"),
        pytest.param("1234.5678.9012.3456.7890", id="dots"),
        pytest.param("1234_5678_9012_3456_7890", id="underscores"),
        pytest.param("+1234567890123456789", id="plus"),
        pytest.param("\u0661\u0662\u0663\u0664" * 5, id="arabic-indic-digits"),
        pytest.param("1234 5678 9012 3456 789\u0660", id="one-arabic-indic-digit"),
        pytest.param("\uff11\uff12\uff13\uff14" * 5, id="fullwidth-digits"),
        pytest.param("1234 5678 9012 3456 789\u00b2", id="superscript-two"),
        pytest.param("1234 5678 9012 3456 789\u0967", id="devanagari-digit"),
    ],
)
def test_normalize_case_code_rejects(typed: str) -> None:
    assert crypto.normalize_case_code(typed) is None


def test_derive_case_code_is_deterministic() -> None:
    first = crypto.derive_case_code(CODE, pepper=PEPPER, salt=SALT, params=FAST)
    second = crypto.derive_case_code(CODE, pepper=PEPPER, salt=SALT, params=FAST)
    assert first == second
    assert len(first.lookup) == len(first.key) == KEY_BYTES


def test_case_code_lookup_is_not_the_key() -> None:
    derived = crypto.derive_case_code(CODE, pepper=PEPPER, salt=SALT, params=FAST)
    assert derived.lookup != derived.key


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"code": "12345678901234567891"}, id="other-code"),
        pytest.param({"pepper": b"q" * 32}, id="other-pepper"),
        pytest.param({"salt": OTHER_SALT}, id="other-salt"),
        pytest.param({"params": Argon2Params(time_cost=2, memory_kib=8)}, id="other-time"),
        pytest.param({"params": Argon2Params(time_cost=1, memory_kib=16)}, id="other-memory"),
    ],
)
def test_derive_case_code_depends_on_every_input(change: dict[str, object]) -> None:
    base_args: dict[str, object] = {"code": CODE, "pepper": PEPPER, "salt": SALT, "params": FAST}
    base = crypto.derive_case_code(**base_args)  # type: ignore[arg-type]
    changed = crypto.derive_case_code(**(base_args | change))  # type: ignore[arg-type]
    assert changed.lookup != base.lookup
    assert changed.key != base.key


def test_case_code_is_peppered_before_argon2() -> None:
    # Without the pepper, a dump (lookup, salt, params) must not be enough to test a guess.
    derived = crypto.derive_case_code(CODE, pepper=PEPPER, salt=SALT, params=FAST)
    unpeppered = crypto.argon2id(CODE.encode(), SALT, FAST)
    assert derived.lookup != crypto.hkdf(unpeppered, label="varsling/case-code/lookup")


# --------------------------------------------------------------------------
# Helpers


def test_hkdf_labels_separate_keys() -> None:
    secret = b"root" * 8
    assert crypto.hkdf(secret, label="a") != crypto.hkdf(secret, label="b")
    assert crypto.hkdf(secret, label="a") == crypto.hkdf(secret, label="a")
    assert len(crypto.hkdf(secret, label="a", length=64)) == 64


def test_sha256_known_answer() -> None:
    assert crypto.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --------------------------------------------------------------------------
# The installation signing key


def test_signature_checks_only_for_its_domain_message_and_key() -> None:
    seed = crypto.signing_seed(b"an installation signing key of some length")
    public = crypto.signing_public_key(seed)
    signature = crypto.sign(seed, crypto.SIGN_CHECKPOINT, b"seq=5")

    assert len(signature) == crypto.SIGNATURE_BYTES
    assert crypto.signature_valid(public, crypto.SIGN_CHECKPOINT, b"seq=5", signature)
    # The same bytes signed as a checkpoint are no certificate and no receipt.
    assert not crypto.signature_valid(public, crypto.SIGN_CERTIFICATE, b"seq=5", signature)
    assert not crypto.signature_valid(public, crypto.SIGN_RECEIPT, b"seq=5", signature)
    assert not crypto.signature_valid(public, crypto.SIGN_CHECKPOINT, b"seq=6", signature)
    other = crypto.signing_public_key(crypto.signing_seed(b"another installation's key"))
    assert not crypto.signature_valid(other, crypto.SIGN_CHECKPOINT, b"seq=5", signature)
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    assert not crypto.signature_valid(public, crypto.SIGN_CHECKPOINT, b"seq=5", forged)
    assert not crypto.signature_valid(public, crypto.SIGN_CHECKPOINT, b"seq=5", b"short")
    with pytest.raises(crypto.CryptoError):
        crypto.sign(seed, "varsling/sign/something-else", b"seq=5")


def test_public_key_text_form_round_trips_and_refuses_garbage() -> None:
    public = crypto.signing_public_key(crypto.signing_seed(b"k" * 40))
    line = crypto.format_signing_public_key(public)
    assert "\n" not in line
    assert crypto.parse_signing_public_key(f"  {line}\n") == public
    for bad in ("", "ssh-ed25519 AAAA", line[:-4], "varsling-ed25519:!!!!"):
        with pytest.raises(crypto.CryptoError):
            crypto.parse_signing_public_key(bad)
    assert len(crypto.key_fingerprint(public).split()) == 8


# --------------------------------------------------------------------------
# Ceilings on stored Argon2 parameters, peppered passwords


@pytest.mark.parametrize(
    "text",
    [
        "argon2id$v=19$m=1048577,t=3,p=1",
        "argon2id$v=19$m=4294967295,t=3,p=1",
        "argon2id$v=19$m=65536,t=21,p=1",
        "argon2id$v=19$m=65536,t=3,p=9",
        "hmac-sha256+argon2id$v=19$m=1048577,t=3,p=1",
    ],
)
def test_argon2_params_above_the_ceiling_are_refused(text: str) -> None:
    with pytest.raises(CryptoError, match="ceiling"):
        crypto.PasswordParams.decode(text)


def test_argon2_params_at_the_ceiling_are_accepted() -> None:
    top = Argon2Params.decode("argon2id$v=19$m=1048576,t=20,p=8")
    assert (top.memory_kib, top.time_cost, top.parallelism) == (1048576, 20, 8)


def test_password_params_say_whether_the_password_is_peppered() -> None:
    peppered = crypto.PasswordParams(FAST, peppered=True)
    plain = crypto.PasswordParams(FAST, peppered=False)
    assert peppered.encode() == "hmac-sha256+" + FAST.encode()
    assert plain.encode() == FAST.encode()
    assert crypto.PasswordParams.decode(peppered.encode()) == peppered
    assert crypto.PasswordParams.decode(plain.encode()) == plain


def test_another_pepper_gives_another_verifier_and_key() -> None:
    right = crypto.derive_login("correct horse", SALT, FAST, pepper=PEPPER)
    assert crypto.derive_login("correct horse", SALT, FAST, pepper=PEPPER) == right
    assert crypto.derive_login("correct horse", SALT, FAST, pepper=b"o" * 32) != right
    assert crypto.derive_login("correct horse", SALT, FAST) != right


def test_account_tag_is_keyed_and_normalises_the_username() -> None:
    tag = crypto.account_tag(PEPPER, "hanne")
    assert crypto.account_tag(PEPPER, " Hanne ") == tag
    assert crypto.account_tag(b"o" * 32, "hanne") != tag
    assert crypto.account_tag(PEPPER, "hanna") != tag
    assert b"hanne" not in tag


# --------------------------------------------------------------------------
# User key certificates


@pytest.mark.parametrize("suite", SUITES)
def test_public_key_of_gives_the_pairs_public_half(suite: int) -> None:
    pair = crypto.generate_keypair(suite)
    assert crypto.public_key_of(pair.private_key) == pair.public_key
    assert crypto.public_key_of(crypto.generate_keypair(suite).private_key) != pair.public_key
    with pytest.raises(CryptoError):
        crypto.public_key_of(pair.private_key[:-1])


def _certified(seed: bytes, public_key: bytes) -> dict[str, object]:
    parts: dict[str, object] = {
        "user_id": 7,
        "username": "hanne",
        "key_version": 1,
        "public_key": public_key,
    }
    parts["certificate"] = crypto.certify_user_key(seed, **parts)  # type: ignore[arg-type]
    return parts


def test_a_certificate_binds_key_user_id_username_and_version() -> None:
    seed = crypto.signing_seed(b"an installation signing key of some length")
    verifying = crypto.signing_public_key(seed)
    public = crypto.generate_keypair().public_key
    parts = _certified(seed, public)
    assert crypto.user_key_certified(verifying, **parts)  # type: ignore[arg-type]
    changes: list[dict[str, object]] = [
        {"user_id": 8},
        {"username": "hanna"},
        {"key_version": 2},
        {"public_key": crypto.generate_keypair().public_key},
        {"certificate": None},
        {"certificate": b""},
        {"certificate": flip(parts["certificate"], 3)},  # type: ignore[arg-type]
    ]
    for change in changes:
        assert not crypto.user_key_certified(verifying, **{**parts, **change})  # type: ignore[arg-type]
    other = crypto.signing_public_key(crypto.signing_seed(b"another installation's key"))
    assert not crypto.user_key_certified(other, **parts)  # type: ignore[arg-type]


def test_the_certified_message_is_unambiguous() -> None:
    # Moving a character between username and key must not give the same message.
    first = crypto.user_key_message(user_id=1, username="ab", key_version=1, public_key=b"c")
    second = crypto.user_key_message(user_id=1, username="a", key_version=1, public_key=b"bc")
    third = crypto.user_key_message(user_id=11, username="", key_version=1, public_key=b"c")
    assert len({first, second, third}) == 3


def test_manifest_version_tags_are_opaque_and_bound_to_key_case_and_version() -> None:
    key, other_key = crypto.new_key(), crypto.new_key()
    tag = crypto.version_tag(key, "a" * 32, 3)
    assert tag == crypto.version_tag(key, "a" * 32, 3)
    assert len(tag) == 32
    others = {
        crypto.version_tag(key, "a" * 32, 4),
        crypto.version_tag(key, "b" * 32, 3),
        crypto.version_tag(other_key, "a" * 32, 3),
    }
    assert tag not in others
    assert len(others) == 3
