"""The `varsling` command: serve, migrate, units, users, audit."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from varsling import audit, crypto, secrets_binding
from varsling.accounts import service as accounts
from varsling.accounts.models import Unit, User
from varsling.config import SECRET_SETTINGS, ConfigError, Settings
from varsling.db import make_engine, make_sessionmaker, schema_revision
from varsling.db import migrate as run_migrations
from varsling.errors import VarslingError

app = typer.Typer(help="Varsling: a confidential whistleblowing service.", no_args_is_help=True)
unit_app = typer.Typer(help="Units of the organisation.", no_args_is_help=True)
user_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
keys_app = typer.Typer(help="The installation signing key.", no_args_is_help=True)
app.add_typer(unit_app, name="unit")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")


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
    """Create or bring the database schema up to date; record the secrets' fingerprints."""
    installation = _installation(migrate=run_migrations, revision=schema_revision)
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
    listening = socket.socket(family, socket.SOCK_STREAM)
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


def _warn_about_custodians(settings: Settings) -> None:
    from varsling.reports.service import list_units

    with _transaction(settings) as session:
        units = list_units(session)
    unreachable = [u.name for u in units if not u.recipients]
    if unreachable:
        typer.echo(
            "Note: no active case handler on the chain of these units, so they are not "
            f"offered to reporters: {', '.join(unreachable)}"
        )
    lacking = [u.name for u in units if u.recipients and not u.has_custodian]
    if lacking:
        typer.echo(
            "Note: no identity custodian on the chain of these units, so nobody can ever be "
            f"granted a reporter's identity there: {', '.join(lacking)}"
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
    """List staff accounts with roles and units."""
    with _transaction(_settings()) as session:
        for user in session.execute(select(User).order_by(User.id)).scalars():
            roles = ",".join(sorted(user.role_names))
            units = ",".join(str(u) for u in sorted(user.unit_ids)) or "-"
            state = "" if user.active else " (inactive)"
            typer.echo(f"{user.id}\t{user.username}\t{user.display_name}\t{roles}\t{units}{state}")


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


if __name__ == "__main__":
    app()
