"""Case list at scale: pages of 50 from 100,000 cases held by one handler, over real HTTP.

Run by hand (`make bench-cases`); not part of the test suite. For each database
(a temporary SQLite file, and PostgreSQL when VARSLING_BENCH_DATABASE_URL names
a fresh, empty database) it:

1. runs `varsling migrate`, makes a unit tree and one handler;
2. writes N cases for that handler in bulk, each as a submission would have
   left it: the case row with its deadlines and sealed manifest, the case key
   wrapped (HPKE) for the handler by the project's own wrap, the sealed report
   entry, the MAC'd exclusion row and the reporter's sealed access row (its
   lookup derived with a cheap Argon2id: the list never runs Argon2). About 1%
   are retaliation cases (high priority) linked to another case;
3. starts `varsling serve` as its own process, logs the handler in and times
   GET /api/v1/cases: the first page, middle pages (following `next`),
   filtered pages, and once the whole list without `limit`.

Target (issue 10): p95 < 100 ms for a page of 50. Reference: 3.8 s for the
whole list of 100,000 before paging.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts.models import User
from varsling.cases import exclusions, keys, manifest
from varsling.cases import service as cases
from varsling.cases.models import (
    Case,
    CaseEntry,
    CaseExclusion,
    CaseKey,
    Category,
    KeyPurpose,
    Priority,
    ReporterAccess,
    Status,
)
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker
from varsling.reports import service as reports

TARGET_MS = 100.0
REFERENCE_WHOLE_LIST_S = 3.8
PAGE = 50
PASSWORD = "bench-password-long-enough"
SECRETS = {
    "code_pepper": "p" * 48,
    "code_salt": "s" * 48,
    "web_secret": "w" * 48,
    "signing_key": "k" * 48,
    "password_pepper": "q" * 48,
}
# Only for the data set's password and case-code lookups: listing never runs Argon2.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}
BATCH = 2000


def environment(url: str, secrets_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env |= {f"VARSLING_{k.upper()}": v for k, v in SECRETS.items()}
    env |= {f"VARSLING_{k.upper()}": str(v) for k, v in FAST_ARGON2.items()}
    env |= {
        "VARSLING_ENVIRONMENT": "development",
        "VARSLING_DATABASE_URL": url,
        "VARSLING_SECRETS_FILE": str(secrets_file),
    }
    return env


def varsling(*args: str, env: dict[str, str]) -> list[str]:
    return [str(Path(sys.executable).with_name("varsling")), *args]


def build_cases(session: Session, settings: Settings, handler: User, units: list[int], n: int):
    """Write `n` cases held by `handler`, as submissions would have written them."""
    rng = random.Random(10)
    today = dt.date.today()
    exclusion_key = exclusions.exclusion_key(settings.secret("code_pepper"))
    pepper, salt = settings.secret("code_pepper"), settings.secret("code_salt")
    params = settings.argon2
    entry_id = session.scalar(select(func.max(CaseEntry.id))) or 0
    statuses = list(Status)
    categories = [c for c in Category if c != Category.RETALIATION]
    normal_ids: list[str] = []
    rows: dict[str, list[dict[str, Any]]] = {"case": [], "key": [], "entry": [], "excl": []}
    rows["access"] = []

    def flush() -> None:
        for table, name in (
            (Case, "case"),
            (CaseKey, "key"),
            (CaseEntry, "entry"),
            (CaseExclusion, "excl"),
            (ReporterAccess, "access"),
        ):
            if rows[name]:
                session.execute(insert(table), rows[name])
                rows[name].clear()

    for number in range(n):
        case_id = uuid.uuid4().hex
        case_key = crypto.new_key()
        identity_key = crypto.new_key()
        received = today - dt.timedelta(days=rng.randrange(0, 3 * 365))
        retaliation = number % 100 == 99 and normal_ids
        status = rng.choice(statuses)
        unit_id = rng.choice(units)
        if retaliation:
            category = Category.RETALIATION.value
            ack_due = received + dt.timedelta(days=settings.retaliation_acknowledgement_days)
            feedback_due = cases.add_months(ack_due, settings.retaliation_feedback_months)
        else:
            category = rng.choice(categories).value
            ack_due = cases.acknowledgement_due(received)
            feedback_due = cases.feedback_due(received, None)
        later = status != Status.RECEIVED
        acknowledged = received + dt.timedelta(days=rng.randrange(0, 10)) if later else None
        concluded = (
            received + dt.timedelta(days=rng.randrange(20, 120))
            if status in (Status.CONCLUDED, Status.CLOSED)
            else None
        )
        entry_id += 1
        payload = {"category": category, "description": "What happened, at some length. " * 20}
        ciphertext = crypto.seal(
            case_key,
            json.dumps(payload, ensure_ascii=False).encode(),
            context=cases.entry_context(case_id, "report", entry_id),
        )
        entry = CaseEntry(
            id=entry_id,
            case_id=case_id,
            kind="report",
            author_id=None,
            created_on=received,
            ciphertext=ciphertext,
        )
        sealed_manifest = manifest.Manifest(
            version=1, entries={str(entry_id): manifest._entry_row(entry)}, files={}
        ).seal(case_key, case_id)
        rows["case"].append(
            {
                "id": case_id,
                "unit_id": unit_id,
                "status": status.value,
                "category": category,
                "received_on": received,
                "acknowledged_on": acknowledged,
                "concluded_on": concluded,
                "closed_on": concluded if status == Status.CLOSED else None,
                "acknowledgement_due": ack_due,
                "feedback_due": feedback_due,
                "sealed_manifest": sealed_manifest,
                "priority": Priority.HIGH.value if retaliation else Priority.NORMAL.value,
                "handling_unit_id": unit_id,
                "linked_case_id": rng.choice(normal_ids) if retaliation else None,
            }
        )
        rows["key"].append(
            {
                "case_id": case_id,
                "user_id": handler.id,
                "purpose": KeyPurpose.CASE.value,
                "wrapped_key": crypto.wrap_key(
                    case_key,
                    handler.public_key,
                    info=keys.wrap_info(case_id, KeyPurpose.CASE, handler.id),
                ),
                "granted_on": received,
            }
        )
        rows["entry"].append(
            {
                "id": entry_id,
                "case_id": case_id,
                "kind": "report",
                "author_id": None,
                "created_on": received,
                "ciphertext": ciphertext,
            }
        )
        excluded = exclusions.exclusion_row(exclusion_key, case_id, [])
        rows["excl"].append({"case_id": case_id, "digests": excluded.digests, "tag": excluded.tag})
        if not retaliation:
            normal_ids.append(case_id)
            code = crypto.derive_case_code(
                crypto.new_case_code(), pepper=pepper, salt=salt, params=params
            )
            rows["access"].append(
                {
                    "case_id": case_id,
                    "lookup": code.lookup,
                    "code_params": params.encode(),
                    "sealed_keys": crypto.seal(
                        code.key,
                        case_key + identity_key,
                        context=reports._reporter_context(case_id),
                    ),
                }
            )
        if len(rows["case"]) >= BATCH:
            flush()
    flush()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    mark = "ok" if p95 < TARGET_MS else "OVER"
    return (
        f"{len(ordered):5d} {statistics.median(ordered):8.1f} {p95:8.1f} {ordered[-1]:8.1f}"
        f"   {mark}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        varsling("serve", "--port", str(port), env=env),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/api/v1/units", timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"varsling serve did not start: {process.stderr.read()!r}"  # type: ignore[union-attr]
                    ) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def measure(base: str, username: str, runs: int, cursors: list[str], units: list[int]) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        login = client.post("/api/v1/sessions", json={"username": username, "password": PASSWORD})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['token']}"}

        def page(params: dict[str, str]) -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            response = client.get("/api/v1/cases", params=params, headers=headers)
            elapsed = (time.perf_counter() - start) * 1000
            response.raise_for_status()
            return elapsed, response.json()

        first_answer = page({"limit": str(PAGE)})[1]
        total = first_answer["total"]
        samples: dict[str, list[float]] = {}
        # Interleaved rounds, so drift in the shared machine's speed hits every kind alike.
        filters: list[tuple[str, dict[str, str]]] = [
            ("filter status=investigating", {"status": "investigating"}),
            (f"filter unit={units[-1]}", {"unit": str(units[-1])}),
            ("filter overdue=true", {"overdue": "true"}),
            ("filter category=harassment", {"category": "harassment"}),
            ("filter status+category", {"status": "received", "category": "discrimination"}),
        ]
        walkers = {name: None for name, _ in filters} | {"middle pages (next)": None}
        position = 0
        for round_number in range(runs):
            start = time.perf_counter()
            client.get("/api/v1/units").raise_for_status()
            samples.setdefault("floor: GET /api/v1/units", []).append(
                (time.perf_counter() - start) * 1000
            )
            samples.setdefault("first page", []).append(page({"limit": str(PAGE)})[0])
            # Middle pages: follow `next` from cursors spread through the list.
            name = "middle pages (next)"
            after = walkers[name] or cursors[position % len(cursors)]
            if walkers[name] is None:
                position += 1
            elapsed, answer = page({"limit": str(PAGE), "after": after})
            samples.setdefault(name, []).append(elapsed)
            walkers[name] = answer["next"] if round_number % 10 != 9 else None
            for label, params in filters:
                after = walkers[label]
                query = {"limit": str(PAGE), **params, **({"after": after} if after else {})}
                elapsed, answer = page(query)
                samples.setdefault(label, []).append(elapsed)
                walkers[label] = answer["next"] if round_number % 10 != 9 else None
        start = time.perf_counter()
        whole = client.get("/api/v1/cases", headers=headers)
        whole_s = time.perf_counter() - start
        whole.raise_for_status()
        listed = len(whole.json()["items"])

    print(f"  cases held by the handler: {total}")
    print(f"  {'page of 50':32}{'runs':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}   target")
    for label, values in samples.items():
        print(f"  {label:32}{percentiles(values)}")
    print(
        f"  whole list without limit: {listed} cases, {whole_s:.2f} s, "
        f"{len(whole.content) / 1e6:.1f} MB (reference before: {REFERENCE_WHOLE_LIST_S} s, 27 MB)"
    )
    print(f"  target: p95 < {TARGET_MS:.0f} ms for a page of {PAGE}")


def build(engine: Engine, settings: Settings, n: int) -> list[int]:
    """Units, the handler and `n` cases held by the handler; the units' ids."""
    with make_sessionmaker(engine).begin() as session:
        national = accounts.create_unit(session, name="Sentralt")
        county = accounts.create_unit(
            session, name="Vestland", parent_id=national.id, kind="county"
        )
        towns = [
            accounts.create_unit(session, name=name, parent_id=county.id, kind="municipal").id
            for name in ("Bergen", "Voss", "Stord")
        ]
        handler = accounts.create_user(
            session,
            settings,
            username="hanne",
            password=PASSWORD,
            roles=["handler"],
            unit_ids=[county.id],
            display_name="Hanne",
        )
        units = [county.id, *towns]
    with make_sessionmaker(engine).begin() as session:
        handler = session.get_one(User, handler.id)
        build_cases(session, settings, handler, units, n)
    return units


def run(url: str, label: str, folder: Path, n: int, runs: int, reuse: bool) -> None:
    secrets_file = folder / f"secrets-{label}.env"
    env = environment(url, secrets_file)
    subprocess.run(varsling("migrate", env=env), env=env, check=True, stdout=subprocess.DEVNULL)
    settings = Settings(
        environment="development",
        database_url=url,
        secrets_file=secrets_file,
        **SECRETS,  # type: ignore[arg-type]
        **FAST_ARGON2,  # type: ignore[arg-type]
    )
    engine = make_engine(url)
    started = time.perf_counter()
    with make_sessionmaker(engine).begin() as session:
        held = session.scalar(select(func.count()).select_from(Case))
        existing = session.scalars(select(User).where(User.username == "hanne")).first()
    if held and not (reuse and existing is not None and held == n):
        raise SystemExit(f"{label}: the database holds cases already; give a fresh one.")
    if held and existing is not None:
        # --reuse: this bench's own data set from an earlier run, measured again.
        with make_sessionmaker(engine).begin() as session:
            units = sorted(set(session.scalars(select(Case.unit_id).distinct())))
        print(f"{label}: reusing the {held} cases an earlier run built")
    else:
        units = build(engine, settings, n)
        print(f"{label}: built {n} cases in {time.perf_counter() - started:.0f} s")
    with make_sessionmaker(engine).begin() as session:
        # Cursors spread through the list, as a client following `next` would hold them.
        ordered = list(
            session.execute(
                select(Case.priority, Case.received_on, Case.id).order_by(
                    Case.priority != Priority.HIGH.value, Case.received_on, Case.id
                )
            )
        )
        cursors = []
        for share in range(1, 20):
            priority, day, case_id = ordered[len(ordered) * share // 20]
            rank = 0 if priority == Priority.HIGH.value else 1
            cursors.append(f"{rank}.{day.isoformat()}.{case_id}")
    if url.startswith("postgresql"):
        # As autovacuum leaves a live database: statistics for the planner, and the
        # visibility map that lets counts read only the indexes.
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    with served(env) as base:
        measure(base, "hanne", runs, cursors, units)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200, help="pages timed per kind")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--reuse", action="store_true", help="PostgreSQL: measure the data set an earlier run built"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if args.only != "postgresql":
            run(f"sqlite:///{folder / 'bench.db'}", "SQLite", folder, args.cases, args.runs, False)
        pg = os.environ.get("VARSLING_BENCH_DATABASE_URL")
        if args.only != "sqlite":
            if pg:
                run(pg, "PostgreSQL", folder, args.cases, args.runs, args.reuse)
            else:
                print("PostgreSQL: skipped (set VARSLING_BENCH_DATABASE_URL to a fresh database)")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
