"""On PostgreSQL the service runs as a role that can only append to the audit trail."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests.conftest import TEST_SECRETS, make_settings
from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling import audit
from varsling.app import create_app
from varsling.db import make_engine, make_sessionmaker, migrate_installation

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def service_url(database: Any, database_url: str) -> Iterator[str]:
    """A fresh login role for the service (the test user is a superuser: the owner)."""
    if database.kind != "postgresql":
        pytest.skip("database roles are PostgreSQL's; on SQLite the triggers are all there is")
    role = f"varsling_service_{secrets.token_hex(6)}"
    password = secrets.token_hex(16)
    owner = create_engine(database_url)
    with owner.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
    url = make_url(database_url).set(username=role, password=password)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with owner.begin() as connection:
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
        owner.dispose()


REFUSED = [
    "UPDATE {table} SET hash = 'x'",
    "DELETE FROM {table}",
    "TRUNCATE {table}",
    "ALTER TABLE {table} DISABLE TRIGGER ALL",
    "ALTER TABLE {table} DISABLE TRIGGER {table}_no_update",
    "DROP TABLE {table}",
]


def test_the_service_role_cannot_rewrite_the_trail_but_runs_the_service(
    database_url: str, service_url: str
) -> None:
    role = make_url(service_url).username
    assert migrate_installation(service_url, database_url) == role
    # Idempotent: every `varsling migrate` grants again, as the owner.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env |= {
        "PYTHONPATH": SRC,
        "VARSLING_DATABASE_URL": service_url,
        "VARSLING_MIGRATION_DATABASE_URL": database_url,
        "VARSLING_SECRETS_FILE": "/nonexistent",
        # The installation's secrets, as the app below gets them: they are bound to the database.
        **{f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()},
    }
    migrated = subprocess.run(
        [sys.executable, "-m", "varsling.cli", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert f"Granted the service role {role!r}" in migrated.stdout
    assert service_url not in migrated.stdout + migrated.stderr
    settings = make_settings(service_url)
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            maker = make_sessionmaker(app.state.engine)
            with maker() as db:
                unit = make_unit(db)
                make_user(db, settings, "hanne", units=(unit.id,))
                make_user(db, settings, "audun", roles=("auditor",))
            submitted = client.post("/api/v1/reports", json=report(unit.id))
            assert submitted.status_code == 201
            reporter = reporter_login(client, submitted.json()["case_code"])
            sent = client.post(
                "/api/v1/reporter/case/messages", json={"body": "hello"}, headers=reporter
            )
            assert sent.status_code < 300
            auditor = login(client, "audun")
            checkpoint = client.post("/api/v1/audit/checkpoints", headers=auditor)
            assert checkpoint.status_code == 201
            assert client.get("/api/v1/audit/verify", headers=auditor).json()["ok"] is True
    finally:
        app.state.engine.dispose()

    service = make_engine(service_url)
    try:
        statements = [
            s.format(table=t)
            for t in ("audit_events", "audit_reporter_events", "audit_checkpoints")
            for s in REFUSED
        ]
        statements += [
            "DELETE FROM audit_head",
            "INSERT INTO audit_head (id, seq, hash) VALUES (3, 0, 'x')",
            "UPDATE alembic_version SET version_num = '0001'",
            "SET session_replication_role = replica",
            "CREATE TRIGGER t BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
        ]
        for statement in statements:
            with service.connect() as connection:
                with pytest.raises(DBAPIError, match=r"permission denied|must be owner") as err:
                    connection.execute(text(statement))
                assert "append-only" not in str(err.value), statement
        with service.connect() as connection:
            # What it needs still works: reading, and moving the head (rolled back here).
            assert connection.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
            connection.execute(text("UPDATE audit_head SET seq = seq WHERE id = 1"))
            connection.rollback()
    finally:
        service.dispose()
    owner = make_engine(database_url)
    with make_sessionmaker(owner)() as db:
        assert audit.verify(db).ok
    owner.dispose()
