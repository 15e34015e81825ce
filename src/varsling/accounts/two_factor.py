"""Staff two-factor login: TOTP with one-time recovery codes.

Every account has one `two_factor` row from its creation, MAC'd with a key
derived from the password pepper (configuration, never in the database):

- the TOTP secret is sealed under another pepper-derived key, bound to the account;
- recovery codes are kept only as keyed digests, and one is removed when used;
- `last_step` is the last TOTP time step accepted, so no code works twice.

A database writer who deletes the row, empties it (to turn two-factor off),
or copies another account's row gets a refused login (`two_factor_altered`),
never a login without the second factor. What they can do is put back an
older row of the same account, which they must have saved before: that is
written down in docs/staff-web.md, and every enrolment and reset is in the
audit trail with its generation number.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from markupsafe import Markup
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts.models import LoginSession, TwoFactor, User
from varsling.config import Settings
from varsling.errors import Conflict, InvalidInput

DIGEST_BYTES: Final = 32
# A started enrolment (the QR code shown) must be confirmed within this long.
PENDING_SECONDS: Final = 15 * 60
ISSUER: Final = "Varsling"

Factor = Literal["totp", "recovery"]


class TwoFactorAltered(Conflict):
    """The account's two-factor row is missing or does not carry its MAC."""

    code = "two_factor_altered"


@dataclass(frozen=True)
class _Keys:
    tag: bytes
    seal: bytes
    recovery: bytes


def _keys(settings: Settings) -> _Keys:
    pepper = settings.secret("password_pepper")
    return _Keys(
        tag=crypto.hkdf(pepper, label="varsling/two-factor/tag"),
        seal=crypto.hkdf(pepper, label="varsling/two-factor/seal"),
        recovery=crypto.hkdf(pepper, label="varsling/two-factor/recovery"),
    )


def _tag(keys: _Keys, row: TwoFactor) -> bytes:
    message = crypto.context(
        "varsling/two-factor/v1",
        row.user_id,
        row.generation,
        row.sealed_secret or b"",
        row.last_step,
        row.recovery_digests,
    )
    return hmac.digest(keys.tag, message, "sha256")


def _retag(keys: _Keys, row: TwoFactor) -> None:
    row.tag = _tag(keys, row)


def new_row(settings: Settings, user_id: int, generation: int = 0) -> TwoFactor:
    """The row of an account without two-factor."""
    row = TwoFactor(
        user_id=user_id,
        sealed_secret=None,
        last_step=0,
        recovery_digests=b"",
        generation=generation,
        tag=b"",
    )
    _retag(_keys(settings), row)
    return row


def _intact(settings: Settings, row: TwoFactor | None) -> bool:
    return row is not None and hmac.compare_digest(row.tag, _tag(_keys(settings), row))


def state(session: Session, settings: Settings, user_id: int) -> Literal["on", "off", "altered"]:
    """Whether the account uses two-factor, as administrators see it (nothing locked)."""
    row = session.get(TwoFactor, user_id)
    if row is None or not _intact(settings, row):
        return "altered"
    return "on" if is_enrolled(row) else "off"


def checked_row(session: Session, settings: Settings, user_id: int) -> TwoFactor:
    """The account's row, locked for update; TwoFactorAltered if it is missing or forged."""
    row = session.get(TwoFactor, user_id, with_for_update=True)
    if row is None or not _intact(settings, row):
        raise TwoFactorAltered(
            "This account's two-factor settings have been altered in the database; "
            "ask an administrator to check the audit trail and reset two-factor."
        )
    return row


def is_enrolled(row: TwoFactor) -> bool:
    return row.sealed_secret is not None


def is_required(settings: Settings, roles: Iterable[str]) -> bool:
    return bool(set(roles) & set(settings.two_factor_roles))


def _secret_context(user_id: int, generation: int) -> bytes:
    return crypto.context("varsling/two-factor/secret", user_id, generation)


# --------------------------------------------------------------------------
# Enrolment: the secret lives in the page (sealed) until a code confirms it


@dataclass(frozen=True)
class PendingEnrolment:
    """A new secret as the enrolment page shows it, and the sealed form field carrying it."""

    secret_text: str
    uri: str
    sealed: str


def start_enrolment(
    settings: Settings, user: User, *, now: float | None = None
) -> PendingEnrolment:
    """A fresh secret; nothing is stored until `confirm_enrolment` sees a code from it."""
    secret = crypto.new_totp_secret()
    issued = int(time.time() if now is None else now)
    payload = json.dumps({"s": base64.b64encode(secret).decode(), "t": issued}).encode()
    sealed = crypto.seal(
        _keys(settings).seal,
        payload,
        context=crypto.context("varsling/two-factor/pending", user.id),
    )
    return PendingEnrolment(
        secret_text=crypto.totp_secret_text(secret),
        uri=crypto.totp_uri(secret, account=user.username, issuer=ISSUER),
        sealed=base64.urlsafe_b64encode(sealed).decode(),
    )


def pending_secret(settings: Settings, user_id: int, sealed: str, *, now: float) -> bytes | None:
    """The secret carried by an enrolment form, or None if forged, foreign or too old."""
    try:
        blob = base64.urlsafe_b64decode(sealed.encode())
        payload = json.loads(
            crypto.open_sealed(
                _keys(settings).seal,
                blob,
                context=crypto.context("varsling/two-factor/pending", user_id),
            )
        )
        secret = base64.b64decode(payload["s"])
        issued = int(payload["t"])
    except (crypto.CryptoError, binascii.Error, ValueError, KeyError, TypeError):
        return None
    if not 0 <= now - issued <= PENDING_SECONDS:
        return None
    return secret


def confirm_enrolment(
    session: Session, settings: Settings, user_id: int, sealed: str, code: str, *, now: float
) -> list[str]:
    """Store the secret once a code from it checks out; the new recovery codes (shown once).

    Enrolling again replaces the secret and every recovery code.
    """
    secret = pending_secret(settings, user_id, sealed, now=now)
    if secret is None:
        raise InvalidInput("The set-up has expired or is not valid; start it again.")
    row = checked_row(session, settings, user_id)
    step = crypto.totp_match(secret, code, now_step=crypto.totp_step(now), after_step=0)
    if step is None:
        raise InvalidInput("The code does not match; check the time on your phone and try again.")
    keys = _keys(settings)
    codes = crypto.new_recovery_codes()
    row.generation += 1
    row.sealed_secret = crypto.seal(
        keys.seal, secret, context=_secret_context(user_id, row.generation)
    )
    row.last_step = step
    row.recovery_digests = b"".join(
        crypto.recovery_digest(keys.recovery, user_id, c) for c in codes
    )
    _retag(keys, row)
    audit.record(
        session,
        actor=f"user:{user_id}",
        action="user.two_factor_enrolled",
        details={"user_id": user_id, "generation": row.generation},
    )
    return codes


# --------------------------------------------------------------------------
# Checking a code at login


def check_code(
    session: Session, settings: Settings, row: TwoFactor, code: str, *, now: float
) -> Factor | None:
    """Accept a TOTP code or an unused recovery code (using it up), or None.

    The caller holds `row` from `checked_row` (locked); the change is in the
    caller's transaction.
    """
    keys = _keys(settings)
    if row.sealed_secret is None:
        return None
    secret = crypto.open_sealed(
        keys.seal, row.sealed_secret, context=_secret_context(row.user_id, row.generation)
    )
    step = crypto.totp_match(secret, code, now_step=crypto.totp_step(now), after_step=row.last_step)
    if step is not None:
        row.last_step = step
        _retag(keys, row)
        return "totp"
    recovery = crypto.normalize_recovery_code(code)
    if recovery is None:
        return None
    digest = crypto.recovery_digest(keys.recovery, row.user_id, recovery)
    digests = [
        row.recovery_digests[i : i + DIGEST_BYTES]
        for i in range(0, len(row.recovery_digests), DIGEST_BYTES)
    ]
    for index, candidate in enumerate(digests):
        if hmac.compare_digest(candidate, digest):
            del digests[index]
            row.recovery_digests = b"".join(digests)
            _retag(keys, row)
            audit.record(
                session,
                actor=f"user:{row.user_id}",
                action="user.recovery_code_used",
                details={"user_id": row.user_id, "left": len(digests)},
            )
            return "recovery"
    return None


def recovery_codes_left(row: TwoFactor) -> int:
    return len(row.recovery_digests) // DIGEST_BYTES


# --------------------------------------------------------------------------
# An administrator's reset


def reset_two_factor(session: Session, settings: Settings, user_id: int, *, actor: str) -> None:
    """Turn the account's two-factor off (lost phone) and end its sessions; audited.

    A missing or altered row is replaced too: the reset is how an
    administrator repairs one, after reading the audit trail.
    """
    user = session.get(User, user_id)
    if user is None:
        raise InvalidInput(f"There is no account {user_id}.")
    row = session.get(TwoFactor, user_id, with_for_update=True)
    generation = (row.generation if row is not None else 0) + 1
    if row is not None:
        session.delete(row)
        session.flush()
    session.add(new_row(settings, user_id, generation))
    ended = session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    audit.record(
        session,
        actor=actor,
        action="user.two_factor_reset",
        details={
            "user_id": user_id,
            "generation": generation,
            "sessions_ended": int(getattr(ended, "rowcount", 0) or 0),
        },
    )


def accounts_without_rows(session: Session) -> list[int]:
    """Accounts with no two-factor row at all (for `varsling migrate` and warnings)."""
    have = select(TwoFactor.user_id)
    return list(session.execute(select(User.id).where(User.id.not_in(have))).scalars())


def qr_svg(uri: str, label: str) -> Markup:
    """The enrolment URI as an inline SVG QR code, drawn here (no image service)."""
    # Imported here: only the enrolment page draws one, and every account command
    # loads this module.
    import segno

    svg = segno.make(uri, error="m").svg_inline(
        scale=4, border=4, dark="#000", light="#fff", omitsize=False
    )
    return Markup('<div class="qr-code" role="img" aria-label="{}">{}</div>').format(
        # segno writes the SVG itself (paths and numbers only, the URI is not in it).
        label,
        Markup(svg),  # noqa: S704
    )
