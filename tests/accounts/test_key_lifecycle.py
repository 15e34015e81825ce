"""Password change, an administrator's reset with re-grant, and the recovery key, end to end."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRETS
from tests.factories import PASSWORD, declare, login, make_unit, make_user, report
from varsling import crypto
from varsling.accounts.models import LoginSession, User
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases import recovery
from varsling.cases.models import CaseKey, RecoveryKey, RecoveryWrap
from varsling.config import Settings

NEW_PASSWORD = "a much newer passphrase"


def _actions(db: Session) -> list[str]:
    db.rollback()
    return list(db.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    return {
        "county": county.id,
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "ola": make_user(db, settings, "ola", units=(county.id,)).id,
        "kari": make_user(db, settings, "kari", roles=("custodian",), units=(county.id,)).id,
        "adam": make_user(db, settings, "adam", roles=("admin",)).id,
    }


def _new_case(client: TestClient, unit_id: int, **fields: object) -> str:
    answer = client.post("/api/v1/reports", json=report(unit_id, **fields))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["case_code"])


def _case_ids(client: TestClient, headers: dict[str, str]) -> list[str]:
    answer = client.get("/api/v1/cases", headers=headers)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def _reset(client: TestClient, user_id: int, password: str = NEW_PASSWORD) -> dict[str, int]:
    answer = client.post(
        f"/api/v1/admin/accounts/{user_id}/password-reset",
        json={"new_password": password},
        headers=login(client, "adam"),
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, int] = answer.json()
    return result


# --------------------------------------------------------------------------
# Changing one's password


def test_a_changed_password_opens_the_same_cases_and_ends_every_session(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    _new_case(client, world["county"])
    old = login(client, "hanne")
    other = login(client, "hanne")
    (case_id,) = _case_ids(client, old)
    declare(client, old, case_id)
    key_before = db.execute(select(User.public_key).where(User.id == world["hanne"])).scalar_one()

    changed = client.post(
        "/api/v1/account/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=old,
    )

    assert changed.status_code == 200, changed.text
    assert changed.json() == {"sessions_ended": 2}
    for headers in (old, other):
        assert client.get("/api/v1/cases", headers=headers).status_code == 401
    refused = client.post("/api/v1/sessions", json={"username": "hanne", "password": PASSWORD})
    assert refused.status_code == 401
    fresh = login(client, "hanne", NEW_PASSWORD)
    assert _case_ids(client, fresh) == [case_id]
    opened = client.get(f"/api/v1/cases/{case_id}", headers=fresh)
    assert opened.status_code == 200
    assert opened.json()["report"]["description"] == report(0)["description"]
    db.rollback()
    user = db.get(User, world["hanne"])
    assert user is not None
    assert user.public_key == key_before  # the same key pair, sealed again
    assert user.key_version == 1
    assert "user.password_changed" in _actions(db)


def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failure(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    headers = login(client, "hanne")
    sealed = db.execute(
        select(User.sealed_private_key).where(User.id == world["hanne"])
    ).scalar_one()

    wrong = client.post(
        "/api/v1/account/password",
        json={"current_password": "not my password at all", "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "wrong_password"
    assert client.get("/api/v1/cases", headers=headers).status_code == 200
    db.rollback()
    assert (
        db.execute(select(User.sealed_private_key).where(User.id == world["hanne"])).scalar_one()
        == sealed
    )
    login(client, "hanne")  # the old password still works
    assert "user.password_change_failed" in _actions(db)
    short = client.post(
        "/api/v1/account/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=headers,
    )
    assert short.status_code == 422
    assert "12 characters" in short.json()["error"]["message"]


def test_repeated_wrong_current_passwords_back_off_like_logins(
    client: TestClient, world: dict[str, int]
) -> None:
    headers = login(client, "hanne")
    body = {"current_password": "wrong wrong wrong", "new_password": NEW_PASSWORD}
    answers = [
        client.post("/api/v1/account/password", json=body, headers=headers).status_code
        for _ in range(8)
    ]

    assert answers[0] == 401
    assert 429 in answers
    # While it lasts, even the right password waits.
    right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert client.post("/api/v1/account/password", json=right, headers=headers).status_code == 429


# --------------------------------------------------------------------------
# An administrator's reset, then a key holder's re-grant


def test_a_reset_account_waits_for_a_key_holder_to_regrant_its_cases(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    _new_case(client, world["county"], identity={"name": "Kari Nordmann"})
    before = login(client, "hanne")
    (case_id,) = _case_ids(client, before)

    reset = _reset(client, world["hanne"])

    assert reset == {
        "user_id": world["hanne"],
        "key_version": 2,
        "sessions_ended": 1,
        "pending_keys": 1,
    }
    assert client.get("/api/v1/cases", headers=before).status_code == 401
    assert client.post(
        "/api/v1/sessions", json={"username": "hanne", "password": PASSWORD}
    ).status_code == (401)
    hanne = login(client, "hanne", NEW_PASSWORD)
    assert _case_ids(client, hanne) == []
    # A page counts only keys made for the current key version, too.
    page = client.get("/api/v1/cases?limit=50", headers=hanne).json()
    assert (page["items"], page["total"]) == ([], 0)
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 404
    own = client.get("/api/v1/pending-grants", headers=hanne).json()
    assert own == {"items": [], "own": [{"case_id": case_id, "purpose": "case"}]}

    # Ola holds the case key; Kari holds only the identity key; the admin holds nothing.
    ola = login(client, "ola")
    listed = client.get("/api/v1/pending-grants", headers=ola).json()
    assert listed["items"] == [
        {"case_id": case_id, "purpose": "case", "user_id": world["hanne"], "display_name": "hanne"}
    ]
    for name in ("kari", "adam"):
        assert client.get("/api/v1/pending-grants", headers=login(client, name)).json() == {
            "items": [],
            "own": [],
        }
    body = {"case_id": case_id, "user_id": world["hanne"], "purpose": "case"}
    # Not before declaring: the holder's key opens only after their declaration.
    assert client.post("/api/v1/pending-grants", json=body, headers=ola).status_code == 409
    declare(client, ola, case_id)
    granted = client.post("/api/v1/pending-grants", json=body, headers=ola)

    assert granted.status_code == 201, granted.text
    assert _case_ids(client, hanne) == [case_id]
    declare(client, hanne, case_id)
    opened = client.get(f"/api/v1/cases/{case_id}", headers=hanne)
    assert opened.status_code == 200
    assert opened.json()["report"]["description"] == report(0)["description"]
    assert client.get("/api/v1/pending-grants", headers=ola).json()["items"] == []
    assert client.post("/api/v1/pending-grants", json=body, headers=ola).status_code == 404
    actions = _actions(db)
    assert "user.password_reset" in actions
    assert "case.key_regranted" in actions


def test_a_custodian_regrants_the_identity_key_to_a_reset_custodian(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int]
) -> None:
    liv = make_user(db, settings, "liv", roles=("custodian",), units=(world["county"],)).id
    _new_case(client, world["county"], identity={"name": "Kari Nordmann"})
    case_id = db.execute(select(CaseKey.case_id)).scalars().first()
    _reset(client, world["kari"])

    liv_headers = login(client, "liv")
    listed = client.get("/api/v1/pending-grants", headers=liv_headers).json()["items"]
    assert listed == [
        {
            "case_id": case_id,
            "purpose": "identity",
            "user_id": world["kari"],
            "display_name": "kari",
        }
    ]
    # A handler who holds only the case key cannot restore the identity key.
    ola = login(client, "ola")
    body = {"case_id": case_id, "user_id": world["kari"], "purpose": "identity"}
    assert client.post("/api/v1/pending-grants", json=body, headers=ola).status_code == 404
    granted = client.post("/api/v1/pending-grants", json=body, headers=liv_headers)
    assert granted.status_code == 201, granted.text
    kari = login(client, "kari", NEW_PASSWORD)
    assert client.get("/api/v1/pending-grants", headers=kari).json()["own"] == []
    assert liv != world["kari"]


def test_a_regrant_to_someone_named_as_involved_is_refused(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    _new_case(client, world["county"])
    (case_id,) = _case_ids(client, login(client, "hanne"))
    # Ola steps aside (conflict of interest) before being reset: he is excluded now; a
    # database writer then puts back a stale row for him to bait a re-grant.
    ola = login(client, "ola")
    stepped = client.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": True, "reason": "I know the people involved."},
        headers=ola,
    )
    assert stepped.status_code == 201, stepped.text
    _reset(client, world["ola"])
    db.execute(
        update(CaseKey)
        .where(CaseKey.user_id == world["hanne"])
        .values(key_version=1)  # hanne's real row, untouched
    )
    db.add(
        CaseKey(
            case_id=case_id,
            user_id=world["ola"],
            purpose="case",
            wrapped_key=b"\x02stale",
            granted_on=db.execute(select(CaseKey.granted_on)).scalars().first(),
            key_version=1,
        )
    )
    db.commit()
    hanne = login(client, "hanne")
    declare(client, hanne, case_id)
    body = {"case_id": case_id, "user_id": world["ola"], "purpose": "case"}

    refused = client.post("/api/v1/pending-grants", json=body, headers=hanne)

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "regrant_refused"
    assert "case.regrant_refused" in _actions(db)
    assert _case_ids(client, login(client, "ola", NEW_PASSWORD)) == []


def test_a_forged_key_version_does_not_make_a_stale_key_current(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    """The key version is bound into the wrap: raising it in the database opens nothing."""
    _new_case(client, world["county"])
    _reset(client, world["hanne"])
    db.execute(update(CaseKey).where(CaseKey.user_id == world["hanne"]).values(key_version=2))
    db.commit()
    hanne = login(client, "hanne", NEW_PASSWORD)
    (case_id,) = _case_ids(client, hanne)
    declared = client.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": "low"},
        headers=hanne,
    )
    assert declared.status_code == 500
    assert declared.json()["error"]["code"] == "integrity_error"


def test_only_admins_reset_and_the_password_rule_holds(
    client: TestClient, world: dict[str, int]
) -> None:
    hanne = login(client, "hanne")
    path = f"/api/v1/admin/accounts/{world['ola']}/password-reset"
    assert client.post(path, json={"new_password": NEW_PASSWORD}, headers=hanne).status_code == 403
    adam = login(client, "adam")
    short = client.post(path, json={"new_password": "short"}, headers=adam)
    assert short.status_code == 422
    missing = client.post(
        "/api/v1/admin/accounts/999/password-reset",
        json={"new_password": NEW_PASSWORD},
        headers=adam,
    )
    assert missing.status_code == 404


# --------------------------------------------------------------------------
# The recovery key


def test_the_recovery_key_restores_a_case_whose_only_handler_was_reset(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int]
) -> None:
    made = recovery.init_recovery(db, settings, today=db_today())
    db.commit()
    assert "BEGIN VARSLING RECOVERY KEY" in made.private_text
    with pytest.raises(recovery.RecoveryKeyExists):
        recovery.init_recovery(db, settings, today=db_today())
    db.rollback()
    # Ola is left out by the reporter: hanne is the only handler.
    _new_case(
        client,
        world["county"],
        identity={"name": "Kari Nordmann"},
        excluded_recipients=[world["ola"]],
    )
    (case_id,) = _case_ids(client, login(client, "hanne"))
    assert {w.purpose for w in db.execute(select(RecoveryWrap)).scalars()} == {"case", "identity"}
    _reset(client, world["hanne"])
    hanne = login(client, "hanne", NEW_PASSWORD)
    assert _case_ids(client, hanne) == []

    # A wrong private half is refused, and so is the excluded handler.
    other = crypto.encode_recovery_private_key(crypto.generate_keypair().private_key)
    with pytest.raises(recovery.RecoveryRefused):
        recovery.recovery_grant(
            db,
            settings,
            private_key=recovery.read_private_key(other),
            case_id=case_id,
            username="hanne",
            today=db_today(),
        )
    db.rollback()
    with pytest.raises(recovery.RecoveryRefused):
        recovery.recovery_grant(
            db,
            settings,
            private_key=recovery.read_private_key(made.private_text),
            case_id=case_id,
            username="ola",
            today=db_today(),
        )
    db.rollback()
    granted = recovery.recovery_grant(
        db,
        settings,
        private_key=recovery.read_private_key(made.private_text),
        case_id=case_id,
        username="hanne",
        today=db_today(),
    )
    db.commit()

    assert granted.purposes == ("case",)
    assert _case_ids(client, hanne) == [case_id]
    declare(client, hanne, case_id)
    opened = client.get(f"/api/v1/cases/{case_id}", headers=hanne)
    assert opened.status_code == 200
    assert "Kari" not in opened.text  # the identity key went to nobody
    assert "recovery.granted" in _actions(db)
    assert "recovery.initialised" in _actions(db)


def test_a_swapped_recovery_public_key_gets_nothing_and_is_flagged(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int]
) -> None:
    recovery.init_recovery(db, settings, today=db_today())
    db.commit()
    attacker = crypto.generate_keypair()
    db.execute(update(RecoveryKey).values(public_key=attacker.public_key))
    db.commit()

    _new_case(client, world["county"])

    assert db.execute(select(RecoveryWrap)).first() is None
    assert _case_ids(client, login(client, "hanne"))  # the report itself was not lost
    reporter_actions = list(db.execute(select(ReporterAuditEvent.action)).scalars())
    assert "recovery.key_rejected" in reporter_actions


def test_a_deleted_recovery_key_is_flagged_at_every_new_case(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int]
) -> None:
    recovery.init_recovery(db, settings, today=db_today())
    db.commit()
    assert recovery.problem(db, settings.signing_public_key) is None
    db.execute(delete(RecoveryKey))
    db.commit()

    _new_case(client, world["county"])

    db.rollback()
    assert db.execute(select(RecoveryWrap)).first() is None
    reporter_actions = list(db.execute(select(ReporterAuditEvent.action)).scalars())
    assert "recovery.key_missing" in reporter_actions
    assert recovery.problem(db, settings.signing_public_key) == "missing"
    status = _command(settings.database_url, "recovery", "status")
    assert status.returncode == 1
    assert "no longer in the database" in status.stdout


def test_the_recovery_text_block_checks_its_checksum() -> None:
    pair = crypto.generate_keypair()
    text = crypto.encode_recovery_private_key(pair.private_key)
    assert crypto.parse_recovery_private_key("  \n" + text + "\n") == pair.private_key
    lines = text.splitlines()
    flipped = lines[1][:5] + ("A" if lines[1][5] != "A" else "B") + lines[1][6:]
    with pytest.raises(crypto.CryptoError, match="checksum"):
        crypto.parse_recovery_private_key("\n".join([lines[0], flipped, *lines[2:]]))
    with pytest.raises(crypto.CryptoError):
        crypto.parse_recovery_private_key("not a key")


def db_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def test_sessions_are_rows_the_reset_removes(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    login(client, "hanne")
    login(client, "hanne")
    _reset(client, world["hanne"])
    db.rollback()
    assert (
        db.execute(select(LoginSession).where(LoginSession.user_id == world["hanne"])).first()
        is None
    )


# --------------------------------------------------------------------------
# The commands, as an administrator runs them


def _command(
    database_url: str, *args: str, stdin: str = "", password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VARSLING_")},
        "VARSLING_DATABASE_URL": database_url,
        "VARSLING_SECRETS_FILE": "/nonexistent",
        "VARSLING_ARGON2_MEMORY_KIB": "64",
        "VARSLING_ARGON2_TIME_COST": "1",
        **{f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()},
    }
    if password is not None:
        env["VARSLING_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "varsling", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_recovery_init_reset_password_and_recovery_grant_from_the_command_line(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int], caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    made = _command(settings.database_url, "recovery", "init")
    assert made.returncode == 0, made.stderr
    assert "NOT covered" in made.stdout
    block = made.stdout[made.stdout.index("-----BEGIN") :].strip()
    again = _command(settings.database_url, "recovery", "init")
    assert again.returncode == 1
    assert "already a recovery key" in again.stderr
    db.rollback()
    status = _command(settings.database_url, "recovery", "status")
    assert "\tcertified" in status.stdout

    _new_case(client, world["county"], excluded_recipients=[world["ola"]])
    (case_id,) = _case_ids(client, login(client, "hanne"))
    reset = _command(
        settings.database_url, "user", "reset-password", str(world["hanne"]), password=NEW_PASSWORD
    )
    assert reset.returncode == 0, reset.stderr
    assert "key version 2" in reset.stdout
    assert "1 case key(s) waiting" in reset.stdout
    hanne = login(client, "hanne", NEW_PASSWORD)
    assert _case_ids(client, hanne) == []

    wrong_key = crypto.encode_recovery_private_key(crypto.generate_keypair().private_key)
    args = ("recovery", "grant", "--case", case_id, "--user", "hanne")
    refused = _command(settings.database_url, *args, stdin=wrong_key)
    assert refused.returncode == 1
    assert "does not belong" in refused.stderr
    granted = _command(settings.database_url, *args, stdin=block)
    assert granted.returncode == 0, granted.stderr
    assert _case_ids(client, hanne) == [case_id]
    declare(client, hanne, case_id)
    assert client.get(f"/api/v1/cases/{case_id}", headers=hanne).status_code == 200

    # The private half is nowhere in the database, the audit trail or the logs.
    private_key = crypto.parse_recovery_private_key(block)
    db.rollback()
    for table in ("recovery_keys", "recovery_wraps", "audit_events", "case_keys", "users"):
        for row in db.execute(text(f"SELECT * FROM {table}")):
            for value in row:
                if isinstance(value, bytes | str):
                    raw = value.encode() if isinstance(value, str) else value
                    assert private_key not in raw
                    assert private_key.hex().encode() not in raw
                    assert block.splitlines()[1].encode() not in raw
    logged = caplog.text + granted.stdout + granted.stderr
    assert block.splitlines()[1] not in logged
