"""Audit verification at scale: `varsling audit verify` over 1,000,000 events, and appends.

Run by hand (`make bench-audit`); not part of the test suite. For each database
(a temporary SQLite file, and PostgreSQL when VARSLING_BENCH_DATABASE_URL names
a fresh, empty database) it runs `varsling migrate`, then for each trail size
(0, 100,000 and 1,000,000 events by default):

1. grows both chains to that size in bulk: correctly chained rows, each hash
   computed with the project's own chain_hash() over staff_fields() or
   reporter_fields(), details stored as record() stores them, and the head
   rows moved along as record() moves them (the triggers refuse UPDATE and
   DELETE on events, not INSERT); about one event in ten is a reporter event;
2. times appending one event (audit.record, then commit), many times;
3. runs `varsling audit verify` as a subprocess, several times, and reads its
   wall time and peak resident memory (getrusage of the child).

Target (issue 10): 1,000,000 events verified in < 10 s, in constant memory,
and appending no slower as the trail grows. Reference: 2.4 s per 100,000
events before (about 24 s per million).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from varsling import audit
from varsling.audit import AuditEvent, AuditHead, ReporterAuditEvent
from varsling.audit_chain import chain_hash, reporter_fields, staff_fields
from varsling.db import make_engine, make_sessionmaker

TARGET_S_PER_MILLION = 10.0
REFERENCE_S_PER_MILLION = 24.0
SECRETS = {
    "code_pepper": "p" * 48,
    "code_salt": "s" * 48,
    "web_secret": "w" * 48,
    "signing_key": "k" * 48,
    "password_pepper": "q" * 48,
}
BATCH = 10_000
STAFF_ACTIONS = (
    "case.read",
    "case.status_changed",
    "case.note_added",
    "case.message_sent",
    "user.login",
    "case.declared",
)
REPORTER_ACTIONS = ("case.submitted", "case.message_sent", "reporter.session_opened")


def environment(url: str, secrets_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")}
    env |= {f"VARSLING_{k.upper()}": v for k, v in SECRETS.items()}
    env |= {
        "VARSLING_ENVIRONMENT": "development",
        "VARSLING_DATABASE_URL": url,
        "VARSLING_SECRETS_FILE": str(secrets_file),
    }
    return env


def varsling() -> str:
    return str(Path(sys.executable).with_name("varsling"))


def _locked(session: Session, head_id: int) -> AuditHead:
    return session.execute(
        select(AuditHead).where(AuditHead.id == head_id).with_for_update()
    ).scalar_one()


def grow(session: Session, events: int, rng: random.Random) -> None:
    """Append `events` correctly chained events to the two chains, in bulk."""
    staff_head = _locked(session, audit.STAFF_HEAD)
    reporter_head = _locked(session, audit.REPORTER_HEAD)
    last_day = session.scalar(
        select(ReporterAuditEvent.day).where(ReporterAuditEvent.seq == reporter_head.seq)
    )
    moment = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=staff_head.seq * 30)
    staff_rows: list[dict[str, Any]] = []
    reporter_rows: list[dict[str, Any]] = []
    case_ids = [uuid.uuid4().hex for _ in range(5000)]

    def flush() -> None:
        if staff_rows:
            session.execute(insert(AuditEvent), staff_rows)
            staff_rows.clear()
        if reporter_rows:
            session.execute(insert(ReporterAuditEvent), reporter_rows)
            reporter_rows.clear()
        for head in (staff_head, reporter_head):
            session.execute(
                update(AuditHead)
                .where(AuditHead.id == head.id)
                .values(seq=head.seq, hash=head.hash)
            )

    for number in range(events):
        moment += dt.timedelta(seconds=rng.randrange(1, 60))
        case_id = rng.choice(case_ids) if number % 7 else None
        if number % 10 == 9:
            details = {"unit_id": rng.randrange(1, 40), "recipients": rng.randrange(1, 4)}
            stored = json.dumps(details, sort_keys=True)  # as record() stores it
            day = max(moment.date().isoformat(), last_day or "")
            seq = reporter_head.seq + 1
            action = rng.choice(REPORTER_ACTIONS)
            event_hash = chain_hash(
                reporter_head.hash,
                reporter_fields(seq=seq, day=day, action=action, case_id=case_id, details=details),
            )
            reporter_rows.append(
                {
                    "seq": seq,
                    "day": day,
                    "action": action,
                    "case_id": case_id,
                    "details": stored,
                    "hash": event_hash,
                }
            )
            reporter_head.seq, reporter_head.hash, last_day = seq, event_hash, day
        else:
            details = {"user_id": rng.randrange(1, 200), "status": "investigating"}
            stored = json.dumps(details, sort_keys=True)
            occurred = moment.isoformat()
            seq = staff_head.seq + 1
            actor = f"user:{details['user_id']}"
            action = rng.choice(STAFF_ACTIONS)
            event_hash = chain_hash(
                staff_head.hash,
                staff_fields(
                    seq=seq,
                    occurred=occurred,
                    actor=actor,
                    action=action,
                    case_id=case_id,
                    details=details,
                ),
            )
            staff_rows.append(
                {
                    "seq": seq,
                    "occurred": occurred,
                    "actor": actor,
                    "action": action,
                    "case_id": case_id,
                    "details": stored,
                    "hash": event_hash,
                }
            )
            staff_head.seq, staff_head.hash = seq, event_hash
        if len(staff_rows) + len(reporter_rows) >= BATCH:
            flush()
    flush()


def append_latency(url: str, runs: int) -> list[float]:
    """Milliseconds to append one staff event and commit, as an action's transaction does."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    samples = []
    try:
        for number in range(runs):
            start = time.perf_counter()
            with sessions.begin() as session:
                audit.record(
                    session,
                    actor=audit.SYSTEM,
                    action="bench.append",
                    details={"run": number},
                )
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        engine.dispose()
    return samples


def verify_cli_rusage(env: dict[str, str]) -> tuple[float, float, str]:
    """Like verify_cli, reaping the child with os.wait4 to read its own peak RSS."""
    with tempfile.TemporaryFile(mode="w+") as out_file:
        start = time.perf_counter()
        process = subprocess.Popen(
            [varsling(), "audit", "verify"], env=env, stdout=out_file, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        output = out_file.read().strip()
    if process.returncode != 0:
        raise SystemExit(f"varsling audit verify failed: {output}")
    # ru_maxrss is in KiB on Linux.
    return elapsed, usage.ru_maxrss / 1024, output.splitlines()[-1]


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):6.2f}  p95 {p95:6.2f}  max {ordered[-1]:6.2f}"


def run(url: str, label: str, folder: Path, sizes: list[int], runs: int, verifies: int) -> None:
    env = environment(url, folder / f"secrets-audit-{label}.env")
    subprocess.run([varsling(), "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    rng = random.Random(3)
    print(f"{label}:")
    print(
        f"  {'events':>9} {'build s':>8}   {'append one event, ms':<40}"
        f"{'verify s (runs)':>22} {'s/million':>10} {'peak RSS MiB':>13}"
    )
    for size in sizes:
        with sessions.begin() as session:
            held = sum(
                session.execute(select(AuditHead.seq).where(AuditHead.id.in_((1, 2)))).scalars()
            )
        started = time.perf_counter()
        if size > held:
            with sessions.begin() as session:
                grow(session, size - held, rng)
        if url.startswith("postgresql"):
            autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
            with autocommit.connect() as connection:
                connection.exec_driver_sql("VACUUM ANALYZE audit_events")
                connection.exec_driver_sql("VACUUM ANALYZE audit_reporter_events")
        built = time.perf_counter() - started
        appends = append_latency(url, runs)
        timings = []
        peaks = []
        line = ""
        for _ in range(verifies):
            elapsed, peak, line = verify_cli_rusage(env)
            timings.append(elapsed)
            peaks.append(peak)
        with sessions.begin() as session:
            now_held = sum(
                session.execute(select(AuditHead.seq).where(AuditHead.id.in_((1, 2)))).scalars()
            )
        best, median = min(timings), statistics.median(timings)
        per_million = median / now_held * 1e6 if now_held >= 10_000 else float("nan")
        print(
            f"  {now_held:9d} {built:8.1f}   {summary(appends):<40}"
            f"{median:8.2f} (min {best:5.2f}, {verifies}) {per_million:10.1f} {max(peaks):13.1f}"
        )
        print(f"            verify said: {line}")
    engine.dispose()
    print(
        f"  target: 1,000,000 events in < {TARGET_S_PER_MILLION:.0f} s, constant memory; "
        f"reference before: {REFERENCE_S_PER_MILLION:.0f} s per million"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="0,100000,1000000", help="trail sizes, in events")
    parser.add_argument("--runs", type=int, default=200, help="appends timed per size")
    parser.add_argument("--verifies", type=int, default=3, help="verify runs per size")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if args.only != "postgresql":
            url = f"sqlite:///{folder / 'audit.db'}"
            run(url, "SQLite", folder, sizes, args.runs, args.verifies)
        pg = os.environ.get("VARSLING_BENCH_DATABASE_URL")
        if args.only != "sqlite":
            if pg:
                run(pg, "PostgreSQL", folder, sizes, args.runs, args.verifies)
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
