"""Notifications to staff: they reach a real (local) SMTP server, only the people a case
needs, and carry nothing of any case: every marker a reporter or handler typed is
looked for in every byte of every mail, also after base64 and quoted-printable decoding."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email
import email.policy
import json
import logging
import quopri
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import declare, login, make_unit, make_user, report, reporter_login
from varsling import audit, jobs
from varsling.accounts import service as accounts
from varsling.accounts.models import User
from varsling.accounts.service import utcnow
from varsling.accounts.setup_check import setup_warnings
from varsling.cases.models import Case
from varsling.config import ConfigError, Settings
from varsling.db import make_engine, make_sessionmaker
from varsling.models import Base
from varsling.notifications import service as notifications
from varsling.notifications.models import Notice, NoticeKind
from varsling.reports import service as reports

FROM = "varsling@example.org"
BASE_URL = "https://varsling.example.org"


# --------------------------------------------------------------------------
# A local SMTP server, started by the test


@dataclass
class Received:
    recipients: list[str]
    raw: bytes


@dataclass
class Inbox:
    port: int
    mails: list[Received] = field(default_factory=list)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.mails.append(Received(list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.mails if address in m.recipients]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[Inbox]:
    inbox = Inbox(_free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    yield inbox
    controller.stop()


def _smtp_settings(database_url: str, port: int, **overrides: Any) -> Settings:
    return make_settings(
        database_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        smtp_from=FROM,
        public_base_url=BASE_URL,
        **overrides,
    )


@pytest.fixture
def settings(database_url: str, smtp: Inbox) -> Settings:
    return _smtp_settings(database_url, smtp.port)


def _run_jobs(settings: Settings, now: dt.datetime | None = None) -> tuple[dict[str, int], str]:
    engine = make_engine(settings.database_url)
    lines: list[str] = []
    try:
        counts = jobs.run(
            make_sessionmaker(engine), settings, now=now or utcnow(), report=lines.append
        )
    finally:
        engine.dispose()
    [line] = [x for x in lines if x.startswith("Notifications:")]
    return counts, line


# --------------------------------------------------------------------------
# What no mail may contain


def _decoded_views(raw: bytes) -> list[bytes]:
    """The raw mail, each part's decoded payload, and any base64 or quoted-printable
    run in it decoded: a marker hidden by a transfer encoding is still found."""
    views = [raw, quopri.decodestring(raw)]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    for part in parsed.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            views.append(payload)
    for run in re.findall(rb"[A-Za-z0-9+/=\r\n]{16,}", raw):
        compact = re.sub(rb"\s", b"", run)
        try:
            views.append(base64.b64decode(compact + b"=" * (-len(compact) % 4)))
        except (binascii.Error, ValueError):
            continue
    headers = "\n".join(f"{k}: {v}" for k, v in parsed.items())
    views.append(headers.encode())
    return views


def _leaks(mails: list[Received], secrets: list[str]) -> list[str]:
    found = []
    for mail in mails:
        views = [v.lower() for v in _decoded_views(mail.raw)]
        for secret in secrets:
            needle = secret.lower().encode()
            if any(needle in view for view in views):
                found.append(secret)
    return found


def _marker(field_name: str) -> str:
    return f"MRK{field_name.upper().replace('_', '')}{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------
# The whole path: report, overdue, identity request, retaliation


@dataclass
class People:
    ids: dict[str, int]
    mail: dict[str, str]


def _staff(db: Session, settings: Settings) -> tuple[People, int, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    plan = {
        # name: (roles, unit, email)
        "hanne": (("handler",), county.id, True),
        "rune": (("handler",), county.id, True),  # recuses after the report
        "ola": (("handler",), county.id, True),  # excluded by the reporter
        "hugo": (("handler",), county.id, False),  # no email: skipped, counted
        "nina": (("handler",), national.id, True),  # the level above
        "cora": (("custodian",), county.id, True),
        "kari": (("custodian",), national.id, True),
        "cato": (("custodian",), county.id, True),  # excluded by the reporter
        "aud": (("auditor", "admin"), county.id, True),  # never needed by a case
    }
    ids, addresses = {}, {}
    for name, (roles, unit_id, with_email) in plan.items():
        address = f"{name}@staff.example.org" if with_email else None
        user = accounts.create_user(
            db,
            settings,
            username=name,
            password="correct horse battery staple",
            roles=roles,
            unit_ids=[unit_id],
            display_name=name,
            email=address,
        )
        db.commit()
        ids[name] = user.id
        if address:
            addresses[name] = address
    return People(ids, addresses), national.id, county.id


def _kinds(mails: list[Received]) -> list[str]:
    """The kinds each mail announces, by its English lines."""
    english = {
        "new report": NoticeKind.NEW_CASE,
        "a deadline has passed": NoticeKind.OVERDUE,
        "asks to see the reporter's identity": NoticeKind.IDENTITY_REQUEST,
        "a report of retaliation": NoticeKind.RETALIATION,
    }
    found = []
    for mail in mails:
        text = email.message_from_bytes(mail.raw, policy=email.policy.default)
        body = text.get_body()
        assert body is not None
        content = body.get_content()
        found += [
            kind.value for phrase, kind in english.items() for _ in re.findall(phrase, content)
        ]
    return sorted(found)


def test_notices_reach_only_those_a_case_needs_and_carry_nothing_of_it(
    client: TestClient, db: Session, engine: Engine, settings: Settings, smtp: Inbox
) -> None:
    people, _national, county = _staff(db, settings)
    markers = {
        name: _marker(name)
        for name in (
            "description",
            "when",
            "where",
            "involved",
            "witnesses",
            "reported_before",
            "desired_outcome",
            "identity_name",
            "identity_contact",
            "file_name",
            "file_content",
            "reporter_message",
            "handler_message",
            "justification",
            "retaliation",
        )
    }
    reporter_address = f"{markers['identity_contact']}@reporter.example.org"
    submitted = client.post(
        "/api/v1/reports",
        json=report(
            county,
            description=markers["description"],
            when=markers["when"],
            where=markers["where"],
            involved=markers["involved"],
            witnesses=markers["witnesses"],
            reported_before=markers["reported_before"],
            desired_outcome=markers["desired_outcome"],
            identity={"name": markers["identity_name"], "contact": reporter_address},
            excluded_recipients=[people.ids["ola"], people.ids["cato"]],
        ),
    )
    assert submitted.status_code == 201, submitted.text
    case_code = submitted.json()["case_code"]
    # Sent from the reporter's request: nothing yet, only the outbox.
    assert smtp.mails == []
    db.rollback()
    queued = db.execute(select(Notice.recipient_id, Notice.kind, Notice.unit_id)).all()
    assert sorted(queued) == sorted(
        (people.ids[n], "new_case", county) for n in ("hanne", "rune", "hugo")
    )

    counts, line = _run_jobs(settings)
    assert counts["notifications"] == 2
    assert line == (
        "Notifications: sent 2 mails (2 notices); 1 skipped (no email), 0 kept for retry, "
        "0 given up."
    )
    first_round = list(smtp.mails)
    assert sorted(r for m in first_round for r in m.recipients) == sorted(
        [people.mail["hanne"], people.mail["rune"]]
    )
    assert _kinds(first_round) == ["new_case", "new_case"]

    reporter = reporter_login(client, case_code)
    uploaded = client.post(
        "/api/v1/reporter/case/files",
        headers=reporter,
        files=[("files", (f"{markers['file_name']}.txt", markers["file_content"].encode()))],
    )
    assert uploaded.status_code == 201, uploaded.text
    sent = client.post(
        "/api/v1/reporter/case/messages",
        json={"body": markers["reporter_message"]},
        headers=reporter,
    )
    assert sent.status_code == 201, sent.text

    hanne = login(client, "hanne")
    [case_id] = [c["id"] for c in client.get("/api/v1/cases", headers=hanne).json()["items"]]
    declare(client, hanne, case_id)
    recused = client.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": True, "reason": "Jeg kjenner en av de involverte."},
        headers=login(client, "rune"),
    )
    assert recused.status_code in (200, 201), recused.text
    answered = client.post(
        f"/api/v1/cases/{case_id}/messages",
        json={"body": markers["handler_message"]},
        headers=hanne,
    )
    assert answered.status_code == 201, answered.text
    asked = client.post(
        f"/api/v1/cases/{case_id}/identity-requests",
        json={"justification": markers["justification"]},
        headers=hanne,
    )
    assert asked.status_code == 201, asked.text
    retaliation = client.post(
        "/api/v1/reporter/case/retaliation", json={"body": markers["retaliation"]}, headers=reporter
    )
    assert retaliation.status_code == 201, retaliation.text
    # Overdue: the acknowledgement was due yesterday.
    today = utcnow().date()
    with make_sessionmaker(engine).begin() as session:
        session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(acknowledgement_due=today - dt.timedelta(days=1))
        )
    db.rollback()
    retaliation_id = db.scalar(select(Case.id).where(Case.linked_case_id == case_id))
    assert retaliation_id is not None

    counts, line = _run_jobs(settings)
    second_round = smtp.mails[len(first_round) :]
    by_person = {name: _kinds(smtp.to(address)) for name, address in people.mail.items()}
    by_person_now = {
        name: _kinds([m for m in second_round if address in m.recipients])
        for name, address in people.mail.items()
    }
    assert by_person_now == {
        "hanne": ["overdue", "retaliation"],
        "rune": [],  # recused: neither the deadline nor the retaliation case
        "ola": [],  # excluded by the reporter
        "nina": ["retaliation"],  # the level above receives retaliation cases
        "cora": ["identity_request"],
        "kari": ["identity_request"],
        "cato": [],  # excluded by the reporter
        "aud": [],
    }
    assert by_person["rune"] == ["new_case"]  # only from before recusing
    # One mail per person and run, several notices collapsed into it.
    assert len(smtp.to(people.mail["hanne"])) == 2
    assert line == (
        "Notifications: sent 4 mails (5 notices); 2 skipped (no email), 0 kept for retry, "
        "0 given up."
    )
    assert counts["notifications"] == 4

    everyone = {r for m in smtp.mails for r in m.recipients}
    assert everyone <= set(people.mail.values())
    assert reporter_address not in everyone
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Notice)) == 0

    tokens = [
        reporter["Authorization"].removeprefix("Bearer "),
        hanne["Authorization"].removeprefix("Bearer "),
    ]
    code_digits = re.sub(r"\D", "", case_code)
    secrets = [
        *markers.values(),
        case_code,
        code_digits,
        *(code_digits[i : i + 4] + code_digits[i + 4 : i + 8] for i in range(0, 12, 4)),
        case_id,
        retaliation_id,
        *tokens,
    ]
    assert _leaks(smtp.mails, secrets) == []
    # The scan itself finds a marker hidden by a transfer encoding.
    planted = Received(
        ["x@example.org"],
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(f"x {markers['description']} y".encode()),
    )
    assert _leaks([planted], [markers["description"]]) == [markers["description"]]

    mail = email.message_from_bytes(smtp.mails[0].raw, policy=email.policy.default)
    assert mail["From"] == FROM
    body = mail.get_body()
    assert body is not None
    content = body.get_content()
    assert "A case in unit Vestland needs you: new report." in content
    assert "Ei sak i partileddet Vestland treng deg: ny melding." in content
    assert "En sak i partileddet Vestland trenger deg: ny melding." in content
    assert f"{BASE_URL}/en/staff/login" in content
    assert f"{BASE_URL}/nb/staff/login" in content

    db.rollback()
    rows = db.execute(
        select(audit.ReporterAuditEvent.details).where(
            audit.ReporterAuditEvent.action == "notifications.delivered"
        )
    ).scalars()
    assert [_details(r) for r in rows] == [
        {
            "mails": 2,
            "notices": 2,
            "by_kind": {"new_case": 2},
            "skipped_no_email": 1,
            "failed": 0,
            "abandoned": 0,
        },
        {
            "mails": 4,
            "notices": 5,
            "by_kind": {"identity_request": 2, "overdue": 1, "retaliation": 2},
            "skipped_no_email": 2,
            "failed": 0,
            "abandoned": 0,
        },
    ]
    assert audit.verify(db).ok


def _details(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# --------------------------------------------------------------------------
# A mail server that is down, and two runs at once


def test_a_mail_server_that_is_down_keeps_the_notice_for_a_later_run(
    database_url: str, db: Session, smtp: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    down = _smtp_settings(database_url, _free_port())
    unit = make_unit(db, "Vestland")
    hanne = make_user(db, down, "hanne", units=(unit.id,))
    accounts.set_user_email(db, hanne.id, email="hanne@staff.example.org")
    db.commit()
    marker = _marker("description")
    engine = make_engine(down.database_url)
    maker = make_sessionmaker(engine)
    try:
        with maker.begin() as session:
            reports.submit_report(
                session,
                down,
                unit_id=unit.id,
                category="harassment",
                report={"description": marker},
                identity=None,
            )
        now = utcnow()
        with caplog.at_level(logging.WARNING, logger="varsling.notifications"):
            counts, line = _run_jobs(down, now)
        assert counts["notifications"] == 0
        assert "1 kept for retry" in line
        [logged] = [r.getMessage() for r in caplog.records]
        assert logged == (
            f"Notification mail to user {hanne.id} failed (ConnectionRefusedError); "
            "kept for a later run."
        )
        assert marker not in caplog.text
        db.rollback()
        [kept] = db.execute(select(Notice)).scalars()
        assert (kept.attempts, kept.claim) == (1, None)

        # Not before its pause is over, and then to the server that is back.
        up = _smtp_settings(database_url, smtp.port)
        _counts, line = _run_jobs(up, now + dt.timedelta(minutes=1))
        assert line.startswith("Notifications: sent 0 mails")
        assert smtp.mails == []
        counts, _line = _run_jobs(up, now + dt.timedelta(minutes=6))
        assert counts["notifications"] == 1
        assert [m.recipients for m in smtp.mails] == [["hanne@staff.example.org"]]
        assert _leaks(smtp.mails, [marker]) == []
    finally:
        engine.dispose()


def test_a_notice_that_keeps_failing_is_given_up_after_a_bounded_number_of_tries(
    database_url: str, db: Session
) -> None:
    down = _smtp_settings(database_url, _free_port())
    unit = make_unit(db, "Vestland")
    hanne = make_user(db, down, "hanne", units=(unit.id,))
    accounts.set_user_email(db, hanne.id, email="hanne@staff.example.org")
    notifications.enqueue(
        db,
        down,
        kind=NoticeKind.OVERDUE,
        unit_id=unit.id,
        recipients=[hanne],
        today=dt.date.today(),
    )
    db.commit()
    engine = make_engine(down.database_url)
    maker = make_sessionmaker(engine)
    now = utcnow()
    try:
        outcomes = []
        for _ in range(notifications.MAX_ATTEMPTS):
            now += dt.timedelta(days=1)
            done = notifications.deliver(maker, down, now=now)
            outcomes.append((done.failed, done.abandoned))
    finally:
        engine.dispose()
    assert outcomes == [(1, 0)] * (notifications.MAX_ATTEMPTS - 1) + [(0, 1)]
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Notice)) == 0


def test_two_runs_at_once_send_each_notice_once(
    database_url: str, db: Session, settings: Settings, smtp: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = make_unit(db, "Vestland")
    staff = []
    for n in range(12):
        user = make_user(db, settings, f"handler{n}", units=(unit.id,))
        accounts.set_user_email(db, user.id, email=f"handler{n}@staff.example.org")
        staff.append(user)
    for kind in NoticeKind:
        for _ in range(5):
            notifications.enqueue(
                db, settings, kind=kind, unit_id=unit.id, recipients=staff, today=dt.date.today()
            )
    db.commit()
    # Small batches, so the two runs take turns claiming.
    monkeypatch.setattr(notifications, "BATCH", 7)
    results: list[notifications.Delivery] = []
    engines = [make_engine(settings.database_url) for _ in range(2)]
    start = threading.Barrier(2)

    def run(engine: Engine) -> None:
        start.wait()
        results.append(notifications.deliver(make_sessionmaker(engine), settings, now=utcnow()))

    try:
        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for engine in engines:
            engine.dispose()
    assert len(results) == 2
    assert sum(r.notices for r in results) == 12 * 4 * 5
    assert sum(len(_kinds([m])) for m in smtp.mails) == 12 * 4 * 5
    for user in staff:
        assert sorted(_kinds(smtp.to(user.email or ""))) == sorted(
            k.value for k in NoticeKind for _ in range(5)
        )
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Notice)) == 0


# --------------------------------------------------------------------------
# Off, settings, addresses, and the structure that keeps reporters out


def test_nothing_is_queued_while_notifications_are_off(
    database_url: str, db: Session, smtp: Inbox
) -> None:
    off = make_settings(database_url)
    assert not off.notifications_enabled
    unit = make_unit(db, "Vestland")
    make_user(db, off, "hanne", units=(unit.id,))
    reports.submit_report(
        db, off, unit_id=unit.id, category="harassment", report={"description": "x"}, identity=None
    )
    db.commit()
    assert db.scalar(select(func.count()).select_from(Notice)) == 0
    counts, _line = _run_jobs(off)
    assert counts["notifications"] == 0
    assert smtp.mails == []


def test_smtp_settings_are_checked(database_url: str) -> None:
    with pytest.raises(ConfigError, match="VARSLING_SMTP_FROM"):
        make_settings(database_url, smtp_host="mail.example.org").check()
    with pytest.raises(ConfigError, match="VARSLING_SMTP_USERNAME"):
        make_settings(
            database_url, smtp_host="mail.example.org", smtp_from=FROM, smtp_password="pw"
        ).check()
    production = make_settings(
        database_url, environment="production", argon2_memory_kib=65536, argon2_time_cost=2
    )
    production_plain = {
        **production.model_dump(),
        "smtp_host": "mail.example.org",
        "smtp_from": FROM,
        "smtp_tls": "none",
    }
    with pytest.raises(ConfigError, match="VARSLING_SMTP_ALLOW_PLAINTEXT"):
        Settings(**production_plain).check()
    Settings(**{**production_plain, "smtp_allow_plaintext": True}).check()
    assert make_settings(database_url, smtp_tls="tls").smtp_port_or_default == 465
    assert make_settings(database_url).smtp_port_or_default == 587
    secret = make_settings(
        database_url,
        smtp_host="h",
        smtp_from=FROM,
        smtp_username="u",
        smtp_password="hunter2hunter2",
    )
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret.model_dump())


def test_email_addresses_are_checked_set_cleared_and_audited_without_the_address(
    db: Session, settings: Settings
) -> None:
    unit = make_unit(db, "Vestland")
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    for bad in (
        "no-at-sign",
        "two@@example.org",
        "a@b",
        "nina@example.org, eve@example.org",
        "nina@example.org\r\nBcc: eve@example.org",
        "<nina@example.org>",
        "x" * 250 + "@example.org",
    ):
        with pytest.raises(accounts.InvalidInput) as refused:
            accounts.set_user_email(db, hanne.id, email=bad)
        assert refused.value.reason == "email_invalid"
    accounts.set_user_email(db, hanne.id, email=" hanne@staff.example.org ")
    db.commit()
    assert db.get(User, hanne.id).email == "hanne@staff.example.org"  # type: ignore[union-attr]
    with pytest.raises(accounts.Conflict):
        accounts.set_user_email(db, hanne.id, email="hanne@staff.example.org")
    accounts.set_user_email(db, hanne.id, email=None)
    db.commit()
    assert db.get(User, hanne.id).email is None  # type: ignore[union-attr]
    events = db.execute(
        select(audit.AuditEvent.details).where(audit.AuditEvent.action == "user.email_set")
    ).scalars()
    details = [_details(e) for e in events]
    assert details == [
        {"user_id": hanne.id, "had_email": False, "email_set": True},
        {"user_id": hanne.id, "had_email": True, "email_set": False},
    ]
    assert "staff.example.org" not in str(details)


def test_setup_warns_about_handlers_and_custodians_without_email(
    db: Session, settings: Settings
) -> None:
    unit = make_unit(db, "Vestland")
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    cora = make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))
    make_user(db, settings, "aud", roles=("auditor",))
    accounts.set_user_email(db, cora.id, email="cora@staff.example.org")
    db.commit()
    key = settings.signing_public_key
    on = setup_warnings(db, verifying_key=key, notifications=True)
    assert [a.username for a in on.accounts_without_email] == [hanne.username]
    assert setup_warnings(db, verifying_key=key, notifications=False).accounts_without_email == []


def test_only_staff_accounts_have_an_address_and_only_they_are_notified() -> None:
    """Structural: reporters have no account, no table but `users` holds an address,
    and a notice can only name a user."""
    with_address = sorted(
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if "mail" in column.name or "address" in column.name or "contact" in column.name
    )
    assert with_address == ["users.email"]
    [recipient] = Notice.__table__.c.recipient_id.foreign_keys
    assert recipient.target_fullname == "users.id"
    assert {c.name for c in Notice.__table__.columns} == {
        "id",
        "recipient_id",
        "kind",
        "unit_id",
        "created_on",
        "attempts",
        "next_attempt_at",
        "claim",
        "claimed_until",
    }
