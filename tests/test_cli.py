"""The `varsling` command as an administrator uses it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
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
from tests.serving import run_coroutine
from varsling import cli
from varsling.accounts.models import LoginSession
from varsling.audit import AuditEvent


def _varsling(
    database_url: str,
    *args: str,
    password: str | None = None,
    secrets_file: str = "/nonexistent",
    env_secrets: bool = True,
    program: tuple[str, ...] = ("-m", "varsling"),
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
        [sys.executable, *program, *args],
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


# Runs `varsling ARGS` as the console script does, then prints the modules it loaded.
_LIST_MODULES = (
    "import atexit, json, sys; "
    "atexit.register(lambda: print(json.dumps(sorted(sys.modules)))); "
    "from varsling.cli import app; app()"
)
# None of this is needed to parse the command line; each command imports what it uses.
_HEAVY_PACKAGES = {
    "sqlalchemy", "pydantic", "pydantic_settings", "cryptography", "alembic",
    "fastapi", "starlette", "uvicorn", "jinja2",
}  # fmt: skip


def _modules_loaded(database_url: str, *args: str) -> tuple[str, set[str]]:
    """What `varsling ARGS` printed, and every module it had loaded when it ended."""
    ran = _varsling(database_url, *args, program=("-c", _LIST_MODULES))
    assert ran.returncode == 0, ran.stderr
    *output, modules = ran.stdout.splitlines()
    return "\n".join(output), set(json.loads(modules))


def _packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_the_command_line_is_parsed_without_database_web_or_settings_code() -> None:
    # `--help`, `audit verify --export` and `receipt verify --public-key` stay quick.
    probe = "import json, sys, varsling.cli; print(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(ran.stdout))
    assert not _packages(loaded) & _HEAVY_PACKAGES
    assert {m for m in loaded if m.split(".")[0] == "varsling"} == {
        "varsling",
        "varsling.cli",
        "varsling.errors",
    }


def test_a_database_command_loads_no_web_code_and_no_other_commands_code(
    database_url: str,
) -> None:
    output, loaded = _modules_loaded(database_url, "audit", "verify")
    assert output.startswith("OK: 1 events")
    assert not _packages(loaded) & {"fastapi", "starlette", "uvicorn", "jinja2", "segno"}
    assert "varsling.accounts.service" not in loaded

    # The account commands' service layer is written for the web too (its login is async).
    output, loaded = _modules_loaded(database_url, "unit", "list")
    assert output == ""
    assert "varsling.accounts.service" in loaded
    assert not _packages(loaded) & {"fastapi", "uvicorn", "jinja2", "segno"}
    assert not loaded & {
        "varsling.app",
        "varsling.accounts.lifecycle",
        "varsling.accounts.setup_check",
        "varsling.backup",
        "varsling.cases.recovery",
        "varsling.jobs",
    }
    if database_url.startswith("sqlite"):
        assert "sqlalchemy.dialects.postgresql" not in loaded


def test_python_m_varsling_cli_knows_every_command(database_url: str) -> None:
    # Several tests run the module itself: its last commands must be defined by then.
    ran = _varsling(database_url, "recovery", "status", program=("-m", "varsling.cli"))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("No recovery key.")


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


def _serve(database_url: str, port: int, *options: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env.update({f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()})
    env.update(
        VARSLING_DATABASE_URL=database_url,
        VARSLING_SECRETS_FILE="/nonexistent",
        VARSLING_ENVIRONMENT="development",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "varsling", "serve", "--port", str(port), *options],
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


def test_serve_with_two_workers_answers_from_two_processes_and_stops_them(
    database_url: str,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = _serve(database_url, port, "--workers", "2")
    try:
        assert server.stdout is not None
        line = ""
        while "Serving" not in line:
            line = server.stdout.readline()
            assert line or server.poll() is None, server.stderr.read() if server.stderr else ""
        assert (
            line.strip() == f"Serving Varsling on http://127.0.0.1:{port} with 2 worker processes"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/units", timeout=60) as answer:
            assert answer.status == 200
        workers = [p for p in _children(server.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2
    finally:
        server.terminate()
        server.communicate(timeout=60)
    assert server.returncode == 0
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


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


def test_an_email_address_is_given_at_creation_changed_and_cleared(database_url: str) -> None:
    assert _varsling(database_url, "migrate").returncode == 0
    unit_id = _varsling(database_url, "unit", "add", "Sentralt").stdout.strip()
    added = _varsling(
        database_url,
        *("user", "add", "hanne", "--role", "handler", "--unit", unit_id),
        *("--display-name", "Hanne H", "--email", "hanne@example.org"),
        password=PASSWORD,
    )
    assert added.returncode == 0, added.stderr
    user_id = added.stdout.strip()

    refused = _varsling(database_url, "user", "set-email", user_id, "hanne@example.org,x@y.org")
    assert refused.returncode != 0
    assert "An email address looks like" in refused.stdout + refused.stderr
    both = _varsling(database_url, "user", "set-email", user_id, "a@example.org", "--clear")
    assert both.returncode == 2
    changed = _varsling(database_url, "user", "set-email", user_id, "hanne@staff.example.org")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == f"{user_id}\thanne\thanne@staff.example.org"
    cleared = _varsling(database_url, "user", "set-email", user_id, "--clear")
    assert cleared.stdout.strip() == f"{user_id}\thanne\t(no email)"


def test_every_connection_on_the_listening_socket_has_nagle_off() -> None:
    # Without TCP_NODELAY an answer written in two parts on a kept-alive connection
    # waits for the client's delayed ACK (about 40 ms a request).
    listening = cli._listen("127.0.0.1", 0)
    port = listening.getsockname()[1]
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def connect_once() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    run_coroutine(connect_once())
    assert seen == [1]
