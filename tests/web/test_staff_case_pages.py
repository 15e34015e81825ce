"""The case handler's pages: case list, declaration, case page, its forms and downloads.

Each runs on SQLite and PostgreSQL. The attackers: a handler of another unit
and an administrator (who must never see content), a handler who has not
declared, a cross-site form (a forged form token), and a database writer who
removes a message behind the service's back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import login, make_unit, make_user, report, reporter_login
from tests.staff_web import form_token, logged_in
from varsling.app import create_app
from varsling.audit import AuditEvent
from varsling.cases import service
from varsling.cases.models import CaseDeclaration, CaseEntry
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD

DESCRIPTION = "The treasurer shouted at a volunteer after the meeting."
INVOLVED = "The treasurer"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    made = create_app(settings)
    yield made
    made.state.engine.dispose()


def browser(app: Any) -> TestClient:
    return TestClient(app)


@pytest.fixture
def world(app: Any, db: Session, settings: Settings) -> dict[str, Any]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    people = {
        "hanne": make_user(db, settings, "hanne", units=(county.id,)).id,
        "ulrik": make_user(db, settings, "ulrik", units=(county.id,)).id,
        "rita": make_user(db, settings, "rita", units=(other.id,)).id,
        "adam": make_user(db, settings, "adam", roles=("admin", "auditor")).id,
    }
    with TestClient(app) as api:
        sent = api.post(
            "/api/v1/reports",
            json=report(
                county.id,
                description=DESCRIPTION,
                involved=INVOLVED,
                identity={"name": "Kari Nordmann"},
            ),
        )
        assert sent.status_code == 201, sent.text
        code = sent.json()["case_code"]
        reporter = reporter_login(api, code)
        uploaded = api.post(
            "/api/v1/reporter/case/files",
            files=[("files", ("minutes.txt", b"The minutes of the meeting.", "text/plain"))],
            headers=reporter,
        )
        assert uploaded.status_code == 201, uploaded.text
        [item] = api.get("/api/v1/cases", headers=login(api, "hanne")).json()["items"]
    return {
        "code": code,
        "case_id": item["id"],
        "file_id": uploaded.json()["files"][0]["id"],
        "people": people,
        "county": county.id,
    }


def staff(app: Any, username: str, lang: str = "en") -> TestClient:
    client = TestClient(app)
    client.__enter__()
    return logged_in(client, username, lang=lang)


@pytest.fixture
def clients(app: Any) -> Iterator[list[TestClient]]:
    made: list[TestClient] = []
    yield made
    for client in made:
        client.__exit__(None, None, None)


def open_as(app: Any, clients: list[TestClient], username: str, lang: str = "en") -> TestClient:
    client = staff(app, username, lang)
    clients.append(client)
    return client


def post_form(client: TestClient, page_url: str, action: str, data: dict[str, str]) -> Any:
    """Open the page, then send one of its forms with the page's form token."""
    page = client.get(page_url)
    return client.post(
        action, data={CSRF_FIELD: form_token(page.text), **data}, follow_redirects=False
    )


def entries(db: Session, case_id: str, kind: str) -> int:
    db.rollback()
    return int(
        db.scalar(
            select(func.count())
            .select_from(CaseEntry)
            .where(CaseEntry.case_id == case_id, CaseEntry.kind == kind)
        )
        or 0
    )


def actions(db: Session, case_id: str) -> list[str]:
    db.rollback()
    return list(
        db.execute(
            select(AuditEvent.action).where(AuditEvent.case_id == case_id).order_by(AuditEvent.seq)
        ).scalars()
    )


def declare_no_conflict(client: TestClient, case_url: str) -> Any:
    return post_form(
        client, case_url, f"{case_url}/declaration", {"conflict": "no", "risk": "medium"}
    )


# --------------------------------------------------------------------------


def test_a_handlers_full_flow(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session
) -> None:
    hanne = open_as(app, clients, "hanne")
    case_id = world["case_id"]
    case_url = f"/en/staff/cases/{case_id}"

    listing = hanne.get("/en/staff/cases")
    assert listing.status_code == 200
    assert f'href="{case_url}"' in listing.text
    assert "Acknowledgement due by" in listing.text
    assert "declare first" in listing.text

    # Before declaring: only the declaration form, with who was named as involved.
    before = hanne.get(case_url)
    assert before.status_code == 409
    assert 'action="' + case_url + '/declaration"' in before.text
    assert INVOLVED in before.text
    assert DESCRIPTION not in before.text
    assert "case.conflict_check_read" in actions(db, case_id)

    declared = declare_no_conflict(hanne, case_url)
    assert declared.status_code == 303
    assert declared.headers["location"] == f"{case_url}?done=declared"
    page = hanne.get(declared.headers["location"])
    assert page.status_code == 200
    assert DESCRIPTION in page.text
    assert "Kari Nordmann" not in page.text
    assert "case-done" in page.text
    assert "minutes.txt" in page.text
    for sub_page in ("upload", "grants", "identity", "hold", "access"):
        assert f'href="{case_url}/{sub_page}"' in page.text

    reply = "Thank you. Who else was there?"
    sent = post_form(hanne, case_url, f"{case_url}/messages", {"body": reply})
    assert sent.status_code == 303
    assert sent.headers["location"] == f"{case_url}?done=message"
    note = "Talk to the chair before the next meeting."
    saved = post_form(hanne, case_url, f"{case_url}/notes", {"body": note})
    assert saved.headers["location"] == f"{case_url}?done=note"
    for step in ("acknowledged", "investigating"):
        moved = post_form(hanne, case_url, f"{case_url}/status", {"status": step})
        assert moved.status_code == 303, moved.text
    outcome = "The treasurer has been given a warning."
    concluded = post_form(
        hanne, case_url, f"{case_url}/status", {"status": "concluded", "outcome": outcome}
    )
    assert concluded.headers["location"] == f"{case_url}?done=status"
    page = hanne.get(concluded.headers["location"])
    assert reply in page.text
    assert note in page.text
    assert outcome in page.text
    assert "Concluded" in page.text

    download = hanne.get(f"{case_url}/files/{world['file_id']}")
    assert download.status_code == 200
    assert download.content == b"The minutes of the meeting."
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in download.headers["content-security-policy"]
    assert download.headers["content-type"] == "application/octet-stream"

    done = actions(db, case_id)
    for action in (
        "case.declared",
        "case.read",
        "case.message_sent",
        "case.note_added",
        "case.status_changed",
        "case.file_downloaded",
    ):
        assert action in done, action

    # The reporter's side: the reply, the status and the outcome; never the note.
    with TestClient(app) as api:
        seen = api.get("/api/v1/reporter/case", headers=reporter_login(api, world["code"]))
    assert seen.status_code == 200
    assert seen.json()["status"] == "concluded"
    assert seen.json()["outcome"] == outcome
    assert [m["body"] for m in seen.json()["messages"]] == [reply]
    assert note not in seen.text


@pytest.mark.parametrize("username", ["rita", "adam"])
def test_a_handler_of_another_unit_and_an_admin_get_the_404_page(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session, username: str
) -> None:
    client = open_as(app, clients, username)
    case_url = f"/en/staff/cases/{world['case_id']}"

    listing = client.get("/en/staff/cases")
    assert listing.status_code == 200
    assert world["case_id"] not in listing.text
    assert "You have no cases" in listing.text
    token = form_token(listing.text)
    for method, url, data in (
        ("GET", case_url, None),
        ("GET", f"{case_url}/files/{world['file_id']}", None),
        ("POST", f"{case_url}/declaration", {"conflict": "no", "risk": "low"}),
        ("POST", f"{case_url}/messages", {"body": "hello"}),
        ("POST", f"{case_url}/notes", {"body": "hello"}),
        ("POST", f"{case_url}/status", {"status": "acknowledged"}),
    ):
        answer = client.request(method, url, data={CSRF_FIELD: token, **data} if data else None)
        assert answer.status_code == 404, (method, url)
        assert answer.headers["content-type"].startswith("text/html")
        assert "Not found" in answer.text
        assert DESCRIPTION not in answer.text
        assert INVOLVED not in answer.text
    assert entries(db, world["case_id"], "handler_message") == 0
    db.rollback()
    assert db.scalar(select(func.count()).select_from(CaseDeclaration)) == 0


def test_an_undeclared_handler_sees_only_the_declaration_form(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session
) -> None:
    ulrik = open_as(app, clients, "ulrik")
    case_url = f"/en/staff/cases/{world['case_id']}"
    page = ulrik.get(case_url)
    assert page.status_code == 409
    assert DESCRIPTION not in page.text
    assert "minutes.txt" not in page.text
    # Every other form and the download answer the same way, and change nothing.
    for url, data in (
        (f"{case_url}/messages", {"body": "hello"}),
        (f"{case_url}/notes", {"body": "hello"}),
        (f"{case_url}/status", {"status": "acknowledged"}),
    ):
        answer = ulrik.post(url, data={CSRF_FIELD: form_token(page.text), **data})
        assert answer.status_code == 409, url
        assert 'action="' + case_url + '/declaration"' in answer.text
        assert DESCRIPTION not in answer.text
    download = ulrik.get(f"{case_url}/files/{world['file_id']}")
    assert download.status_code == 409
    assert b"The minutes" not in download.content
    assert entries(db, world["case_id"], "handler_message") == 0
    assert entries(db, world["case_id"], "note") == 0
    assert "case.access_refused" in actions(db, world["case_id"])


def test_a_conflict_steps_the_handler_aside_and_says_so(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session
) -> None:
    ulrik = open_as(app, clients, "ulrik")
    case_url = f"/en/staff/cases/{world['case_id']}"
    answer = post_form(
        ulrik,
        case_url,
        f"{case_url}/declaration",
        {"conflict": "yes", "reason": "The treasurer is my brother."},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/en/staff/cases?done=recused"
    page = ulrik.get(answer.headers["location"])
    assert "You have stepped aside from the case" in page.text
    assert world["case_id"] not in page.text
    assert ulrik.get(case_url).status_code == 404
    assert "case.recused" in actions(db, world["case_id"])


def test_a_forged_form_token_changes_nothing_and_keeps_the_text(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session
) -> None:
    case_url = f"/en/staff/cases/{world['case_id']}"
    ulrik = open_as(app, clients, "ulrik")
    forged = ulrik.post(
        f"{case_url}/declaration",
        data={CSRF_FIELD: "forged", "conflict": "yes", "reason": "My brother is involved."},
    )
    assert forged.status_code == 400
    assert "form-token-notice" in forged.text
    assert "My brother is involved." in forged.text
    db.rollback()
    assert db.scalar(select(func.count()).select_from(CaseDeclaration)) == 0

    hanne = open_as(app, clients, "hanne")
    declare_no_conflict(hanne, case_url)
    # A token made for another browser (ulrik's) is as good as forged.
    other_token = form_token(ulrik.get("/en/staff/cases").text)
    for url, data, kept in (
        (f"{case_url}/messages", {"body": "Sent from another site"}, "Sent from another site"),
        (f"{case_url}/notes", {"body": "A note from elsewhere"}, "A note from elsewhere"),
        (f"{case_url}/status", {"status": "acknowledged"}, None),
    ):
        answer = hanne.post(url, data={CSRF_FIELD: other_token, **data})
        assert answer.status_code == 400, url
        assert "form-token-notice" in answer.text
        if kept:
            assert kept in answer.text
    assert entries(db, world["case_id"], "handler_message") == 0
    assert entries(db, world["case_id"], "note") == 0
    with TestClient(app) as api:
        seen = api.get("/api/v1/reporter/case", headers=reporter_login(api, world["code"]))
    assert seen.json()["status"] == "received"


def test_bad_input_keeps_the_text_and_changes_nothing(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session
) -> None:
    case_url = f"/en/staff/cases/{world['case_id']}"
    hanne = open_as(app, clients, "hanne")

    no_risk = post_form(hanne, case_url, f"{case_url}/declaration", {"conflict": "no"})
    assert no_risk.status_code == 422
    assert 'href="#risk-low"' in no_risk.text
    no_reason = post_form(
        hanne, case_url, f"{case_url}/declaration", {"conflict": "yes", "reason": "  "}
    )
    assert no_reason.status_code == 422
    assert 'href="#conflict-reason"' in no_reason.text
    db.rollback()
    assert db.scalar(select(func.count()).select_from(CaseDeclaration)) == 0

    declare_no_conflict(hanne, case_url)
    empty = post_form(hanne, case_url, f"{case_url}/messages", {"body": "   "})
    assert empty.status_code == 422
    assert 'href="#message-body"' in empty.text
    assert 'aria-invalid="true"' in empty.text
    long_note = "x" * 20_001
    too_long = post_form(hanne, case_url, f"{case_url}/notes", {"body": long_note})
    assert too_long.status_code == 422
    assert long_note in too_long.text
    assert "longer than 20,000 characters" in too_long.text

    for step in ("acknowledged", "investigating"):
        post_form(hanne, case_url, f"{case_url}/status", {"status": step})
    draft = "Half a conclusion"
    # A step that is not the next one (another window moved the case on): 409, text kept.
    skipped = post_form(
        hanne, case_url, f"{case_url}/status", {"status": "closed", "outcome": draft}
    )
    assert skipped.status_code == 409
    assert draft in skipped.text
    assert 'href="#status-step"' in skipped.text
    no_outcome = post_form(hanne, case_url, f"{case_url}/status", {"status": "concluded"})
    assert no_outcome.status_code == 422
    assert 'href="#outcome"' in no_outcome.text
    assert entries(db, world["case_id"], "handler_message") == 0
    assert entries(db, world["case_id"], "note") == 0
    assert entries(db, world["case_id"], "outcome") == 0
    with TestClient(app) as api:
        seen = api.get("/api/v1/reporter/case", headers=reporter_login(api, world["code"]))
    assert seen.json()["status"] == "investigating"


def test_the_case_list_filters_and_pages_with_the_service(
    app: Any,
    clients: list[TestClient],
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TestClient(app) as api:
        for category in ("discrimination", "abuse_of_power"):
            sent = api.post("/api/v1/reports", json=report(world["county"], category=category))
            assert sent.status_code == 201
    hanne = open_as(app, clients, "hanne")
    everything = hanne.get("/en/staff/cases")
    assert everything.text.count('class="case-list__item') == 3
    assert "3 cases in all; 3 on this page." in everything.text

    only = hanne.get("/en/staff/cases", params={"category": "discrimination"})
    assert only.text.count('class="case-list__item') == 1
    assert "1 case in all; 1 on this page." in only.text
    assert '<option value="discrimination" selected>' in only.text

    wrong = hanne.get("/en/staff/cases", params={"status": "open", "category": "discrimination"})
    assert wrong.status_code == 422
    assert 'href="#filter-status"' in wrong.text
    assert '<option value="discrimination" selected>' in wrong.text  # the rest is kept
    assert 'class="case-list__item' not in wrong.text

    monkeypatch.setattr(service, "PAGE_SIZE", 2)
    first = hanne.get("/en/staff/cases")
    assert first.text.count('class="case-list__item') == 2
    assert "3 cases in all; 2 on this page." in first.text
    match = re.search(r'href="(/en/staff/cases\?after=[^"]+)">Next page', first.text)
    assert match is not None
    second = hanne.get(match.group(1).replace("&amp;", "&"))
    assert second.text.count('class="case-list__item') == 1
    assert "3 cases in all; 1 on this page." in second.text
    assert "Next page" not in second.text
    assert 'href="/en/staff/cases">First page' in second.text


def test_the_integrity_warning_shows_when_a_message_was_removed(
    app: Any, clients: list[TestClient], world: dict[str, Any], db: Session
) -> None:
    case_url = f"/en/staff/cases/{world['case_id']}"
    hanne = open_as(app, clients, "hanne")
    declare_no_conflict(hanne, case_url)
    post_form(hanne, case_url, f"{case_url}/messages", {"body": "First reply."})
    assert 'role="alert"' not in hanne.get(case_url).text
    db.execute(
        delete(CaseEntry).where(
            CaseEntry.case_id == world["case_id"], CaseEntry.kind == "handler_message"
        )
    )
    db.commit()
    page = hanne.get(case_url)
    assert page.status_code == 200
    assert 'role="alert"' in page.text
    assert "may have been changed by someone outside the service" in page.text


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("nb", ("Saker", "Mottatt", "Frist for å bekrefte mottak", "sak i alt; 1 på denne siden")),
        ("nn", ("Saker", "Motteke", "Frist for å stadfeste mottak", "sak i alt; 1 på denne sida")),
    ],
)
def test_the_pages_speak_bokmal_and_nynorsk(
    app: Any,
    clients: list[TestClient],
    world: dict[str, Any],
    lang: str,
    words: tuple[str, ...],
) -> None:
    hanne = open_as(app, clients, "hanne", lang=lang)
    listing = hanne.get(f"/{lang}/staff/cases")
    for word in words:
        assert word in listing.text, word
    declaration = hanne.get(f"/{lang}/staff/cases/{world['case_id']}")
    assert f'<html lang="{lang}">' in declaration.text
    assert "conflict of interest" not in declaration.text
