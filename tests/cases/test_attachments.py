"""Files: sealed in chunks, downloadable by key holders as opaque attachments."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from starlette.requests import Request

from tests.conftest import make_settings
from tests.factories import login, make_unit, make_user, open_first_case, report, reporter_login
from varsling.app import create_app
from varsling.cases.models import Attachment, AttachmentChunk
from varsling.config import Settings
from varsling.reports.uploads import read_multipart


@pytest.fixture
def reporter_and_handler(client: TestClient, db: Session, settings: Settings) -> dict[str, object]:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    return {"reporter": reporter_login(client, code), "handler": handler, "case_id": case_id}


def test_files_round_trip_and_download_as_opaque_attachments(
    client: TestClient, reporter_and_handler: dict[str, object]
) -> None:
    big = os.urandom(200_000)  # four chunks
    lying = b"<script>alert(1)</script>"
    response = client.post(
        "/api/v1/reporter/case/files",
        files=[
            ("files", ("bilde æøå.jpg", big, "image/jpeg")),
            ("files", ("notes.html", lying, "image/png")),
        ],
        headers=reporter_and_handler["reporter"],
    )
    assert response.status_code == 201, response.text
    assert [f["name"] for f in response.json()["files"]] == ["bilde æøå.jpg", "notes.html"]

    handler = reporter_and_handler["handler"]
    case_id = reporter_and_handler["case_id"]
    files = client.get(f"/api/v1/cases/{case_id}", headers=handler).json()["files"]
    by_name = {f["name"]: f for f in files}
    assert by_name["bilde æøå.jpg"]["size"] == len(big)
    assert by_name["notes.html"]["content_type"] == "image/png"

    download = client.get(
        f"/api/v1/cases/{case_id}/files/{by_name['bilde æøå.jpg']['id']}", headers=handler
    )
    assert download.status_code == 200
    assert download.content == big
    opaque = client.get(
        f"/api/v1/cases/{case_id}/files/{by_name['notes.html']['id']}", headers=handler
    )
    assert opaque.content == lying
    assert opaque.headers["content-type"] == "application/octet-stream"
    assert opaque.headers["content-disposition"].startswith("attachment;")
    assert opaque.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in opaque.headers["content-security-policy"]
    own = client.get(
        f"/api/v1/reporter/case/files/{by_name['notes.html']['id']}",
        headers=reporter_and_handler["reporter"],
    )
    assert own.content == lying


def _file_rows(db: Session) -> tuple[int, int]:
    db.rollback()
    return (
        db.scalar(select(func.count()).select_from(Attachment)) or 0,
        db.scalar(select(func.count()).select_from(AttachmentChunk)) or 0,
    )


def test_oversize_or_too_many_files_store_nothing(database_url: str, db: Session) -> None:
    settings = make_settings(database_url, max_file_bytes=100_000, max_files_per_report=2)
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    app = create_app(settings)
    with TestClient(app) as client:
        code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
        reporter = reporter_login(client, code)
        oversize = client.post(
            "/api/v1/reporter/case/files",
            headers=reporter,
            files=[
                ("files", ("ok.txt", b"fine", "text/plain")),
                ("files", ("big.bin", b"x" * 100_001, "application/octet-stream")),
            ],
        )
        too_many = client.post(
            "/api/v1/reporter/case/files",
            headers=reporter,
            files=[("files", (f"{n}.txt", b"x", "text/plain")) for n in range(3)],
        )
        none = client.post(
            "/api/v1/reporter/case/files",
            headers=reporter,
            files=[("other", ("a.txt", b"", "text/plain"))],
            data={"x": "1"},
        )
    app.state.engine.dispose()

    assert oversize.status_code == 413
    assert "big.bin" in oversize.json()["error"]["message"]
    assert too_many.status_code == 422
    assert "At most 2 files" in too_many.json()["error"]["message"]
    assert none.status_code == 422
    assert _file_rows(db) == (0, 0)


def _swap_chunks(db: Session, attachment_id: str) -> None:
    """Swap the ciphertexts of chunks 0 and 1 behind the app's back."""
    rows = (
        db.execute(
            text(
                'SELECT ciphertext FROM attachment_chunks WHERE attachment_id = :a ORDER BY "index"'
            ),
            {"a": attachment_id},
        )
        .scalars()
        .all()
    )
    update = text(
        'UPDATE attachment_chunks SET ciphertext = :c WHERE attachment_id = :a AND "index" = :i'
    )
    for position, blob in ((0, rows[1]), (1, rows[0])):
        db.execute(update, {"c": blob, "a": attachment_id, "i": position})
    db.commit()


def _upload(client: TestClient, ids: dict[str, object], content: bytes) -> str:
    response = client.post(
        "/api/v1/reporter/case/files",
        headers=ids["reporter"],
        files=[("files", ("a.bin", content, "application/octet-stream"))],
    )
    return str(response.json()["files"][0]["id"])


def test_reordered_chunks_do_not_open(
    client: TestClient, db: Session, reporter_and_handler: dict[str, object]
) -> None:
    file_id = _upload(client, reporter_and_handler, os.urandom(150_000))
    _swap_chunks(db, file_id)

    response = client.get(
        f"/api/v1/cases/{reporter_and_handler['case_id']}/files/{file_id}",
        headers=reporter_and_handler["handler"],
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_error"


def test_cut_off_file_does_not_open(
    client: TestClient, db: Session, reporter_and_handler: dict[str, object]
) -> None:
    file_id = _upload(client, reporter_and_handler, os.urandom(150_000))
    db.execute(
        text('DELETE FROM attachment_chunks WHERE attachment_id = :a AND "index" = 2'),
        {"a": file_id},
    )
    db.execute(text("UPDATE attachments SET chunk_count = 2 WHERE id = :a"), {"a": file_id})
    db.commit()

    response = client.get(
        f"/api/v1/cases/{reporter_and_handler['case_id']}/files/{file_id}",
        headers=reporter_and_handler["handler"],
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_error"


def test_a_large_upload_never_sits_whole_in_memory() -> None:
    size = 8 * 1024 * 1024
    boundary = "varslingboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    piece = os.urandom(64 * 1024)

    def pieces() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield tail

    stream = pieces()

    async def receive() -> dict[str, object]:
        chunk = next(stream, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
    }
    request = Request(scope, receive)

    tracemalloc.start()
    # A thread of its own: the browser tests may leave an event loop running here.
    with ThreadPoolExecutor(max_workers=1) as pool:
        form = pool.submit(
            asyncio.run,
            read_multipart(
                request, case_id="c" * 32, key=b"k" * 32, max_file_bytes=size * 2, max_files=10
            ),
        ).result()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert form.files[0].size == size
    assert form.files[0].chunk_count == size // (64 * 1024)
    assert peak < size // 4, peak
    form.discard_files()
