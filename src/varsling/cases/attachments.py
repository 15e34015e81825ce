"""Files: sealed with the case key in chunks, so no file sits whole in memory.

Each chunk carries its index and a last-chunk flag in the associated data,
so chunks cannot be reordered, dropped or cut off unnoticed. Before a file is
stored, its sealed chunks wait in a spool that holds only ciphertext.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from varsling import audit, crypto
from varsling.cases import manifest
from varsling.cases.models import Attachment, AttachmentChunk

CHUNK_BYTES = 64 * 1024
_SPOOL_IN_MEMORY = 1024 * 1024
_LENGTH = struct.Struct(">I")


def chunk_context(case_id: str, attachment_id: str) -> bytes:
    return crypto.content_context(case_id, "attachment", attachment_id)


def meta_context(case_id: str, attachment_id: str) -> bytes:
    return crypto.content_context(case_id, "attachment-meta", attachment_id)


@dataclass(frozen=True)
class FileProblem:
    """A file left out of an upload: over the size limit, or past the number allowed."""

    name: str
    reason: Literal["too_large", "too_many"]


class FileTooLarge(Exception):
    """The file passed the size limit; what was sealed of it is discarded."""


@dataclass
class SealedFile:
    """A file sealed chunk by chunk while it streamed in; ready to store."""

    id: str
    name: str
    content_type: str
    size: int
    chunk_count: int
    spool: IO[bytes]
    # SHA-256 of the plaintext, taken as it streamed in (for the reporter's receipt).
    sha256: bytes = b""

    def chunks(self) -> Iterator[bytes]:
        self.spool.seek(0)
        for _ in range(self.chunk_count):
            (length,) = _LENGTH.unpack(self.spool.read(_LENGTH.size))
            yield self.spool.read(length)

    def discard(self) -> None:
        self.spool.close()


@dataclass
class FileSealer:
    """Seal a stream: write() pieces as they arrive, finish() at its end."""

    key: bytes
    case_id: str
    name: str
    content_type: str
    limit: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    size: int = 0
    _pending: bytearray = field(default_factory=bytearray)
    _index: int = 0
    _spool: IO[bytes] = field(default_factory=lambda: _new_spool())
    _digest: Any = field(default_factory=hashlib.sha256)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self._spool.close()
            raise FileTooLarge
        self._digest.update(data)
        self._pending += data
        # Keep the newest chunk back: only at the end is it known to be the last.
        while len(self._pending) > CHUNK_BYTES:
            self._seal(bytes(self._pending[:CHUNK_BYTES]), last=False)
            del self._pending[:CHUNK_BYTES]

    def finish(self) -> SealedFile:
        self._seal(bytes(self._pending), last=True)
        self._pending.clear()
        return SealedFile(
            self.id,
            self.name,
            self.content_type,
            self.size,
            self._index,
            self._spool,
            self._digest.digest(),
        )

    def abort(self) -> None:
        self._pending.clear()
        self._spool.close()

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        blob = crypto.seal_chunk(
            self.key,
            chunk,
            context=chunk_context(self.case_id, self.id),
            index=self._index,
            last=last,
        )
        self._spool.write(_LENGTH.pack(len(blob)) + blob)
        self._index += 1


def _new_spool() -> IO[bytes]:
    # Closed by SealedFile.discard() or FileSealer.abort(); it holds only ciphertext.
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)


def safe_name(name: str) -> str:
    """A file name without folders or control characters, never empty."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:200] or "attachment"


def store(
    session: Session,
    sealed: SealedFile,
    *,
    case_id: str,
    key: bytes,
    uploaded_by: str,
    today: dt.date,
    entry_id: int | None = None,
    actor: str | None = None,
    in_manifest: bool = True,
) -> Attachment:
    """Write a sealed file's chunks and its sealed name and type, and add the file to
    the case's manifest (`actor`, by default the reporter for their uploads, is who
    is named if that finds the case tampered with)."""
    meta = json.dumps({"name": sealed.name, "content_type": sealed.content_type}).encode()
    attachment = Attachment(
        id=sealed.id,
        case_id=case_id,
        entry_id=entry_id,
        uploaded_by=uploaded_by,
        created_on=today,
        size_bytes=sealed.size,
        chunk_count=sealed.chunk_count,
        sealed_meta=crypto.seal(key, meta, context=meta_context(case_id, sealed.id)),
    )
    session.add(attachment)
    session.flush()
    for index, blob in enumerate(sealed.chunks()):
        session.add(AttachmentChunk(attachment_id=sealed.id, index=index, ciphertext=blob))
        if index % 16 == 15:
            session.flush()
    session.flush()
    sealed.discard()
    if not in_manifest:  # a submission seals its first manifest at the end
        return attachment
    manifest.reseal(
        session,
        case_id,
        key,
        new_file=attachment,
        actor=actor or (audit.REPORTER if uploaded_by == "reporter" else audit.SYSTEM),
    )
    return attachment


def describe(attachment: Attachment, key: bytes) -> dict[str, Any]:
    meta = json.loads(
        crypto.open_sealed(
            key, attachment.sealed_meta, context=meta_context(attachment.case_id, attachment.id)
        )
    )
    return {
        "id": attachment.id,
        "name": meta["name"],
        "content_type": meta["content_type"],
        "size": attachment.size_bytes,
        "added_on": attachment.created_on.isoformat(),
        "uploaded_by": attachment.uploaded_by,
    }


def for_case(session: Session, case_id: str) -> list[Attachment]:
    query = (
        select(Attachment)
        .where(Attachment.case_id == case_id)
        .order_by(Attachment.created_on, Attachment.id)
    )
    return list(session.execute(query).scalars())


def find(session: Session, case_id: str, attachment_id: str) -> Attachment | None:
    if not re.fullmatch("[0-9a-f]{32}", attachment_id):
        return None
    return session.execute(
        select(Attachment).where(Attachment.case_id == case_id, Attachment.id == attachment_id)
    ).scalar_one_or_none()


ChunkReader = Callable[[str, int], "bytes | None"]


def _read_chunk(session: Session, attachment_id: str, index: int) -> bytes | None:
    return session.execute(
        select(AttachmentChunk.ciphertext).where(
            AttachmentChunk.attachment_id == attachment_id, AttachmentChunk.index == index
        )
    ).scalar_one_or_none()


def reader_in(session: Session) -> ChunkReader:
    """Read chunks in the caller's transaction."""
    return lambda attachment_id, index: _read_chunk(session, attachment_id, index)


def reader_with_own_transactions(maker: sessionmaker[Session]) -> ChunkReader:
    """Read each chunk in its own short transaction (for streaming after the request's)."""

    def read(attachment_id: str, index: int) -> bytes | None:
        with maker.begin() as session:
            return _read_chunk(session, attachment_id, index)

    return read


def decrypted_chunks(read: ChunkReader, attachment: Attachment, key: bytes) -> Iterator[bytes]:
    """Open a stored file chunk by chunk, in order, the last one marked last."""
    context = chunk_context(attachment.case_id, attachment.id)
    last_index = attachment.chunk_count - 1
    for index in range(attachment.chunk_count):
        blob = read(attachment.id, index)
        if blob is None:
            raise crypto.CryptoError("a chunk of the file is missing")
        yield crypto.open_chunk(key, blob, context=context, index=index, last=index == last_index)
