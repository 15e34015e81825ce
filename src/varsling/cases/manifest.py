"""A case's entries and files, authenticated as a set.

Each entry and file is sealed on its own, so a database writer cannot change
one unnoticed, but could delete one, or change what the rows say about it
(author, date, size). The manifest closes that gap: a list of every entry
(id, kind, author, date, ciphertext digest) and file (id, entry, uploader,
date, size, chunk count, digest of its sealed name), with a version counter,
sealed under the case key and bound to the case. Every writer that adds an
entry or a file re-seals it, holding a row lock on the case.

A writer could still put back an older sealed copy together with deleting
the newest entry. So each writing action's audit event carries an opaque tag
of the version it left (HMAC under the case key); the audit trail is
hash-chained and checkpointed, and a read checks every tag recorded for the
case belongs to a version up to the current one.

A case made before the manifest existed has none and no tag: it is "not yet
protected" until the next write by a key holder builds its manifest from the
rows as they are then. A problem a writer finds is kept in the manifest it
seals, so a later write never hides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.cases.models import Attachment, AttachmentChunk, Case, CaseEntry

NOT_YET_PROTECTED = "not_yet_protected"
TAG_DETAIL = "manifest"
FAILED_ACTION = "case.integrity_failed"


def _context(case_id: str) -> bytes:
    return crypto.content_context(case_id, "manifest", "case")


def _digest(blob: bytes) -> str:
    return crypto.sha256(blob).hex()[:32]


@dataclass
class Manifest:
    version: int = 0
    problem: str | None = None
    entries: dict[str, list[Any]] = field(default_factory=dict)
    files: dict[str, list[Any]] = field(default_factory=dict)

    def seal(self, key: bytes, case_id: str) -> bytes:
        plaintext = json.dumps(
            {
                "v": self.version,
                "problem": self.problem,
                "entries": self.entries,
                "files": self.files,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return crypto.seal(key, plaintext, context=_context(case_id))

    @classmethod
    def open(cls, key: bytes, case_id: str, blob: bytes) -> Manifest:
        data = json.loads(crypto.open_sealed(key, blob, context=_context(case_id)))
        return cls(int(data["v"]), data["problem"], data["entries"], data["files"])


def _entry_row(entry: CaseEntry) -> list[Any]:
    return [entry.kind, entry.author_id, entry.created_on.isoformat(), _digest(entry.ciphertext)]


def _file_row(attachment: Attachment) -> list[Any]:
    return [
        attachment.entry_id,
        attachment.uploaded_by,
        attachment.created_on.isoformat(),
        attachment.size_bytes,
        attachment.chunk_count,
        _digest(attachment.sealed_meta),
    ]


@dataclass(frozen=True)
class _Rows:
    """What the database holds for a case now, in the manifest's terms."""

    entries: dict[str, list[Any]]
    files: dict[str, list[Any]]
    chunks: dict[str, int]


def _rows(session: Session, case_id: str) -> _Rows:
    entries = session.execute(select(CaseEntry).where(CaseEntry.case_id == case_id)).scalars()
    files = session.execute(select(Attachment).where(Attachment.case_id == case_id)).scalars()
    chunk_counts = session.execute(
        select(AttachmentChunk.attachment_id, func.count())
        .join(Attachment, Attachment.id == AttachmentChunk.attachment_id)
        .where(Attachment.case_id == case_id)
        .group_by(AttachmentChunk.attachment_id)
    ).all()
    return _Rows(
        {str(e.id): _entry_row(e) for e in entries},
        {a.id: _file_row(a) for a in files},
        {attachment_id: int(count) for attachment_id, count in chunk_counts},
    )


def recorded_tags(session: Session, case_id: str) -> set[str]:
    """Every manifest tag the audit trail holds for the case, in both chains."""
    tags = set()
    staff = select(audit.AuditEvent.details).where(audit.AuditEvent.case_id == case_id)
    reporter = select(audit.ReporterAuditEvent.details).where(
        audit.ReporterAuditEvent.case_id == case_id
    )
    for details in session.execute(staff.union_all(reporter)).scalars():
        try:
            tag = json.loads(details).get(TAG_DETAIL)
        except (ValueError, AttributeError):
            continue
        if isinstance(tag, str):
            tags.add(tag)
    return tags


def _compare(manifest: Manifest, rows: _Rows) -> str | None:
    """The first way the rows differ from the manifest, or None."""
    if manifest.entries.keys() - rows.entries.keys():
        return "entry_missing"
    if rows.entries.keys() - manifest.entries.keys():
        return "entry_added"
    if any(rows.entries[i] != row for i, row in manifest.entries.items()):
        return "entry_changed"
    if manifest.files.keys() - rows.files.keys():
        return "file_missing"
    if rows.files.keys() - manifest.files.keys():
        return "file_added"
    if any(rows.files[i] != row for i, row in manifest.files.items()):
        return "file_changed"
    if any(rows.chunks.get(i, 0) != row[4] for i, row in manifest.files.items()):
        return "file_chunks_changed"
    return None


@dataclass(frozen=True)
class _Found:
    manifest: Manifest | None
    problem: str | None
    tags: set[str]


def _inspect(
    session: Session, case_id: str, key: bytes, sealed: bytes | None, rows: _Rows
) -> _Found:
    tags = recorded_tags(session, case_id)
    if sealed is None:
        return _Found(None, "manifest_missing" if tags else NOT_YET_PROTECTED, tags)
    try:
        manifest = Manifest.open(key, case_id, sealed)
    except (crypto.CryptoError, ValueError, KeyError, TypeError):
        return _Found(None, "manifest_unreadable", tags)
    known = {crypto.version_tag(key, case_id, v) for v in range(1, manifest.version + 1)}
    if not tags <= known:
        return _Found(manifest, "manifest_rolled_back", tags)
    return _Found(manifest, manifest.problem or _compare(manifest, rows), tags)


def check(session: Session, case_id: str, key: bytes) -> str | None:
    """What is wrong with the case's entries and files as stored, or None.

    Holds a share lock on the case row for the rest of the transaction, so a
    writer's new entry and its manifest are seen together or not at all.
    """
    sealed = session.execute(
        select(Case.sealed_manifest).where(Case.id == case_id).with_for_update(read=True)
    ).scalar_one_or_none()
    return _inspect(session, case_id, key, sealed, _rows(session, case_id)).problem


def reseal(
    session: Session,
    case_id: str,
    key: bytes,
    *,
    new_entry: CaseEntry | None = None,
    new_file: Attachment | None = None,
    actor: str,
) -> None:
    """Add a just-written entry or file to the case's manifest and seal it again.

    Locks the case row (no lost update between concurrent writers) and checks
    the rows first: a problem found is audited and kept in the new manifest.
    """
    session.flush()
    sealed = session.execute(
        select(Case.sealed_manifest).where(Case.id == case_id).with_for_update(key_share=True)
    ).scalar_one()
    rows = _rows(session, case_id)
    before = _Rows(
        {i: r for i, r in rows.entries.items() if new_entry is None or i != str(new_entry.id)},
        {i: r for i, r in rows.files.items() if new_file is None or i != new_file.id},
        rows.chunks,
    )
    found = _inspect(session, case_id, key, sealed, before)
    if found.problem == NOT_YET_PROTECTED:
        # Trust on first write: the rows as they are now.
        manifest = Manifest(entries=dict(rows.entries), files=dict(rows.files))
    else:
        manifest = found.manifest or Manifest(
            entries=dict(before.entries), files=dict(before.files)
        )
        if found.problem is not None and manifest.problem is None:
            # Audited once, when first found; the sealed manifest keeps it from then on.
            manifest.problem = found.problem
            audit.record(
                session,
                actor=actor,
                action=FAILED_ACTION,
                case_id=case_id,
                details={"problem": found.problem},
            )
        if new_entry is not None:
            manifest.entries[str(new_entry.id)] = rows.entries[str(new_entry.id)]
        if new_file is not None:
            manifest.files[new_file.id] = rows.files[new_file.id]
    # Never reuse a version whose tag the trail already holds.
    manifest.version = max(manifest.version, len(found.tags)) + 1
    session.execute(
        update(Case)
        .where(Case.id == case_id)
        .values(sealed_manifest=manifest.seal(key, case_id))
        .execution_options(synchronize_session=False)
    )


def seal_new_case(
    session: Session,
    case_id: str,
    key: bytes,
    *,
    entries: list[CaseEntry],
    files: list[Attachment],
) -> dict[str, str]:
    """The first manifest of a case being submitted, from the entries and files just
    written in this transaction; returns the audit detail naming it.

    Nobody else can see the case yet, so there is nothing to lock or compare:
    one manifest instead of one per entry.
    """
    session.flush()
    manifest = Manifest(
        version=1,
        entries={str(e.id): _entry_row(e) for e in entries},
        files={a.id: _file_row(a) for a in files},
    )
    session.execute(
        update(Case)
        .where(Case.id == case_id)
        .values(sealed_manifest=manifest.seal(key, case_id))
        .execution_options(synchronize_session=False)
    )
    return {TAG_DETAIL: crypto.version_tag(key, case_id, manifest.version)}


def audit_tag(session: Session, case_id: str, key: bytes) -> dict[str, str]:
    """The audit detail naming the manifest version a writing action left: {"manifest": tag}."""
    sealed = session.execute(
        select(Case.sealed_manifest).where(Case.id == case_id)
    ).scalar_one_or_none()
    if sealed is None:
        return {}
    version = Manifest.open(key, case_id, sealed).version
    return {TAG_DETAIL: crypto.version_tag(key, case_id, version)}


def answer(session: Session, *, case_id: str, actor: str, problem: str | None) -> dict[str, Any]:
    """The read's `integrity` answer; a problem (not a case from before manifests) is audited."""
    if problem is not None and problem != NOT_YET_PROTECTED:
        audit.record(
            session,
            actor=actor,
            action=FAILED_ACTION,
            case_id=case_id,
            details={"problem": problem},
        )
    return {"ok": problem is None, "problem": problem}
