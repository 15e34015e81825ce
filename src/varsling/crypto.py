"""Varsling's cryptography: bytes in, bytes out.

Pure on purpose (an import-linter contract keeps web, database and settings
code out), so it can be reviewed and reused by a client on its own. Nothing
here is hand-rolled beyond composing `cryptography` and `argon2-cffi`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import struct
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from varsling import argon2_memory

KEY_BYTES = 32
_V1 = b"\x01"
_NONCE_BYTES = 12

# Suite tags, the first byte of every stored public key, private key and
# wrapped key, so that old X25519 material stays readable beside the default.
SUITE_X25519 = 0x01
SUITE_MLKEM768_X25519 = 0x02
DEFAULT_SUITE = SUITE_MLKEM768_X25519

_SUITES = {
    SUITE_X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    SUITE_MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305
    ),
}
_MLKEM768_SEED_BYTES = 64
_MLKEM768_PUBLIC_BYTES = 1184
_X25519_BYTES = 32

CASE_CODE_DIGITS = 20


class CryptoError(Exception):
    """A ciphertext, key or parameter string did not check out."""


# --------------------------------------------------------------------------
# Symmetric sealing with bound context


def new_key() -> bytes:
    """A fresh random 256-bit key (a case key or identity key)."""
    return os.urandom(KEY_BYTES)


def context(*parts: str | int | bytes) -> bytes:
    """Unambiguous associated data: each part length-prefixed."""
    out = bytearray()
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def content_context(case_id: str, kind: str, entry_id: str | int) -> bytes:
    """The associated data that binds a piece of case content to its place."""
    return context("varsling/content", case_id, kind, entry_id)


def seal(key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """ChaCha20-Poly1305; `context` is authenticated, not stored."""
    nonce = os.urandom(_NONCE_BYTES)
    return _V1 + nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, _V1 + context)


def open_sealed(key: bytes, blob: bytes, *, context: bytes) -> bytes:
    """Open what `seal` made; fails for another key, context or any tampering."""
    if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _V1:
        raise CryptoError("unknown ciphertext format")
    nonce = blob[1 : 1 + _NONCE_BYTES]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[1 + _NONCE_BYTES :], _V1 + context)
    except InvalidTag as exc:
        raise CryptoError("ciphertext does not open with this key and context") from exc


def hkdf(secret: bytes, *, label: str, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 with a label naming the key's purpose."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode()).derive(
        secret
    )


def version_tag(key: bytes, case_id: str, version: int) -> str:
    """An opaque tag for one version of a case's sealed manifest (HMAC under a key
    derived from the case key): only a key holder can make it or tell versions apart."""
    tag_key = hkdf(key, label="varsling/manifest-tag")
    message = context("varsling/manifest", case_id, version)
    return hmac.new(tag_key, message, hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------
# Chunked sealing for files: each chunk knows its index and whether it is last


def seal_chunk(key: bytes, chunk: bytes, *, context: bytes, index: int, last: bool) -> bytes:
    """Seal one chunk of a stream; reordering, dropping or cutting off fails."""
    return seal(key, chunk, context=context + struct.pack(">Q?", index, last))


def open_chunk(key: bytes, blob: bytes, *, context: bytes, index: int, last: bool) -> bytes:
    """Open one chunk at the position and finality the reader expects."""
    return open_sealed(key, blob, context=context + struct.pack(">Q?", index, last))


# --------------------------------------------------------------------------
# Argon2id


# The most any stored parameter string may ask for (1 GiB, 20 passes, 8 lanes).
ARGON2_MAX_MEMORY_KIB = 1024 * 1024
ARGON2_MAX_TIME_COST = 20
ARGON2_MAX_PARALLELISM = 8


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost; stored beside every value derived with it."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 1

    def encode(self) -> str:
        return f"argon2id$v=19$m={self.memory_kib},t={self.time_cost},p={self.parallelism}"

    @classmethod
    def decode(cls, text: str) -> Argon2Params:
        # [0-9], not \d: \d also matches non-ASCII digits, which int() accepts.
        match = re.fullmatch(r"argon2id\$v=19\$m=([0-9]+),t=([0-9]+),p=([0-9]+)", text)
        if match is None:
            raise CryptoError(f"unknown Argon2 parameter string: {text!r}")
        memory, time_cost, lanes = (int(g) for g in match.groups())
        # Argon2's own minimums, so a bad string fails here and not at the next login;
        # and ceilings, so a database writer cannot make a login allocate terabytes.
        if time_cost < 1 or lanes < 1 or memory < 8 * lanes:
            raise CryptoError(f"Argon2 parameters out of range: {text!r}")
        if memory > ARGON2_MAX_MEMORY_KIB or time_cost > ARGON2_MAX_TIME_COST:
            raise CryptoError(f"Argon2 parameters above the allowed ceiling: {text!r}")
        if lanes > ARGON2_MAX_PARALLELISM:
            raise CryptoError(f"Argon2 parameters above the allowed ceiling: {text!r}")
        return cls(time_cost=time_cost, memory_kib=memory, parallelism=lanes)


def argon2id(secret: bytes, salt: bytes, params: Argon2Params, length: int = KEY_BYTES) -> bytes:
    """Raw Argon2id output, with its memory from the process's bounded pool of buffers."""
    return argon2_memory.pool().hash_raw(
        secret,
        salt,
        time_cost=params.time_cost,
        memory_kib=params.memory_kib,
        parallelism=params.parallelism,
        length=length,
    )


# --------------------------------------------------------------------------
# Passwords: one Argon2id run gives both the verifier and the key


@dataclass(frozen=True)
class LoginSecrets:
    verifier: bytes
    key: bytes


def new_salt() -> bytes:
    return os.urandom(16)


# The scheme prefix of a peppered password's stored parameter string; a string
# without it is the older scheme (Argon2id of the bare password).
_PEPPERED_PREFIX = "hmac-sha256+"


@dataclass(frozen=True)
class PasswordParams:
    """How a stored password verifier was made: Argon2id cost, and whether peppered."""

    argon2: Argon2Params
    peppered: bool = True

    def encode(self) -> str:
        return (_PEPPERED_PREFIX if self.peppered else "") + self.argon2.encode()

    @classmethod
    def decode(cls, text: str) -> PasswordParams:
        if text.startswith(_PEPPERED_PREFIX):
            return cls(Argon2Params.decode(text[len(_PEPPERED_PREFIX) :]), peppered=True)
        return cls(Argon2Params.decode(text), peppered=False)


def pepper_password(password: str, pepper: bytes) -> bytes:
    """HMAC-SHA256 of the NFC password under the installation's password pepper."""
    normalized = unicodedata.normalize("NFC", password).encode()
    return hmac.new(pepper, context("varsling/password") + normalized, hashlib.sha256).digest()


def account_tag(pepper: bytes, username: str) -> bytes:
    """A keyed hash of a normalised username, to count its failed logins without naming it."""
    normalized = unicodedata.normalize("NFC", username.strip().lower()).encode()
    return hmac.new(pepper, context("varsling/login-account") + normalized, hashlib.sha256).digest()


def derive_login(
    password: str, salt: bytes, params: Argon2Params, *, pepper: bytes | None = None
) -> LoginSecrets:
    """Split one Argon2id(password) into the stored verifier and the private-key key.

    With `pepper` the password is first keyed with HMAC, so a database dump
    alone gives nothing to guess against; without it, the older scheme.
    """
    if pepper is not None:
        secret = pepper_password(password, pepper)
    else:
        # NFC, so the same password typed on another keyboard gives the same key.
        secret = unicodedata.normalize("NFC", password).encode()
    root = argon2id(secret, salt, params)
    return LoginSecrets(
        verifier=hkdf(root, label="varsling/login/verifier"),
        key=hkdf(root, label="varsling/login/private-key"),
    )


def verifier_matches(expected: bytes, candidate: bytes) -> bool:
    return hmac.compare_digest(expected, candidate)


# --------------------------------------------------------------------------
# User key pairs and HPKE key wrapping


@dataclass(frozen=True)
class KeyPair:
    private_key: bytes
    public_key: bytes


def generate_keypair(suite: int = DEFAULT_SUITE) -> KeyPair:
    """A user's HPKE key pair, both halves tagged with their suite."""
    x_private = x25519.X25519PrivateKey.generate()
    x_public = x_private.public_key().public_bytes_raw()
    tag = bytes([suite])
    if suite == SUITE_X25519:
        return KeyPair(tag + x_private.private_bytes_raw(), tag + x_public)
    if suite == SUITE_MLKEM768_X25519:
        seed = os.urandom(_MLKEM768_SEED_BYTES)
        ml_public = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
        return KeyPair(
            tag + seed + x_private.private_bytes_raw(),
            tag + ml_public + x_public,
        )
    raise CryptoError(f"unknown key suite {suite}")


def public_key_of(private_key: bytes) -> bytes:
    """The tagged public key belonging to a tagged private key (either suite)."""
    _, private = _load_private(private_key)
    suite = private_key[:1]
    if isinstance(private, x25519.X25519PrivateKey):
        return suite + private.public_key().public_bytes_raw()
    raw = private_key[1:]
    ml_public = (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM768_SEED_BYTES])
        .public_key()
        .public_bytes_raw()
    )
    x_public = x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM768_SEED_BYTES:])
    return suite + ml_public + x_public.public_key().public_bytes_raw()


def _load_public(
    public_key: bytes,
) -> tuple[int, x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey]:
    suite, raw = public_key[:1], public_key[1:]
    try:
        if suite == bytes([SUITE_X25519]) and len(raw) == _X25519_BYTES:
            return SUITE_X25519, x25519.X25519PublicKey.from_public_bytes(raw)
        if (
            suite == bytes([SUITE_MLKEM768_X25519])
            and len(raw) == _MLKEM768_PUBLIC_BYTES + _X25519_BYTES
        ):
            return SUITE_MLKEM768_X25519, hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUBLIC_BYTES]),
                x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUBLIC_BYTES:]),
            )
    except ValueError as exc:  # e.g. an ML-KEM key that is not a valid encoding
        raise CryptoError("invalid public key") from exc
    raise CryptoError("unknown public key format")


def _load_private(
    private_key: bytes,
) -> tuple[int, x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey]:
    suite, raw = private_key[:1], private_key[1:]
    try:
        if suite == bytes([SUITE_X25519]) and len(raw) == _X25519_BYTES:
            return SUITE_X25519, x25519.X25519PrivateKey.from_private_bytes(raw)
        if (
            suite == bytes([SUITE_MLKEM768_X25519])
            and len(raw) == _MLKEM768_SEED_BYTES + _X25519_BYTES
        ):
            return SUITE_MLKEM768_X25519, hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM768_SEED_BYTES]),
                x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM768_SEED_BYTES:]),
            )
    except ValueError as exc:
        raise CryptoError("invalid private key") from exc
    raise CryptoError("unknown private key format")


def wrap_info(case_id: str, purpose: str, recipient: str) -> bytes:
    """HPKE `info` naming the case, the purpose and the recipient."""
    return context("varsling/wrap", case_id, purpose, recipient)


def wrap_key(key: bytes, public_key: bytes, *, info: bytes) -> bytes:
    """Wrap a case key for one recipient's public key."""
    suite, public = _load_public(public_key)
    try:
        return bytes([suite]) + _SUITES[suite].encrypt(key, public, info=info)
    except ValueError as exc:  # e.g. a low-order X25519 point gives no shared secret
        raise CryptoError("cannot wrap for this public key") from exc


def unwrap_key(wrapped: bytes, private_key: bytes, *, info: bytes) -> bytes:
    """Unwrap a case key; fails for another recipient, case or purpose."""
    suite, private = _load_private(private_key)
    if not wrapped or wrapped[0] != suite:
        raise CryptoError("wrapped key is for another key suite")
    try:
        return _SUITES[suite].decrypt(wrapped[1:], private, info=info)
    except Exception as exc:  # the binding raises several types for a bad ciphertext
        raise CryptoError("wrapped key does not open with this private key") from exc


def seal_private_key(private_key: bytes, key: bytes, *, owner: str) -> bytes:
    """A user's private key sealed at rest (under a password or session key)."""
    return seal(key, private_key, context=context("varsling/private-key", owner))


def open_private_key(sealed: bytes, key: bytes, *, owner: str) -> bytes:
    return open_sealed(key, sealed, context=context("varsling/private-key", owner))


# --------------------------------------------------------------------------
# Session tokens


@dataclass(frozen=True)
class TokenSecrets:
    lookup: bytes
    key: bytes


def new_token() -> str:
    return secrets.token_urlsafe(32)


def derive_token(token: str, channel: str = "api") -> TokenSecrets:
    """The stored lookup hash and the key that opens the session's sealed secret.

    The channel ("api" for bearer tokens, "web" for the pages' cookie) is
    bound in, so a token issued on one channel is no session on the other.
    """
    raw = token.encode()
    return TokenSecrets(
        lookup=hashlib.sha256(b"varsling/session/lookup\x00" + context(channel) + raw).digest(),
        key=hkdf(context(channel) + raw, label="varsling/session/key"),
    )


# --------------------------------------------------------------------------
# Case codes


def new_case_code() -> str:
    """20 random decimal digits (about 66 bits)."""
    return f"{secrets.randbelow(10**CASE_CODE_DIGITS):0{CASE_CODE_DIGITS}d}"


def format_case_code(code: str) -> str:
    """Five groups of four digits, as shown to the reporter."""
    return " ".join(code[i : i + 4] for i in range(0, CASE_CODE_DIGITS, 4))


def normalize_case_code(text: str) -> str | None:
    """The 20 digits of a typed code (spaces and dashes allowed), or None."""
    digits = re.sub(r"[\s\-]", "", text)
    if len(digits) != CASE_CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


@dataclass(frozen=True)
class CaseCodeSecrets:
    lookup: bytes
    key: bytes


def derive_case_code(
    code: str, *, pepper: bytes, salt: bytes, params: Argon2Params
) -> CaseCodeSecrets:
    """Pepper with HMAC, stretch with Argon2id, split into a lookup value and a key."""
    peppered = hmac.new(pepper, code.encode(), hashlib.sha256).digest()
    root = argon2id(peppered, salt, params)
    return CaseCodeSecrets(
        lookup=hkdf(root, label="varsling/case-code/lookup"),
        key=hkdf(root, label="varsling/case-code/key"),
    )


# --------------------------------------------------------------------------
# The installation signing key (Ed25519): certificates, checkpoints, receipts

# Every signed message starts with one of these, so a signature made for one
# purpose can never be passed off as another.
SIGN_CERTIFICATE = "varsling/sign/certificate/v1"
SIGN_CHECKPOINT = "varsling/sign/checkpoint/v1"
SIGN_RECEIPT = "varsling/sign/receipt/v1"
SIGN_RECOVERY_KEY = "varsling/sign/recovery-key/v1"
_SIGN_DOMAINS = frozenset({SIGN_CERTIFICATE, SIGN_CHECKPOINT, SIGN_RECEIPT, SIGN_RECOVERY_KEY})
_PUBLIC_KEY_PREFIX = "varsling-ed25519:"
SIGNATURE_BYTES = 64


def signing_seed(secret: bytes) -> bytes:
    """The Ed25519 private seed derived from the configured VARSLING_SIGNING_KEY."""
    return hkdf(secret, label="varsling/signing-key/ed25519")


def signing_public_key(seed: bytes) -> bytes:
    """The raw 32-byte verifying key for a signing seed."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _signed_message(domain: str, message: bytes) -> bytes:
    if domain not in _SIGN_DOMAINS:
        raise CryptoError(f"unknown signature domain {domain!r}")
    return context(domain) + message


def sign(seed: bytes, domain: str, message: bytes) -> bytes:
    """Sign `message` for one purpose (`SIGN_CERTIFICATE`, `_CHECKPOINT` or `_RECEIPT`)."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return private.sign(_signed_message(domain, message))


def signature_valid(public_key: bytes, domain: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` was made by `public_key`'s owner over `message` for `domain`."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, _signed_message(domain, message)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def user_key_message(*, user_id: int, username: str, key_version: int, public_key: bytes) -> bytes:
    """What a user key certificate signs: the key bound to whose it is, and which version."""
    return context("varsling/user-key", user_id, username, key_version, public_key)


def certify_user_key(
    seed: bytes, *, user_id: int, username: str, key_version: int, public_key: bytes
) -> bytes:
    """The installation's certificate (signature) over one user's public key."""
    message = user_key_message(
        user_id=user_id, username=username, key_version=key_version, public_key=public_key
    )
    return sign(seed, SIGN_CERTIFICATE, message)


def user_key_certified(
    verifying_key: bytes,
    *,
    user_id: int,
    username: str,
    key_version: int,
    public_key: bytes,
    certificate: bytes | None,
) -> bool:
    """Whether `certificate` certifies exactly this key for this user and version."""
    if not certificate:
        return False
    return _certificate_valid(
        verifying_key, user_id, username, key_version, public_key, certificate
    )


@functools.lru_cache(maxsize=4096)
def _certificate_valid(
    verifying_key: bytes,
    user_id: int,
    username: str,
    key_version: int,
    public_key: bytes,
    certificate: bytes,
) -> bool:
    # A pure function of its arguments, so remembering answers is safe: a changed
    # row is another key. Listing units checks the same few people for every unit.
    message = user_key_message(
        user_id=user_id, username=username, key_version=key_version, public_key=public_key
    )
    return signature_valid(verifying_key, SIGN_CERTIFICATE, message, certificate)


def recovery_key_message(*, key_id: int, public_key: bytes) -> bytes:
    """What a recovery key certificate signs: the organisation's recovery public key."""
    return context("varsling/recovery-key", key_id, public_key)


def certify_recovery_key(seed: bytes, *, key_id: int, public_key: bytes) -> bytes:
    """The installation's certificate over the recovery public key (its own domain)."""
    return sign(seed, SIGN_RECOVERY_KEY, recovery_key_message(key_id=key_id, public_key=public_key))


def recovery_key_certified(
    verifying_key: bytes, *, key_id: int, public_key: bytes, certificate: bytes | None
) -> bool:
    """Whether `certificate` certifies exactly this recovery public key."""
    if not certificate:
        return False
    message = recovery_key_message(key_id=key_id, public_key=public_key)
    return signature_valid(verifying_key, SIGN_RECOVERY_KEY, message, certificate)


_RECOVERY_BEGIN = "-----BEGIN VARSLING RECOVERY KEY-----"
_RECOVERY_END = "-----END VARSLING RECOVERY KEY-----"
_RECOVERY_CHECKSUM_BYTES = 4


def encode_recovery_private_key(private_key: bytes) -> str:
    """The recovery private key as a text block to print once and keep offline.

    Base64 of the tagged key and a 4-byte SHA-256 checksum, so a mistyped or
    cut copy is told apart from a wrong key.
    """
    checksum = hashlib.sha256(b"varsling/recovery-key\x00" + private_key).digest()
    body = base64.b64encode(private_key + checksum[:_RECOVERY_CHECKSUM_BYTES]).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([_RECOVERY_BEGIN, *lines, _RECOVERY_END])


def parse_recovery_private_key(text: str) -> bytes:
    """The tagged private key from its text block; CryptoError when it does not check out."""
    inside = text.strip()
    if not inside.startswith(_RECOVERY_BEGIN) or not inside.endswith(_RECOVERY_END):
        raise CryptoError(
            f"a recovery key starts with {_RECOVERY_BEGIN} and ends with {_RECOVERY_END}"
        )
    body = re.sub(r"\s", "", inside[len(_RECOVERY_BEGIN) : -len(_RECOVERY_END)])
    try:
        raw = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise CryptoError("the recovery key is not valid base64") from exc
    private_key, checksum = raw[:-_RECOVERY_CHECKSUM_BYTES], raw[-_RECOVERY_CHECKSUM_BYTES:]
    expected = hashlib.sha256(b"varsling/recovery-key\x00" + private_key).digest()
    if len(raw) <= _RECOVERY_CHECKSUM_BYTES or not hmac.compare_digest(
        checksum, expected[:_RECOVERY_CHECKSUM_BYTES]
    ):
        raise CryptoError("the recovery key's checksum fails: it was copied wrongly")
    _load_private(private_key)
    return private_key


def format_signing_public_key(public_key: bytes) -> str:
    """The one-line text form of the verifying key that auditors and reporters keep."""
    return _PUBLIC_KEY_PREFIX + base64.urlsafe_b64encode(public_key).rstrip(b"=").decode()


def parse_signing_public_key(text: str) -> bytes:
    """The raw verifying key from its one-line text form (surrounding space ignored)."""
    line = text.strip()
    if not line.startswith(_PUBLIC_KEY_PREFIX):
        raise CryptoError(f"a Varsling public key starts with {_PUBLIC_KEY_PREFIX!r}")
    encoded = line[len(_PUBLIC_KEY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error) as exc:
        raise CryptoError("the public key is not valid base64") from exc
    if len(raw) != 32:
        raise CryptoError("an Ed25519 public key is 32 bytes")
    return raw


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 of the key, in groups of four hex digits, for comparing by eye or phone."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


# --------------------------------------------------------------------------
# Hashing helpers for the audit chain


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --------------------------------------------------------------------------
# Two-factor: TOTP (RFC 6238, SHA-1, 6 digits, 30 s, as authenticator apps expect)
# and one-time recovery codes

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
TOTP_SECRET_BYTES = 20
_TOTP_WINDOW = 1  # one step either side: clocks drift and people type slowly
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
_RECOVERY_CODE_CHARS = 12


def new_totp_secret() -> bytes:
    return os.urandom(TOTP_SECRET_BYTES)


def totp_secret_text(secret: bytes) -> str:
    """The secret as authenticator apps take it typed in: base32, no padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def _totp(secret: bytes) -> TOTP:
    # cryptography refuses SHA-1 keys shorter than 16 bytes; ours are 20.
    return TOTP(secret, TOTP_DIGITS, hashes.SHA1(), TOTP_STEP_SECONDS, enforce_key_length=True)  # noqa: S303


def totp_code(secret: bytes, step: int) -> str:
    """The code for one time step (`unix time // 30`)."""
    return _totp(secret).generate(step * TOTP_STEP_SECONDS).decode()


def totp_uri(secret: bytes, *, account: str, issuer: str) -> str:
    return _totp(secret).get_provisioning_uri(account, issuer)


def totp_step(unix_time: float) -> int:
    return int(unix_time) // TOTP_STEP_SECONDS


def totp_match(secret: bytes, code: str, *, now_step: int, after_step: int) -> int | None:
    """The time step `code` belongs to (within one step of now), or None.

    Steps at or before `after_step` (the last one used) never match, so a code
    seen over someone's shoulder cannot be used again.
    """
    typed = re.sub(r"[\s-]", "", code)
    if not re.fullmatch(rf"[0-9]{{{TOTP_DIGITS}}}", typed):
        return None
    found = None
    for step in range(now_step - _TOTP_WINDOW, now_step + _TOTP_WINDOW + 1):
        if step > after_step and hmac.compare_digest(totp_code(secret, step), typed):
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """Ten one-time codes, each 12 letters and digits in three groups of four."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_CODE_CHARS))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _RECOVERY_CODE_CHARS, 4)))
    return codes


def normalize_recovery_code(text: str) -> str | None:
    raw = re.sub(r"[\s-]", "", text).lower()
    if len(raw) != _RECOVERY_CODE_CHARS or any(c not in _RECOVERY_ALPHABET for c in raw):
        return None
    return "-".join(raw[i : i + 4] for i in range(0, _RECOVERY_CODE_CHARS, 4))


def recovery_digest(key: bytes, user_id: int, code: str) -> bytes:
    """A recovery code's keyed digest (the codes are random: no slow hash needed)."""
    return hmac.new(key, context("varsling/recovery", user_id, code), hashlib.sha256).digest()
