"""Over real HTTP, a refused body's answer reaches a client that is still sending."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.conftest import make_settings
from tests.serving import serve_in_thread
from varsling.app import DRAIN_BYTES, create_app

TWENTY_MB = 20 * 1024 * 1024
BOUNDARY = "grensegrense"
FILE_PART = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="files"; filename="stor.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()


@pytest.fixture
def server(database_url: str) -> Iterator[tuple[str, int]]:
    """Small limits: JSON 64 kB; the form takes 4 x (64 kB + 2 x 1 MB), about 8.3 MB."""
    settings = make_settings(
        database_url, max_body_bytes=64 * 1024, max_file_bytes=1024 * 1024, max_files_per_report=2
    )
    app = create_app(settings)
    with serve_in_thread(app) as address:
        yield address
    app.state.engine.dispose()


def _post_while_sending(
    address: tuple[str, int], path: str, content_type: str, *, chunked: bool, prefix: bytes = b""
) -> bytes:
    """POST a 20 MB body from one thread while another reads; the whole answer, to EOF.

    Any reset or timeout, on either side, fails the test: the client must see
    the answer and an orderly close.
    """
    connection = socket.create_connection(address, timeout=20)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {TWENTY_MB}"
    connection.sendall(
        f"POST {path} HTTP/1.1\r\nHost: varsling.test\r\n"
        f"Content-Type: {content_type}\r\n{framing}\r\n\r\n".encode()
    )
    failures: list[BaseException] = []

    def send_body() -> None:
        piece = b"a" * 65536
        sent = 0
        try:
            body = prefix
            while sent < TWENTY_MB:
                data = (body + piece)[: TWENTY_MB - sent]
                body = b""
                connection.sendall(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
            if chunked:
                connection.sendall(b"0\r\n\r\n")
        except OSError as exc:
            failures.append(exc)

    sender = threading.Thread(target=send_body)
    sender.start()
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    finally:
        sender.join(timeout=30)
        connection.close()
    assert not failures, failures
    return answer


def _split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    return status, headers, body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversize_api_body_gets_its_whole_413_answer(
    server: tuple[str, int], chunked: bool
) -> None:
    answer = _post_while_sending(server, "/api/v1/reports", "application/json", chunked=chunked)

    status, headers, body = _split(answer)
    assert status.startswith("HTTP/1.1 413")
    assert headers["connection"] == "close"
    assert len(body) == int(headers["content-length"])
    assert json.loads(body)["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversize_form_gets_the_413_page_in_its_language(
    server: tuple[str, int], chunked: bool
) -> None:
    answer = _post_while_sending(
        server,
        "/nn/report",
        f"multipart/form-data; boundary={BOUNDARY}",
        chunked=chunked,
        prefix=FILE_PART,
    )

    status, headers, body = _split(answer)
    assert status.startswith("HTTP/1.1 413")
    assert headers["content-type"].startswith("text/html")
    assert len(body) == int(headers["content-length"])
    page = body.decode()
    assert '<html lang="nn"' in page
    assert "Det du sende, var for stort" in page


def test_an_early_refusal_of_an_upload_reaches_the_client_too(server: tuple[str, int]) -> None:
    # No session: 401 before the body is read (chunked, so no declared length refuses it).
    answer = _post_while_sending(
        server,
        "/api/v1/reporter/case/files",
        f"multipart/form-data; boundary={BOUNDARY}",
        chunked=True,
        prefix=FILE_PART,
    )

    status, _headers, body = _split(answer)
    assert status.startswith("HTTP/1.1 401")
    assert json.loads(body)["error"]["code"] == "unauthenticated"
    assert TWENTY_MB < DRAIN_BYTES
