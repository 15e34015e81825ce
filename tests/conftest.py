"""Fixtures: every test runs on SQLite and on PostgreSQL.

The schema is migrated with Alembic once per database and session; each test
then starts from empty tables (a copied SQLite file, or emptied PostgreSQL
tables with the audit triggers bypassed for the cleanup only).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from varsling.app import create_app
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker, migrate
from varsling.models import Base

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_SECRETS = {
    "code_pepper": "test-pepper-" + "p" * 40,
    "code_salt": "test-salt-" + "s" * 40,
    "web_secret": "test-web-secret-" + "w" * 40,
    "signing_key": "test-signing-key-" + "k" * 40,
    "password_pepper": "test-password-pepper-" + "q" * 40,
}
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1}
PASSWORD = "correct horse battery staple"
FLOOD_LIMITS_OFF = {"submissions_per_minute": 100_000, "uploads_per_minute": 100_000}


def _postgres_url() -> str:
    return os.environ.get("VARSLING_TEST_DATABASE_URL", DEFAULT_PG_URL)


def _postgres_reachable(url: str) -> str | None:
    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not reachable"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def _worker_postgres_url(base_url: str) -> str:
    """The PostgreSQL database this pytest process owns.

    Under pytest-xdist every worker migrates, drops and truncates its own
    database, `<name>_gw0`, `<name>_gw1`, ..., created on first use through the
    base database; without xdist it is the base database itself.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return base_url
    base = make_url(base_url)
    name = f"{base.database}_{worker}"
    if not re.fullmatch(r"\w+", name, re.ASCII):
        raise ValueError(f"not a plain database name: {name!r}")
    url = base.set(database=name)
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _databases() -> Iterator[dict[str, Any]]:
    """Each kind's migrated database, made once per session when first asked for.

    Kept here rather than in `database` itself: pytest tears a parametrized
    session fixture down whenever the next test wants the other parameter,
    which pytest-xdist's scheduling makes frequent, and PostgreSQL would be
    migrated again each time.
    """
    made: dict[str, Any] = {}
    yield made
    for database in made.values():
        if isinstance(database, PostgresDatabase):
            database.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _databases: dict[str, Any],
) -> Any:
    """A migrated database of each kind, with a way to empty it between tests."""
    kind: str = request.param
    if kind not in _databases:
        _databases[kind] = _migrated(kind, tmp_path_factory)
    made = _databases[kind]
    if isinstance(made, str):
        _skip_or_fail(made)
    return made


def _skip_or_fail(problem: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


def _migrated(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The database, or why PostgreSQL cannot be used (remembered, so asked once)."""
    if kind == "sqlite":
        folder = tmp_path_factory.mktemp("sqlite")
        template = folder / "template.db"
        migrate(f"sqlite:///{template}")
        return SQLiteDatabase(template)
    base_url = _postgres_url()
    problem = _postgres_reachable(base_url)
    if problem is not None:
        if os.environ.get("CI"):
            return f"PostgreSQL must be reachable in CI at {base_url}: {problem}"
        return f"PostgreSQL not reachable at {base_url} ({problem}); set VARSLING_TEST_DATABASE_URL"
    url = _worker_postgres_url(base_url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    migrate(url)
    return PostgresDatabase(url)


class SQLiteDatabase:
    kind = "sqlite"

    def __init__(self, template: Path) -> None:
        self.template = template
        self.url = ""
        self.path = template

    def fresh(self, folder: Path) -> str:
        self.path = folder / "varsling.db"
        shutil.copyfile(self.template, self.path)
        self.url = f"sqlite:///{self.path}"
        return self.url

    def clean(self) -> None:
        """Nothing to do: the next test copies the template again."""


class PostgresDatabase:
    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        # One connection for the cleanups, kept: a new one costs more than the cleanup.
        self.engine = create_engine(url, pool_size=1)

    def fresh(self, _folder: Path) -> str:
        return self.url

    def clean(self) -> None:
        """Empty every table and restart its ids, as TRUNCATE ... RESTART IDENTITY would.

        DELETE rather than TRUNCATE: TRUNCATE gives each of the tables (and their
        indexes) new files, which took ten times as long as deleting the few
        rows a test leaves. The replica role skips the audit tables' append-only
        triggers and the foreign key checks, for this cleanup only.
        """
        with self.engine.begin() as connection:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
            connection.execute(
                text(
                    "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass,"
                    " start_value, false) FROM pg_sequences WHERE schemaname = current_schema()"
                )
            )
            connection.execute(
                text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h), (2, 0, :h)"),
                {"h": "0" * 64},
            )
            connection.execute(
                text(
                    "INSERT INTO login_throttle (name, window_start, failures) "
                    "VALUES ('case_code', now(), 0), ('staff_login', now(), 0)"
                )
            )

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def database_url(database: Any, tmp_path: Path) -> Iterator[str]:
    url: str = database.fresh(tmp_path)
    yield url
    database.clean()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": database_url,
        **TEST_SECRETS,
        **FAST_ARGON2,
        # Two-factor is off for every role here, as the many API logins of custodians and
        # admins in the suite need; tests/accounts/test_two_factor.py and the staff page
        # tests run with the shipped default (custodians and admins need it).
        "two_factor_roles": (),
        # The suite sends reports faster than any installation's reporters do;
        # tests/test_flood_limits.py checks the limits themselves.
        **FLOOD_LIMITS_OFF,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url, immediate=False)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session whose work the test commits itself (services only flush)."""
    with make_sessionmaker(engine)() as session:
        yield session


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()
