"""The `varsling` command: serve, migrate, units, users, audit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import audit, crypto
from varsling.accounts import service as accounts
from varsling.accounts.models import Unit, User
from varsling.config import (
    ConfigError,
    Settings,
    ensure_secrets_file,
    load_settings,
    secrets_file_path,
)
from varsling.db import make_engine, make_sessionmaker
from varsling.db import migrate as run_migrations
from varsling.errors import VarslingError

app = typer.Typer(help="Varsling: a confidential whistleblowing service.", no_args_is_help=True)
unit_app = typer.Typer(help="Units of the organisation.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
keys_app = typer.Typer(help="The installation signing key.", no_args_is_help=True)
sessions_app = typer.Typer(help="Staff and reporter sessions.", no_args_is_help=True)
app.add_typer(unit_app, name="unit")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(sessions_app, name="sessions")


def _settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:
        typer.echo(f"Invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


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
    """Bring the database schema up to date."""
    settings = _settings()
    # The settings let a migration hash existing rows with a configured key.
    run_migrations(settings.database_url, settings=settings)
    typer.echo("Database is up to date.")


@app.command()
def secrets() -> None:
    """Generate the installation's secrets file (mode 0600) if it does not exist."""
    path = secrets_file_path()
    if ensure_secrets_file(path):
        typer.echo(f"Generated installation secrets in {path} (mode 0600). Back it up.")
    else:
        typer.echo(f"Secrets already present ({path} or the environment); nothing written.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the API and the reporter pages (secrets are generated on first start)."""
    import uvicorn

    from varsling.app import create_app

    path = secrets_file_path()
    if ensure_secrets_file(path):
        typer.echo(
            f"First start: generated installation secrets in {path} (mode 0600). "
            "Back this file up: without it no case code can be checked."
        )
    settings = _settings()
    try:
        application = create_app(settings)
    except ConfigError as exc:
        typer.echo(f"Refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    _warn_about_custodians(settings)
    _warn_about_uncertified_keys(settings)
    typer.echo(f"Serving Varsling on http://{host}:{port}")
    # No access log: it would record reporters' IP addresses and user agents.
    uvicorn.run(
        application,
        host=host,
        port=port,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


def _warn_about_custodians(settings: Settings) -> None:
    from varsling.reports.service import list_units

    with _transaction(settings) as session:
        units = list_units(session, verifying_key=settings.signing_public_key)
        lacking = [u.name for u in units if not u.has_custodian]
    if lacking:
        typer.echo(
            "Note: no identity custodian on the chain of these units, so nobody can ever be "
            f"granted a reporter's identity there: {', '.join(lacking)}"
        )


def _warn_about_uncertified_keys(settings: Settings) -> None:
    with _transaction(settings) as session:
        flagged = accounts.uncertified_users(session, settings.signing_public_key)
        missing = [u.username for u in flagged if u.key_certificate is None]
        failing = [u.username for u in flagged if u.key_certificate is not None]
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


@unit_app.command("list")
def unit_list() -> None:
    """List units as a tree."""
    with _transaction(_settings()) as session:
        units = list(session.execute(select(Unit).order_by(Unit.id)).scalars())
        children: dict[int | None, list[Unit]] = {}
        for unit in units:
            children.setdefault(unit.parent_id, []).append(unit)

        def show(parent: int | None, depth: int) -> None:
            for unit in children.get(parent, []):
                typer.echo(f"{'  ' * depth}{unit.id}\t{unit.name} ({unit.kind})")
                show(unit.id, depth + 1)

        show(None, 0)


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[list[str], typer.Option("--role", help="handler, custodian, auditor, admin.")],
    unit: Annotated[list[int] | None, typer.Option("--unit", help="Unit id (repeatable).")] = None,
    display_name: Annotated[str | None, typer.Option(help="Name shown to reporters.")] = None,
) -> None:
    """Add a staff account. The password comes from VARSLING_PASSWORD or a prompt."""
    password = os.environ.get("VARSLING_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    settings = _settings()
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
    verifying_key = settings.signing_public_key
    with _transaction(settings) as session:
        for user in session.execute(select(User).order_by(User.id)).scalars():
            roles = ",".join(sorted(user.role_names))
            units = ",".join(str(u) for u in sorted(user.unit_ids)) or "-"
            state = "" if user.active else " (inactive)"
            if not accounts.key_certified(user, verifying_key):
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


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exits 1 and names the first broken event if it is broken."""
    with _transaction(_settings()) as session:
        result = audit.verify(session)
    if result.ok:
        typer.echo(f"OK: {result.events} events, chain intact.")
        return
    typer.echo(
        f"BROKEN: the chain breaks at sequence number {result.first_bad} "
        f"({result.events} events read).",
        err=True,
    )
    raise typer.Exit(1)


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


@sessions_app.command("purge")
def sessions_purge() -> None:
    """Remove every expired session (logins do it too); prints how many, audited."""
    with _transaction(_settings()) as session:
        removed = accounts.purge_sessions(session)
    typer.echo(f"Removed {removed} expired sessions.")


if __name__ == "__main__":
    app()
