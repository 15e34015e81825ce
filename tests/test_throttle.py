"""The global login limit: under attack every attempt claims its own time slot,
so however many arrive at once, attempts are checked at a bounded rate."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.serving import run_coroutine
from varsling import throttle
from varsling.accounts import service as accounts
from varsling.app import create_app
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker
from varsling.errors import TooManyAttempts
from varsling.throttle import Counter, LoginThrottle


def _under_attack(db: Session, counter: Counter, *, next_slot: dt.datetime | None = None) -> None:
    """Failures past the threshold in the current window, as guessing would leave them."""
    db.rollback()
    db.execute(
        update(LoginThrottle)
        .where(LoginThrottle.name == counter.value)
        .values(window_start=dt.datetime.now(dt.UTC), failures=10_000, next_slot=next_slot)
    )
    db.commit()


def test_slots_are_handed_out_delay_apart_and_refused_when_too_far(
    db: Session, settings: Settings
) -> None:
    _under_attack(db, Counter.STAFF_LOGIN)
    now = dt.datetime.now(dt.UTC)
    delay = settings.code_failure_delay_seconds

    waits = [throttle.claim_slot(db, settings, Counter.STAFF_LOGIN, now) for _ in range(5)]
    assert waits == [delay * n for n in range(1, 6)]
    with pytest.raises(TooManyAttempts) as refused:
        throttle.claim_slot(db, settings, Counter.STAFF_LOGIN, now)
    assert refused.value.retry_after == int(delay)
    assert refused.value.headers == {"Retry-After": str(int(delay))}

    # Once time has moved on, slots free up again, still `delay` apart.
    later = now + dt.timedelta(seconds=3 * delay)
    assert throttle.claim_slot(db, settings, Counter.STAFF_LOGIN, later) == 3 * delay


def test_no_slot_is_needed_below_the_threshold_or_in_a_new_window(
    db: Session, settings: Settings
) -> None:
    now = dt.datetime.now(dt.UTC)
    assert throttle.claim_slot(db, settings, Counter.STAFF_LOGIN, now) == 0.0
    _under_attack(db, Counter.STAFF_LOGIN)
    two_minutes_on = now + 2 * throttle.WINDOW
    assert throttle.claim_slot(db, settings, Counter.STAFF_LOGIN, two_minutes_on) == 0.0
    db.rollback()
    row = db.get(LoginThrottle, Counter.STAFF_LOGIN.value)
    assert row is not None
    assert row.next_slot is None


def test_concurrent_attempts_are_checked_at_a_bounded_rate(
    database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    delay = 0.5
    settings = make_settings(database_url, code_failure_delay_seconds=delay)
    _under_attack(db, Counter.STAFF_LOGIN)
    checked: list[float] = []
    slots: list[dt.datetime] = []
    real_derive = accounts._derive
    real_claim = throttle.claim_slot

    def timed(*args: Any) -> Any:
        checked.append(time.time())
        return real_derive(*args)

    def recorded_claim(
        session: Session, settings: Any, counter: Counter, now: dt.datetime | None = None
    ) -> float:
        now = now or dt.datetime.now(dt.UTC)
        wait = real_claim(session, settings, counter, now)
        slots.append(now + dt.timedelta(seconds=wait))
        return wait

    monkeypatch.setattr(accounts, "_derive", timed)
    monkeypatch.setattr(throttle, "claim_slot", recorded_claim)
    engine = make_engine(settings.database_url)
    maker = make_sessionmaker(engine)

    async def attempt(n: int) -> str:
        try:
            outcome = await accounts.sign_in_staff(
                maker, settings, username=f"guess{n}", password="not the password"
            )
        except TooManyAttempts:
            return "refused"
        assert outcome.token is None
        return "checked"

    async def attack() -> list[str]:
        return await asyncio.gather(*(attempt(n) for n in range(16)))

    started = time.monotonic()
    outcomes = run_coroutine(attack())
    elapsed = time.monotonic() - started
    engine.dispose()

    assert outcomes.count("checked") == len(checked) == len(slots)
    assert outcomes.count("refused") >= 1
    # At most the queue's worth of slots, plus one per delay that passed meanwhile.
    assert len(checked) <= throttle.QUEUED_SLOTS + int(elapsed / delay) + 1
    # The slots handed out are `delay` apart, however the threads were scheduled
    # (wall-clock gaps on a loaded machine are not a property of the limit).
    slots.sort()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert all(gap >= delay - 1e-3 for gap in gaps), gaps
    # And nobody was checked before their slot (the k-th check came after the k-th slot).
    checked.sort()
    assert all(at >= slot.timestamp() - 0.05 for at, slot in zip(checked, slots, strict=True)), (
        checked,
        [s.timestamp() for s in slots],
    )


def test_the_case_code_login_answers_429_with_retry_after_when_the_queue_is_full(
    client: TestClient, db: Session, settings: Settings
) -> None:
    started = time.monotonic()
    far = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    _under_attack(db, Counter.CASE_CODE, next_slot=far)

    response = client.post("/api/v1/reporter/session", json={"case_code": "1" * 20})

    elapsed = time.monotonic() - started
    assert response.status_code == 429
    retry = int(response.headers["Retry-After"])
    # The free slot is one delay after `far`; the queue's worth of it is not refused.
    delay = settings.code_failure_delay_seconds
    expected = 5 * 60 + delay - throttle.QUEUED_SLOTS * delay
    # Less the time the request took to arrive (long on a loaded machine), rounded up.
    assert expected - elapsed <= retry <= expected
    assert response.json()["error"]["code"] == "too_many_attempts"
    # Staff logins have a counter of their own, and it is not under attack.
    staff = client.post("/api/v1/sessions", json={"username": "x" * 3, "password": "y" * 12})
    assert staff.status_code == 401


def test_the_staff_login_answers_429_when_the_queue_is_full(
    client: TestClient, db: Session
) -> None:
    far = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    _under_attack(db, Counter.STAFF_LOGIN, next_slot=far)

    response = client.post("/api/v1/sessions", json={"username": "hanne", "password": "y" * 12})

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "too_many_attempts"


@pytest.mark.parametrize("language", ["nb", "nn", "en"])
def test_the_follow_up_page_explains_the_wait_in_the_page_language(
    database_url: str, db: Session, language: str
) -> None:
    import re

    far = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    _under_attack(db, Counter.CASE_CODE, next_slot=far)
    app = create_app(make_settings(database_url))
    expected = {
        "nb": "Mange sakskoder blir prøvd akkurat nå",
        "nn": "Mange sakskodar blir prøvde akkurat no",
        "en": "Many case codes are being tried right now",
    }[language]
    with TestClient(app) as site:
        page = site.get(f"/{language}/follow-up").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        response = site.post(
            f"/{language}/follow-up",
            data={"csrf_token": token.group(1), "case_code": "1234 5678 9012 3456 7890"},
        )
    app.state.engine.dispose()

    assert response.status_code == 429
    retry = response.headers["Retry-After"]
    assert expected in response.text
    assert f" {retry} " in response.text
