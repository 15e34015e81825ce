"""The key lifecycle pages: change your password, an admin's reset, restore access."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import PASSWORD, declare, login, make_unit, make_user, report
from tests.staff_web import form_token, logged_in, staff_web_login
from varsling.app import create_app
from varsling.audit import AuditEvent
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD

NEW_PASSWORD = "a much newer passphrase"
TITLES = {
    "nb": ("Endre passordet ditt", "Gjenopprett tilgang etter tilbakestilt passord"),
    "nn": ("Endre passordet ditt", "Gjenopprett tilgang etter tilbakestilt passord"),
    "en": ("Change your password", "Restore access after a password reset"),
}


@pytest.fixture
def site(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def org(db: Session, settings: Settings) -> dict[str, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    return {
        "county": county.id,
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "ola": make_user(db, settings, "ola", units=(county.id,), display_name="Ola Olsen").id,
        "ada": make_user(db, settings, "ada", roles=("admin",)).id,
    }


@pytest.mark.parametrize("lang", ["nb", "nn", "en"])
def test_the_pages_render_in_every_language_and_are_in_the_navigation(
    site: TestClient, org: dict[str, int], lang: str
) -> None:
    logged_in(site, "hanne", lang=lang)
    password_title, restore_title = TITLES[lang]

    page = site.get(f"/{lang}/staff/account/password")
    assert page.status_code == 200
    assert f"<h1>{password_title}</h1>" in page.text
    assert f'href="/{lang}/staff/account/password" aria-current="page"' in page.text
    restore = site.get(f"/{lang}/staff/pending-grants")
    assert restore.status_code == 200
    assert f"<h1>{restore_title}</h1>" in restore.text
    assert f'href="/{lang}/staff/pending-grants" aria-current="page"' in restore.text


def test_changing_the_password_on_the_page_logs_out_everywhere(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    api = login(site, "hanne")
    logged_in(site, "hanne")
    page = site.get("/en/staff/account/password")
    fields = {CSRF_FIELD: form_token(page.text), "current_password": PASSWORD}

    mismatch = site.post(
        "/en/staff/account/password",
        data={**fields, "new_password": NEW_PASSWORD, "repeat_password": "something else"},
    )
    assert mismatch.status_code == 422
    assert "The two new passwords are not the same." in mismatch.text
    assert NEW_PASSWORD not in mismatch.text
    wrong = site.post(
        "/en/staff/account/password",
        data={
            **fields,
            "current_password": "not the password",
            "new_password": NEW_PASSWORD,
            "repeat_password": NEW_PASSWORD,
        },
    )
    assert wrong.status_code == 401
    assert "The current password is wrong. Nothing was changed." in wrong.text
    done = site.post(
        "/en/staff/account/password",
        data={**fields, "new_password": NEW_PASSWORD, "repeat_password": NEW_PASSWORD},
        follow_redirects=False,
    )

    assert done.status_code == 303
    assert done.headers["location"] == "/en/staff/login?notice=password-changed"
    assert "Your password is changed." in site.get(done.headers["location"]).text
    assert site.get("/en/staff/account/password", follow_redirects=False).status_code == 303
    assert site.get("/api/v1/cases", headers=api).status_code == 401
    assert staff_web_login(site, "hanne", NEW_PASSWORD).status_code == 303
    db.rollback()
    actions = set(db.execute(select(AuditEvent.action)).scalars())
    assert {"user.password_changed", "user.password_change_failed"} <= actions


def test_an_admin_resets_on_the_page_and_a_colleague_restores_access(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    answer = site.post("/api/v1/reports", json=report(org["county"]))
    assert answer.status_code == 201
    ola = login(site, "ola")
    case_id = site.get("/api/v1/cases", headers=ola).json()["items"][0]["id"]
    declare(site, ola, case_id)

    logged_in(site, "ada")
    account = site.get(f"/en/staff/admin/accounts/{org['hanne']}")
    assert "Reset the password" in account.text
    short = site.post(
        f"/en/staff/admin/accounts/{org['hanne']}/password-reset",
        data={CSRF_FIELD: form_token(account.text), "password": "short"},
    )
    assert short.status_code == 422
    reset = site.post(
        f"/en/staff/admin/accounts/{org['hanne']}/password-reset",
        data={CSRF_FIELD: form_token(account.text), "password": NEW_PASSWORD},
        follow_redirects=False,
    )
    assert reset.status_code == 303
    assert "The password was reset" in site.get(reset.headers["location"]).text
    assert report(0)["description"] not in site.get(reset.headers["location"]).text

    site.cookies.clear()
    hanne = login(site, "hanne", NEW_PASSWORD)
    assert site.get("/api/v1/cases", headers=hanne).json()["items"] == []
    logged_in(site, "ola")
    restore = site.get("/en/staff/pending-grants")
    assert "Restore access for hanne" in restore.text
    assert case_id in restore.text
    granted = site.post(
        "/en/staff/pending-grants",
        data={
            CSRF_FIELD: form_token(restore.text),
            "case_id": case_id,
            "user_id": str(org["hanne"]),
            "purpose": "case",
        },
        follow_redirects=False,
    )
    assert granted.status_code == 303
    after = site.get(granted.headers["location"])
    assert "Access is restored." in after.text
    assert "Nobody is waiting for a key you hold." in after.text
    assert [c["id"] for c in site.get("/api/v1/cases", headers=hanne).json()["items"]] == [case_id]
