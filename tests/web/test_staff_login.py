"""Staff login on the web: password and two-factor, set-up, recovery codes, expiry, logout.

These run with the shipped two-factor roles (custodians and admins need it),
not the suite's default of none. The attacker tests play a database writer
who turns two-factor off for an account, and someone with a stolen password.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import login, make_unit, make_user
from tests.staff_web import enrol, form_token, staff_web_login, totp_for
from varsling import crypto
from varsling.accounts import two_factor
from varsling.accounts.models import LoginSession, TwoFactor
from varsling.app import create_app
from varsling.audit import AuditEvent
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, two_factor_roles=("custodian", "admin"))


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def people(db: Session, settings: Settings) -> dict[str, int]:
    unit = make_unit(db).id
    return {
        "hanne": make_user(db, settings, "hanne", units=(unit,)).id,
        "kari": make_user(db, settings, "kari", roles=("custodian",), units=(unit,)).id,
        "ada": make_user(db, settings, "ada", roles=("admin",)).id,
    }


def actions(db: Session, user_id: int) -> list[str]:
    db.rollback()
    return list(
        db.execute(
            select(AuditEvent.action)
            .where(AuditEvent.actor == f"user:{user_id}")
            .order_by(AuditEvent.seq)
        ).scalars()
    )


def test_the_shipped_default_asks_custodians_and_admins_for_two_factor() -> None:
    assert set(Settings.model_fields["two_factor_roles"].default) == {"custodian", "admin"}


def test_a_handler_without_two_factor_logs_in_and_lands_on_the_case_list(
    app_client: TestClient, people: dict[str, int]
) -> None:
    answer = staff_web_login(app_client, "hanne")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/en/staff/"
    start = app_client.get("/en/staff/", follow_redirects=False)
    assert start.status_code == 303
    assert start.headers["location"] == "/en/staff/cases"


@pytest.mark.parametrize("lang", ["nb", "nn", "en"])
def test_a_wrong_password_keeps_the_username_and_says_so_in_the_page_language(
    app_client: TestClient, people: dict[str, int], lang: str
) -> None:
    answer = staff_web_login(app_client, "hanne", "wrong password!", lang=lang)
    assert answer.status_code == 401
    assert 'value="hanne"' in answer.text
    assert "wrong password!" not in answer.text
    expected = {"nb": "feil", "nn": "feil", "en": "wrong"}[lang]
    assert expected in answer.text.split('class="error-summary__list"')[1].split("</ul>")[0]
    refused = app_client.get(f"/{lang}/staff/", follow_redirects=False)
    assert refused.headers["location"] == f"/{lang}/staff/login"


def test_the_backoff_shows_the_waiting_time_and_stops_checking_the_password(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    for _ in range(5):
        assert staff_web_login(app_client, "hanne", "wrong password!").status_code == 401
    blocked = staff_web_login(app_client, "hanne")  # even the right password waits
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    # 30 seconds after the fifth failure; a second may pass before the page is made.
    waiting = re.search(r"wait (\d+) seconds", blocked.text)
    assert waiting is not None
    assert 28 <= int(waiting.group(1)) <= 30
    assert "user.login" not in actions(db, people["hanne"])


def test_a_forged_form_token_logs_nobody_in_and_keeps_the_username(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    app_client.get("/en/staff/login")
    answer = app_client.post(
        "/en/staff/login",
        data={
            CSRF_FIELD: "forged",
            "username": "hanne",
            "password": "correct horse battery staple",
        },
    )
    assert answer.status_code == 400
    assert 'value="hanne"' in answer.text
    assert "form-token-notice" in answer.text
    assert db.scalar(select(func.count()).select_from(LoginSession)) == 0


def test_a_custodian_must_set_up_two_factor_before_anything_else(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    answer = staff_web_login(app_client, "kari")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/en/staff/two-factor"
    # The half-open session opens nothing else, on the pages or as an API token.
    blocked = app_client.get("/en/staff/", follow_redirects=False)
    assert blocked.status_code == 303
    assert blocked.headers["location"] == "/en/staff/two-factor"
    session_row = db.execute(select(LoginSession)).scalar_one()
    assert session_row.scope == "enrol"

    page = app_client.get("/en/staff/two-factor")
    assert page.status_code == 200
    assert "<svg" in page.text
    assert 'role="img"' in page.text
    assert "otpauth" not in page.text  # the secret travels sealed and as typed text only

    enrolment = enrol(app_client)
    db.rollback()
    assert db.execute(select(LoginSession)).scalar_one().scope == "full"
    assert app_client.get("/en/staff/", follow_redirects=False).status_code == 303
    row = db.get(TwoFactor, people["kari"])
    assert row is not None
    assert row.sealed_secret is not None
    assert enrolment.secret not in row.sealed_secret
    for code in enrolment.recovery_codes:
        assert code.encode() not in row.recovery_digests
    assert "user.two_factor_enrolled" in actions(db, people["kari"])


def test_an_api_login_of_a_custodian_without_two_factor_gets_no_token(
    app_client: TestClient, people: dict[str, int]
) -> None:
    answer = app_client.post(
        "/api/v1/sessions",
        json={"username": "kari", "password": "correct horse battery staple"},
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "two_factor_enrolment_required"


def _enrolled_kari(app_client: TestClient) -> tuple[bytes, list[str], int]:
    staff_web_login(app_client, "kari")
    enrolment = enrol(app_client)
    app_client.post(
        "/en/staff/logout",
        data={CSRF_FIELD: form_token(app_client.get("/en/staff/two-factor").text)},
    )
    return enrolment.secret, enrolment.recovery_codes, enrolment.step


def test_after_set_up_the_password_alone_is_not_enough(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    secret, _codes, step = _enrolled_kari(app_client)
    assert staff_web_login(app_client, "kari").status_code == 401
    assert staff_web_login(app_client, "kari", code="000000").status_code in (401, 429)
    # The code that confirmed the set-up is used up; the next one works.
    assert staff_web_login(app_client, "kari", code=totp_for(secret, step)).status_code == 401
    ok = staff_web_login(app_client, "kari", code=totp_for(secret, step + 1))
    assert ok.status_code == 303, ok.text
    assert ok.headers["location"] == "/en/staff/"


def test_a_code_is_never_accepted_twice(
    app_client: TestClient, people: dict[str, int], settings: Settings
) -> None:
    secret, _codes, step = _enrolled_kari(app_client)
    code = totp_for(secret, step + 1)
    answer = app_client.post(
        "/api/v1/sessions",
        json={"username": "kari", "password": "correct horse battery staple", "code": code},
    )
    assert answer.status_code == 200
    again = app_client.post(
        "/api/v1/sessions",
        json={"username": "kari", "password": "correct horse battery staple", "code": code},
    )
    assert again.status_code == 401


def test_a_recovery_code_works_once(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    _secret, codes, _step = _enrolled_kari(app_client)
    typed = codes[3].upper().replace("-", " ")  # as someone might type it from paper
    assert staff_web_login(app_client, "kari", code=typed).status_code == 303
    app_client.cookies.clear()
    assert staff_web_login(app_client, "kari", code=codes[3]).status_code == 401
    db.rollback()
    row = db.get(TwoFactor, people["kari"])
    assert row is not None
    assert two_factor.recovery_codes_left(row) == 9
    assert "user.recovery_code_used" in actions(db, people["kari"])


def test_a_database_writer_cannot_turn_two_factor_off(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    """Deleting, emptying or swapping the row refuses the login; it never skips the code."""
    _enrolled_kari(app_client)
    original = db.get(TwoFactor, people["kari"])
    assert original is not None
    # Emptied: looks like "not enrolled".
    db.execute(
        update(TwoFactor).where(TwoFactor.user_id == people["kari"]).values(sealed_secret=None)
    )
    db.commit()
    assert staff_web_login(app_client, "kari").status_code == 401
    # Another account's (valid, not enrolled) row, copied over.
    hanne_row = db.get(TwoFactor, people["hanne"])
    assert hanne_row is not None
    db.execute(
        update(TwoFactor)
        .where(TwoFactor.user_id == people["kari"])
        .values(
            sealed_secret=None,
            recovery_digests=hanne_row.recovery_digests,
            generation=hanne_row.generation,
            last_step=hanne_row.last_step,
            tag=hanne_row.tag,
        )
    )
    db.commit()
    assert staff_web_login(app_client, "kari").status_code == 401
    # Deleted.
    db.execute(delete(TwoFactor).where(TwoFactor.user_id == people["kari"]))
    db.commit()
    assert staff_web_login(app_client, "kari").status_code == 401
    refused = [a for a in actions(db, people["kari"]) if a == "user.login_refused_two_factor"]
    assert len(refused) == 3
    db.rollback()
    assert (
        db.scalar(
            select(func.count())
            .select_from(LoginSession)
            .where(LoginSession.user_id == people["kari"])
        )
        == 0
    )


def test_an_admin_reset_ends_the_sessions_and_asks_for_a_new_set_up(
    app_client: TestClient, people: dict[str, int], db: Session, settings: Settings
) -> None:
    secret, _codes, step = _enrolled_kari(app_client)
    assert staff_web_login(app_client, "kari", code=totp_for(secret, step + 1)).status_code == 303
    two_factor.reset_two_factor(db, settings, people["kari"], actor=f"user:{people['ada']}")
    db.commit()
    assert (
        app_client.get("/en/staff/", follow_redirects=False)
        .headers["location"]
        .startswith("/en/staff/login")
    )
    again = staff_web_login(app_client, "kari")
    assert again.headers["location"] == "/en/staff/two-factor"


def test_an_idle_session_ends_and_the_login_page_says_why(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    assert staff_web_login(app_client, "hanne").status_code == 303
    assert app_client.get("/en/staff/", follow_redirects=False).status_code == 303
    db.execute(
        update(LoginSession).values(idle_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    )
    db.commit()
    answer = app_client.get("/en/staff/", follow_redirects=False)
    assert answer.headers["location"] == "/en/staff/login?notice=ended"
    page = app_client.get(answer.headers["location"])
    assert "without activity" in page.text


def test_each_request_pushes_the_idle_deadline_but_never_past_the_absolute_one(
    app_client: TestClient, people: dict[str, int], db: Session, settings: Settings
) -> None:
    staff_web_login(app_client, "hanne")
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    db.execute(update(LoginSession).values(idle_until=soon))
    db.commit()
    app_client.get("/en/staff/", follow_redirects=False)
    db.rollback()
    row = db.execute(select(LoginSession)).scalar_one()
    idle = row.idle_until if row.idle_until.tzinfo else row.idle_until.replace(tzinfo=dt.UTC)
    ends = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=dt.UTC)
    assert idle > soon + dt.timedelta(minutes=settings.session_idle_minutes - 2)
    assert idle <= ends
    db.execute(update(LoginSession).values(expires_at=dt.datetime.now(dt.UTC)))
    db.commit()
    answer = app_client.get("/en/staff/", follow_redirects=False)
    assert answer.headers["location"] == "/en/staff/login?notice=ended"


def test_logout_ends_the_session_on_the_server(
    app_client: TestClient, people: dict[str, int], db: Session
) -> None:
    staff_web_login(app_client, "hanne")
    cookie = dict(app_client.cookies)
    page = app_client.get("/en/staff/two-factor")
    answer = app_client.post(
        "/en/staff/logout", data={CSRF_FIELD: form_token(page.text)}, follow_redirects=False
    )
    assert answer.headers["location"] == "/en/staff/login?notice=logged-out"
    assert db.scalar(select(func.count()).select_from(LoginSession)) == 0
    # The old cookie, replayed, opens nothing.
    app_client.cookies.clear()
    app_client.cookies.update(cookie)
    assert (
        app_client.get("/en/staff/", follow_redirects=False)
        .headers["location"]
        .startswith("/en/staff/login")
    )


def test_a_staff_cookie_is_no_api_token_and_an_api_token_no_cookie(
    app_client: TestClient, people: dict[str, int]
) -> None:
    staff_web_login(app_client, "hanne")
    cookie_value = next(iter(app_client.cookies.values()))
    assert (
        app_client.get(
            "/api/v1/cases", headers={"Authorization": f"Bearer {cookie_value}"}
        ).status_code
        == 401
    )
    headers = login(app_client, "hanne")
    app_client.cookies.clear()
    app_client.cookies.set("varsling_session", headers["Authorization"].removeprefix("Bearer "))
    answer = app_client.get("/en/staff/", follow_redirects=False)
    assert answer.headers["location"].startswith("/en/staff/login")


def test_an_expired_set_up_form_starts_again_and_changes_nothing(
    app_client: TestClient, people: dict[str, int], db: Session, settings: Settings
) -> None:
    staff_web_login(app_client, "kari")
    user = db.get(two_factor.User, people["kari"])
    assert user is not None
    old = two_factor.start_enrolment(settings, user, now=time.time() - 3600)
    secret = two_factor.pending_secret(settings, people["kari"], old.sealed, now=time.time() - 3600)
    assert secret is not None
    page = app_client.get("/en/staff/two-factor")
    answer = app_client.post(
        "/en/staff/two-factor",
        data={
            CSRF_FIELD: form_token(page.text),
            "enrolment": old.sealed,
            "code": totp_for(secret, crypto.totp_step(time.time())),
        },
    )
    assert answer.status_code == 422
    assert "started again" in answer.text
    db.rollback()
    row = db.get(TwoFactor, people["kari"])
    assert row is not None
    assert row.sealed_secret is None
