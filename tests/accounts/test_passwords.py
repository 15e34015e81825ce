"""Staff passwords: peppered, moved over from the old scheme, backed off per account,
and never derived under parameters a database writer chose."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import PASSWORD, login, make_unit, make_user, open_first_case, report
from tests.serving import run_coroutine
from varsling import crypto
from varsling.accounts.models import User
from varsling.app import create_app
from varsling.audit import AuditEvent
from varsling.config import Settings
from varsling.throttle import LoginBackoff

WRONG = "not the password at all"


def _login(client: TestClient, username: str, password: str) -> tuple[int, int | None, Any]:
    response = client.post("/api/v1/sessions", json={"username": username, "password": password})
    retry = response.headers.get("Retry-After")
    return response.status_code, int(retry) if retry is not None else None, response.json()


def _fresh(db: Session, user_id: int) -> User | None:
    """The user's row as it is now in the database, not as this session last saw it."""
    db.rollback()
    db.expire_all()
    return db.get(User, user_id)


def _events(db: Session, action: str) -> list[AuditEvent]:
    db.rollback()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.fixture
def app_client(database_url: str) -> Iterator[TestClient]:
    """The service with a global limit high enough not to interfere with one account's."""
    app = create_app(make_settings(database_url, code_failures_per_minute=1000))
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


# --------------------------------------------------------------------------
# The pepper


def test_with_another_pepper_the_right_password_fails(
    database_url: str, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "hanne", units=(make_unit(db).id,))
    other = make_settings(database_url, password_pepper="another-password-pepper-" + "o" * 40)
    app = create_app(other)
    with TestClient(app) as client:
        assert _login(client, "hanne", PASSWORD)[0] == 401
    app.state.engine.dispose()


def test_new_accounts_store_the_peppered_scheme(db: Session, settings: Settings) -> None:
    user = make_user(db, settings, "hanne", units=(make_unit(db).id,))
    assert user.password_params == "hmac-sha256+" + settings.argon2.encode()
    unpeppered = crypto.derive_login(PASSWORD, user.password_salt, settings.argon2)
    assert unpeppered.verifier != user.password_verifier


def _make_old_scheme(
    db: Session, settings: Settings, user_id: int, *, certificate: bool = True
) -> User:
    """Turn an account into one made before the pepper (and perhaps before certificates)."""
    db.rollback()
    user = db.get(User, user_id)
    assert user is not None
    pepper = settings.secret("password_pepper")
    now = crypto.derive_login(PASSWORD, user.password_salt, settings.argon2, pepper=pepper)
    private_key = crypto.open_private_key(user.sealed_private_key, now.key, owner=f"user:{user_id}")
    salt = crypto.new_salt()
    old = crypto.derive_login(PASSWORD, salt, settings.argon2)
    user.password_salt = salt
    user.password_params = settings.argon2.encode()
    user.password_verifier = old.verifier
    user.sealed_private_key = crypto.seal_private_key(private_key, old.key, owner=f"user:{user_id}")
    if not certificate:
        user.key_certificate = None
    db.commit()
    return user


def test_an_account_of_the_old_scheme_is_moved_to_the_pepper_at_login(
    client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    assert client.post("/api/v1/reports", json=report(unit.id)).status_code == 201
    old = _make_old_scheme(db, settings, hanne.id)
    old_salt, old_params = old.password_salt, old.password_params

    headers = login(client, "hanne")

    moved = _fresh(db, hanne.id)
    assert moved is not None
    assert old_params == settings.argon2.encode()
    assert moved.password_params == "hmac-sha256+" + settings.argon2.encode()
    assert moved.password_salt != old_salt
    assert crypto.verifier_matches(
        moved.password_verifier,
        crypto.derive_login(
            PASSWORD,
            moved.password_salt,
            settings.argon2,
            pepper=settings.secret("password_pepper"),
        ).verifier,
    )
    (rehashed,) = _events(db, "user.password_rehashed")
    assert json.loads(rehashed.details)["user_id"] == hanne.id
    # The re-sealed private key is the same one: the old case still opens.
    case_id = open_first_case(client, headers)
    assert client.get(f"/api/v1/cases/{case_id}", headers=login(client, "hanne")).is_success
    assert _login(client, "hanne", WRONG)[0] == 401


def test_an_old_scheme_account_without_certificate_waits_for_certify_keys(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """The old scheme needs no secret, so a writer could forge it: it never certifies a key."""
    hanne = make_user(db, settings, "hanne", units=(make_unit(db).id,))
    _make_old_scheme(db, settings, hanne.id, certificate=False)

    assert _login(client, "hanne", PASSWORD)[0] == 401
    (refused,) = _events(db, "user.login_refused_key")
    assert json.loads(refused.details) == {"user_id": hanne.id, "reason": "not_certified"}

    from varsling.accounts import service as accounts

    accounts.certify_existing_keys(db, settings, actor="system")
    db.commit()
    login(client, "hanne")
    moved = _fresh(db, hanne.id)
    assert moved is not None
    assert moved.password_params.startswith("hmac-sha256+")


def test_a_peppered_account_whose_certificate_was_removed_is_certified_at_login(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """Its private key, opened with the peppered password, proves possession."""
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    original = hanne.key_certificate
    db.execute(update(User).where(User.id == hanne.id).values(key_certificate=None))
    db.commit()

    login(client, "hanne")

    again = _fresh(db, hanne.id)
    assert again is not None
    assert again.key_certificate == original  # Ed25519 signs deterministically
    (certified,) = _events(db, "user.key_certified")
    assert json.loads(certified.details)["how"] == "login"


# --------------------------------------------------------------------------
# Per-account backoff

# The wait after the 5th, 6th, ... failure: doubling, capped at 15 minutes.
EXPECTED_WAITS = [30, 60, 120, 240, 480, 900, 900]


def _expire_backoff(db: Session) -> None:
    db.rollback()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    db.execute(update(LoginBackoff).values(blocked_until=past))
    db.commit()


def _assert_blocked(answer: tuple[int, int | None, Any], expected_wait: int) -> None:
    status, retry, body = answer
    assert status == 429
    assert retry is not None
    assert expected_wait - 2 <= retry <= expected_wait
    assert body["error"]["code"] == "too_many_attempts"
    assert f"try again in {retry} seconds" in body["error"]["message"]


def _backoff_answers(client: TestClient, db: Session, username: str) -> list[tuple[int, int]]:
    """Play a guesser against one username; the answers, with waits rounded to the expected."""
    answers = []
    for _ in range(5):
        status, retry, _body = _login(client, username, WRONG)
        assert (status, retry) == (401, None)
        answers.append((status, 0))
    for expected in EXPECTED_WAITS:
        blocked = _login(client, username, PASSWORD)  # even the right password waits
        _assert_blocked(blocked, expected)
        answers.append((429, expected))
        _expire_backoff(db)
        assert _login(client, username, WRONG)[0] == 401
    return answers


def test_five_failures_then_429_doubling_up_to_15_minutes(
    app_client: TestClient, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "hanne", units=(make_unit(db).id,))

    known = _backoff_answers(app_client, db, "hanne")
    unknown = _backoff_answers(app_client, db, "nobody")

    # An unknown username gets exactly the same answers as a real one.
    assert known == unknown
    blocked = _events(db, "user.login_blocked")
    assert len(blocked) == 2 * len(EXPECTED_WAITS)
    assert all("hanne" not in e.details and "nobody" not in e.details for e in blocked)
    # No username is stored in clear.
    db.rollback()
    accounts = list(db.scalars(select(LoginBackoff.account)))
    assert len(accounts) == 2
    assert not any(b"hanne" in a or b"nobody" in a for a in accounts)


def test_the_backoff_is_checked_before_any_argon2id_run(
    app_client: TestClient, db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(db, settings, "hanne", units=(make_unit(db).id,))
    for _ in range(5):
        assert _login(app_client, "hanne", WRONG)[0] == 401
    runs: list[bytes] = []
    real = crypto.argon2id

    def counting(secret: bytes, *args: Any, **kwargs: Any) -> bytes:
        runs.append(secret)
        return real(secret, *args, **kwargs)

    monkeypatch.setattr(crypto, "argon2id", counting)

    assert _login(app_client, "hanne", PASSWORD)[0] == 429
    assert _login(app_client, "Hanne ", PASSWORD)[0] == 429  # the same account, normalised
    assert runs == []


def test_a_success_after_the_backoff_expires_clears_it(
    app_client: TestClient, db: Session, settings: Settings
) -> None:
    make_user(db, settings, "hanne", units=(make_unit(db).id,))
    for _ in range(5):
        _login(app_client, "hanne", WRONG)
    assert _login(app_client, "hanne", PASSWORD)[0] == 429
    _expire_backoff(db)

    assert _login(app_client, "hanne", PASSWORD)[0] == 200

    db.rollback()
    assert db.scalars(select(LoginBackoff)).all() == []
    # Counting starts again from nothing: four more failures are not blocked.
    for _ in range(4):
        assert _login(app_client, "hanne", WRONG)[0] == 401
    assert _login(app_client, "hanne", PASSWORD)[0] == 200


def test_backoff_of_one_account_leaves_others_alone(
    app_client: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "ola", units=(unit.id,))
    for _ in range(5):
        _login(app_client, "hanne", WRONG)
    assert _login(app_client, "hanne", PASSWORD)[0] == 429
    assert _login(app_client, "ola", PASSWORD)[0] == 200


# --------------------------------------------------------------------------
# Argon2 parameters from the database are bounded


@pytest.mark.parametrize(
    "params",
    [
        "hmac-sha256+argon2id$v=19$m=4294967295,t=1,p=1",
        "hmac-sha256+argon2id$v=19$m=64,t=1000000,p=1",
        "argon2id$v=19$m=1048577,t=1,p=1",
        "hmac-sha256+argon2id$v=19$m=64,t=1,p=64",
        "garbage",
    ],
)
def test_a_login_against_refused_parameters_fails_cleanly(
    client: TestClient,
    db: Session,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    params: str,
) -> None:
    user = make_user(db, settings, "hanne", units=(make_unit(db).id,))
    db.execute(update(User).where(User.id == user.id).values(password_params=params))
    db.commit()
    costs: list[crypto.Argon2Params] = []
    real = crypto.argon2id

    def recording(secret: bytes, salt: bytes, cost: crypto.Argon2Params, **kwargs: Any) -> bytes:
        costs.append(cost)
        return real(secret, salt, cost, **kwargs)

    monkeypatch.setattr(crypto, "argon2id", recording)

    status, _retry, body = _login(client, "hanne", PASSWORD)

    assert status == 401
    assert body == {
        "error": {
            "code": "unauthenticated",
            "message": "Wrong username, password or two-factor code.",
        }
    }
    # The same cost as any login (the unknown-user run), never what the row asked for.
    assert costs == [settings.argon2]
    (failed,) = _events(db, "user.login_failed")
    assert json.loads(failed.details) == {"reason": "password_params_refused"}


def test_a_parallel_burst_at_one_account_learns_no_more_than_attempts_in_a_row(
    database_url: str, db: Session
) -> None:
    """Attempts that passed the first check together are judged one by one, row-locked."""
    import asyncio

    from varsling.accounts.service import sign_in_staff
    from varsling.db import make_engine, make_sessionmaker
    from varsling.errors import TooManyAttempts

    settings = make_settings(database_url, code_failures_per_minute=1000)
    make_user(db, settings, "hanne", units=(make_unit(db).id,))
    engine = make_engine(settings.database_url)
    maker = make_sessionmaker(engine)

    async def attempt() -> int:
        try:
            outcome = await sign_in_staff(maker, settings, username="hanne", password=WRONG)
        except TooManyAttempts:
            return 429
        assert outcome.token is None
        return 401

    async def burst() -> list[int]:
        return await asyncio.gather(*(attempt() for _ in range(9)))

    answers = run_coroutine(burst())
    engine.dispose()

    # Exactly as many wrong-password answers as a guesser gets one after the other.
    assert sorted(answers) == [401] * 5 + [429] * 4
    db.rollback()
    (row,) = db.scalars(select(LoginBackoff))
    assert row.failures == 5


def test_an_unknown_username_costs_the_same_argon2id_run_as_a_known_one(
    client: TestClient, db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(db, settings, "hanne", units=(make_unit(db).id,))
    runs: list[tuple[int, crypto.Argon2Params]] = []
    real = crypto.argon2id

    def recording(secret: bytes, salt: bytes, cost: crypto.Argon2Params, **kwargs: Any) -> bytes:
        runs.append((len(secret), cost))
        return real(secret, salt, cost, **kwargs)

    monkeypatch.setattr(crypto, "argon2id", recording)

    assert _login(client, "hanne", WRONG)[0] == 401
    known = list(runs)
    runs.clear()
    assert _login(client, "nobody", WRONG)[0] == 401

    # One run each, of a peppered (32-byte HMAC) secret, at the same cost.
    assert runs == known == [(32, settings.argon2)]
