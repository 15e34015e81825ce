"""`varsling serve` behind a proxy: uvicorn never reads a forwarded client address
and writes no access log (docs: deploy/README.md, "No one's address is recorded")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.conftest import FAST_ARGON2, TEST_SECRETS
from varsling import cli


def test_serve_runs_uvicorn_without_proxy_headers_or_access_log(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**TEST_SECRETS, **FAST_ARGON2}.items():
        monkeypatch.setenv(f"VARSLING_{name.upper()}", str(value))
    monkeypatch.setenv("VARSLING_DATABASE_URL", database_url)
    monkeypatch.setenv("VARSLING_SECRETS_FILE", str(tmp_path / "secrets.env"))
    monkeypatch.setenv("VARSLING_ENVIRONMENT", "development")
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, config: uvicorn.Config) -> None:
            seen["config"] = config

        def run(self, sockets: list[Any]) -> None:
            seen["sockets"] = sockets
            for listening in sockets:
                listening.close()

    monkeypatch.setattr(uvicorn, "Server", Recorder)
    cli.serve(host="127.0.0.1", port=0)

    config: uvicorn.Config = seen["config"]
    assert config.proxy_headers is False
    assert config.access_log is False
    assert config.server_header is False
    assert len(seen["sockets"]) == 1
