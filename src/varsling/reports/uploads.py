"""Read a multipart body as it streams in, sealing each file chunk by chunk.

Starlette's own form parser spools large files to disk in the clear; this
one keeps at most one chunk of plaintext in memory and spools only ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from varsling.cases.attachments import FileProblem, FileSealer, FileTooLarge, SealedFile, safe_name
from varsling.errors import InvalidInput, VarslingError

MAX_FIELD_BYTES = 100_000


__all__ = ["FileProblem", "ParsedForm", "read_multipart"]


@dataclass
class ParsedForm:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[SealedFile] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)

    def first(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""

    def discard_files(self) -> None:
        for sealed in self.files:
            sealed.discard()
        self.files.clear()


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    sealer: FileSealer | None = None
    rejected: bool = False


async def read_multipart(
    request: Request,
    *,
    case_id: str,
    key: bytes,
    max_file_bytes: int,
    max_files: int,
    file_field: str = "files",
) -> ParsedForm:
    """Text fields in memory, files sealed with `key` for `case_id` as they arrive.

    Only parts named `file_field` are taken as files. A file over the size
    limit, or beyond the number allowed, is dropped and
    named in `problems`; the rest of the form is still read, so nothing the
    reporter typed is lost.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("Send files as multipart/form-data.")

    form = ParsedForm()
    part = _Part()
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part.headers[header_field.decode("latin-1").lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part.headers.get("content-disposition", b""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = disposition.get(b"filename")
        if raw_filename is None:
            return
        part.filename = raw_filename.decode("utf-8", "replace")
        if not part.filename or part.name != file_field:
            # An empty file input sends an unnamed, empty part; other fields are not ours.
            part.rejected = True
            return
        if len(form.files) >= max_files:
            part.rejected = True
            form.problems.append(FileProblem(safe_name(part.filename), "too_many"))
            return
        part.sealer = FileSealer(
            key=key,
            case_id=case_id,
            name=safe_name(part.filename),
            content_type=(
                part.headers.get("content-type", b"").decode("latin-1").strip()
                or "application/octet-stream"
            )[:200],
            limit=max_file_bytes,
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.rejected:
            return
        if part.sealer is not None:
            try:
                part.sealer.write(data[start:end])
            except FileTooLarge:
                part.rejected = True
                form.problems.append(FileProblem(part.sealer.name, "too_large"))
                part.sealer = None
            return
        if part.filename is None:
            # Past the limit a field is cut, not refused: the form then says it is
            # too long and shows the rest of what was typed, instead of losing it all.
            room = MAX_FIELD_BYTES - len(part.value)
            if room > 0:
                part.value.extend(data[start : start + min(room, end - start)])

    def on_part_end() -> None:
        if part.sealer is not None:
            form.files.append(part.sealer.finish())
        elif part.filename is None and part.name:
            text = part.value.decode("utf-8", "ignore").replace("\r\n", "\n")
            form.fields.setdefault(part.name, []).append(text)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except VarslingError:  # a too-long field, or a body over the limit (413)
        form.discard_files()
        if part.sealer is not None:
            part.sealer.abort()
        raise
    except Exception as exc:
        form.discard_files()
        if part.sealer is not None:
            part.sealer.abort()
        raise InvalidInput("The form data could not be read.") from exc
    return form
