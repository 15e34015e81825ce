"""Who is excluded from a case, stored so that no row names them.

Each excluded user is kept as HMAC-SHA256(key, case id, user id), with a key
derived from the installation's code pepper (configuration, never the
database): the row says how many were left out, not who. One row per case
carries every digest and a MAC over the case id and all of them, written
when the case is made even when nobody is left out, so a database writer who
deletes an exclusion, the row, or copies another case's row is noticed: the
check then refuses instead of answering "not excluded".

What stays visible to the database: who holds a wrapped key for the case.
"The unit's people minus the key holders" still hints at who was left out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from sqlalchemy.orm import Session

from varsling import crypto
from varsling.cases.models import CaseExclusion
from varsling.config import Settings
from varsling.errors import Conflict

DIGEST_BYTES = 32
_KEY_LABEL = "varsling/case-exclusion/v1"


class ExclusionsAltered(Conflict):
    """The case's exclusions were changed behind the service's back: grant nothing."""

    code = "exclusions_altered"


def exclusion_key(pepper: bytes) -> bytes:
    """The HMAC key for exclusions, derived from the code pepper with its own label."""
    return crypto.hkdf(pepper, label=_KEY_LABEL)


def user_digest(key: bytes, case_id: str, user_id: int) -> bytes:
    message = crypto.context("varsling/case-exclusion/user", case_id, user_id)
    return hmac.new(key, message, hashlib.sha256).digest()


def list_tag(key: bytes, case_id: str, digests: bytes) -> bytes:
    message = crypto.context("varsling/case-exclusion/list", case_id, digests)
    return hmac.new(key, message, hashlib.sha256).digest()


def exclusion_row(key: bytes, case_id: str, user_ids: Iterable[int]) -> CaseExclusion:
    """The case's one exclusion row; digests sorted, so their order says nothing."""
    digests = b"".join(sorted({user_digest(key, case_id, u) for u in user_ids}))
    return CaseExclusion(case_id=case_id, digests=digests, tag=list_tag(key, case_id, digests))


def _key(settings: Settings) -> bytes:
    return exclusion_key(settings.secret("code_pepper"))


def record_exclusions(
    session: Session, settings: Settings, case_id: str, user_ids: Iterable[int]
) -> None:
    """Write the exclusion row of a new case (also when `user_ids` is empty)."""
    session.add(exclusion_row(_key(settings), case_id, user_ids))


def add_exclusions(
    session: Session, settings: Settings, case_id: str, user_ids: Iterable[int]
) -> None:
    """Exclude more users from an existing case (e.g. a handler marking a conflict)."""
    key = _key(settings)
    row = _checked_row(session, key, case_id)
    digests = {row.digests[i : i + DIGEST_BYTES] for i in range(0, len(row.digests), DIGEST_BYTES)}
    digests |= {user_digest(key, case_id, u) for u in user_ids}
    row.digests = b"".join(sorted(digests))
    row.tag = list_tag(key, case_id, row.digests)
    session.flush()


def is_excluded(session: Session, settings: Settings, case_id: str, user_id: int) -> bool:
    """Whether `user_id` was named as involved in the case; every key grant asks first.

    Raises ExclusionsAltered when the row is missing or does not match its MAC.
    """
    key = _key(settings)
    row = _checked_row(session, key, case_id)
    wanted = user_digest(key, case_id, user_id)
    found = False
    for i in range(0, len(row.digests), DIGEST_BYTES):
        found |= hmac.compare_digest(row.digests[i : i + DIGEST_BYTES], wanted)
    return found


def _checked_row(session: Session, key: bytes, case_id: str) -> CaseExclusion:
    row = session.get(CaseExclusion, case_id)
    if (
        row is None
        or len(row.digests) % DIGEST_BYTES
        or not hmac.compare_digest(row.tag, list_tag(key, case_id, row.digests))
    ):
        raise ExclusionsAltered(
            "The record of who is excluded from this case has been altered outside the "
            "service, so no access to it can be granted. Tell the administrator and auditors."
        )
    return row
