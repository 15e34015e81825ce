"""SIGKILL in the middle of submissions: every case code a client received opens its case."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS
from tests.factories import make_unit, make_user, report
from tests.serving import free_port
from varsling.config import Settings

SENDERS = 6
# Enough receipts before the kill that it lands in a steady stream of requests.
RECEIPTS_BEFORE_KILL = 12


def _environment(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env.update({f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()})
    env.update(
        VARSLING_DATABASE_URL=database_url,
        VARSLING_SECRETS_FILE="/nonexistent",
        VARSLING_ENVIRONMENT="development",
        VARSLING_ARGON2_MEMORY_KIB="64",
        VARSLING_ARGON2_TIME_COST="1",
        VARSLING_SUBMISSIONS_PER_MINUTE="100000",
    )
    return env


@contextmanager
def _varsling_serve(database_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`varsling serve` in a process of its own, once it answers; killed at the end if alive."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "varsling", "serve", "--port", str(port)],
        env=_environment(database_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/units", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield server, base
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=30)


def test_after_sigkill_every_received_code_opens_its_case_and_the_chain_verifies(
    database_url: str, db: Session, settings: Settings
) -> None:
    unit = make_unit(db, "Sentralt")
    make_user(db, settings, "nina", units=(unit.id,))
    received: dict[str, str] = {}  # case code -> the description sent with it
    cut: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submit(base: str, sender: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for number in range(10_000):
                if stop.is_set():
                    return
                description = f"Report {number} from sender {sender}."
                try:
                    response = client.post(
                        "/api/v1/reports", json=report(unit.id, description=description)
                    )
                    code = response.json()["case_code"]
                except (httpx.TransportError, ValueError, KeyError) as exc:
                    # Cut mid-flight: it may or may not have been stored.
                    with lock:
                        cut.append(type(exc).__name__)
                    return
                assert response.status_code == 201
                with lock:
                    received[code] = description

    with _varsling_serve(database_url) as (server, base):
        senders = [
            threading.Thread(target=submit, args=(base, n), daemon=True) for n in range(SENDERS)
        ]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 60
        while len(received) < RECEIPTS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL: no shutdown, no rollback, no flush
        server.wait(timeout=30)
        for sender in senders:
            sender.join(timeout=60)
        stop.set()

    assert len(received) >= RECEIPTS_BEFORE_KILL
    assert cut, "the kill should have cut requests in flight"

    with _varsling_serve(database_url) as (_, base), httpx.Client(base_url=base) as client:
        for code, description in received.items():
            login = client.post("/api/v1/reporter/session", json={"case_code": code})
            assert login.status_code == 200, login.text
            token = {"Authorization": f"Bearer {login.json()['token']}"}
            case = client.get("/api/v1/reporter/case", headers=token)
            assert case.status_code == 200, case.text
            assert description in case.text

    verified = subprocess.run(
        [sys.executable, "-m", "varsling", "audit", "verify"],
        env=_environment(database_url),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: ")
