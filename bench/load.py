"""Load: 50 reporters and 10 handlers for 60 s against `varsling serve --workers 2`.

Run by hand (`make bench-load`), not in the test suite. Needs PostgreSQL: the
bench makes a fresh database on the server in VARSLING_BENCH_DATABASE_URL (or
--database-url) and drops it after. It seeds two units, ten handlers and a
custodian through the CLI, starts two uvicorn workers with the shipped Argon2id
defaults, and then, until time is up:

- each reporter submits a report, logs in with its case code and reads its
  case (two Argon2id runs a round), then starts again;
- each handler logs in once, then lists its cases, declares on one it has not
  opened yet, reads it and writes to the reporter, with a short pause between
  rounds as a person would.

Every answer is counted. An error is a 5xx, a connection error or time-out, or
any 4xx that the flow does not expect. A 429 from the global case-code
throttle would be an expected answer (the service slowing guessing down): it
is counted apart, and never happens here, since every code sent is right.
After the load, every case code received opens its case with the text that
was sent, and every receipt checks out against the installation's public key.
The resident memory (VmRSS) of each worker is sampled twice a second, and the
kernel's high-water mark (VmHWM) is read at the end.

`--argon2-concurrency N` sets VARSLING_ARGON2_CONCURRENCY for the workers:
with 40 (as many as the server's threads) the bound is effectively off, which
shows what the pool of buffers saves.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from stack import BENCH_DATABASE_VARIABLE, PASSWORD, Service, fresh_database, machine, memory_kib

from varsling import crypto, receipts

CATEGORIES = ("harassment", "sexual_harassment", "discrimination", "abuse_of_power", "other")


@dataclass
class Tally:
    """What every client saw, shared by all threads (under a lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    submitted: list[tuple[str, str, str]] = field(default_factory=list)  # code, receipt, text

    def call(
        self, client: httpx.Client, name: str, method: str, url: str, expect: set[int], **kw: object
    ) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = client.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[f"{name}: {type(exc).__name__}"] += 1
            return None
        elapsed = time.perf_counter() - start
        with self.lock:
            self.latencies[name].append(elapsed)
            self.answers[f"{name} {response.status_code}"] += 1
            if response.status_code == 429:
                self.throttled += 1
            elif response.status_code not in expect:
                self.errors[f"{name}: HTTP {response.status_code}"] += 1
        return response if response.status_code in expect else None


def reporter(base_url: str, unit_ids: list[int], tally: Tally, deadline: float) -> None:
    rng = random.Random()
    with httpx.Client(base_url=base_url, timeout=300) as client:
        while time.monotonic() < deadline:
            text = f"Report {rng.getrandbits(64):016x}: what happened, in a few words. " * 20
            body = {
                "unit_id": rng.choice(unit_ids),
                "category": rng.choice(CATEGORIES),
                "description": text.strip(),
            }
            made = tally.call(client, "submit", "POST", "/api/v1/reports", {201}, json=body)
            if made is None:
                continue
            code, receipt = made.json()["case_code"], made.json()["receipt"]
            with tally.lock:
                tally.submitted.append((code, receipt, text.strip()))
            if time.monotonic() >= deadline:
                break
            session = tally.call(
                client, "reporter login", "POST", "/api/v1/reporter/session", {200},
                json={"case_code": code},
            )  # fmt: skip
            if session is None:
                continue
            headers = {"Authorization": f"Bearer {session.json()['token']}"}
            tally.call(
                client, "reporter read", "GET", "/api/v1/reporter/case", {200}, headers=headers
            )


def handler(base_url: str, username: str, tally: Tally, deadline: float) -> None:
    rng = random.Random()
    opened: set[str] = set()
    with httpx.Client(base_url=base_url, timeout=300) as client:
        session = tally.call(
            client, "staff login", "POST", "/api/v1/sessions", {200},
            json={"username": username, "password": PASSWORD},
        )  # fmt: skip
        if session is None:
            return
        client.headers["Authorization"] = f"Bearer {session.json()['token']}"
        while time.monotonic() < deadline:
            listed = tally.call(client, "list cases", "GET", "/api/v1/cases?limit=50", {200})
            fresh = (
                [c["id"] for c in listed.json()["items"] if c["id"] not in opened] if listed else []
            )
            if fresh:
                case_id = rng.choice(fresh)
                opened.add(case_id)
                tally.call(
                    client, "declare", "POST", f"/api/v1/cases/{case_id}/declaration", {201},
                    json={"conflict": False, "risk": "low"},
                )  # fmt: skip
                if tally.call(client, "read case", "GET", f"/api/v1/cases/{case_id}", {200}):
                    tally.call(
                        client, "write message", "POST", f"/api/v1/cases/{case_id}/messages",
                        {201}, json={"body": "Thank you. We have received your report."},
                    )  # fmt: skip
            time.sleep(rng.uniform(0.5, 1.5))


def check_every_receipt(base_url: str, public_key: bytes, tally: Tally) -> Counter[str]:
    """Each case code opens its case with the text sent; each receipt verifies."""

    def check(item: tuple[str, str, str]) -> str:
        code, receipt, text = item
        try:
            receipts.verify(receipt, public_key)
        except receipts.ReceiptError as exc:
            return f"receipt does not verify: {exc}"
        with httpx.Client(base_url=base_url, timeout=300) as client:
            session = client.post("/api/v1/reporter/session", json={"case_code": code})
            if session.status_code != 200:
                return f"code does not open: HTTP {session.status_code}"
            case = client.get(
                "/api/v1/reporter/case",
                headers={"Authorization": f"Bearer {session.json()['token']}"},
            )
            if case.status_code != 200:
                return f"case does not read: HTTP {case.status_code}"
            if case.json()["report"].get("description") != text:
                return "the case holds another text"
        return "ok"

    with ThreadPoolExecutor(max_workers=4) as pool:
        return Counter(pool.map(check, tally.submitted))


def sample_memory(
    pids: list[int], stop: threading.Event, peaks: dict[int, int], samples: dict[int, list[int]]
) -> None:
    while not stop.wait(0.5):
        for pid in pids:
            rss = memory_kib(pid).get("VmRSS")
            if rss is not None:
                samples[pid].append(rss)
                peaks[pid] = max(peaks.get(pid, 0), rss)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--reporters", type=int, default=50)
    parser.add_argument("--handlers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--argon2-concurrency", type=int, help="VARSLING_ARGON2_CONCURRENCY")
    parser.add_argument("--database-url", default=os.environ.get(BENCH_DATABASE_VARIABLE))
    args = parser.parse_args()
    if not args.database_url or not args.database_url.startswith("postgresql"):
        parser.error(
            f"a PostgreSQL server URL is needed: --database-url or {BENCH_DATABASE_VARIABLE}"
        )

    extra = {}
    if args.argon2_concurrency:
        extra["VARSLING_ARGON2_CONCURRENCY"] = str(args.argon2_concurrency)
    tally = Tally()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(Path(tmp), args.database_url) as database_url,
    ):
        service = Service(Path(tmp), database_url, extra_env=extra)
        seeded = service.seed(units=2, handlers=args.handlers)
        public_key = crypto.parse_signing_public_key(service.cli("keys", "public"))
        service.start(workers=args.workers)
        try:
            pids = service.worker_pids()
            idle = {pid: memory_kib(pid).get("VmRSS", 0) for pid in pids}
            peaks: dict[int, int] = {}
            samples: dict[int, list[int]] = defaultdict(list)
            stop = threading.Event()
            sampler = threading.Thread(target=sample_memory, args=(pids, stop, peaks, samples))
            sampler.start()
            unit_ids = [unit_id for unit_id, _ in seeded]
            usernames = [name for _, names in seeded for name in names]
            started = time.monotonic()
            deadline = started + args.seconds
            clients = [
                threading.Thread(
                    target=reporter, args=(service.base_url, unit_ids, tally, deadline)
                )
                for _ in range(args.reporters)
            ] + [
                threading.Thread(target=handler, args=(service.base_url, name, tally, deadline))
                for name in usernames
            ]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            wall = time.monotonic() - started
            stop.set()
            sampler.join()
            high_water = {pid: memory_kib(pid).get("VmHWM", 0) for pid in pids}
            checked = check_every_receipt(service.base_url, public_key, tally)
            alive = all(memory_kib(pid) for pid in pids)
        finally:
            service.stop()

    print(f"Machine: {machine()}")
    print(
        f"{args.reporters} reporters, {len(usernames)} handlers, {args.seconds:.0f} s "
        f"(all done after {wall:.1f} s), {args.workers} workers, PostgreSQL, Argon2id "
        f"m=65536 KiB t=3 p=1, VARSLING_ARGON2_CONCURRENCY="
        f"{args.argon2_concurrency or 'unset (one per usable CPU)'}"
    )
    total = sum(tally.answers.values())
    print(f"Requests answered: {total} ({total / wall:.1f}/s); errors: {sum(tally.errors.values())}"
          f"; 429 (throttle): {tally.throttled}")  # fmt: skip
    for kind, count in sorted(tally.errors.items()):
        print(f"  error {kind}: {count}")
    print(f"{'':16}{'count':>7}{'per s':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, values in tally.latencies.items():
        ms = [v * 1000 for v in values]
        print(
            f"{name:16}{len(ms):7d}{len(ms) / wall:7.2f}{percentile(ms, 0.5):9.0f}"
            f"{percentile(ms, 0.9):9.0f}{percentile(ms, 0.99):9.0f}{max(ms):9.0f}"
        )
    print(f"Receipts: {len(tally.submitted)}; after the load: {dict(checked)}")
    print("Worker memory (MiB): idle before the load, median and max sampled VmRSS, VmHWM")
    for pid in pids:
        print(
            f"  worker {pid}: {idle[pid] / 1024:7.1f} {statistics.median(samples[pid]) / 1024:7.1f}"
            f" {peaks.get(pid, 0) / 1024:7.1f} {high_water[pid] / 1024:7.1f}"
        )
    if not alive:
        print("A worker was gone at the end (uvicorn restarts a dead worker): see serve.log")
    failed = sum(tally.errors.values()) or sum(v for k, v in checked.items() if k != "ok")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
