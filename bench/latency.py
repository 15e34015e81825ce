"""Median latency of a submission and of a case-code login, next to bare Argon2id.

Run by hand (`make bench`); not part of the test suite. Uses the shipped
Argon2id defaults, a fresh SQLite database in a temporary folder (or
VARSLING_BENCH_DATABASE_URL), and the whole HTTP stack through TestClient.
Target (issue 2): everything besides Argon2id adds at most 15% to each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts.models import Unit
from varsling.app import create_app
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker, migrate


def elapsed_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        url = os.environ.get(
            "VARSLING_BENCH_DATABASE_URL", f"sqlite:///{Path(folder) / 'bench.db'}"
        )
        migrate(url)
        settings = Settings(
            environment="development",
            database_url=url,
            code_pepper="p" * 48,
            code_salt="s" * 48,
            web_secret="w" * 48,
            signing_key="k" * 48,
            password_pepper="q" * 48,
            # The benchmark submits far faster than the flood limit allows.
            submissions_per_minute=1_000_000,
        )
        params = settings.argon2
        engine = make_engine(url)
        with make_sessionmaker(engine).begin() as session:
            # Fresh names and a unit of this run's own under the one national unit,
            # so a reused PostgreSQL database takes another run.
            run = uuid.uuid4().hex[:8]
            national = session.scalars(select(Unit).where(Unit.parent_id.is_(None))).first()
            if national is None:
                national = accounts.create_unit(session, name="Sentralt")
            unit = accounts.create_unit(
                session, name=f"Bench {run}", parent_id=national.id, kind="county"
            )
            for name, role in (("hanne", "handler"), ("henrik", "handler"), ("cora", "custodian")):
                accounts.create_user(
                    session,
                    settings,
                    username=f"{name}-{run}",
                    password="p" * 16,
                    roles=[role],
                    unit_ids=[unit.id],
                    display_name=name.capitalize(),
                )
            unit_id = unit.id
        engine.dispose()

        app = create_app(settings)
        codes: list[str] = []
        body = {
            "unit_id": unit_id,
            "category": "harassment",
            "description": "What happened, in a few paragraphs. " * 40,
            "identity": {"name": "Kari Nordmann", "contact": "kari@example.org"},
        }
        with TestClient(app) as client:

            def submit() -> None:
                response = client.post("/api/v1/reports", json=body)
                assert response.status_code == 201
                codes.append(response.json()["case_code"])

            def code_login() -> None:
                response = client.post(
                    "/api/v1/reporter/session", json={"case_code": codes[len(codes) // 2]}
                )
                assert response.status_code == 200

            # The same work as a case code's stretch: 32 peppered bytes, the installation salt.
            salt = settings.secret("code_salt")

            def bare() -> None:
                crypto.argon2id(b"x" * 32, salt, params)

            submit()  # warm up
            # Interleaved, so that drift in the machine's speed hits all three alike.
            samples: dict[str, list[float]] = {"bare": [], "submission": [], "login": []}
            for _ in range(args.runs):
                samples["bare"].append(elapsed_ms(bare))
                samples["submission"].append(elapsed_ms(submit))
                samples["login"].append(elapsed_ms(code_login))
        app.state.engine.dispose()

    print(
        f"Argon2id parameters: {params.encode()}  (runs: {args.runs}, database: "
        f"{'SQLite' if url.startswith('sqlite') else 'PostgreSQL'})"
    )
    bare_ms = statistics.median(samples["bare"])
    print(f"{'':28}{'median ms':>10}{'overhead':>10}")
    print(f"{'bare Argon2id':28}{bare_ms:10.1f}")
    for name, key in (("submission (POST /reports)", "submission"), ("case-code login", "login")):
        value = statistics.median(samples[key])
        overhead = (value - bare_ms) / bare_ms * 100
        print(f"{name:28}{value:10.1f}{overhead:9.1f}%")


if __name__ == "__main__":
    main()
