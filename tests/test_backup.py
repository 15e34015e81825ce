"""`varsling backup` and `varsling restore`: backup, restore into an empty database, verify.

These run the real command in a subprocess on SQLite and PostgreSQL. Each
restore goes into a database of its own: a new file, or a new PostgreSQL
database `test_backup_restore_<hex>` dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.conftest import TEST_SECRETS, make_settings
from tests.factories import (
    PASSWORD,
    login,
    make_unit,
    make_user,
    open_first_case,
    report,
    reporter_login,
)
from tests.tamper import rewrite_from_scratch, unguarded
from tests.test_cli import _varsling
from varsling import audit, cli
from varsling import backup as backups
from varsling.app import create_app
from varsling.backup import write_backup
from varsling.config import SECRET_SETTINGS, Settings
from varsling.db import alembic_config, make_engine, make_sessionmaker, migrate
from varsling.secrets_binding import append_secrets

# Reporter events are signed from the day after they happened on.
TOMORROW = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
DESCRIPTION = "The budget was moved to a friend's company."


def _create_database(database: Any, tmp_path: Path, name: str) -> str:
    """A new, empty database: a file name, or a new PostgreSQL database."""
    if database.kind == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    base = make_url(database.url)
    new = f"test_backup_{name}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{new}"'))
    admin.dispose()
    return base.set(database=new).render_as_string(hide_password=False)


def _drop(database: Any, url: str) -> None:
    if database.kind == "sqlite":
        return
    name = make_url(url).database
    admin = create_engine(make_url(database.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def target(database: Any, tmp_path: Path) -> Iterator[str]:
    """An empty database to restore into."""
    url = _create_database(database, tmp_path, "restore")
    yield url
    _drop(database, url)


def _set_up(client: TestClient, db: Session, settings: Settings, tmp_path: Path) -> str:
    """A unit, a handler working on a submitted case, a checkpoint (the auditor keeps a
    copy in tmp_path/checkpoint.json) and later events; returns the reporter's case code."""
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    answer = client.post("/api/v1/reports", json=report(unit.id, description=DESCRIPTION))
    code: str = answer.json()["case_code"]
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    db.rollback()
    made = audit.create_checkpoint(db, settings.signing_seed, actor="system", now=TOMORROW)
    db.commit()
    # The auditor's own copy, kept outside the database.
    (tmp_path / "checkpoint.json").write_text(json.dumps(made.to_json()))
    client.post(f"/api/v1/cases/{case_id}/notes", json={"body": "later"}, headers=handler)
    return code


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                query = "SELECT name FROM sqlite_master"
            else:
                query = (
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                    "UNION ALL SELECT proname FROM pg_proc p JOIN pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
                )
            return [str(name) for name in connection.execute(text(query)).scalars()]
    finally:
        engine.dispose()


def _actions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = select(audit.AuditEvent.action).order_by(audit.AuditEvent.seq)
            return list(connection.execute(query).scalars())
    finally:
        engine.dispose()


@dataclass(frozen=True)
class _Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(
    database_url: str, *args: str, secrets_file: str = "/nonexistent", env_secrets: bool = True
) -> _Ran:
    """The command in this process (a subprocess costs seconds): what `_varsling` runs."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("VARSLING_")}
    env.update(
        {
            "VARSLING_DATABASE_URL": database_url,
            "VARSLING_SECRETS_FILE": secrets_file,
            "VARSLING_ARGON2_MEMORY_KIB": "64",
            "VARSLING_ARGON2_TIME_COST": "1",
        }
    )
    if env_secrets:
        env.update({f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()})
    ran = CliRunner().invoke(cli.app, list(args), env=env)
    if ran.exception is not None and not isinstance(ran.exception, SystemExit):
        raise ran.exception
    return _Ran(ran.exit_code, ran.stdout, ran.stderr)


def _backup(database_url: str, file: Path, *, run: Any = _cli) -> None:
    made = run(database_url, "backup", str(file))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert "is NOT in it" in made.stdout
    assert "back it up separately" in made.stdout


def test_backup_while_writing_then_restore_verifies_and_opens_the_case(
    client: TestClient, db: Session, settings: Settings, target: str, tmp_path: Path
) -> None:
    code = _set_up(client, db, settings, tmp_path)
    # The service's own kind of engine: SQLite write locks taken up front.
    engine = make_engine(settings.database_url)
    file = tmp_path / "varsling.backup"
    stop = threading.Event()
    written: list[int] = []

    def keep_writing() -> None:
        while not stop.is_set():
            with make_sessionmaker(engine).begin() as session:
                audit.record(session, actor="system", action="test.write")
            written.append(1)
            stop.wait(0.02)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        # The real command in a process of its own, while this one writes.
        _backup(settings.database_url, file, run=_varsling)
    finally:
        stop.set()
        writer.join()
        engine.dispose()
    assert written, "the writer ran during the backup"
    if settings.database_url.startswith("sqlite"):
        # A page copy of the database (pg_dump's archive is compressed: nothing to see).
        assert DESCRIPTION.encode() not in file.read_bytes()
        assert code.encode() not in file.read_bytes()

    restored = _cli(target, "restore", str(file), "--checkpoint", str(tmp_path / "checkpoint.json"))

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "OK: the audit trail verifies" in restored.stdout
    assert "It holds the checkpoint you gave" in restored.stdout
    assert "It holds the last checkpoint stored in the backup" in restored.stdout
    verified = _cli(target, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "chains intact" in verified.stdout
    actions = _actions(target)
    assert actions[-1] == "installation.restored"
    assert "installation.backup" in actions

    app = create_app(make_settings(target))
    try:
        with TestClient(app) as restored_client:
            handler = login(restored_client, "hanne", PASSWORD)
            cases = restored_client.get("/api/v1/cases", headers=handler).json()["items"]
            case = restored_client.get(f"/api/v1/cases/{cases[0]['id']}", headers=handler)
            assert case.status_code == 200, case.text
            assert DESCRIPTION in case.text
            reporter = reporter_login(restored_client, code)
            mine = restored_client.get("/api/v1/reporter/case", headers=reporter)
            assert mine.status_code == 200, mine.text
    finally:
        app.state.engine.dispose()


def test_restore_into_a_database_with_data_is_refused_and_changes_nothing(
    client: TestClient, db: Session, settings: Settings, tmp_path: Path
) -> None:
    _set_up(client, db, settings, tmp_path)
    file = tmp_path / "varsling.backup"
    _backup(settings.database_url, file)
    before = _actions(settings.database_url)

    refused = _cli(settings.database_url, "restore", str(file))

    assert refused.returncode == 1
    assert "is not empty" in refused.stderr
    assert "Nothing was changed" in refused.stderr
    assert _actions(settings.database_url) == before
    kept = file.read_bytes()
    again = _cli(settings.database_url, "backup", str(file))
    assert again.returncode == 1
    assert "give --force" in again.stderr
    assert file.read_bytes() == kept
    forced = _cli(settings.database_url, "backup", str(file), "--force")
    assert forced.returncode == 0, forced.stderr
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_garbage_truncated_and_wrong_kind_files_are_refused(
    client: TestClient, db: Session, settings: Settings, target: str, tmp_path: Path
) -> None:
    _set_up(client, db, settings, tmp_path)
    file = tmp_path / "varsling.backup"
    _backup(settings.database_url, file)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a backup at all\n" * 50)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    other_kind = tmp_path / "other-kind"
    if settings.database_url.startswith("sqlite"):
        other_kind.write_bytes(b"PGDMP" + b"\x00" * 100)
        expected = "is a PostgreSQL backup, but the configured database"
    else:
        with sqlite3.connect(other_kind) as made:
            made.execute("CREATE TABLE t (x)")
        expected = "is a SQLite backup, but the configured database"

    for bad, said in (
        (garbage, "is not a Varsling backup"),
        (truncated, "damaged or cut short"),
        (other_kind, expected),
    ):
        refused = _cli(target, "restore", str(bad))

        assert refused.returncode == 1, refused.stdout
        assert said in refused.stderr
        assert "Restored" not in refused.stdout
        assert _tables(target) == [], bad
    if settings.database_url.startswith("sqlite"):
        not_ours = tmp_path / "not-ours.db"
        with sqlite3.connect(not_ours) as made:
            made.execute("CREATE TABLE t (x)")
        refused = _cli(target, "restore", str(not_ours))
        assert refused.returncode == 1
        assert "not a Varsling one" in refused.stderr


def _tampered_backup(settings: Settings, db: Session, file: Path, tamper: Any) -> None:
    """A backup whose audit tables `tamper(session)` changed, as their writer would."""
    if settings.database_url.startswith("sqlite"):
        _backup(settings.database_url, file)
        # A writer of the backup file itself.
        engine = create_engine(f"sqlite:///{file}")
        with make_sessionmaker(engine)() as session:
            tamper(session)
        engine.dispose()
    else:
        # A writer of the database before the dump: the backup holds the change.
        tamper(db)
        _backup(settings.database_url, file)


def test_a_backup_with_a_changed_audit_row_restores_but_fails_loudly(
    client: TestClient, db: Session, settings: Settings, target: str, tmp_path: Path
) -> None:
    _set_up(client, db, settings, tmp_path)
    file = tmp_path / "varsling.backup"
    changed = 3

    def change_a_row(session: Session) -> None:
        with unguarded(session):
            session.execute(
                text("UPDATE audit_events SET details = '{\"x\": 1}' WHERE seq = :seq"),
                {"seq": changed},
            )

    _tampered_backup(settings, db, file, change_a_row)

    restored = _cli(target, "restore", str(file))

    assert restored.returncode == 1
    assert "Restored the" in restored.stdout
    assert "BROKEN: the restored audit trail does NOT verify" in restored.stderr
    assert f"sequence number {changed}" in restored.stderr
    assert "installation.restored" not in _actions(target)
    verified = _cli(target, "audit", "verify")
    assert verified.returncode == 1
    assert f"sequence number {changed}" in verified.stderr


def test_a_rewritten_trail_is_caught_by_the_auditors_checkpoint(
    client: TestClient, db: Session, settings: Settings, target: str, tmp_path: Path
) -> None:
    _set_up(client, db, settings, tmp_path)
    file = tmp_path / "varsling.backup"

    def rewrite(session: Session) -> None:
        rewrite_from_scratch(session)
        with unguarded(session):
            session.execute(text("DELETE FROM audit_checkpoints"))

    _tampered_backup(settings, db, file, rewrite)

    restored = _cli(target, "restore", str(file), "--checkpoint", str(tmp_path / "checkpoint.json"))

    assert restored.returncode == 1
    assert "BROKEN: the restored audit trail does NOT verify" in restored.stderr
    assert "the staff chain breaks at sequence number" in restored.stderr
    assert "installation.restored" not in _actions(target)


def test_a_restore_with_other_secrets_is_refused_and_leaves_the_database_empty(
    client: TestClient, db: Session, settings: Settings, target: str, tmp_path: Path
) -> None:
    _set_up(client, db, settings, tmp_path)
    file = tmp_path / "varsling.backup"
    _backup(settings.database_url, file)
    other = tmp_path / "other.env"
    append_secrets(other, SECRET_SETTINGS)
    missing = tmp_path / "missing.env"

    wrong = _cli(target, "restore", str(file), secrets_file=str(other), env_secrets=False)
    absent = _cli(target, "restore", str(file), secrets_file=str(missing), env_secrets=False)

    assert wrong.returncode == 2
    assert "Refusing to restore" in wrong.stderr
    assert f"VARSLING_CODE_PEPPER (from {other} or the environment) is not the one" in (
        wrong.stderr
    )
    assert absent.returncode == 2
    assert "VARSLING_CODE_PEPPER is missing" in absent.stderr
    assert not missing.exists(), "no secrets are generated for a restore"
    assert _tables(target) == []
    restored = _cli(target, "restore", str(file))
    assert restored.returncode == 0, restored.stderr


def test_an_older_backup_is_migrated_to_head(database: Any, tmp_path: Path, target: str) -> None:
    older = _create_database(database, tmp_path, "older")
    try:
        migrate(older, "0009")
        file = tmp_path / "older.backup"
        write_backup(older, file)
    finally:
        _drop(database, older)

    restored = _cli(target, "restore", str(file))

    assert restored.returncode == 0, restored.stderr
    head = ScriptDirectory.from_config(alembic_config(target)).get_current_head()
    assert f"Upgraded the database schema from revision 0009 to {head}" in restored.stdout
    assert "OK: the audit trail verifies" in restored.stdout
    assert "the backup holds no checkpoint" in restored.stderr
    engine = create_engine(target)
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        events = connection.execute(select(func.count()).select_from(audit.AuditEvent)).scalar()
    engine.dispose()
    assert revision == head
    assert events


def test_the_password_reaches_pg_dump_in_its_environment_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = "p@ss:w/rd#1 secret"
    where = "db.example:5433/varsling?sslmode=require"
    url = f"postgresql+psycopg://owner:{quote(password, safe='')}@{where}"
    seen: dict[str, Any] = {}

    def run(args: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        seen["args"], seen["env"] = args, options["env"]
        Path(args[-2].removeprefix("--file=")).write_bytes(b"PGDMP dump")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(backups.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(backups.subprocess, "run", run)

    backups.write_backup(url, tmp_path / "varsling.dump")

    assert not any(password in arg or quote(password, safe="") in arg for arg in seen["args"])
    assert seen["args"][-1] == "postgresql://owner@db.example:5433/varsling?sslmode=require"
    assert seen["env"]["PGPASSWORD"] == password
    assert (tmp_path / "varsling.dump").read_bytes() == b"PGDMP dump"
