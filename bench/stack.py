"""A real Varsling for the benchmarks: a fresh database, the `varsling` CLI, `varsling serve`.

Shared by bench/argon2_http.py and bench/load.py. Every process runs with the
shipped settings (no VARSLING_ variable of the caller's is passed on), in
development mode, with its secrets generated into a temporary folder. With
`source`, the processes import Varsling from that folder instead (another
checkout's `src`, to measure the code before a change in the same way).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BENCH_DATABASE_VARIABLE = "VARSLING_BENCH_DATABASE_URL"


@contextmanager
def fresh_database(folder: Path, server_url: str | None) -> Iterator[str]:
    """SQLite in `folder`, or a new PostgreSQL database on `server_url`'s server, dropped after."""
    if not server_url:
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    base = make_url(server_url)
    name = f"varsling_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Service:
    """One installation: its folder, environment, and the `serve` process once started."""

    folder: Path
    database_url: str
    source: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
        env.update(
            VARSLING_DATABASE_URL=self.database_url,
            VARSLING_SECRETS_FILE=str(self.folder / "secrets.env"),
            VARSLING_ENVIRONMENT="development",
            # The benches measure what a request costs, not the installation-wide flood
            # limits (30 reports and 60 uploads a minute by default), which they would hit.
            VARSLING_SUBMISSIONS_PER_MINUTE="1000000",
            VARSLING_UPLOADS_PER_MINUTE="1000000",
            PYTHONUNBUFFERED="1",
        )
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        env.update(self.extra_env)
        return env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, password: str | None = None) -> str:
        env = self.env
        if password is not None:
            env["VARSLING_PASSWORD"] = password
        done = subprocess.run(
            [sys.executable, "-m", "varsling", *args],
            env=env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"varsling {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def seed(self, *, units: int, handlers: int) -> list[tuple[int, list[str]]]:
        """Migrate; a national unit and `units - 1` below it; handlers spread over them.

        Returns each unit's id and its handlers' usernames (their password: `PASSWORD`).
        """
        self.cli("migrate")
        national = int(self.cli("unit", "add", "Sentralt", "--kind", "national").split()[-1])
        unit_ids = [national]
        for index in range(1, units):
            added = self.cli(
                "unit", "add", f"Fylke {index}", "--parent", str(national), "--kind", "county"
            )
            unit_ids.append(int(added.split()[-1]))
        seeded: list[tuple[int, list[str]]] = [(unit_id, []) for unit_id in unit_ids]
        for index in range(handlers):
            unit_id, names = seeded[index % len(seeded)]
            username = f"handler{index}"
            self.cli(
                "user", "add", username, "--role", "handler", "--unit", str(unit_id),
                "--display-name", f"Handler {index}", password=PASSWORD,
            )  # fmt: skip
            names.append(username)
        # One identity custodian at the top, as in a real installation: every case key
        # is then also wrapped for a custodian.
        self.cli(
            "user", "add", "custodian", "--role", "custodian", "--unit", str(national),
            "--display-name", "Custodian", password=PASSWORD,
        )  # fmt: skip
        return seeded

    def start(self, *, workers: int = 1) -> None:
        options = ["--workers", str(workers)] if workers > 1 else []
        log = (self.folder / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "varsling", "serve", "--port", str(self.port), *options],
            env=self.env,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"varsling serve exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/api/v1/units", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"varsling serve did not answer within 120 s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        """The processes answering requests: the server itself, or its uvicorn workers."""
        assert self.process is not None
        children = [pid for pid in _children(self.process.pid) if "spawn_main" in _cmdline(pid)]
        return children or [self.process.pid]

    def log(self) -> str:
        return (self.folder / "serve.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


PASSWORD = "bench-password-" + "x" * 16


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            match = re.search(r"^PPid:\s*(\d+)$", status.read_text(), re.MULTILINE)
        except OSError:
            continue
        if match and int(match.group(1)) == pid:
            found.append(int(status.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the most ever resident) of a process, in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {
        key: int(value)
        for key, value in re.findall(r"^(VmRSS|VmHWM):\s*(\d+) kB$", status, re.MULTILINE)
    }


def machine() -> str:
    """nproc and the CPU model, for the figures in bench/README.md."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpus} CPUs ({model}), Python {sys.version.split()[0]}"
