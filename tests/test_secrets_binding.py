"""Secrets bound to their database: no case code is lost to a missing or wrong secrets file.

These run the real `varsling` command in a subprocess against SQLite and
PostgreSQL, with the secrets in a file as a real installation has them.
"""

from __future__ import annotations

import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import FAST_ARGON2, TEST_SECRETS, make_settings
from tests.factories import PASSWORD, login, report, reporter_login
from tests.test_cli import _varsling
from varsling.accounts import service as accounts
from varsling.app import create_app
from varsling.config import SECRET_SETTINGS, ConfigError, Settings
from varsling.db import make_sessionmaker
from varsling.secrets_binding import SETTING_PREFIX, append_secrets, fingerprint

# Every entry point an administrator has, each given what it needs to run.
COMMANDS: list[tuple[str, ...]] = [
    ("serve", "--port", "1"),
    ("migrate",),
    ("secrets",),
    ("backup", "never-written.db"),
    # It checks a database that holds a schema before anything else; see tests/test_backup.py.
    ("restore", "never-read.db"),
    ("unit", "list"),
    ("unit", "add", "Vestland", "--parent", "1", "--kind", "county"),
    ("unit", "rename", "1", "Sentralleddet"),
    ("unit", "move", "1", "--parent", "1"),
    ("user", "list"),
    ("user", "add", "audun", "--role", "auditor"),
    ("user", "set-units", "1", "--unit", "1"),
    ("user", "set-email", "1", "nina@example.org"),
    ("user", "deactivate", "1"),
    ("user", "certify-keys", "--yes"),
    ("user", "reset-password", "1"),
    ("recovery", "init"),
    ("recovery", "status"),
    ("recovery", "grant", "--case", "0" * 32, "--user", "hanne", "--key-file", "never-read.txt"),
    ("audit", "verify"),
    ("audit", "checkpoint"),
    ("audit", "export", "--output", "never-written.jsonl"),
    ("keys", "public"),
    ("sessions", "purge"),
    # Without --public-key it checks against the configured key; with it, it is offline.
    ("receipt", "verify", "never-read.txt"),
    ("jobs", "run"),
]


def _file_settings(database_url: str, secrets_file: Path) -> Settings:
    """What the service runs with: the secrets from the file, nothing else."""
    return Settings(
        _env_file=secrets_file,
        environment="development",
        database_url=database_url,
        **FAST_ARGON2,
    )


def _fingerprints(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT key, value FROM settings WHERE key LIKE 'secret_fingerprint.%'")
        )
        return {key.removeprefix(SETTING_PREFIX): value for key, value in rows}


def _run(database_url: str, secrets_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _varsling(
        database_url, *args, password=PASSWORD, secrets_file=str(secrets_file), env_secrets=False
    )


def _set_up(database_url: str, secrets_file: Path) -> int:
    """A first start from a fresh clone, then a unit and a handler; the unit's id."""
    first = _run(database_url, secrets_file, "migrate")
    assert first.returncode == 0, first.stderr
    assert "First start: generated installation secrets" in first.stderr
    unit = _run(database_url, secrets_file, "unit", "add", "Sentralt")
    assert unit.returncode == 0, unit.stderr
    handler = _run(
        database_url,
        secrets_file,
        *("user", "add", "hanne", "--role", "handler", "--unit", unit.stdout.strip()),
        *("--display-name", "Hanne Hansen"),
    )
    assert handler.returncode == 0, handler.stderr
    return int(unit.stdout)


def test_first_start_generates_records_and_every_restart_keeps_case_codes(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    unit_id = _set_up(database_url, secrets_file)

    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    written = secrets_file.read_text()
    recorded = _fingerprints(engine)
    assert set(recorded) == set(SECRET_SETTINGS)
    values = dict(line.split("=", 1) for line in written.splitlines() if "=" in line)
    for name in SECRET_SETTINGS:
        value = values[f"VARSLING_{name.upper()}"]
        assert recorded[name] == fingerprint(name, value.encode())
        assert value not in "".join(recorded.values())

    app = create_app(_file_settings(database_url, secrets_file))
    with TestClient(app) as client:
        code = client.post("/api/v1/reports", json=report(unit_id)).json()["case_code"]
    app.state.engine.dispose()

    for _restart in range(2):
        again = _run(database_url, secrets_file, "migrate")
        assert again.returncode == 0, again.stderr
        assert "generated" not in again.stderr.lower()
    assert secrets_file.read_text() == written

    app = create_app(_file_settings(database_url, secrets_file))
    with TestClient(app) as client:
        reporter = reporter_login(client, code)
        assert client.get("/api/v1/reporter/case", headers=reporter).status_code == 200
        assert client.get("/api/v1/cases", headers=login(client, "hanne")).json()["items"]
    app.state.engine.dispose()


def test_a_missing_secrets_file_with_data_stops_every_command(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    kept = secrets_file.read_text()
    secrets_file.unlink()
    before = _fingerprints(engine)

    for command in COMMANDS:
        result = _run(database_url, secrets_file, *command)

        assert result.returncode == 2, (command, result.stdout + result.stderr)
        assert "Refusing to start" in result.stderr
        assert "VARSLING_CODE_PEPPER is missing" in result.stderr
        assert str(secrets_file) in result.stderr
        assert "Restore the secrets file that belongs to this database" in result.stderr
        assert "Serving" not in result.stdout
        assert not secrets_file.exists(), "no secrets may be generated for a database with data"
    assert _fingerprints(engine) == before
    secrets_file.write_text(kept)
    assert _run(database_url, secrets_file, "unit", "list").stdout.startswith("1\tSentralt")


def test_a_changed_secrets_file_stops_serve_and_the_cli(database_url: str, tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    kept = secrets_file.read_text()
    other = tmp_path / "other.env"
    append_secrets(other, SECRET_SETTINGS)

    for command in (("serve", "--port", "1"), ("user", "list")):
        result = _run(database_url, other, *command)

        assert result.returncode == 2
        assert "VARSLING_CODE_PEPPER" in result.stderr
        assert f"(from {other} or the environment) is not the one" in result.stderr
        assert "Restore the secrets file that belongs to this database" in result.stderr
        assert "Serving" not in result.stdout
        for line in other.read_text().splitlines()[2:]:
            assert line.split("=", 1)[1] not in result.stdout + result.stderr
    assert secrets_file.read_text() == kept


def test_one_changed_secret_in_the_environment_is_named(database_url: str, tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    changed = secrets_file.read_text().replace(
        "VARSLING_PASSWORD_PEPPER=", "VARSLING_PASSWORD_PEPPER=x"
    )
    secrets_file.write_text(changed)

    result = _run(database_url, secrets_file, "user", "list")

    assert result.returncode == 2
    assert "VARSLING_PASSWORD_PEPPER (from" in result.stderr


def test_a_secrets_file_in_a_missing_folder_is_an_error_not_a_new_folder(
    database_url: str, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    misplaced = tmp_path / "moved" / "secrets.env"

    for command in (("serve", "--port", "1"), ("migrate",), ("unit", "list")):
        result = _run(database_url, misplaced, *command)
        assert result.returncode == 2
        assert f"VARSLING_SECRETS_FILE is {misplaced}" in result.stderr
        assert f"the folder {misplaced.parent} does not exist" in result.stderr
    assert not misplaced.parent.exists()

    # Even for an empty installation: a typo in the setting never makes a new folder.
    fresh = _run(f"sqlite:///{tmp_path / 'new.db'}", misplaced, "migrate")
    assert fresh.returncode == 2
    assert not misplaced.parent.exists()


def test_create_app_refuses_secrets_the_database_does_not_know(
    database_url: str, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    with pytest.raises(ConfigError, match=r"VARSLING_CODE_PEPPER .*is not the one"):
        create_app(make_settings(database_url))


def test_removed_fingerprints_are_noticed_not_recorded_afresh(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A database writer who deletes the fingerprints does not switch the check off."""
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM settings WHERE key LIKE 'secret_fingerprint.%'"))

    other = tmp_path / "other.env"
    append_secrets(other, SECRET_SETTINGS)
    for secrets_in_use in (other, secrets_file):
        result = _run(database_url, secrets_in_use, "unit", "list")
        assert result.returncode == 2
        assert "has been removed from the database" in result.stderr
    assert _fingerprints(engine) == {}


def test_an_edited_fingerprint_is_refused(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    _set_up(database_url, secrets_file)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE settings SET value = :v WHERE key = 'secret_fingerprint.code_salt'"),
            {"v": fingerprint("code_salt", b"the attacker's own salt")},
        )

    result = _run(database_url, secrets_file, "serve", "--port", "1")

    assert result.returncode == 2
    assert "VARSLING_CODE_SALT" in result.stderr


def _legacy_database(settings: Settings, engine: Engine) -> None:
    """Data made before the binding: a unit, and no fingerprints."""
    with make_sessionmaker(engine).begin() as session:
        accounts.create_unit(session, name="Sentralt")
    assert _fingerprints(engine) == {}


def test_an_older_installation_keeps_its_secrets_and_gets_the_new_ones(
    database_url: str, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    _legacy_database(settings, engine)
    secrets_file = tmp_path / "secrets.env"
    original = "".join(
        f"VARSLING_{name.upper()}={TEST_SECRETS[name]}\n"
        for name in ("code_pepper", "code_salt", "web_secret")
    )
    secrets_file.write_text(original)
    secrets_file.chmod(0o600)

    result = _run(database_url, secrets_file, "unit", "list")

    assert result.returncode == 0, result.stderr
    assert "Generated VARSLING_SIGNING_KEY, VARSLING_PASSWORD_PEPPER" in result.stderr
    assert secrets_file.read_text().startswith(original)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    recorded = _fingerprints(engine)
    assert set(recorded) == set(SECRET_SETTINGS)
    assert recorded["code_pepper"] == fingerprint(
        "code_pepper", TEST_SECRETS["code_pepper"].encode()
    )


def test_an_older_installation_without_its_secrets_file_is_refused(
    database_url: str, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    _legacy_database(settings, engine)
    secrets_file = tmp_path / "secrets.env"

    for command in (("serve", "--port", "1"), ("migrate",), ("secrets",)):
        result = _run(database_url, secrets_file, *command)
        assert result.returncode == 2
        assert "this database holds data" in result.stderr
        assert "VARSLING_CODE_PEPPER" in result.stderr
    assert not secrets_file.exists()
    assert _fingerprints(engine) == {}


def test_secrets_new_only_for_a_database_without_data(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.env"
    assert _run(database_url, secrets_file, "migrate").returncode == 0
    first = _fingerprints(engine)
    secrets_file.unlink()

    lost = _run(database_url, secrets_file, "unit", "list")
    assert lost.returncode == 2
    assert "`varsling secrets --new`" in lost.stderr

    new = _run(database_url, secrets_file, "secrets", "--new")
    assert new.returncode == 0, new.stderr
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert _fingerprints(engine).keys() == first.keys()
    assert _fingerprints(engine) != first
    assert _run(database_url, secrets_file, "unit", "add", "Sentralt").returncode == 0

    kept = secrets_file.read_text()
    refused = _run(database_url, secrets_file, "secrets", "--new")
    assert refused.returncode == 2
    assert "holds data" in refused.stderr
    assert secrets_file.read_text() == kept


def test_secrets_new_refuses_secrets_given_in_the_environment(database_url: str) -> None:
    result = _varsling(database_url, "secrets", "--new")
    assert result.returncode == 2
    assert "VARSLING_CODE_PEPPER" in result.stderr
    assert "unset them first" in result.stderr


def test_appending_keeps_the_file_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("VARSLING_CODE_PEPPER=" + secrets.token_urlsafe(48))
    path.chmod(0o600)
    before = path.read_text()

    append_secrets(path, ["signing_key"])

    assert path.read_text().startswith(before + "\n")
    assert path.read_text().count("VARSLING_SIGNING_KEY=") == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fingerprints_depend_on_the_secret_and_its_name() -> None:
    value = b"v" * 48
    assert fingerprint("code_pepper", value) != fingerprint("code_salt", value)
    assert fingerprint("code_pepper", value) != fingerprint("code_pepper", b"w" * 48)
    assert value.decode() not in fingerprint("code_pepper", value)


def test_every_command_is_among_those_proven_to_check_the_secrets() -> None:
    """A command added later must join COMMANDS (or be offline and need no settings)."""
    import typer

    from varsling.cli import app

    def paths(command: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        subcommands: dict[str, Any] = getattr(command, "commands", {})
        if subcommands:
            return [p for name, sub in subcommands.items() for p in paths(sub, (*prefix, name))]
        return [prefix]

    groups = {"unit", "user", "audit", "keys", "sessions", "receipt", "jobs", "recovery"}
    checked = {command[:2] if command[0] in groups else command[:1] for command in COMMANDS}
    assert set(paths(typer.main.get_command(app), ())) - checked == set()
