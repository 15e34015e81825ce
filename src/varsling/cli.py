"""The `varsling` command: serve, migrate, units, users, audit, jobs.

Each command imports what it needs when it runs: a process runs one command,
and the test suite starts hundreds. `--help` and the offline checks import no
database, web or settings code at all, and no command imports FastAPI but
`serve` (tests/test_cli.py checks both).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from varsling.errors import VarslingError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from varsling import audit, secrets_binding
    from varsling.accounts.setup_check import SetupWarnings
    from varsling.config import Settings

app = typer.Typer(help="Varsling: a confidential whistleblowing service.", no_args_is_help=True)
unit_app = typer.Typer(help="Units of the organisation.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
keys_app = typer.Typer(help="The installation signing key.", no_args_is_help=True)
sessions_app = typer.Typer(help="Staff and reporter sessions.", no_args_is_help=True)
receipt_app = typer.Typer(help="Reporters' signed receipts.", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled work (cron or a systemd timer).", no_args_is_help=True)
recovery_app = typer.Typer(
    help="The organisation's recovery key (kept offline).", no_args_is_help=True
)
app.add_typer(unit_app, name="unit")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(sessions_app, name="sessions")
app.add_typer(receipt_app, name="receipt")
app.add_typer(jobs_app, name="jobs")
app.add_typer(recovery_app, name="recovery")


def _installation(**options: Any) -> secrets_binding.Installation:
    """Settings with the secrets checked against the database: every command starts here."""
    from varsling import secrets_binding
    from varsling.config import ConfigError

    try:
        installation = secrets_binding.open_installation(**options)
    except ValueError as exc:
        typer.echo(f"Invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ConfigError as exc:
        typer.echo(f"Refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    _announce_generated(installation)
    return installation


def _announce_generated(installation: secrets_binding.Installation) -> None:
    from varsling.config import SECRET_SETTINGS

    if not installation.generated:
        return
    path = installation.secrets_file
    if set(installation.generated) == set(SECRET_SETTINGS):
        typer.echo(
            f"First start: generated installation secrets in {path} (mode 0600). Back this "
            "file up, apart from the database: without it no case code can be checked.",
            err=True,
        )
        return
    names = ", ".join(f"VARSLING_{n.upper()}" for n in installation.generated)
    typer.echo(
        f"Generated {names} (new to this database) into {path} (mode 0600). "
        "Back the file up again.",
        err=True,
    )


def _settings() -> Settings:
    return _installation().settings


@contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    from varsling.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            yield session
    except VarslingError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


@app.command()
def migrate() -> None:
    """Create or bring the database schema up to date; record the secrets' fingerprints.

    On PostgreSQL with VARSLING_MIGRATION_DATABASE_URL set, the schema is changed
    as that owner, and the service's own role gets only the rights it needs.
    """
    from varsling.db import schema_revision

    granted: list[str] = []
    installation = _installation(migrate=_migrator(granted), revision=schema_revision)
    _report_migration(installation, granted)


def _migrator(granted: list[str]) -> Callable[[Settings], None]:
    """Migrate as the owner; the roles granted their rights are added to `granted`."""
    from varsling.db import migrate_installation

    def migrate_as_owner(settings: Settings) -> None:
        owner = settings.migration_database_url
        # The settings let a migration hash existing rows with a configured key.
        role = migrate_installation(
            settings.database_url,
            owner.get_secret_value() if owner is not None else None,
            settings=settings,
        )
        if role is not None:
            granted.append(role)

    return migrate_as_owner


def _report_migration(installation: secrets_binding.Installation, granted: list[str]) -> None:
    before, after = installation.revision_before, installation.revision_after
    if before is None:
        typer.echo(f"Created the database schema (revision {after}).")
    elif before != after:
        typer.echo(f"Upgraded the database schema from revision {before} to {after}.")
    else:
        typer.echo(f"Database is up to date (revision {after}).")
    if installation.recorded:
        names = ", ".join(f"VARSLING_{n.upper()}" for n in installation.recorded)
        typer.echo(f"Recorded the fingerprints of {names} in the database.")
    for role in granted:
        typer.echo(f"Granted the service role {role!r} its rights (audit tables: append only).")


@app.command()
def secrets(
    new: Annotated[
        bool,
        typer.Option(
            "--new", help="Replace every secret; refused when the database holds any data."
        ),
    ] = False,
) -> None:
    """Generate the secrets this database may get (mode 0600); --new replaces them all."""
    if not new:
        installation = _installation(require_schema=False)
        if not installation.generated:
            typer.echo(
                f"Secrets already present ({installation.secrets_file} or the environment); "
                "nothing written."
            )
        return
    from varsling import secrets_binding
    from varsling.config import ConfigError

    try:
        installation = secrets_binding.replace_secrets()
    except ConfigError as exc:
        typer.echo(f"Refusing: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"Wrote new installation secrets to {installation.secrets_file} (mode 0600). "
        "Back this file up, apart from the database."
    )


@app.command("backup")
def backup_command(
    file: Annotated[Path, typer.Argument(help="The backup file to write (mode 0600).")],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
) -> None:
    """Write a consistent snapshot of the database while the service runs.

    SQLite: its backup API; PostgreSQL: pg_dump (custom format). The secrets
    file is the other half of a backup and is not in it: back it up separately.
    """
    from varsling import audit
    from varsling import backup as backups

    installation = _installation()
    settings = installation.settings
    try:
        kind = backups.database_kind(settings.database_url)
        backups.check_target(file, force=force)
    except VarslingError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    # Recorded first, so the snapshot itself holds the event of its taking.
    with _transaction(settings) as session:
        audit.record(
            session, actor=audit.SYSTEM, action=backups.BACKUP_ACTION, details={"database": kind}
        )
    try:
        written = backups.write_backup(_owner_url(settings), file, force=force)
    except VarslingError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"Wrote a {backups.kind_name(kind)} backup of the database to {written.path} "
        f"({written.size} bytes, mode 0600). It ends with its own audit event "
        f"({backups.BACKUP_ACTION})."
    )
    typer.echo(
        f"The secrets file ({installation.secrets_file}, or the VARSLING_ secrets in the "
        "environment) is NOT in it. It is the other half: back it up separately, and keep "
        "the two apart. A restore needs both."
    )


@app.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(help="A file `varsling backup` wrote.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="A checkpoint (JSON) kept apart, which the restored trail must hold."),
    ] = None,
) -> None:
    """Restore a backup into an EMPTY database, migrate it, and verify its audit trail.

    The secrets (file or environment) must be the ones the backup was made
    with. Exits 1 when the restored audit trail does not verify.
    """
    from varsling import backup as backups
    from varsling import secrets_binding
    from varsling.config import ConfigError
    from varsling.db import schema_revision

    try:
        settings, secrets_file = secrets_binding.open_for_restore()
    except ValueError as exc:
        typer.echo(f"Invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ConfigError as exc:
        typer.echo(f"Refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    given = _read_checkpoint(checkpoint) if checkpoint is not None else None
    check = secrets_binding.check_restored(settings, secrets_file)
    try:
        kind = backups.restore_backup(_owner_url(settings), file, check=check)
    except ConfigError as exc:
        typer.echo(
            f"Refusing to restore: {exc} The database was left empty: the backup and the "
            "secrets it was made with are restored together.",
            err=True,
        )
        raise typer.Exit(2) from exc
    except VarslingError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Restored the {backups.kind_name(kind)} database from {file}.")
    granted: list[str] = []
    installation = _installation(migrate=_migrator(granted), revision=schema_revision)
    _report_migration(installation, granted)
    _verify_restored(installation.settings, given)


def _owner_url(settings: Settings) -> str:
    """Backups and restores run as the schema's owner where one is configured."""
    owner = settings.migration_database_url
    return owner.get_secret_value() if owner is not None else settings.database_url


def _verify_restored(settings: Settings, given: audit.Checkpoint | None) -> None:
    from varsling import audit
    from varsling import backup as backups

    public = _own_key(settings)
    if given is not None and public is None:
        typer.echo("Error: checking the checkpoint needs the signing key; none is set.", err=True)
        raise typer.Exit(2)
    with _transaction(settings) as session:
        result = audit.verify(session, public_key=public)
        if result.ok and given is not None and public is not None:
            result = audit.verify_checkpoint(session, given, public)
        last = audit.latest_checkpoint(session)
        if result.ok:
            audit.record(
                session,
                actor=audit.SYSTEM,
                action=backups.RESTORED_ACTION,
                details={"events": result.events},
            )
    if not result.ok:
        where = (
            f"the {result.chain} chain breaks at sequence number {result.first_bad}"
            if result.first_bad is not None
            else "a checkpoint does not check out"
        )
        typer.echo(
            f"BROKEN: the restored audit trail does NOT verify: {where}: {result.reason} "
            f"({result.events} events read). The backup was changed after it was made, or "
            "is not the one you think. Do not serve this database before you know why.",
            err=True,
        )
        raise typer.Exit(1)
    counts = ", ".join(f"{c.chain} {c.events}" for c in result.chains)
    typer.echo(f"OK: the audit trail verifies: {result.events} events ({counts}), chains intact.")
    if given is not None:
        typer.echo(f"It holds the checkpoint you gave, signed at {given.signed_at}.")
    if last is not None and public is not None:
        typer.echo(
            f"It holds the last checkpoint stored in the backup, signed at {last.signed_at} "
            f"(staff event {last.seq}, reporter event {last.reporter_seq})."
        )
    elif given is None:
        typer.echo(
            "Note: the backup holds no checkpoint, so nothing signed vouches for the trail. "
            "Check it against the auditor's copy: varsling audit verify --checkpoint FILE.",
            err=True,
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the port (each runs at most one Argon2id per "
            "usable CPU at a time).",
        ),
    ] = 1,
) -> None:
    """Serve the API and the reporter pages (secrets are generated for an empty database)."""
    import uvicorn

    from varsling.app import create_app
    from varsling.config import ConfigError

    settings = _installation(check_settings=True).settings
    try:
        application = create_app(settings)
    except ConfigError as exc:
        typer.echo(f"Refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    _warn_about_custodians(settings)
    _warn_about_uncertified_keys(settings)
    _warn_about_missing_email(settings)
    listening = _listen(host, port)
    # No access log: it would record reporters' IP addresses and user agents.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
    if workers == 1:
        typer.echo(f"Serving Varsling on http://{host}:{port}")
        uvicorn.Server(uvicorn.Config(application, **options)).run(sockets=[listening])
        return
    from uvicorn.supervisors import Multiprocess

    # Each worker is a fresh process that builds its own app from the same environment
    # and secrets file, checked above (and again by create_app in the worker).
    application.state.engine.dispose()
    config = uvicorn.Config(
        "varsling.app:create_app_from_environment", factory=True, workers=workers, **options
    )
    typer.echo(f"Serving Varsling on http://{host}:{port} with {workers} worker processes")
    Multiprocess(config, sockets=[listening]).run()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says "Serving"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # protocol says TCP, and without that every answer on a kept-alive connection waited
    # some 40 ms for a delayed ACK.
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
        listening.listen(2048)
    except OSError as exc:
        listening.close()
        if exc.errno == errno.EADDRINUSE:
            typer.echo(
                f"Cannot serve: port {port} is in use on {host} (is Varsling already "
                "running?). Stop the other process, or choose another with --port.",
                err=True,
            )
        else:
            typer.echo(f"Cannot serve on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    listening.set_inheritable(True)
    return listening


def _setup_warnings(settings: Settings) -> SetupWarnings:
    from varsling.accounts.setup_check import setup_warnings

    with _transaction(settings) as session:
        return setup_warnings(
            session,
            verifying_key=settings.signing_public_key,
            notifications=settings.notifications_enabled,
        )


def _warn_about_custodians(settings: Settings) -> None:
    found = _setup_warnings(settings)
    unreachable = [u.name for u in found.units_without_handlers]
    if unreachable:
        typer.echo(
            "Note: no active case handler on the chain of these units, so they are not "
            f"offered to reporters: {', '.join(unreachable)}"
        )
    lacking = [u.name for u in found.units_without_custodians]
    if lacking:
        typer.echo(
            "Note: no identity custodian on the chain of these units, so nobody can ever be "
            f"granted a reporter's identity there: {', '.join(lacking)}"
        )


def _warn_about_missing_email(settings: Settings) -> None:
    if not settings.notifications_enabled:
        return
    missing = [u.username for u in _setup_warnings(settings).accounts_without_email]
    if missing:
        typer.echo(
            "Note: notifications are on, but these case handlers and identity custodians "
            "have no email address, so they are not told when a case needs them "
            f"(`varsling user set-email`): {', '.join(missing)}"
        )


def _warn_about_uncertified_keys(settings: Settings) -> None:
    found = _setup_warnings(settings)
    failing = [u.username for u in found.rejected_keys]
    missing = [u.username for u in found.uncertified_keys]
    if failing:
        typer.echo(
            "WARNING: the public key of these accounts does not match its certificate, so "
            "nothing is encrypted for them and they cannot log in. Their key, username or id "
            "was changed in the database behind the service's back: find out how, and restore "
            f"the account from a backup you trust: {', '.join(failing)}"
        )
    recovery_problem = _recovery_problem(settings)
    if recovery_problem is not None:
        typer.echo(f"WARNING: {RECOVERY_PROBLEMS[recovery_problem]}")
    if missing:
        typer.echo(
            "WARNING: these accounts have no key certificate yet (made before certificates), "
            "so nothing is encrypted for them and they cannot log in: "
            f"{', '.join(missing)}. If the database is known to be intact (for instance right "
            "after upgrading), run `varsling user certify-keys`."
        )


@unit_app.command("add")
def unit_add(
    name: str,
    parent: Annotated[int | None, typer.Option("--parent", help="Parent unit id.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="national, county, municipal, youth or student.")
    ] = None,
) -> None:
    """Add a unit; prints its id."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        unit = accounts.create_unit(session, name=name, parent_id=parent, kind=kind)
        typer.echo(unit.id)


@unit_app.command("rename")
def unit_rename(unit_id: int, name: str) -> None:
    """Give a unit a new name (reporters see it on the form)."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        unit = accounts.rename_unit(session, unit_id, name=name)
        typer.echo(f"{unit.id}\t{unit.name} ({unit.kind})")


@unit_app.command("move")
def unit_move(
    unit_id: int,
    parent: Annotated[int, typer.Option("--parent", help="The new parent unit's id.")],
) -> None:
    """Put a unit under another parent (never the national unit, never under itself)."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        unit = accounts.move_unit(session, unit_id, parent_id=parent)
        typer.echo(f"{unit.id}\t{unit.name} ({unit.kind}) under {unit.parent_id}")


@unit_app.command("list")
def unit_list() -> None:
    """List units as a tree."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        for unit in accounts.unit_tree(session):
            typer.echo(f"{'  ' * unit.depth}{unit.id}\t{unit.name} ({unit.kind})")


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[list[str], typer.Option("--role", help="handler, custodian, auditor, admin.")],
    unit: Annotated[list[int] | None, typer.Option("--unit", help="Unit id (repeatable).")] = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown to reporters.")] = None,
    email: Annotated[
        str | None, typer.Option(help="Where notifications go (none: no mail).")
    ] = None,
) -> None:
    """Add a staff account. The password comes from VARSLING_PASSWORD or a prompt.

    Handlers and custodians need --unit and --display-name: reporters see that name.
    """
    from varsling.accounts import service as accounts

    settings = _settings()
    password = os.environ.get("VARSLING_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    with _transaction(settings) as session:
        user = accounts.create_user(
            session,
            settings,
            username=username,
            password=password,
            roles=role,
            unit_ids=unit or [],
            display_name=display_name,
            email=email,
        )
        typer.echo(user.id)


@user_app.command("list")
def user_list() -> None:
    """List staff accounts with roles and units; flags keys whose certificate fails."""
    from varsling.accounts import service as accounts

    settings = _settings()
    with _transaction(settings) as session:
        for user in accounts.list_accounts(session, verifying_key=settings.signing_public_key):
            roles = ",".join(user.roles)
            units = ",".join(str(u) for u in user.unit_ids) or "-"
            state = "" if user.active else " (inactive)"
            if not user.key_certified:
                state += " KEY NOT CERTIFIED"
            typer.echo(f"{user.id}\t{user.username}\t{user.display_name}\t{roles}\t{units}{state}")


@user_app.command("certify-keys")
def user_certify_keys(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Certify the keys of accounts made before certificates existed.

    Only for a database known to be intact (for instance right after
    upgrading): it trusts each stored key as it is. A key whose certificate
    exists but fails is left flagged.
    """
    from varsling import audit, crypto
    from varsling.accounts import service as accounts

    settings = _settings()
    if not yes:
        typer.confirm(
            "This trusts every uncertified public key now in the database. Is the database "
            "known to be intact?",
            abort=True,
        )
    with _transaction(settings) as session:
        certified = accounts.certify_existing_keys(session, settings, actor=audit.SYSTEM)
        for user in certified:
            fingerprint = crypto.key_fingerprint(user.public_key)
            typer.echo(f"Certified {user.id}\t{user.username}\t{fingerprint}")
    if not certified:
        typer.echo("No account lacks a certificate; nothing to do.")


@user_app.command("reset-password")
def user_reset_password(user_id: int) -> None:
    """Set a new password (from VARSLING_PASSWORD or a prompt) for a forgotten one.

    The account gets a new key pair: its case access is pending until a holder
    of each case key re-grants it (the "Restore access" page, or
    `varsling recovery grant`). Its sessions end; two-factor login stays as it is.
    """
    from varsling.accounts import lifecycle

    settings = _settings()
    password = os.environ.get("VARSLING_PASSWORD") or typer.prompt(
        "New password", hide_input=True, confirmation_prompt=True
    )
    with _transaction(settings) as session:
        reset = lifecycle.reset_password(session, settings, user_id, new_password=password)
    typer.echo(
        f"Reset account {reset.user_id}: key version {reset.key_version}, "
        f"{reset.sessions_ended} session(s) ended, {reset.pending_keys} case key(s) waiting "
        "for a key holder to re-grant them."
    )


@user_app.command("deactivate")
def user_deactivate(user_id: int) -> None:
    """Close an account: its sessions end, it cannot log in and receives no new case."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        user = accounts.deactivate_user(session, user_id)
        typer.echo(f"{user.id}\t{user.username} (inactive)")


@user_app.command("set-email")
def user_set_email(
    user_id: int,
    email: Annotated[
        str | None, typer.Argument(help="The address; leave out with --clear.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the address: no mail.")] = False,
) -> None:
    """Set where an account's notifications go, or remove it with --clear."""
    from varsling.accounts import service as accounts

    if (email is None) == (not clear):
        typer.echo("Error: give an address, or --clear and no address.", err=True)
        raise typer.Exit(2)
    with _transaction(_settings()) as session:
        user = accounts.set_user_email(session, user_id, email=None if clear else email)
        typer.echo(f"{user.id}\t{user.username}\t{user.email or '(no email)'}")


@user_app.command("set-units")
def user_set_units(
    user_id: int,
    unit: Annotated[list[int] | None, typer.Option("--unit", help="Unit id (repeatable).")] = None,
) -> None:
    """Replace the units an account acts for; new reports route by them."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        user = accounts.set_user_units(session, user_id, unit_ids=unit or [])
        typer.echo(f"{user.id}\t{user.username}\t{','.join(str(u) for u in sorted(user.unit_ids))}")


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="A checkpoint (JSON) the database's chains must still hold."),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Verify this export offline: no database, no settings."),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="File with the line `varsling keys public` printed (for --export)."),
    ] = None,
) -> None:
    """Walk both hash chains; exits 1 and names the chain and first broken event.

    With --export FILE --public-key FILE it checks an export offline.
    """
    if export is not None:
        if checkpoint is not None or public_key is None:
            typer.echo("Error: --export takes --public-key and no --checkpoint.", err=True)
            raise typer.Exit(2)
        _verify_export_offline(export, public_key)
        return
    from varsling import audit

    settings = _settings()
    public = _read_public_key(public_key) if public_key is not None else _own_key(settings)
    given = _read_checkpoint(checkpoint) if checkpoint is not None else None
    if given is not None and public is None:
        typer.echo("Error: checking a checkpoint needs --public-key or the signing key.", err=True)
        raise typer.Exit(2)
    if public is None:
        typer.echo("Note: no signing key configured; stored checkpoints are not checked.", err=True)
    with _transaction(settings) as session:
        if given is None or public is None:
            result = audit.verify(session, public_key=public)
        else:
            result = audit.verify_checkpoint(session, given, public)
    if result.ok:
        counts = ", ".join(f"{c.chain} {c.events}" for c in result.chains)
        held = f", holds checkpoint {given.signed_at}" if given is not None else ""
        typer.echo(f"OK: {result.events} events ({counts}), chains intact{held}.")
        return
    where = (
        f"the {result.chain} chain breaks at sequence number {result.first_bad}"
        if result.first_bad is not None
        else "the checkpoint does not check out"
    )
    typer.echo(f"BROKEN: {where}: {result.reason} ({result.events} events read).", err=True)
    raise typer.Exit(1)


def _own_key(settings: Settings) -> bytes | None:
    from varsling.config import ConfigError

    try:
        return settings.signing_public_key
    except ConfigError:
        return None


def _read_public_key(path: Path) -> bytes:
    from varsling import crypto

    try:
        return crypto.parse_signing_public_key(path.read_text())
    except (OSError, crypto.CryptoError) as exc:
        typer.echo(f"Error: cannot read the public key in {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


def _read_checkpoint(path: Path) -> audit.Checkpoint:
    from varsling import audit
    from varsling.audit_chain import ChainError

    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        # A checkpoint file, or an export whose last line is its checkpoint.
        return audit.Checkpoint.from_json(json.loads(lines[-1] if lines else ""))
    except (OSError, ValueError, ChainError) as exc:
        typer.echo(f"Error: {path} holds no readable checkpoint: {exc}", err=True)
        raise typer.Exit(2) from exc


def _verify_export_offline(export: Path, public_key: Path) -> None:
    # Imported here: the offline verifier needs no settings and no database.
    from varsling.audit_chain import verify_export

    public = _read_public_key(public_key)
    try:
        with export.open(encoding="utf-8") as handle:
            result = verify_export(handle, public)
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"Error: cannot read {export}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if result.ok:
        counts = ", ".join(f"{chain} {n}" for chain, n in result.events.items())
        typer.echo(f"OK: export intact ({counts} events), checkpoint signature valid.")
        return
    where = (
        f"the {result.chain} chain breaks at sequence number {result.first_bad}: "
        if result.first_bad is not None
        else ""
    )
    typer.echo(f"BROKEN: {where}{result.reason}.", err=True)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign both chains' heads; prints the checkpoint (JSON) for the auditor to keep."""
    from varsling import audit

    settings = _settings()
    seed = _signing_seed(settings)
    with _transaction(settings) as session:
        made = audit.create_checkpoint(session, seed, actor=audit.SYSTEM)
    typer.echo(json.dumps(made.to_json(), sort_keys=True))


@audit_app.command("export")
def audit_export(
    output: Annotated[Path, typer.Option(help="File to write (JSON Lines, mode 0600).")],
) -> None:
    """Write every event, one JSON line each, closed by a fresh signed checkpoint."""
    from varsling import audit

    settings = _settings()
    seed = _signing_seed(settings)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        typer.echo(f"Error: cannot write {output}: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle, _transaction(settings) as session:
            made = audit.export(session, seed, actor=audit.SYSTEM)
            for line in made.lines:
                handle.write(line + "\n")
    except BaseException:
        # No export whose checkpoint was never stored (or that stops half-way).
        output.unlink(missing_ok=True)
        raise
    typer.echo(
        f"Exported {made.staff_events} staff and {made.reporter_events} reporter events to "
        f"{output}, closed by a checkpoint signed at {made.checkpoint.signed_at}."
    )


def _signing_seed(settings: Settings) -> bytes:
    from varsling.config import ConfigError

    try:
        return settings.signing_seed
    except ConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc


@keys_app.command("public")
def keys_public() -> None:
    """Print the installation's verifying key (one line); its fingerprint goes to stderr.

    Auditors and reporters keep this line to check checkpoints and receipts offline.
    """
    from varsling import crypto
    from varsling.config import ConfigError

    settings = _settings()
    try:
        public = settings.signing_public_key
    except ConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(crypto.format_signing_public_key(public))
    typer.echo(f"Fingerprint: {crypto.key_fingerprint(public)}", err=True)


@receipt_app.command("verify")
def receipt_verify(
    file: Annotated[Path, typer.Argument(help="The receipt, as copied or typed from the page.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="File with the line `varsling keys public` printed: then no database, "
            "no settings. Without it, the installation's own key."
        ),
    ] = None,
) -> None:
    """Check a reporter's signed receipt; prints the day it proves, never any content.

    Exits 1 if it was changed (date, value or signature), was signed by another
    key, or cannot be read.
    """
    # Imported here: with --public-key the check needs no settings and no database.
    from varsling import receipts

    public = _read_public_key(public_key) if public_key is not None else _receipt_key()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"INVALID: cannot read {file}: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        receipt = receipts.verify(text, public)
    except receipts.ReceiptError as exc:
        typer.echo(f"INVALID: {exc}.", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"valid: a report was received on {receipt.day.isoformat()}")
    typer.echo(f"Signed by the key with fingerprint {receipt.fingerprint}")


def _receipt_key() -> bytes:
    settings = _settings()
    public = _own_key(settings)
    if public is None:
        typer.echo("Error: no signing key configured; give --public-key FILE.", err=True)
        raise typer.Exit(2)
    return public


@sessions_app.command("purge")
def sessions_purge() -> None:
    """Remove every expired session (logins do it too); prints how many, audited."""
    from varsling.accounts import service as accounts

    with _transaction(_settings()) as session:
        removed = accounts.purge_sessions(session)
    typer.echo(f"Removed {removed} expired sessions.")


@jobs_app.command("run")
def jobs_run() -> None:
    """Send due check-ins, flag overdue cases, delete cases past retention, purge sessions.

    Run it daily or hourly from cron or a systemd timer; running it twice, or
    on two machines at once, does each thing once. One line per part, with counts.
    """
    from varsling import jobs
    from varsling.accounts import service as accounts
    from varsling.db import make_engine, make_sessionmaker

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        jobs.run(make_sessionmaker(engine), settings, now=accounts.utcnow(), report=typer.echo)
    except VarslingError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


RECOVERY_PROBLEMS = {
    "not_certified": "the recovery public key in the database is not the one this installation "
    "certified, so no case key is wrapped for it. It was changed behind the service's back: "
    "find out how, and restore it from a backup you trust.",
    "missing": "the audit trail says a recovery key was made, but it is no longer in the "
    "database, so no case key is wrapped for it. It was deleted behind the service's back: "
    "find out how, and restore it from a backup you trust.",
}


def _recovery_problem(settings: Settings) -> str | None:
    from varsling.cases import recovery

    with _transaction(settings) as session:
        return recovery.problem(session, settings.signing_public_key)


@recovery_app.command("init")
def recovery_init() -> None:
    """Make the recovery key pair; print its private half ONCE, to keep offline.

    From then on every new case's keys are also wrapped for it. Cases made
    before are not covered. Refused when a recovery key exists.
    """
    from varsling.accounts import service as accounts
    from varsling.cases import recovery

    settings = _settings()
    with _transaction(settings) as session:
        made = recovery.init_recovery(session, settings, today=accounts.utcnow().date())
    typer.echo(
        f"Recovery key {made.key_id} made; public key fingerprint {made.fingerprint}.\n"
        "Below is its PRIVATE half. It is shown this once and stored nowhere: whoever holds "
        "it can read every case made from now on. Write or print it, keep it offline (a safe; "
        "ideally split between two people), and clear this terminal.\n"
        "Cases made before now are NOT covered by it.\n"
    )
    typer.echo(made.private_text)


@recovery_app.command("status")
def recovery_status() -> None:
    """Whether there is a recovery key, its fingerprint, and whether its certificate holds."""
    from varsling import crypto
    from varsling.cases import recovery

    settings = _settings()
    with _transaction(settings) as session:
        row = recovery.recovery_key(session)
        if row is None:
            if recovery.was_initialised(session):
                typer.echo(f"WARNING: {RECOVERY_PROBLEMS['missing']}")
                raise typer.Exit(1)
            typer.echo("No recovery key. `varsling recovery init` makes one.")
            return
        holds = recovery.certified(row, settings.signing_public_key)
        state = "certified" if holds else "CERTIFICATE FAILS: nothing is wrapped for it"
        fingerprint = crypto.key_fingerprint(row.public_key)
        typer.echo(f"{row.id}\t{fingerprint}\tsince {row.created_on.isoformat()}\t{state}")


@recovery_app.command("grant")
def recovery_grant(
    case: Annotated[str, typer.Option("--case", help="The case id.")],
    user: Annotated[str, typer.Option("--user", help="The username to give the case to.")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the recovery private key; without it, read stdin."),
    ] = None,
) -> None:
    """Give a case to a user with the recovery private key (from stdin or --key-file).

    A handler gets the case key, a custodian the identity key. Never for
    someone named as involved, off the case's unit chain, or with an
    uncertified key. Only for cases made after `varsling recovery init`.
    """
    from varsling.accounts import service as accounts
    from varsling.cases import recovery

    settings = _settings()
    try:
        text = (
            key_file.read_text() if key_file is not None else typer.get_text_stream("stdin").read()
        )
    except OSError as exc:
        typer.echo(f"Error: cannot read the key file: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    with _transaction(settings) as session:
        private_key = recovery.read_private_key(text)
        granted = recovery.recovery_grant(
            session,
            settings,
            private_key=private_key,
            case_id=case.strip().lower(),
            username=user,
            today=accounts.utcnow().date(),
        )
    typer.echo(f"Granted case {case} to account {granted.user_id}: {', '.join(granted.purposes)}.")


if __name__ == "__main__":
    app()
