"""The `varsling` command: serve, migrate, units, users, audit, jobs."""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session

from varsling import audit, crypto, secrets_binding
from varsling.accounts import service as accounts
from varsling.accounts.setup_check import SetupWarnings, setup_warnings
from varsling.config import SECRET_SETTINGS, ConfigError, Settings
from varsling.db import make_engine, make_sessionmaker, migrate_installation, schema_revision
from varsling.errors import VarslingError

app = typer.Typer(help="Varsling: a confidential whistleblowing service.", no_args_is_help=True)
unit_app = typer.Typer(help="Units of the organisation.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
keys_app = typer.Typer(help="The installation signing key.", no_args_is_help=True)
sessions_app = typer.Typer(help="Staff and reporter sessions.", no_args_is_help=True)
receipt_app = typer.Typer(help="Reporters' signed receipts.", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled work (cron or a systemd timer).", no_args_is_help=True)
app.add_typer(unit_app, name="unit")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(sessions_app, name="sessions")
app.add_typer(receipt_app, name="receipt")
app.add_typer(jobs_app, name="jobs")


def _installation(**options: Any) -> secrets_binding.Installation:
    """Settings with the secrets checked against the database: every command starts here."""
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
    granted: list[str] = []

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

    installation = _installation(migrate=migrate_as_owner, revision=schema_revision)
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
    try:
        installation = secrets_binding.replace_secrets()
    except ConfigError as exc:
        typer.echo(f"Refusing: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"Wrote new installation secrets to {installation.secrets_file} (mode 0600). "
        "Back this file up, apart from the database."
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the API and the reporter pages (secrets are generated for an empty database)."""
    import uvicorn

    from varsling.app import create_app

    settings = _installation(check_settings=True).settings
    try:
        application = create_app(settings)
    except ConfigError as exc:
        typer.echo(f"Refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    _warn_about_custodians(settings)
    _warn_about_uncertified_keys(settings)
    listening = _listen(host, port)
    # No access log: it would record reporters' IP addresses and user agents.
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    typer.echo(f"Serving Varsling on http://{host}:{port}")
    uvicorn.Server(config).run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says "Serving"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # sockets whose protocol says TCP, and with it on, every answer on a kept-alive
    # connection waited about 40 ms for the client's delayed ACK.
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
    with _transaction(settings) as session:
        return setup_warnings(session, verifying_key=settings.signing_public_key)


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
    with _transaction(_settings()) as session:
        unit = accounts.create_unit(session, name=name, parent_id=parent, kind=kind)
        typer.echo(unit.id)


@unit_app.command("rename")
def unit_rename(unit_id: int, name: str) -> None:
    """Give a unit a new name (reporters see it on the form)."""
    with _transaction(_settings()) as session:
        unit = accounts.rename_unit(session, unit_id, name=name)
        typer.echo(f"{unit.id}\t{unit.name} ({unit.kind})")


@unit_app.command("move")
def unit_move(
    unit_id: int,
    parent: Annotated[int, typer.Option("--parent", help="The new parent unit's id.")],
) -> None:
    """Put a unit under another parent (never the national unit, never under itself)."""
    with _transaction(_settings()) as session:
        unit = accounts.move_unit(session, unit_id, parent_id=parent)
        typer.echo(f"{unit.id}\t{unit.name} ({unit.kind}) under {unit.parent_id}")


@unit_app.command("list")
def unit_list() -> None:
    """List units as a tree."""
    with _transaction(_settings()) as session:
        for unit in accounts.unit_tree(session):
            typer.echo(f"{'  ' * unit.depth}{unit.id}\t{unit.name} ({unit.kind})")


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[list[str], typer.Option("--role", help="handler, custodian, auditor, admin.")],
    unit: Annotated[list[int] | None, typer.Option("--unit", help="Unit id (repeatable).")] = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown to reporters.")] = None,
) -> None:
    """Add a staff account. The password comes from VARSLING_PASSWORD or a prompt.

    Handlers and custodians need --unit and --display-name: reporters see that name.
    """
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
        )
        typer.echo(user.id)


@user_app.command("list")
def user_list() -> None:
    """List staff accounts with roles and units; flags keys whose certificate fails."""
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


@user_app.command("deactivate")
def user_deactivate(user_id: int) -> None:
    """Close an account: its sessions end, it cannot log in and receives no new case."""
    with _transaction(_settings()) as session:
        user = accounts.deactivate_user(session, user_id)
        typer.echo(f"{user.id}\t{user.username} (inactive)")


@user_app.command("set-units")
def user_set_units(
    user_id: int,
    unit: Annotated[list[int] | None, typer.Option("--unit", help="Unit id (repeatable).")] = None,
) -> None:
    """Replace the units an account acts for; new reports route by them."""
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
    try:
        return settings.signing_public_key
    except ConfigError:
        return None


def _read_public_key(path: Path) -> bytes:
    try:
        return crypto.parse_signing_public_key(path.read_text())
    except (OSError, crypto.CryptoError) as exc:
        typer.echo(f"Error: cannot read the public key in {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


def _read_checkpoint(path: Path) -> audit.Checkpoint:
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

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        jobs.run(make_sessionmaker(engine), settings, now=accounts.utcnow(), report=typer.echo)
    except VarslingError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


if __name__ == "__main__":
    app()
