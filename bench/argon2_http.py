"""A submission and a case-code login over real HTTP, next to a stock Argon2id call.

Run by hand (`make bench-http`), not in the test suite. Starts `varsling serve`
(uvicorn, one process) on a free port with the shipped Argon2id defaults, on a
fresh SQLite database in a temporary folder, or a fresh PostgreSQL database
made on the server in VARSLING_BENCH_DATABASE_URL (and dropped after). Seeds a
unit, two handlers and a custodian through the CLI, then interleaves, round
after round: a stock `argon2.low_level.hash_secret_raw` at the same parameters
in this process's main thread, a submission (`POST /api/v1/reports`) and a
case-code login (`POST /api/v1/reporter/session`), each timed by the client.

Target (issue 10): both at most 1.0x the stock call; before the Argon2 memory
pool they were 1.33x. `--source OTHER/src` runs another checkout's code the
same way (the figures before a change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from argon2.low_level import Type, hash_secret_raw
from stack import BENCH_DATABASE_VARIABLE, Service, fresh_database, machine

# The shipped defaults (src/varsling/config.py): the bench never changes them.
TIME_COST, MEMORY_KIB, PARALLELISM = 3, 65536, 1
TARGET = 1.0
BEFORE = 1.33


def elapsed_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--source", type=Path, help="import Varsling from this folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server_url = os.environ.get(BENCH_DATABASE_VARIABLE)
        with fresh_database(folder, server_url) as database_url:
            service = Service(folder, database_url, source=args.source)
            ((unit_id, _),) = service.seed(units=1, handlers=2)
            service.start()
            try:
                samples = measure(service.base_url, unit_id, args.rounds)
            finally:
                service.stop()

    print(f"Machine: {machine()}")
    print(
        f"Argon2id m={MEMORY_KIB} KiB, t={TIME_COST}, p={PARALLELISM}; {args.rounds} rounds; "
        f"database: {'PostgreSQL' if server_url else 'SQLite'}; "
        f"code: {args.source or 'this checkout'}"
    )
    stock = statistics.median(samples["stock"])
    print(
        f"{'':34}{'median ms':>10}{'x stock':>9}{'paired':>8}  target {TARGET}x, before {BEFORE}x"
    )
    print(f"{'stock hash_secret_raw (main thread)':34}{stock:10.1f}{1:9.2f}")
    for name, key in (("submission (POST /reports)", "submission"), ("case-code login", "login")):
        value = statistics.median(samples[key])
        # Each round's own ratio too: drift in the machine's speed cancels within a round.
        paired = statistics.median(
            a / b for a, b in zip(samples[key], samples["stock"], strict=True)
        )
        verdict = "meets" if value / stock <= TARGET else "misses"
        print(f"{name:34}{value:10.1f}{value / stock:9.2f}{paired:8.2f}  {verdict} the target")


def measure(base_url: str, unit_id: int, rounds: int) -> dict[str, list[float]]:
    body = {
        "unit_id": unit_id,
        "category": "harassment",
        "description": "What happened, in a few paragraphs. " * 40,
        "identity": {"name": "Kari Nordmann", "contact": "kari@example.org"},
    }
    codes: list[str] = []
    salt = os.urandom(16)
    with httpx.Client(base_url=base_url, timeout=120) as client:

        def stock() -> None:
            hash_secret_raw(os.urandom(32), salt, TIME_COST, MEMORY_KIB, PARALLELISM, 32, Type.ID)

        def submit() -> None:
            response = client.post("/api/v1/reports", json=body)
            assert response.status_code == 201, response.text
            codes.append(response.json()["case_code"])

        def login() -> None:
            response = client.post("/api/v1/reporter/session", json={"case_code": codes[-1]})
            assert response.status_code == 200, response.text

        for _ in range(3):  # warm up: imports, connections, the first Argon2 buffer
            stock()
            submit()
            login()
        samples: dict[str, list[float]] = {"stock": [], "submission": [], "login": []}
        for _ in range(rounds):
            samples["stock"].append(elapsed_ms(stock))
            samples["submission"].append(elapsed_ms(submit))
            samples["login"].append(elapsed_ms(login))
    return samples


if __name__ == "__main__":
    main()
