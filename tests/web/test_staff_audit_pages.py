"""The auditor's and the custodian's pages: the same services as the API, the same
refusals, typed text kept on errors, nothing changed by a forged form."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.factories import declare, login, make_unit, make_user, report
from tests.staff_web import form_token, logged_in
from varsling import audit_chain
from varsling.app import create_app
from varsling.audit import AuditCheckpoint, AuditEvent
from varsling.cases.models import IdentityRequest
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD

JUSTIFICATION = "We must interview the reporter in person about the meeting"
NAME = "Kari Nordmann"


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def people(db: Session, settings: Settings) -> dict[str, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    return {
        "national": national.id,
        "county": county.id,
        "other": other.id,
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "cora": make_user(db, settings, "cora", roles=("custodian",), units=(national.id,)).id,
        "cita": make_user(db, settings, "cita", roles=("custodian",), units=(other.id,)).id,
        "audun": make_user(db, settings, "audun", roles=("auditor",)).id,
    }


def _events(db: Session, action: str) -> int:
    db.rollback()
    return db.scalar(select(func.count()).where(AuditEvent.action == action)) or 0


# --------------------------------------------------------------------------
# The audit trail


def test_the_trail_page_lists_filters_and_pages_like_the_api(
    app_client: TestClient, db: Session, people: dict[str, int]
) -> None:
    auditor = logged_in(app_client, "audun")
    page = auditor.get("/nn/staff/audit", params={"limit": "3"})
    assert page.status_code == 200
    assert '<th scope="col">' in page.text
    assert "<caption" in page.text
    seqs = [int(s) for s in re.findall(r'<th scope="row">(\d+)</th>', page.text)]
    assert len(seqs) == 3
    assert seqs == sorted(seqs, reverse=True)
    older = re.search(r'href="([^"]*before=\d+[^"]*)"', page.text)
    assert older is not None
    following = auditor.get(html.unescape(older.group(1)))
    next_seqs = [int(s) for s in re.findall(r'<th scope="row">(\d+)</th>', following.text)]
    assert next_seqs[0] == seqs[-1] - 1
    # A filter: only that action.
    filtered = auditor.get("/en/staff/audit", params={"action": "unit.created"})
    assert filtered.status_code == 200
    actions = re.findall(r'<td class="mono">([a-z_.]+)</td>', filtered.text)
    assert actions
    assert set(actions) - {"system", "user:1"} <= {"unit.created"}
    assert _events(db, "audit.listed") == 3


@pytest.mark.parametrize("lang", ["nb", "nn", "en"])
def test_an_invalid_filter_says_why_at_its_field_and_keeps_what_was_typed(
    app_client: TestClient, db: Session, people: dict[str, int], lang: str
) -> None:
    auditor = logged_in(app_client, "audun", lang=lang)
    page = auditor.get(
        f"/{lang}/staff/audit", params={"case_id": "not-a-case", "action": "case.read"}
    )
    assert page.status_code == 422
    assert 'class="error-summary"' in page.text
    assert 'href="#filter-case"' in page.text
    assert 'value="not-a-case"' in page.text
    assert 'value="case.read"' in page.text
    assert 'aria-invalid="true"' in page.text
    assert _events(db, "audit.listed") == 0


def test_reporter_events_on_the_page_show_the_day_only(
    app_client: TestClient, db: Session, people: dict[str, int]
) -> None:
    app_client.post("/api/v1/reports", json=report(people["county"]))
    auditor = logged_in(app_client, "audun")
    page = auditor.get("/en/staff/audit", params={"chain": "reporter"})
    assert page.status_code == 200
    # Today's reporter events (the report just sent) are not listed.
    assert "case.submitted" not in page.text
    assert "No events match the filter." in page.text


def test_a_checkpoint_from_the_page_is_signed_stored_and_shown(
    app_client: TestClient, db: Session, settings: Settings, people: dict[str, int]
) -> None:
    auditor = logged_in(app_client, "audun")
    page = auditor.get("/en/staff/audit")
    answer = auditor.post(
        "/en/staff/audit/checkpoint", data={CSRF_FIELD: form_token(_form_after(page.text))}
    )
    assert answer.status_code == 200, answer.text
    shown = re.search(r'<textarea id="checkpoint-text"[^>]*>([^<]+)</textarea>', answer.text)
    assert shown is not None
    checkpoint = audit_chain.Checkpoint.from_json(json.loads(html.unescape(shown.group(1))))
    assert checkpoint.signature_valid(settings.signing_public_key)
    db.rollback()
    assert db.scalar(select(func.count()).select_from(AuditCheckpoint)) == 1


def _form_after(page: str, action: str = "/staff/audit/checkpoint") -> str:
    """The part of the page from the form posting to `action` on (its token comes first)."""
    return page[page.index(action) :]


def test_an_export_from_the_page_verifies_offline(
    app_client: TestClient, db: Session, settings: Settings, people: dict[str, int]
) -> None:
    auditor = logged_in(app_client, "audun")
    page = auditor.get("/en/staff/audit")
    answer = auditor.post(
        "/en/staff/audit/export",
        data={CSRF_FIELD: form_token(_form_after(page.text, "/staff/audit/export"))},
    )
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert "no-store" in answer.headers["cache-control"]
    result = audit_chain.verify_export(answer.text.splitlines(), settings.signing_public_key)
    assert result.ok, result.reason
    assert _events(db, "audit.exported") == 1


@pytest.mark.parametrize("path", ["/en/staff/audit/checkpoint", "/en/staff/audit/export"])
def test_a_forged_form_token_signs_nothing(
    app_client: TestClient, db: Session, people: dict[str, int], path: str
) -> None:
    auditor = logged_in(app_client, "audun")
    answer = auditor.post(path, data={CSRF_FIELD: "forged"})
    assert answer.status_code == 400
    assert "The form could not be sent" in answer.text
    db.rollback()
    assert db.scalar(select(func.count()).select_from(AuditCheckpoint)) == 0
    assert _events(db, "audit.exported") == 0
    assert _events(db, "audit.checkpoint_signed") == 0
    assert _events(db, "audit.listed") == 0


def test_only_auditors_open_the_auditor_pages(
    app_client: TestClient, people: dict[str, int]
) -> None:
    for path in ("/nb/staff/audit", "/nb/staff/statistics"):
        assert app_client.get(path, follow_redirects=False).status_code == 303
    handler = logged_in(app_client, "hanne")
    for path in ("/nb/staff/audit", "/nb/staff/statistics"):
        refused = handler.get(path)
        assert refused.status_code == 403
        assert "<h1>" in refused.text


# --------------------------------------------------------------------------
# Statistics


def test_the_statistics_page_says_hidden_in_words_never_a_small_number(
    app_client: TestClient, db: Session, people: dict[str, int]
) -> None:
    for _ in range(2):
        app_client.post("/api/v1/reports", json=report(people["county"]))
    auditor = logged_in(app_client, "audun", lang="nb")
    page = auditor.get("/nb/staff/statistics")
    assert page.status_code == 200
    cells = re.findall(r"<td>(.*?)</td>", page.text, flags=re.S)
    assert cells
    for cell in cells:
        text = re.sub(r"<[^>]+>", "", cell).strip()
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        assert all(n >= 5 for n in numbers), text
    assert "skjult" in page.text
    assert _events(db, "statistics.read") == 1


# --------------------------------------------------------------------------
# Identity requests


@pytest.fixture
def asked(app_client: TestClient, people: dict[str, int]) -> int:
    """A report with an identity, opened by its handler, who asks to see the identity."""
    app_client.post(
        "/api/v1/reports",
        json=report(people["county"], identity={"name": NAME, "contact": "kari@example.org"}),
    )
    handler = login(app_client, "hanne")
    [case_id] = [c["id"] for c in app_client.get("/api/v1/cases", headers=handler).json()["items"]]
    declare(app_client, handler, case_id)
    made = app_client.post(
        f"/api/v1/cases/{case_id}/identity-requests",
        json={"justification": JUSTIFICATION},
        headers=handler,
    )
    assert made.status_code == 201, made.text
    request_id: int = made.json()["id"]
    app_client.cookies.clear()
    return request_id


def _decide(client: TestClient, request_id: int, lang: str = "en", **data: str) -> Any:
    page = client.get(f"/{lang}/staff/identity-requests")
    token = form_token(page.text)
    return client.post(
        f"/{lang}/staff/identity-requests/{request_id}/decision",
        data={CSRF_FIELD: token, **data},
        follow_redirects=False,
    )


def test_a_custodian_sees_the_justification_and_approves_with_a_reason(
    app_client: TestClient, db: Session, people: dict[str, int], asked: int
) -> None:
    custodian = logged_in(app_client, "cora")
    page = custodian.get("/en/staff/identity-requests")
    assert page.status_code == 200
    assert JUSTIFICATION in page.text
    assert NAME not in page.text
    answer = _decide(custodian, asked, decision="approve", reason="Needed for the interview")
    assert answer.status_code == 303
    after = custodian.get(answer.headers["location"])
    assert f"Request {asked} is approved." in after.text
    assert "Needed for the interview" in after.text  # the earlier decisions
    db.rollback()
    stored = db.get(IdentityRequest, asked)
    assert stored is not None
    assert stored.status == "approved"


@pytest.mark.parametrize("lang", ["nb", "nn", "en"])
def test_a_decision_without_a_reason_changes_nothing_and_keeps_the_choice(
    app_client: TestClient, db: Session, people: dict[str, int], asked: int, lang: str
) -> None:
    custodian = logged_in(app_client, "cora", lang=lang)
    answer = _decide(custodian, asked, lang=lang, decision="refuse", reason="   ")
    assert answer.status_code == 422
    assert f'href="#reason-{asked}"' in answer.text
    assert re.search(rf'id="decision-{asked}-refuse"[^>]*checked', answer.text)
    db.rollback()
    stored = db.get(IdentityRequest, asked)
    assert stored is not None
    assert stored.status == "pending"


def test_a_forged_decision_form_changes_nothing_and_keeps_the_reason(
    app_client: TestClient, db: Session, people: dict[str, int], asked: int
) -> None:
    custodian = logged_in(app_client, "cora")
    answer = custodian.post(
        f"/en/staff/identity-requests/{asked}/decision",
        data={CSRF_FIELD: "forged", "decision": "approve", "reason": "Typed with care"},
    )
    assert answer.status_code == 400
    assert "Typed with care" in answer.text
    db.rollback()
    stored = db.get(IdentityRequest, asked)
    assert stored is not None
    assert stored.status == "pending"


def test_a_custodian_without_the_identity_key_gets_404_as_in_the_api(
    app_client: TestClient, db: Session, people: dict[str, int], asked: int
) -> None:
    outsider = logged_in(app_client, "cita")
    listing = outsider.get("/en/staff/identity-requests").text
    assert f"Request {asked}" not in listing
    assert "No requests are waiting." in listing
    answer = _decide(outsider, asked, decision="approve", reason="I want to know")
    assert answer.status_code == 404
    assert "<h1>" in answer.text
    db.rollback()
    stored = db.get(IdentityRequest, asked)
    assert stored is not None
    assert stored.status == "pending"
    # The refusal is audited, as for the API.
    assert _events(db, "identity.decision_refused") == 1
