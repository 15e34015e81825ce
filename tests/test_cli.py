"""The `varsling` command as an administrator uses it."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS, make_settings
from tests.factories import PASSWORD, login, make_unit, make_user, report
from varsling.accounts.models import LoginSession
from varsling.audit import AuditEvent


def _varsling(
    database_url: str,
    *args: str,
    password: str | None = None,
    secrets_file: str = "/nonexistent",
    env_secrets: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the real command; by default with the tests' secrets in the environment."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")},
        "VARSLING_DATABASE_URL": database_url,
        "VARSLING_SECRETS_FILE": secrets_file,
        "VARSLING_ARGON2_MEMORY_KIB": "64",
        "VARSLING_ARGON2_TIME_COST": "1",
    }
    if env_secrets:
        env.update({f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()})
    if password is not None:
        env["VARSLING_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "varsling", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_units_and_users_are_managed_from_the_command_line(database_url: str) -> None:
    assert _varsling(database_url, "migrate").returncode == 0
    national = _varsling(database_url, "unit", "add", "Sentralt")
    assert national.returncode == 0, national.stderr
    national_id = int(national.stdout.strip())
    county = _varsling(
        database_url, "unit", "add", "Vestland", "--parent", str(national_id), "--kind", "county"
    )
    county_id = int(county.stdout.strip())

    added = _varsling(
        database_url,
        "user",
        "add",
        "hanne",
        "--role",
        "handler",
        "--role",
        "custodian",
        "--unit",
        str(county_id),
        "--display-name",
        "Hanne H",
        password=PASSWORD,
    )
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr

    units = _varsling(database_url, "unit", "list").stdout
    assert f"{national_id}\tSentralt (national)" in units
    assert f"  {county_id}\tVestland (county)" in units
    users = _varsling(database_url, "user", "list").stdout
    assert "hanne\tHanne H\tcustodian,handler\t" + str(county_id) in users
    assert _varsling(database_url, "audit", "verify").stdout.startswith("OK: 4 events")


def test_bad_cli_input_is_a_clear_error(database_url: str) -> None:
    orphan = _varsling(database_url, "unit", "add", "Orphan", "--parent", "999")
    assert orphan.returncode == 1
    assert "no unit with id 999" in orphan.stderr
    weak = _varsling(database_url, "user", "add", "kim", "--role", "handler", password="short")
    assert weak.returncode == 1
    assert "at least 12 characters" in weak.stderr
    role = _varsling(database_url, "user", "add", "kim", "--role", "boss", password=PASSWORD)
    assert role.returncode == 1
    assert "Roles must be among" in role.stderr
    # Only the recording of the secrets' fingerprints: the refused commands changed nothing.
    assert "OK: 1 events" in _varsling(database_url, "audit", "verify").stdout


def test_a_user_added_by_cli_can_log_in_and_receive_reports(
    database_url: str, client: TestClient
) -> None:
    unit_id = _varsling(database_url, "unit", "add", "Sentralt").stdout.strip()
    _varsling(
        database_url,
        "user",
        "add",
        "hanne",
        "--role",
        "handler",
        "--unit",
        unit_id,
        "--display-name",
        "Hanne Hansen",
        password=PASSWORD,
    )

    assert client.post("/api/v1/reports", json=report(int(unit_id))).status_code == 201
    assert len(client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"]) == 1


def test_serve_refuses_placeholder_secrets_in_production(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    env = {
        **os.environ,
        "VARSLING_DATABASE_URL": url,
        "VARSLING_ENVIRONMENT": "production",
        "VARSLING_SECRETS_FILE": str(tmp_path / "none.env"),
        "VARSLING_CODE_PEPPER": "change-me",
        "VARSLING_CODE_SALT": "s" * 40,
        "VARSLING_WEB_SECRET": "w" * 40,
    }
    result = subprocess.run(
        [sys.executable, "-m", "varsling", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Refusing to start" in result.stderr
    assert "VARSLING_CODE_PEPPER" in result.stderr
    assert "change-me" not in result.stderr


def test_keys_public_prints_the_verifying_key_and_its_fingerprint(database_url: str) -> None:
    from varsling import crypto

    shown = _varsling(database_url, "keys", "public")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("\n") == 1
    public = crypto.parse_signing_public_key(shown.stdout)
    expected_seed = crypto.signing_seed(TEST_SECRETS["signing_key"].encode())
    assert public == crypto.signing_public_key(expected_seed)
    assert crypto.key_fingerprint(public) in shown.stderr


def test_sessions_purge_prints_how_many_expired_sessions_it_removed(
    database_url: str, db: Session
) -> None:
    unit = make_unit(db)
    user = make_user(db, make_settings(database_url), "hanne", units=(unit.id,))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    for expires_at in (past, past, future):
        db.add(
            LoginSession(
                token_lookup=os.urandom(32),
                user_id=user.id,
                sealed_secret=b"x",
                expires_at=expires_at,
                idle_until=expires_at,
            )
        )
    db.commit()

    purged = _varsling(database_url, "sessions", "purge")

    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "Removed 2 expired sessions."
    db.rollback()
    assert len(db.scalars(select(LoginSession.id)).all()) == 1
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "sessions.purged")).one()
    assert (event.actor, event.details) == ("system", '{"count": 2}')
    assert _varsling(database_url, "sessions", "purge").stdout.strip() == (
        "Removed 0 expired sessions."
    )


def test_migrate_on_a_new_database_says_it_created_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    created = _varsling(url, "migrate")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("Created the database schema (revision ")
    again = _varsling(url, "migrate")
    assert again.stdout.startswith("Database is up to date (revision ")


def _serve(database_url: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env.update({f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()})
    env.update(
        VARSLING_DATABASE_URL=database_url,
        VARSLING_SECRETS_FILE="/nonexistent",
        VARSLING_ENVIRONMENT="development",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "varsling", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_says_serving_once_the_port_is_bound_and_answers_head(database_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = _serve(database_url, port)
    try:
        assert server.stdout is not None
        line = ""
        while "Serving" not in line:
            line = server.stdout.readline()
            assert line or server.poll() is None, server.stderr.read() if server.stderr else ""
        assert line.strip() == f"Serving Varsling on http://127.0.0.1:{port}"
        # The port is bound by now: the answer needs no retry.
        with urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{port}/nb/", method="HEAD"), timeout=30
        ) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/html")
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_second_serve_on_a_port_in_use_says_so_and_never_says_serving(
    database_url: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = _serve(database_url, port)
        out, err = server.communicate(timeout=120)
    assert server.returncode == 1
    assert f"port {port} is in use" in err
    assert "Serving" not in out


def test_serve_answers_without_nagle_delay_on_kept_alive_connections() -> None:
    """The served sockets have TCP_NODELAY: with Nagle's algorithm on, each answer on a
    kept-alive connection waited ~40 ms for the client's delayed ACK."""
    import asyncio

    from varsling import cli

    listening = cli._listen("127.0.0.1", 0)
    port = listening.getsockname()[1]
    seen: list[int] = []

    async def exchange() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        # As uvicorn serves the socket `varsling serve` hands it.
        server = await asyncio.start_server(answer, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.05)
            writer.close()

    asyncio.run(exchange())
    assert len(seen) == 1
    assert seen[0] != 0
