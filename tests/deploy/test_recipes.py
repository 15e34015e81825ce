"""The deploy/ recipes, checked by the tools that read them, where they are here.

- Caddy: `caddy validate` of deploy/Caddyfile in each mode, with the Tor sites;
  and the shipped Caddyfile run on loopback in front of a stand-in upstream that
  echoes the request headers it got, to show that no client address reaches the
  app and the reporters-only mode closes every staff path.
- Tor: `tor --verify-config` of deploy/tor/torrc (its folders moved to a temporary one).
- systemd: `systemd-analyze verify` of the units (ExecStart pointed at this venv's
  `varsling`, which the check wants to exist).
- Compose: `docker compose config`, when docker has the compose plugin.
- deploy/varsling.env.example names every setting config.py has, and works.
- Every relative link in the README, SECURITY.md and docs/ points at a file.

Each tool's check is skipped, with the reason, when the tool is missing (caddy is a
failure in CI, where .ci/run installs it).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.stack import (
    DEPLOY,
    REPOSITORY,
    Processes,
    answers,
    caddy_env,
    free_port,
    require_caddy,
    shipped_caddyfile,
)
from varsling.config import SECRET_SETTINGS, ConfigError, Settings

SYSTEMD_UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
    (DEPLOY / "systemd").glob("*.timer")
)


def _caddy_validate(caddy: str, caddyfile: Path, folder: Path, **settings: str) -> None:
    result = subprocess.run(
        [caddy, "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=caddy_env(folder, **settings),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"CADDY_SITE_ADDRESS": "varsling.example.org", "CADDY_PUBLIC_ACCESS": "reporters"},
        {"CADDY_SITE_ADDRESS": "http://127.0.0.1:8080", "CADDY_UPSTREAMS": "127.0.0.1:8001"},
    ],
)
def test_the_caddyfile_is_valid(tmp_path: Path, settings: dict[str, str]) -> None:
    caddy = require_caddy()
    _caddy_validate(caddy, shipped_caddyfile(tmp_path), tmp_path, **settings)


def test_the_caddyfile_with_the_tor_sites_is_valid(tmp_path: Path) -> None:
    caddy = require_caddy()
    caddyfile = shipped_caddyfile(tmp_path)
    (caddyfile.parent / "sites.d").mkdir()
    for site in (DEPLOY / "tor").glob("*.caddy"):
        shutil.copyfile(site, caddyfile.parent / "sites.d" / site.name)
    for public_site in ("on", "off"):
        _caddy_validate(
            caddy,
            caddyfile,
            tmp_path,
            CADDY_PUBLIC_SITE=public_site,
            CADDY_PUBLIC_ACCESS="reporters",
        )
    adapted = subprocess.run(
        [caddy, "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path, CADDY_PUBLIC_SITE="off"),
        timeout=60,
        check=True,
    )
    servers = json.loads(adapted.stdout)["apps"]["http"]["servers"]
    # The onion sites listen on loopback only: nothing else may answer for them.
    listening = sorted(address for server in servers.values() for address in server["listen"])
    assert listening == ["127.0.0.1:8081", "127.0.0.1:8082"]


class _EchoHeaders(http.server.BaseHTTPRequestHandler):
    """A stand-in for the app: answers every request with the headers it received."""

    def _echo(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Security-Policy", "default-src 'none'; sandbox")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _echo
    do_POST = _echo
    do_DELETE = _echo

    def log_message(self, format: str, *args: object) -> None:
        """Nothing: a test server, not a log."""


@pytest.fixture
def echo_upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def caddy_in_front(tmp_path: Path, echo_upstream: int) -> Iterator[httpx.Client]:
    """The shipped Caddyfile, reporters-only, in front of the echoing upstream."""
    caddy = require_caddy()
    port = free_port()
    processes = Processes(tmp_path)
    try:
        processes.start(
            "caddy",
            [caddy, "run", "--config", str(shipped_caddyfile(tmp_path)), "--adapter", "caddyfile"],
            caddy_env(
                tmp_path,
                CADDY_SITE_ADDRESS=f"http://127.0.0.1:{port}",
                CADDY_UPSTREAMS=f"127.0.0.1:{echo_upstream}",
                CADDY_PUBLIC_ACCESS="reporters",
            ),
        )
        processes.wait_until("caddy", answers(f"http://127.0.0.1:{port}/api/v1/units"))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        processes.stop_all()


def test_no_client_address_reaches_the_app_through_caddy(caddy_in_front: httpx.Client) -> None:
    answer = caddy_in_front.get(
        "/nb/report",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Real-IP": "203.0.113.7",
            "Forwarded": "for=203.0.113.7",
            "True-Client-IP": "203.0.113.7",
            "CF-Connecting-IP": "203.0.113.7",
        },
    )
    assert answer.status_code == 200
    seen = {name.lower(): value for name, value in answer.json()["headers"].items()}
    for header in ("x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip"):
        assert header not in seen, seen
    assert "cf-connecting-ip" not in seen
    assert "203.0.113.7" not in json.dumps(seen)
    # The headers: the upstream's CSP stands; one value each; no Server.
    assert answer.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert answer.headers.get_list("X-Frame-Options") == ["DENY"]
    assert answer.headers.get_list("X-Content-Type-Options") == ["nosniff"]
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert "server" not in answer.headers


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nb/",
        "/nn/report",
        "/en/follow-up",
        "/nb/case",
        "/static/varsling.css",
        "/api/v1/units",
        "/api/v1/openapi.json",
        "/api/v1/reporter/case",
        "/api/v1/reporter/cases/abc/messages",
    ],
)
def test_reporters_only_lets_reporter_paths_through(
    caddy_in_front: httpx.Client, path: str
) -> None:
    answer = caddy_in_front.get(path)
    assert answer.status_code == 200, path
    assert answer.json()["path"] == path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nb/staff/login"),
        ("POST", "/nn/staff/login"),
        ("GET", "/en/staff/"),
        ("GET", "/en/staff"),
        ("POST", "/api/v1/sessions"),
        ("DELETE", "/api/v1/sessions/current"),
        ("GET", "/api/v1/cases"),
        ("GET", "/api/v1/cases/1"),
        ("GET", "/api/v1/identity-requests"),
        ("GET", "/api/v1/audit/verify"),
        ("GET", "/api/v1/audit/events"),
        ("GET", "/api/v1/statistics"),
        ("GET", "/nb/staff/admin/accounts"),
        ("GET", "/en/staff/statistics"),
        ("POST", "/api/v1/audit/checkpoints"),
        ("GET", "/api/v1/some-future-staff-route"),
        ("GET", "/docs"),
    ],
)
def test_reporters_only_closes_every_staff_path(
    caddy_in_front: httpx.Client, method: str, path: str
) -> None:
    answer = caddy_in_front.request(method, path)
    assert answer.status_code == 404, path
    assert "headers" not in answer.text
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_the_torrc_is_valid(tmp_path: Path) -> None:
    tor = shutil.which("tor")
    if tor is None:
        pytest.skip("tor is not installed (Debian: apt-get install tor)")
    data = tmp_path / "tor"
    data.mkdir(mode=0o700)
    torrc = tmp_path / "torrc"
    text = (DEPLOY / "tor" / "torrc").read_text()
    assert "/var/lib/tor" in text
    torrc.write_text(text.replace("/var/lib/tor", str(data)))
    result = subprocess.run(
        [tor, "--verify-config", "-f", str(torrc)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration was valid" in result.stdout


def test_the_systemd_units_are_valid(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    varsling = Path(sys.executable).with_name("varsling")
    assert varsling.exists()
    names = [unit.name for unit in SYSTEMD_UNITS]
    assert names == [
        "varsling-jobs.service",
        "varsling-migrate.service",
        "varsling.service",
        "varsling-jobs.timer",
    ]
    for unit in SYSTEMD_UNITS:
        text = unit.read_text()
        assert "/srv/varsling/.venv/bin/varsling" in text or unit.suffix == ".timer"
        (tmp_path / unit.name).write_text(
            text.replace("/srv/varsling/.venv/bin/varsling", str(varsling))
        )
    result = subprocess.run(
        [analyze, "verify", *names],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    # Unknown keys are only warned about, so any output at all is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_the_compose_file_is_valid(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode:
        pytest.skip("docker has no compose plugin here (`docker compose version` fails)")
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    shutil.copyfile(deploy / "varsling.env.example", deploy / "varsling.env")
    result = subprocess.run(
        [docker, "compose", "--env-file", "compose.env.example", "-f", "compose.yaml", "config"],
        capture_output=True,
        text=True,
        cwd=deploy,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _env_example() -> str:
    return (DEPLOY / "varsling.env.example").read_text()


def test_the_env_example_names_every_setting() -> None:
    named = set(re.findall(r"^#? ?VARSLING_([A-Z0-9_]+)=", _env_example(), re.MULTILINE))
    settings = {name.upper() for name in Settings.model_fields}
    assert named == settings, (
        f"missing: {sorted(settings - named)}, unknown: {sorted(named - settings)}"
    )


def test_the_env_example_runs_once_its_secrets_are_made(tmp_path: Path) -> None:
    example = _env_example()
    env_file = tmp_path / "varsling.env"
    env_file.write_text(example)
    with pytest.raises(ConfigError, match="VARSLING_CODE_PEPPER is a placeholder"):
        Settings(_env_file=env_file).check()
    filled = example
    for name in SECRET_SETTINGS:
        line = f"VARSLING_{name.upper()}=change-me"
        assert line in filled
        filled = filled.replace(line, f"VARSLING_{name.upper()}={secrets.token_urlsafe(48)}")
    # The commented defaults, switched on, read as the defaults.
    switched_on = re.sub(r"^# (VARSLING_[A-Z0-9_]+=)", r"\1", filled, flags=re.MULTILINE)
    env_file.write_text(switched_on)
    settings = Settings(_env_file=env_file)
    settings.check()
    defaults = Settings(**{name: getattr(settings, name) for name in SECRET_SETTINGS})
    for name in Settings.model_fields:
        # Unset, these follow from something else (the environment, the machine's CPUs).
        if name in {
            "database_url",
            "secrets_file",
            "migration_database_url",
            "secure_cookies",
            "argon2_concurrency",
            # Off by default; their commented lines show an example value to fill in.
            "smtp_host",
            "smtp_port",
            "smtp_from",
            "smtp_username",
            "smtp_password",
            "public_base_url",
        }:
            continue
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.environment == "production"
    assert settings.secure_transport is True


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize(
    "document",
    [
        "README.md",
        "SECURITY.md",
        "deploy/README.md",
        *sorted(str(p.relative_to(REPOSITORY)) for p in (REPOSITORY / "docs").glob("*.md")),
    ],
)
def test_links_point_at_files_in_the_repository(document: str) -> None:
    path = REPOSITORY / document
    for target in _LINK.findall(path.read_text()):
        assert "://" not in target or target.startswith("http://127.0.0.1"), (
            f"{document} links outside the repository: {target}"
        )
        if "://" in target:
            continue
        assert (path.parent / target).resolve().exists(), f"{document}: {target} does not exist"
