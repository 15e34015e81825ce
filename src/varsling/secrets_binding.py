"""Installation secrets bound to their database.

The database records a fingerprint of each secret (a keyed hash that reveals
nothing about it) the first time it sees it. From then on every entry point
refuses to run when a recorded secret is missing or different: a database
restored without its secrets file, a changed working directory or a
`VARSLING_SECRETS_FILE` pointing elsewhere would otherwise make every case
code silently fail while staff logins keep working.

Secrets are generated only when the database cannot hold anything they
protect: an empty database, or a secret newer than what the database holds.
Each recording is also an audit event, so fingerprints removed behind the
service's back are noticed, not silently recorded afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, exists, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from varsling import audit
from varsling.accounts.models import InstallationSetting, Unit, User
from varsling.cases.models import Case
from varsling.config import (
    DEFAULT_SECRETS_FILE,
    SECRET_SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    secrets_file_path,
)
from varsling.db import make_engine, make_sessionmaker

SETTING_PREFIX = "secret_fingerprint."
RECORDED_ACTION = "installation.secrets_recorded"
REPLACED_ACTION = "installation.secrets_replaced"
BINDING_ACTIONS = (RECORDED_ACTION, REPLACED_ACTION)
# Every installation has had these since its first start. A database that
# holds data but has no fingerprints yet (made before the binding) may get the
# later secrets generated, never these: they key its case codes.
ORIGINAL_SECRETS = ("code_pepper", "code_salt", "web_secret")
_FILE_HEADER = (
    "# Varsling installation secrets. Keep this file, and back it up apart from\n"
    "# the database: without it no case code can be checked again.\n"
)


def fingerprint(name: str, value: bytes) -> str:
    """HMAC-SHA256 keyed with the secret itself: comparable, and says nothing about it."""
    label = f"varsling/secret-fingerprint/{name}".encode()
    return hmac.new(value, label, hashlib.sha256).hexdigest()


def setting_name(name: str) -> str:
    return f"{SETTING_PREFIX}{name}"


@dataclass(frozen=True)
class DatabaseState:
    """What the database knows about the installation's secrets."""

    migrated: bool
    holds_data: bool
    recorded: dict[str, str]  # secret name -> fingerprint
    ever_recorded: frozenset[str]  # names the audit trail says were recorded


@dataclass(frozen=True)
class Installation:
    """The outcome of `open_installation`: the settings to run with and what was done."""

    settings: Settings
    secrets_file: Path
    generated: tuple[str, ...]
    recorded: tuple[str, ...]
    revision_before: str | None
    revision_after: str | None


def read_state(session: Session) -> DatabaseState:
    tables = set(inspect(session.connection()).get_table_names())
    if not {"settings", "audit_events", "units", "users", "cases"} <= tables:
        return DatabaseState(False, False, {}, frozenset())
    holds_data = bool(
        session.scalar(
            select(
                exists(select(Unit.id))
                | exists(select(User.id))
                | exists(select(Case.id))
                | exists(
                    select(audit.AuditEvent.seq).where(
                        audit.AuditEvent.action.not_in(BINDING_ACTIONS)
                    )
                )
            )
        )
    )
    # The audit events first, then the fingerprints: a process recording them
    # commits both at once, and under READ COMMITTED (PostgreSQL) each statement
    # sees a newer snapshot, so reading in this order never finds an event naming
    # a fingerprint whose row it then misses ("removed") while another process
    # records them at the same moment.
    ever: set[str] = set()
    for details in session.scalars(
        select(audit.AuditEvent.details).where(audit.AuditEvent.action.in_(BINDING_ACTIONS))
    ):
        try:
            names = json.loads(details).get("secrets", [])
        except (ValueError, AttributeError):
            continue
        ever.update(str(n) for n in names if isinstance(n, str))
    rows = session.execute(
        select(InstallationSetting.key, InstallationSetting.value).where(
            InstallationSetting.key.startswith(SETTING_PREFIX, autoescape=True)
        )
    )
    recorded = {key.removeprefix(SETTING_PREFIX): value for key, value in rows}
    return DatabaseState(True, holds_data, recorded, frozenset(ever))


def _restore_hint(secrets_file: Path, state: DatabaseState) -> str:
    hint = (
        f"Restore the secrets file that belongs to this database to {secrets_file} "
        "(or point VARSLING_SECRETS_FILE at it), or set the setting in the environment "
        "to the value it had. Nothing was changed."
    )
    if not state.holds_data:
        hint += (
            " This database holds no units, accounts or cases yet: if this is a new "
            "installation, `varsling secrets --new` makes new secrets for it."
        )
    return hint


def check_secrets(settings: Settings, state: DatabaseState, secrets_file: Path) -> None:
    """Refuse (ConfigError) when a secret the database recorded is missing or different."""
    for name in SECRET_SETTINGS:
        variable = f"VARSLING_{name.upper()}"
        recorded = state.recorded.get(name)
        if recorded is None:
            if name in state.ever_recorded:
                raise ConfigError(
                    f"The fingerprint of {variable} has been removed from the database "
                    f"(the audit trail shows it was recorded). The database has been changed "
                    f"behind the service's back; restore it from a backup. Secrets from "
                    f"{secrets_file} and the environment were not recorded. Nothing was changed."
                )
            continue
        value = getattr(settings, name)
        if value is None:
            raise ConfigError(
                f"{variable} is missing, but this database was set up with one: it "
                f"{SECRET_SETTINGS[name]}. No secrets file at {secrets_file} holds it. "
                + _restore_hint(secrets_file, state)
            )
        if not hmac.compare_digest(fingerprint(name, settings.secret(name)), recorded):
            raise ConfigError(
                f"{variable} (from {secrets_file} or the environment) is not the one this "
                f"database was set up with: it {SECRET_SETTINGS[name]}, so with the wrong one "
                "existing case codes and data stop working. " + _restore_hint(secrets_file, state)
            )


def secrets_to_generate(settings: Settings, state: DatabaseState, secrets_file: Path) -> list[str]:
    """The missing secrets that may be made now; ConfigError for one that must be restored."""
    missing = [name for name in SECRET_SETTINGS if getattr(settings, name) is None]
    for name in missing:
        if name in state.recorded or name in state.ever_recorded:
            check_secrets(settings, state, secrets_file)  # raises with the right message
    if not state.holds_data or state.recorded:
        return missing
    originals_present = all(getattr(settings, n) is not None for n in ORIGINAL_SECRETS)
    for name in missing:
        if name in ORIGINAL_SECRETS or not originals_present:
            raise ConfigError(
                f"VARSLING_{name.upper()} is missing, and this database holds data (units, "
                f"accounts, cases or audit events): no secrets file at {secrets_file}. New "
                "secrets would make every existing case code fail, so none are generated. "
                + _restore_hint(secrets_file, state)
            )
    return missing


def check_location(path: Path) -> None:
    """A secrets file in a folder that does not exist is a mistake, not a new folder."""
    if path.is_dir():
        raise ConfigError(
            f"VARSLING_SECRETS_FILE is {path}, which is a folder; point it at the secrets file."
        )
    explicit = "VARSLING_SECRETS_FILE" in os.environ
    if explicit and not path.parent.is_dir():
        raise ConfigError(
            f"VARSLING_SECRETS_FILE is {path}, but the folder {path.parent} does not exist. "
            "Point VARSLING_SECRETS_FILE at the secrets file that belongs to this database; "
            "for a new installation, create the folder first. Nothing was changed."
        )


def append_secrets(path: Path, names: Iterable[str]) -> None:
    """Write new values for `names` to the secrets file, mode 0600, keeping what it holds."""
    lines = [f"VARSLING_{name.upper()}={secrets.token_urlsafe(48)}\n" for name in names]
    if not lines:
        return
    if path.exists():
        text = path.read_text()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            if text and not text.endswith("\n"):
                handle.write("\n")
            handle.writelines(lines)
        return
    if path == DEFAULT_SECRETS_FILE:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(_FILE_HEADER)
        handle.writelines(lines)


def _record(
    session: Session, settings: Settings, state: DatabaseState, generated: Iterable[str]
) -> tuple[str, ...]:
    new = tuple(
        name
        for name in SECRET_SETTINGS
        if name not in state.recorded and getattr(settings, name) is not None
    )
    if not new:
        return ()
    for name in new:
        session.add(
            InstallationSetting(
                key=setting_name(name), value=fingerprint(name, settings.secret(name))
            )
        )
    audit.record(
        session,
        actor=audit.SYSTEM,
        action=RECORDED_ACTION,
        details={"secrets": list(new), "generated": [n for n in generated if n in new]},
    )
    return new


def open_installation(
    *,
    migrate: Callable[[Settings], None] | None = None,
    revision: Callable[[str], str | None] | None = None,
    require_schema: bool = True,
    check_settings: bool = False,
) -> Installation:
    """Settings for an entry point, with the secrets checked against the database.

    Generates the secrets the database may get (appended to the secrets file),
    refuses (ConfigError) when a recorded one is missing or different,
    migrates when asked, then records the fingerprints of secrets the database
    has not seen. Every CLI command and `serve` start here.
    """
    path = secrets_file_path()
    check_location(path)
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        state = _read(engine)
        generated = secrets_to_generate(settings, state, path)
        if generated:
            append_secrets(path, generated)
            settings = load_settings()
        check_secrets(settings, state, path)
        if check_settings:
            settings.check()
        before = revision(settings.database_url) if revision else None
        if migrate is not None:
            migrate(settings)
        after = revision(settings.database_url) if revision else None
        recorded = _record_checked(engine, settings, path, generated)
        if recorded is None and require_schema:
            raise ConfigError(
                f"The database at {engine.url.render_as_string(hide_password=True)} has no "
                "Varsling schema yet; run `varsling migrate` first."
            )
    finally:
        engine.dispose()
    return Installation(settings, path, tuple(generated), recorded or (), before, after)


def _read(engine: Engine) -> DatabaseState:
    with make_sessionmaker(engine).begin() as session:
        return read_state(session)


def _record_checked(
    engine: Engine, settings: Settings, path: Path, generated: Iterable[str]
) -> tuple[str, ...] | None:
    """Check again and record in one transaction; None when the schema is not there."""
    generated = tuple(generated)
    for attempt in range(2):
        try:
            with make_sessionmaker(engine).begin() as session:
                state = read_state(session)
                if not state.migrated:
                    return None
                check_secrets(settings, state, path)
                return _record(session, settings, state, generated)
        except IntegrityError:
            # Another process recorded them at the same moment: check against theirs.
            if attempt:
                raise
    return ()


def verify_binding(session: Session, settings: Settings) -> None:
    """The read-only check `create_app` makes: recorded secrets must be the ones given."""
    state = read_state(session)
    if state.migrated:
        check_secrets(settings, state, settings.secrets_file)


def replace_secrets() -> Installation:
    """`varsling secrets --new`: fresh secrets for a database that holds no data."""
    path = secrets_file_path()
    check_location(path)
    given = [n for n in SECRET_SETTINGS if os.environ.get(f"VARSLING_{n.upper()}")]
    if given:
        variables = ", ".join(f"VARSLING_{n.upper()}" for n in given)
        raise ConfigError(
            f"{variables} set in the environment would override new secrets in {path}; "
            "unset them first. Nothing was changed."
        )
    engine = make_engine(load_settings().database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            state = read_state(session)
            if state.holds_data:
                raise ConfigError(
                    "This database holds data (units, accounts, cases or audit events): new "
                    "secrets would make every existing case code fail. Refusing; nothing was "
                    f"changed. Restore the secrets file that belongs to it to {path} instead."
                )
            _write_fresh(path)
            settings = load_settings()
            if state.migrated:
                session.execute(
                    delete(InstallationSetting).where(
                        InstallationSetting.key.startswith(SETTING_PREFIX, autoescape=True)
                    )
                )
                names = list(SECRET_SETTINGS)
                for name in names:
                    session.add(
                        InstallationSetting(
                            key=setting_name(name), value=fingerprint(name, settings.secret(name))
                        )
                    )
                audit.record(
                    session,
                    actor=audit.SYSTEM,
                    action=REPLACED_ACTION,
                    details={"secrets": names, "generated": names},
                )
    finally:
        engine.dispose()
    recorded = tuple(SECRET_SETTINGS) if state.migrated else ()
    return Installation(settings, path, tuple(SECRET_SETTINGS), recorded, None, None)


def _write_fresh(path: Path) -> None:
    """A whole new secrets file, replacing any old one atomically, mode 0600."""
    if path == DEFAULT_SECRETS_FILE:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S%f")
    temporary = path.with_name(f".{path.name}.{stamp}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(_FILE_HEADER)
        for name in SECRET_SETTINGS:
            handle.write(f"VARSLING_{name.upper()}={secrets.token_urlsafe(48)}\n")
    temporary.replace(path)


def open_for_restore() -> tuple[Settings, Path]:
    """Settings for `varsling restore`: nothing is generated (the secrets must be the
    backup's own), and a database that already holds a schema is checked as usual."""
    path = secrets_file_path()
    check_location(path)
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        state = _read(engine)
        if state.migrated:
            check_secrets(settings, state, path)
    finally:
        engine.dispose()
    return settings, path


def check_restored(settings: Settings, path: Path) -> Callable[[Session], None]:
    """The check a restored database must pass before it is kept: its recorded secrets
    are the ones given (ConfigError otherwise, as at every start)."""

    def check(session: Session) -> None:
        state = read_state(session)
        secrets_to_generate(settings, state, path)  # raises for a secret that must be restored
        check_secrets(settings, state, path)

    return check
