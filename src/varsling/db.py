"""Base, naming convention, engines, sessions and migrations.

The request transaction (`DbSession`) is in request_transaction.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import MetaData, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(database_url: str, *, immediate: bool = True) -> Engine:
    """An engine; SQLite gets WAL, foreign keys and (by default) write locks up front.

    `immediate=False` leaves SQLite transactions deferred, for read-mostly
    tools (tests, benchmarks) that must not block the service.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)

    if url.database and url.database != ":memory:":
        _private_sqlite_file(Path(url.database))
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Take the write lock up front: the audit chain reads its head and
        # appends in one transaction, which must not interleave.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _private_sqlite_file(path: Path) -> None:
    """The database file (ciphertext, but also hashes and dates) readable by its owner only.

    SQLite gives its -wal and -shm files the main file's permissions.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    path.chmod(0o600)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


T = TypeVar("T")


def in_transaction(maker: sessionmaker[Session], work: Callable[..., T], *args: Any) -> T:
    """Run `work(session, *args)` in a transaction of its own, committed on return.

    For async routes that read a request body first: no transaction (and on
    SQLite no write lock) stays open while the body streams in. Call it with
    `await run_in_threadpool(in_transaction, maker, work, ...)`.
    """
    with maker.begin() as session:
        return work(session, *args)


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str, revision: str = "head", *, settings: Any = None) -> None:
    """Bring the schema to `revision` with Alembic (the app never calls create_all).

    `settings` (the installation's Settings) lets a migration use a
    configuration secret, e.g. to hash existing rows with a key.
    """
    from alembic import command

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        _private_sqlite_file(Path(url.database))
    config = alembic_config(database_url)
    config.attributes["settings"] = settings
    command.upgrade(config, revision)


def schema_revision(database_url: str) -> str | None:
    """The Alembic revision the database is at; None for a database without the schema."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(make_url(database_url), hide_parameters=True)
    try:
        with engine.connect() as connection:
            revision: str | None = MigrationContext.configure(connection).get_current_revision()
            return revision
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str, *, settings: Any = None) -> None:
    from alembic import command

    config = alembic_config(database_url)
    config.attributes["settings"] = settings
    command.downgrade(config, revision)


# What the service's own role may do on the audit tables; everything else in
# the schema gets normal rights. Changing history takes the owner.
_SERVICE_AUDIT_GRANTS = {
    "audit_events": "SELECT, INSERT",
    "audit_reporter_events": "SELECT, INSERT",
    "audit_checkpoints": "SELECT, INSERT",
    "audit_head": "SELECT, UPDATE",
    "alembic_version": "SELECT",
}


def service_role(database_url: str) -> str | None:
    """The PostgreSQL user the service connects as (None for SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.username


def grant_service_role(owner_url: str, role: str) -> None:
    """Give `role` normal rights on every table and sequence, but on the audit tables
    only SELECT and INSERT (the head: SELECT and UPDATE). Idempotent: it revokes
    everything first, in one transaction, and runs on every `varsling migrate`.
    """
    engine = create_engine(owner_url, hide_parameters=True)
    try:
        with engine.begin() as connection:
            quote = connection.dialect.identifier_preparer.quote
            schema = quote(connection.execute(text("SELECT current_schema()")).scalar_one())
            grantee = quote(role)
            for statement in (
                f"GRANT USAGE ON SCHEMA {schema} TO {grantee}",
                f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {grantee}",
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {grantee}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} "
                f"TO {grantee}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {grantee}",
            ):
                connection.execute(text(statement))
            for table, rights in _SERVICE_AUDIT_GRANTS.items():
                connection.execute(text(f"REVOKE ALL ON {schema}.{table} FROM {grantee}"))
                connection.execute(text(f"GRANT {rights} ON {schema}.{table} TO {grantee}"))
    finally:
        engine.dispose()


def migrate_installation(
    database_url: str, migration_url: str | None, *, settings: Any = None
) -> str | None:
    """`varsling migrate`: upgrade as the owner, then grant the service role its rights.

    Returns the role that was granted, if any (only on PostgreSQL, and only
    when the owner and the service are different roles).
    """
    owner_url = migration_url or database_url
    migrate(owner_url, settings=settings)
    role = service_role(database_url)
    if migration_url is None or role is None or role == service_role(migration_url):
        return None
    grant_service_role(owner_url, role)
    return role
