"""No traceback or exception text ever reaches a log: the outermost guard."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from varsling.app import create_app
from varsling.config import Settings

MARKER = "case-content-7f3a9c-never-logged"


def test_an_unexpected_error_is_answered_and_logged_as_its_type_and_route_only(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    def explode(case_id: str) -> None:
        secret = f"{MARKER} {case_id}"
        raise RuntimeError(secret)

    app.add_api_route("/api/v1/explode/{case_id}", explode)
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as client:
        response = client.get("/api/v1/explode/1234-5678")
    app.state.engine.dispose()

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert MARKER not in response.text
    # Everything the server side logged (the test's own HTTP client names the address).
    server_records = [r for r in caplog.records if not r.name.startswith("httpx")]
    logged = "".join(f"{r.getMessage()} {r.exc_info} {r.exc_text}" for r in server_records)
    assert MARKER not in logged
    assert "1234-5678" not in logged
    assert "Traceback" not in logged
    assert "unhandled RuntimeError on /api/v1/explode/{case_id}" in logged


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_under_varsling_serve_nothing_of_the_error_reaches_stderr(
    database_url: str, tmp_path: Path
) -> None:
    # The real server, with submission made to fail with a telling message.
    (tmp_path / "sitecustomize.py").write_text(
        "import varsling.reports.service as service\n"
        "def submit_report(*args, **kwargs):\n"
        f"    content = {MARKER!r}\n"
        "    raise RuntimeError(content)\n"
        "service.submit_report = submit_report\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        "VARSLING_ENVIRONMENT": "development",
        "VARSLING_DATABASE_URL": database_url,
        "VARSLING_SECRETS_FILE": str(tmp_path / "secrets.env"),
        "VARSLING_ARGON2_MEMORY_KIB": "64",
        "VARSLING_ARGON2_TIME_COST": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "varsling", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/units").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        response = httpx.post(
            f"{base}/api/v1/reports",
            json={"unit_id": 1, "category": "harassment", "description": "x"},
        )
    finally:
        server.terminate()
        stdout, stderr = server.communicate(timeout=30)

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert MARKER not in stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert "unhandled RuntimeError on /api/v1/reports" in stderr
