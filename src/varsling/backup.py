"""Consistent online backups of the database, and restores into an empty one.

SQLite is copied with its backup API (one read transaction: a consistent
snapshot while the service keeps writing), PostgreSQL with `pg_dump -Fc`.
The secrets file is the other half of a backup and is never part of it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session

from varsling.db import make_sessionmaker
from varsling.errors import VarslingError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_NAMES = {SQLITE: "SQLite", POSTGRESQL: "PostgreSQL"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_DUMP_MAGIC = b"PGDMP"
# Tables every Varsling database has had since its first revision.
_VARSLING_TABLES = ("alembic_version", "audit_events", "settings")
BACKUP_ACTION = "installation.backup"
RESTORED_ACTION = "installation.restored"


class BackupError(VarslingError):
    """A backup or restore could not be made; what was written is removed."""

    status_code = 500
    code = "backup_failed"


class BackupExists(VarslingError):
    code = "backup_exists"


class NotABackup(VarslingError):
    code = "not_a_backup"


class DatabaseNotEmpty(VarslingError):
    status_code = 409
    code = "database_not_empty"


@dataclass(frozen=True)
class Written:
    kind: str
    path: Path
    size: int


def database_kind(database_url: str) -> str:
    backend = make_url(database_url).get_backend_name()
    if backend not in _NAMES:
        raise BackupError(f"Backups are made of SQLite and PostgreSQL only, not {backend}.")
    return backend


def kind_name(kind: str) -> str:
    return _NAMES[kind]


def check_target(path: Path, *, force: bool) -> None:
    """Where a backup may be written: not a folder, not an existing file unless `force`."""
    if path.is_dir():
        raise BackupExists(f"{path} is a folder; give the name of the backup file to write.")
    if path.exists() and not force:
        raise BackupExists(f"{path} exists; give --force to replace it. Nothing was written.")
    if not path.parent.is_dir():
        raise BackupError(f"The folder {path.parent} does not exist. Nothing was written.")


def backup_kind(path: Path) -> str:
    """SQLITE or POSTGRESQL from the file's first bytes; NotABackup for anything else."""
    try:
        with path.open("rb") as handle:
            start = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise NotABackup(f"Cannot read {path}: {exc.strerror}.") from exc
    if start == _SQLITE_MAGIC:
        return SQLITE
    if start.startswith(_PG_DUMP_MAGIC):
        return POSTGRESQL
    raise NotABackup(
        f"{path} is not a Varsling backup: it is neither a SQLite database nor a pg_dump "
        "custom-format archive (what `varsling backup` writes). Nothing was changed."
    )


# --------------------------------------------------------------------------
# Backing up


def write_backup(database_url: str, path: Path, *, force: bool = False) -> Written:
    """Snapshot the database into `path` (mode 0600), atomically; refuse an existing file
    unless `force`. A failed backup leaves no file behind."""
    kind = database_kind(database_url)
    check_target(path, force=force)
    with _temporary(path, "partial") as partial:
        if kind == SQLITE:
            _sqlite_snapshot(_sqlite_path(database_url), partial)
        else:
            _pg_dump(database_url, partial)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        if force:
            partial.replace(path)
        else:
            _link_new(partial, path)
        _sync_folder(path.parent)
    return Written(kind, path, path.stat().st_size)


def _link_new(partial: Path, path: Path) -> None:
    """Give the finished file its name, never replacing a file of that name."""
    try:
        # link() fails on an existing name: no backup overwritten by a race.
        os.link(partial, path)
    except FileExistsError as exc:
        raise BackupExists(
            f"{path} appeared while the backup was written; nothing was replaced."
        ) from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename.
        if path.exists():
            raise BackupExists(
                f"{path} appeared while the backup was written; nothing was replaced."
            ) from exc
        partial.replace(path)


def _sync_folder(folder: Path) -> None:
    """The new name survives a crash, not only the file's content."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself is synced
    finally:
        os.close(fd)


@contextmanager
def _temporary(beside: Path, label: str) -> Iterator[Path]:
    """An empty file of our own (mode 0600) next to `beside`, removed afterwards."""
    path = beside.with_name(f".{beside.name}.{secrets.token_hex(6)}.{label}")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield path
    finally:
        for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("The SQLite database must be a file named in VARSLING_DATABASE_URL.")
    return Path(database)


def _sqlite_snapshot(source: Path, target: Path) -> None:
    """Copy in one read transaction; the copy is a single file (rollback journal, not WAL)."""
    if not source.is_file():
        raise BackupError(f"The database file {source} does not exist.")
    try:
        with (
            closing(sqlite3.connect(source, timeout=30)) as reading,
            closing(sqlite3.connect(target)) as writing,
        ):
            reading.backup(writing)
            writing.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise BackupError(f"The SQLite backup failed: {exc}. Nothing was written.") from exc


def _pg_dump(database_url: str, target: Path) -> None:
    uri, env = libpq(database_url)
    _run_tool("pg_dump", "--format=custom", "--no-password", f"--file={target}", uri, env=env)


def libpq(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries it.

    The password never goes on a command line, where `ps` shows it to every user.
    """
    url: URL = make_url(database_url)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    # URL.set(password=None) would keep the password: build the URL afresh.
    plain = URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return plain.render_as_string(hide_password=False), env


def _run_tool(tool: str, *args: str, env: dict[str, str]) -> str:
    found = shutil.which(tool)
    if found is None:
        raise BackupError(
            f"{tool} was not found on PATH; install the PostgreSQL client tools "
            "(Debian: postgresql-client) in the server's major version."
        )
    done = subprocess.run(  # noqa: S603 (fixed tool, arguments are not a shell line)
        [found, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[-600:] or f"exit code {done.returncode}"
        raise BackupError(f"{tool} failed: {said}. Nothing was written or restored.")
    return done.stdout


# --------------------------------------------------------------------------
# Restoring


def restore_backup(database_url: str, path: Path, *, check: Callable[[Session], None]) -> str:
    """Restore `path` into the configured database, which must be empty.

    `check(session)` sees the restored data before it is kept (the secrets
    binding); when it raises, the database is left empty again and the error
    passes on. Returns the kind of database restored.
    """
    kind = database_kind(database_url)
    found = backup_kind(path)
    if found != kind:
        raise NotABackup(
            f"{path} is a {_NAMES[found]} backup, but the configured database "
            f"(VARSLING_DATABASE_URL) is {_NAMES[kind]}. Nothing was changed."
        )
    if kind == SQLITE:
        _restore_sqlite(_sqlite_path(database_url), path, check)
    else:
        _restore_postgresql(database_url, path, check)
    return kind


def _restore_sqlite(target: Path, backup: Path, check: Callable[[Session], None]) -> None:
    _require_empty_sqlite(target)
    with _temporary(target, "restoring") as staging:
        try:
            source = f"file:{urllib.parse.quote(str(backup.resolve()))}?mode=ro"
            with (
                closing(sqlite3.connect(source, uri=True)) as reading,
                closing(sqlite3.connect(staging)) as writing,
            ):
                reading.backup(writing)
                verdict = writing.execute("PRAGMA integrity_check").fetchone()[0]
                tables = {r[0] for r in writing.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            raise NotABackup(
                f"{backup} cannot be read as a SQLite database ({exc}): damaged or cut short. "
                "Nothing was changed."
            ) from exc
        if verdict != "ok":
            raise NotABackup(
                f"{backup} is a damaged or cut-short SQLite database (integrity check: "
                f"{verdict}). Nothing was changed."
            )
        _require_varsling_tables(backup, tables)
        engine = create_engine(f"sqlite:///{staging}")
        try:
            with make_sessionmaker(engine).begin() as session:
                check(session)
        finally:
            engine.dispose()
        try:
            with (
                closing(sqlite3.connect(staging)) as reading,
                closing(sqlite3.connect(target, timeout=30)) as writing,
            ):
                if writing.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise DatabaseNotEmpty(_not_empty(str(target)))
                reading.backup(writing)
        except sqlite3.Error as exc:
            raise BackupError(f"Restoring into {target} failed: {exc}.") from exc


def _require_empty_sqlite(target: Path) -> None:
    if target.exists() and target.stat().st_size:
        try:
            with closing(
                sqlite3.connect(f"file:{urllib.parse.quote(str(target))}?mode=ro", uri=True)
            ) as reading:
                count = reading.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.Error as exc:
            raise DatabaseNotEmpty(
                f"{target} exists and is not an empty SQLite database ({exc}). Nothing was changed."
            ) from exc
        if count:
            raise DatabaseNotEmpty(_not_empty(str(target)))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not target.exists():
        target.touch(mode=0o600)
    target.chmod(0o600)


def _not_empty(where: str) -> str:
    return (
        f"The database {where} is not empty. `varsling restore` restores only into an empty "
        "database, so that nothing in it is lost or mixed with the backup: point "
        "VARSLING_DATABASE_URL at a new, empty database (or file). Nothing was changed."
    )


def _require_varsling_tables(backup: Path, tables: set[str]) -> None:
    missing = [t for t in _VARSLING_TABLES if t not in tables]
    if missing:
        raise NotABackup(
            f"{backup} is a database, but not a Varsling one (no {', '.join(missing)} "
            "table). Nothing was changed."
        )


def _restore_postgresql(database_url: str, backup: Path, check: Callable[[Session], None]) -> None:
    uri, env = libpq(database_url)
    try:
        listing = _run_tool("pg_restore", "--list", str(backup), env=env)
    except BackupError as exc:
        raise NotABackup(
            f"{backup} cannot be read as a pg_dump archive (damaged or cut short): {exc.message}"
        ) from exc
    tables = set(re.findall(r"^\d+; \d+ \d+ TABLE \S+ (\w+) ", listing, re.MULTILINE))
    _require_varsling_tables(backup, tables)
    engine = create_engine(make_url(database_url), hide_parameters=True)
    try:
        where = make_url(database_url).render_as_string(hide_password=True)
        with engine.connect() as connection:
            present = _postgres_objects(connection)
        if present:
            raise DatabaseNotEmpty(_not_empty(where))
        # One transaction: a damaged or cut-short archive restores nothing at all.
        try:
            _run_tool(
                "pg_restore",
                *("--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges"),
                *("--no-password", f"--dbname={uri}", str(backup)),
                env=env,
            )
        except BackupError as exc:
            raise BackupError(
                f"{backup} could not be restored (damaged or cut short, or the server "
                f"refused it): {exc.message}"
            ) from exc
        try:
            with make_sessionmaker(engine).begin() as session:
                check(session)
        except BaseException:
            _drop_restored(engine)
            raise
    finally:
        engine.dispose()


def _postgres_objects(connection: Connection) -> list[tuple[str, str]]:
    """Relations and functions in the current schema: (kind, name)."""
    rows = connection.execute(
        text(
            "SELECT c.relkind::text, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r','p','v','m','S','f') "
            "UNION ALL SELECT 'function', p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema()"
        )
    )
    return [(kind, name) for kind, name in rows]


def _drop_restored(engine: Engine) -> None:
    """Empty the database again: it was empty before the restore, so all in it is ours."""
    with engine.begin() as connection:
        quote = connection.dialect.identifier_preparer.quote
        for kind, name in _postgres_objects(connection):
            if kind in ("r", "p"):
                connection.execute(text(f"DROP TABLE IF EXISTS {quote(name)} CASCADE"))
        for kind, name in _postgres_objects(connection):
            if kind == "v":
                connection.execute(text(f"DROP VIEW IF EXISTS {quote(name)} CASCADE"))
            elif kind == "m":
                connection.execute(text(f"DROP MATERIALIZED VIEW IF EXISTS {quote(name)} CASCADE"))
            elif kind == "f":
                connection.execute(text(f"DROP FOREIGN TABLE IF EXISTS {quote(name)} CASCADE"))
            elif kind == "S":
                connection.execute(text(f"DROP SEQUENCE IF EXISTS {quote(name)} CASCADE"))
            elif kind == "function":
                connection.execute(text(f"DROP FUNCTION IF EXISTS {name} CASCADE"))
