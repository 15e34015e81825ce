"""Real processes for the deployment tests: `varsling serve` replicas and Caddy.

Every process is started with its output going to a file in the test's folder,
and `Processes.stop_all()` ends each one (terminate, then kill) however the test
ended. Nothing here binds anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conftest import FAST_ARGON2, TEST_SECRETS

REPOSITORY = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY / "deploy"
MARKER_AGENT = "varsling-deploy-test-agent/7f3a9c"


def skip_or_fail(problem: str) -> None:
    """Skip on a developer's machine; in CI (CI=true) the tools must be there."""
    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


def require_caddy() -> str:
    caddy = shutil.which("caddy")
    if caddy is None:
        skip_or_fail("caddy is not installed (Debian: apt-get install caddy; .ci/run installs it)")
    assert caddy is not None
    return caddy


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def separate_postgres_database(base_url: str, suffix: str) -> str:
    """A database of its own beside the suite's, emptied: `<base>_<suffix>[_gwN]`.

    The suite's per-worker database is emptied between tests by conftest; the
    replicas here write through their own connections, so they get another one.
    """
    base = make_url(base_url)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    name = f"{base.database}_{suffix}" + (f"_{worker}" if worker else "")
    if not re.fullmatch(r"\w+", name, re.ASCII):
        raise ValueError(f"not a plain database name: {name!r}")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def varsling_env(database_url: str, secrets_folder: Path) -> dict[str, str]:
    """The environment of every `varsling` process: the tests' secrets, cheap Argon2id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env.update({f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()})
    env.update(
        {f"VARSLING_{name.upper()}": str(value) for name, value in FAST_ARGON2.items()},
        VARSLING_DATABASE_URL=database_url,
        # A folder that exists, a file that does not: nothing is generated (the
        # secrets are all in the environment) and nothing lands in ./var.
        VARSLING_SECRETS_FILE=str(secrets_folder / "secrets.env"),
        VARSLING_ENVIRONMENT="development",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Processes:
    """Started processes, each with its log file; stopped together at the end."""

    folder: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        try:
            self.running[name] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,
            )
        finally:
            log.close()

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def wait_until(self, name: str, ready: Callable[[], bool], timeout: float = 90) -> None:
        """Poll `ready` until it holds; fail with the process's log if it died or timed out."""
        deadline = time.monotonic() + timeout
        process = self.running[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            if ready():
                return
            time.sleep(0.2)
        pytest.fail(f"{name} did not become ready within {timeout} s:\n{self.log(name)}")


def answers(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def caddy_env(folder: Path, **settings: str) -> dict[str, str]:
    """Caddy's environment: its own config and data folders, no admin endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADDY_")}
    env.update(
        XDG_CONFIG_HOME=str(folder / "caddy-config"),
        XDG_DATA_HOME=str(folder / "caddy-data"),
        HOME=str(folder),
        CADDY_ADMIN="off",
        **settings,
    )
    return env


def shipped_caddyfile(folder: Path) -> Path:
    """deploy/Caddyfile, copied so that its `import sites.d/*.caddy` finds nothing else."""
    target = folder / "caddy" / "Caddyfile"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY / "Caddyfile", target)
    return target
