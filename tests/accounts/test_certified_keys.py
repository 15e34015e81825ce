"""A database writer who swaps a user's public key gets nothing, and the swap is flagged.

Every test plays the attacker: it edits the users table behind the service's
back, then checks that nothing is wrapped for the swapped key, that the
report still reaches everyone else, and that the service says so.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.factories import PASSWORD, declare, login, make_unit, make_user, report
from varsling import crypto
from varsling.accounts import service as accounts
from varsling.accounts.models import User
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases.models import Case, CaseKey
from varsling.config import Settings


@pytest.fixture
def world(db: Session, settings: Settings) -> dict[str, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    return {
        "national": national.id,
        "county": county.id,
        "nina": make_user(db, settings, "nina", units=(national.id,)).id,
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "carl": make_user(db, settings, "carl", roles=("custodian",), units=(county.id,)).id,
        "cora": make_user(db, settings, "cora", roles=("custodian",), units=(national.id,)).id,
    }


def _submit(client: TestClient, db: Session, unit_id: int, **overrides: Any) -> str:
    db.rollback()
    before = set(db.scalars(select(Case.id)))
    response = client.post(
        "/api/v1/reports", json=report(unit_id, identity={"name": "Kari Nordmann"}, **overrides)
    )
    assert response.status_code == 201, response.text
    db.rollback()
    (case_id,) = set(db.scalars(select(Case.id))) - before
    return case_id


def _holders(db: Session, case_id: str) -> dict[tuple[int, str], bytes]:
    db.rollback()
    keys = db.scalars(select(CaseKey).where(CaseKey.case_id == case_id))
    return {(k.user_id, k.purpose): k.wrapped_key for k in keys}


def _rejected(db: Session, case_id: str) -> list[int]:
    db.rollback()
    # Recorded in the submission's transaction, so in the reporter chain (the day only).
    events = db.scalars(
        select(ReporterAuditEvent).where(
            ReporterAuditEvent.action == "key.rejected", ReporterAuditEvent.case_id == case_id
        )
    )
    return [json.loads(e.details)["user_id"] for e in events]


def _swap_key(db: Session, user_id: int, public_key: bytes) -> bytes:
    """Put another public key in the user's row; returns the one that was there."""
    db.rollback()
    original = db.get(User, user_id)
    assert original is not None
    kept = original.public_key
    db.execute(update(User).where(User.id == user_id).values(public_key=public_key))
    db.commit()
    return kept


def _opens_nothing(holders: dict[tuple[int, str], bytes], case_id: str, private: bytes) -> bool:
    for (user_id, purpose), wrapped in holders.items():
        for recipient in {user_id, *(u for u, _ in holders)}:
            info = crypto.wrap_info(case_id, purpose, f"user:{recipient}")
            try:
                crypto.unwrap_key(wrapped, private, info=info)
            except crypto.CryptoError:
                continue
            return False
    return True


def test_a_swapped_custodian_key_gets_no_identity_key(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    attacker = crypto.generate_keypair()
    original = _swap_key(db, world["carl"], attacker.public_key)

    case_id = _submit(client, db, world["county"])

    holders = _holders(db, case_id)
    assert (world["carl"], "identity") not in holders
    # The report still reaches the handler and the other custodian.
    assert (world["hanne"], "case") in holders
    assert (world["cora"], "identity") in holders
    assert _opens_nothing(holders, case_id, attacker.private_key)
    assert _rejected(db, case_id) == [world["carl"]]
    hanne = login(client, "hanne")
    declare(client, hanne, case_id)
    opened = client.get(f"/api/v1/cases/{case_id}", headers=hanne)
    assert opened.status_code == 200

    # Back to the original, certified key: wrapping works again.
    _swap_key(db, world["carl"], original)
    again = _submit(client, db, world["county"])
    assert (world["carl"], "identity") in _holders(db, again)
    assert _rejected(db, again) == []


def test_a_swapped_handler_key_gets_no_case_key(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int]
) -> None:
    county = world["county"]
    ola = make_user(db, settings, "ola", units=(county,)).id
    attacker = crypto.generate_keypair()
    _swap_key(db, world["hanne"], attacker.public_key)

    case_id = _submit(client, db, county)

    holders = _holders(db, case_id)
    assert (world["hanne"], "case") not in holders
    assert (ola, "case") in holders
    assert _opens_nothing(holders, case_id, attacker.private_key)
    assert _rejected(db, case_id) == [world["hanne"]]


def test_with_the_only_handler_swapped_the_report_routes_up(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    _swap_key(db, world["hanne"], crypto.generate_keypair().public_key)

    units = {u["id"]: u for u in client.get("/api/v1/units").json()}
    assert [r["id"] for r in units[world["county"]]["recipients"]] == [world["nina"]]

    case_id = _submit(client, db, world["county"])

    holders = _holders(db, case_id)
    assert {user for user, purpose in holders if purpose == "case"} == {world["nina"]}
    assert world["hanne"] in _rejected(db, case_id)
    db.rollback()
    submitted = db.scalars(
        select(ReporterAuditEvent).where(
            ReporterAuditEvent.action == "case.submitted", ReporterAuditEvent.case_id == case_id
        )
    ).one()
    assert json.loads(submitted.details)["routed_to_unit_id"] == world["national"]


def test_only_the_original_certified_key_is_wrapped_for_again(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    """Another user's genuinely certified key and certificate, copied over, are no use."""
    db.rollback()
    nina = db.get(User, world["nina"])
    assert nina is not None
    nina_key, nina_certificate = nina.public_key, nina.key_certificate
    original = _swap_key(db, world["hanne"], nina_key)
    db.execute(
        update(User).where(User.id == world["hanne"]).values(key_certificate=nina_certificate)
    )
    db.commit()

    case_id = _submit(client, db, world["county"])

    assert (world["hanne"], "case") not in _holders(db, case_id)
    assert world["hanne"] in _rejected(db, case_id)

    _swap_key(db, world["hanne"], original)
    # The right key with the wrong certificate is still refused.
    assert (world["hanne"], "case") not in _holders(db, _submit(client, db, world["county"]))


def test_a_changed_username_breaks_the_certificate(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    db.rollback()
    db.execute(update(User).where(User.id == world["carl"]).values(username="carl2"))
    db.commit()

    case_id = _submit(client, db, world["county"])

    assert (world["carl"], "identity") not in _holders(db, case_id)
    assert _rejected(db, case_id) == [world["carl"]]


def test_swapped_rows_of_two_users_break_both_certificates(
    client: TestClient, db: Session, world: dict[str, int]
) -> None:
    """Moving a key with its certificate to another user id is caught: the id is signed."""
    db.rollback()
    carl, cora = db.get(User, world["carl"]), db.get(User, world["cora"])
    assert carl is not None
    assert cora is not None
    carl_parts = (carl.public_key, carl.key_certificate)
    cora_parts = (cora.public_key, cora.key_certificate)
    for user_id, (public_key, certificate) in ((carl.id, cora_parts), (cora.id, carl_parts)):
        db.execute(
            update(User)
            .where(User.id == user_id)
            .values(public_key=public_key, key_certificate=certificate)
        )
    db.commit()

    case_id = _submit(client, db, world["county"])

    holders = _holders(db, case_id)
    assert (world["carl"], "identity") not in holders
    assert (world["cora"], "identity") not in holders
    assert sorted(_rejected(db, case_id)) == sorted([world["carl"], world["cora"]])
    # With no custodian left, the units say nobody can be granted the identity.
    units = {u["id"]: u for u in client.get("/api/v1/units").json()}
    assert units[world["county"]]["identity_custodian"] is False


def _seal_for(settings: Settings, user: User, private_key: bytes) -> bytes:
    """The private key sealed under the user's password, as a writer with the pepper could."""
    params = crypto.PasswordParams.decode(user.password_params)
    login_secrets = crypto.derive_login(
        PASSWORD,
        user.password_salt,
        params.argon2,
        pepper=settings.secret("password_pepper"),
    )
    return crypto.seal_private_key(private_key, login_secrets.key, owner=f"user:{user.id}")


def _refusals(db: Session) -> list[dict[str, Any]]:
    db.rollback()
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "user.login_refused_key"))
    return [{"actor": e.actor, **json.loads(e.details)} for e in events]


@pytest.mark.parametrize("swap_public_key", [True, False], ids=["whole-pair", "private-only"])
def test_a_login_with_a_swapped_key_pair_is_refused_and_audited(
    client: TestClient,
    db: Session,
    settings: Settings,
    world: dict[str, int],
    swap_public_key: bool,
) -> None:
    """Even a writer who could seal another pair under the right password gets no session."""
    db.rollback()
    hanne = db.get(User, world["hanne"])
    assert hanne is not None
    other = crypto.generate_keypair()
    values: dict[str, Any] = {"sealed_private_key": _seal_for(settings, hanne, other.private_key)}
    if swap_public_key:
        values["public_key"] = other.public_key
    db.execute(update(User).where(User.id == hanne.id).values(**values))
    db.commit()

    response = client.post("/api/v1/sessions", json={"username": "hanne", "password": PASSWORD})

    assert response.status_code == 401
    wrong = client.post("/api/v1/sessions", json={"username": "hanne", "password": "x" * 20})
    assert response.json() == wrong.json()
    (refusal,) = _refusals(db)
    assert refusal["actor"] == f"user:{hanne.id}"
    assert refusal["user_id"] == hanne.id
    assert refusal["reason"] == ("certificate_invalid" if swap_public_key else "key_mismatch")


def test_a_login_with_a_sealed_key_from_elsewhere_is_refused_not_an_error(
    client: TestClient, db: Session, settings: Settings, world: dict[str, int]
) -> None:
    """A writer without the pepper cannot seal for the password: the key does not open."""
    db.rollback()
    nina = db.get(User, world["nina"])
    assert nina is not None
    db.execute(
        update(User)
        .where(User.id == world["hanne"])
        .values(sealed_private_key=nina.sealed_private_key)
    )
    db.commit()

    response = client.post("/api/v1/sessions", json={"username": "hanne", "password": PASSWORD})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    (refusal,) = _refusals(db)
    assert refusal["reason"] == "private_key_unreadable"
    assert refusal["user_id"] == world["hanne"]


def test_user_list_and_start_up_flag_uncertified_accounts(
    db: Session, settings: Settings, world: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    from typer.testing import CliRunner

    from varsling import cli

    _swap_key(db, world["carl"], crypto.generate_keypair().public_key)
    db.execute(update(User).where(User.id == world["cora"]).values(key_certificate=None))
    db.commit()

    listing = CliRunner().invoke(cli.app, ["user", "list"], env=_cli_env(settings))
    assert listing.exit_code == 0, listing.output
    rows = {line.split("\t")[1]: line for line in listing.output.splitlines()}
    assert rows["carl"].endswith("KEY NOT CERTIFIED")
    assert rows["cora"].endswith("KEY NOT CERTIFIED")
    assert "KEY NOT CERTIFIED" not in rows["hanne"] + rows["nina"]

    cli._warn_about_uncertified_keys(settings)
    warning = capsys.readouterr().out
    tampered, missing = warning.strip().split("\n")
    assert "does not match its certificate" in tampered
    assert tampered.endswith(": carl")
    assert "no key certificate yet" in missing
    assert "cora" in missing
    assert "varsling user certify-keys" in missing
    assert "hanne" not in warning


def test_certify_keys_certifies_only_accounts_without_a_certificate(
    db: Session, settings: Settings, world: dict[str, int]
) -> None:
    from typer.testing import CliRunner

    from varsling import cli

    _swap_key(db, world["carl"], crypto.generate_keypair().public_key)
    db.execute(update(User).where(User.id == world["cora"]).values(key_certificate=None))
    db.commit()

    result = CliRunner().invoke(cli.app, ["user", "certify-keys", "--yes"], env=_cli_env(settings))

    assert result.exit_code == 0, result.output
    assert "cora" in result.output
    assert "carl" not in result.output
    db.rollback()
    verifying = settings.signing_public_key
    flagged = [u.username for u in accounts.uncertified_users(db, verifying)]
    assert flagged == ["carl"]
    certified = db.scalars(select(AuditEvent).where(AuditEvent.action == "user.key_certified"))
    assert [json.loads(e.details)["user_id"] for e in certified] == [world["cora"]]


def _cli_env(settings: Settings) -> dict[str, str]:
    from tests.conftest import TEST_SECRETS

    return {
        "VARSLING_DATABASE_URL": settings.database_url,
        "VARSLING_SECRETS_FILE": "/nonexistent",
        **{f"VARSLING_{name.upper()}": value for name, value in TEST_SECRETS.items()},
    }


def test_the_wrap_itself_refuses_an_uncertified_key(
    db: Session, settings: Settings, world: dict[str, int]
) -> None:
    """The last line behind routing: even a caller that skipped `route` wraps nothing."""
    import datetime as dt

    from varsling.cases.keys import wrap_for
    from varsling.cases.models import KeyPurpose

    _swap_key(db, world["hanne"], crypto.generate_keypair().public_key)
    hanne = db.get(User, world["hanne"])
    assert hanne is not None

    with pytest.raises(crypto.CryptoError, match="uncertified"):
        wrap_for(
            db,
            settings.signing_public_key,
            "0" * 32,
            hanne,
            KeyPurpose.CASE,
            crypto.new_key(),
            dt.date.today(),
        )
    assert not any(isinstance(obj, CaseKey) for obj in db.new)


def test_serve_names_the_uncertified_accounts_at_start_up(
    db: Session, settings: Settings, world: dict[str, int]
) -> None:
    import os
    import subprocess
    import sys

    _swap_key(db, world["carl"], crypto.generate_keypair().public_key)
    env = {**os.environ, **_cli_env(settings), "VARSLING_ENVIRONMENT": "development"}
    env.update({"VARSLING_ARGON2_MEMORY_KIB": "64", "VARSLING_ARGON2_TIME_COST": "1"})
    listing = subprocess.run(
        [sys.executable, "-m", "varsling", "user", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert f"\tcarl\tcarl\tcustodian\t{world['county']} KEY NOT CERTIFIED\n" in listing.stdout
    server = subprocess.Popen(
        [sys.executable, "-m", "varsling", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line)
            if line.startswith("Serving Varsling") or len(lines) > 50:
                break
    finally:
        server.terminate()
        server.wait(timeout=30)

    output = "".join(lines)
    assert "Serving Varsling" in output, output
    warning = next((line for line in lines if "does not match its certificate" in line), output)
    assert warning.rstrip().endswith(": carl")
