"""Following up a report: case-code login, the case page, replies, files, retaliation, logout."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from babel.dates import format_date
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import login, make_unit, make_user, open_first_case, report
from varsling.accounts.models import LoginSession, ReporterSession
from varsling.app import create_app
from varsling.audit import ReporterAuditEvent
from varsling.cases.models import Attachment, CaseEntry
from varsling.cases.models import Case as CaseRow
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD, SESSION_COOKIE, CsrfSigner

DESCRIPTION = "Something happened at the county meeting."


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The whole service (tests/web/conftest.py's `client` has only the web side)."""
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@dataclass
class Case:
    code: str
    case_id: str
    handler: dict[str, str]


def new_case(client: TestClient, db: Session, settings: Settings, **fields: object) -> Case:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    response = client.post("/api/v1/reports", json=report(unit.id, **fields))
    assert response.status_code == 201, response.text
    handler = login(client, "hanne")
    case_id = open_first_case(client, handler)
    return Case(response.json()["case_code"], case_id, handler)


@pytest.fixture
def case(client: TestClient, db: Session, settings: Settings) -> Case:
    return new_case(client, db, settings)


def form_token(html: str) -> str:
    match = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html)
    assert match is not None, "no form token on the page"
    return match.group(1)


def set_cookies(response: httpx.Response) -> list[SimpleCookie]:
    cookies = []
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        cookies.append(cookie)
    return cookies


def log_in(client: TestClient, code: str, language: str = "nb") -> httpx.Response:
    page = client.get(f"/{language}/follow-up")
    return client.post(
        f"/{language}/follow-up",
        data={"case_code": code, CSRF_FIELD: form_token(page.text)},
        follow_redirects=False,
    )


def logged_in(client: TestClient, code: str, language: str = "nb") -> str:
    """Log in and return the case page's HTML."""
    response = log_in(client, code, language)
    assert response.status_code == 303, response.text
    page = client.get(f"/{language}/case")
    assert page.status_code == 200
    return page.text


def send(
    client: TestClient,
    path: str,
    *,
    body: str,
    files: Sequence[tuple[str, bytes]] = (),
    token: str | None = None,
    language: str = "nb",
) -> httpx.Response:
    if token is None:
        token = form_token(client.get(f"/{language}/case").text)
    data = {"body": body} if token == "" else {"body": body, CSRF_FIELD: token}
    return client.post(
        f"/{language}{path}",
        data=data,
        # An empty file part is what a browser sends for an empty file input.
        files=[("files", (name, content, "application/octet-stream")) for name, content in files]
        or [("files", ("", b"", "application/octet-stream"))],
        follow_redirects=False,
    )


def handler_view(client: TestClient, case: Case) -> dict[str, Any]:
    response = client.get(f"/api/v1/cases/{case.case_id}", headers=case.handler)
    assert response.status_code == 200
    view: dict[str, Any] = response.json()
    return view


def reporter_entries(db: Session) -> int:
    db.rollback()
    return (
        db.scalar(
            select(func.count()).select_from(CaseEntry).where(CaseEntry.kind == "reporter_message")
        )
        or 0
    )


def attachment_count(db: Session) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(Attachment)) or 0


# --------------------------------------------------------------------------
# Logging in


def test_follow_up_page_asks_for_the_code(client: TestClient) -> None:
    page = client.get("/nb/follow-up")
    assert page.status_code == 200
    field = re.search(r"<input[^>]*id=\"case-code\"[^>]*>", page.text)
    assert field is not None
    assert 'inputmode="numeric"' in field.group(0)
    assert 'autocomplete="off"' in field.group(0)
    assert 'aria-describedby="case-code-hint"' in field.group(0)
    assert "20 siffer" in page.text
    assert '<label for="case-code">Sakskode</label>' in page.text


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("1234 5678 9012 3456 7890", "Denne sakskoden åpner ingen sak"),
        ("1234 5678", "En sakskode har 20 siffer"),
        ("", "Skriv inn sakskoden din"),
    ],
)
def test_a_wrong_or_malformed_code_is_refused_plainly(
    client: TestClient, case: Case, typed: str, message: str
) -> None:
    response = log_in(client, typed)
    assert response.status_code == 401
    assert message in response.text
    assert 'class="error-summary"' in response.text
    assert 'href="#case-code"' in response.text
    field = re.search(r"<input[^>]*id=\"case-code\"[^>]*>", response.text)
    assert field is not None
    assert 'aria-invalid="true"' in field.group(0)
    assert 'aria-describedby="case-code-hint case-code-error-1"' in field.group(0)
    assert 'id="case-code-error-1"' in response.text
    assert "<title>Feil:" in response.text
    # Still not logged in.
    assert client.get("/nb/case", follow_redirects=False).status_code == 303


def test_the_right_code_sets_the_session_cookie_and_opens_the_case(
    client: TestClient, case: Case, settings: Settings
) -> None:
    client.get("/nb/follow-up")
    before = client.cookies[SESSION_COOKIE]
    response = log_in(client, case.code.replace(" ", "-"))
    assert response.status_code == 303
    assert response.headers["location"] == "/nb/case"
    digits = case.code.replace(" ", "")
    assert digits not in response.headers["location"]
    [cookie] = set_cookies(response)
    morsel = cookie[SESSION_COOKIE]
    assert morsel["httponly"]
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/"
    assert 0 < int(morsel["max-age"]) <= settings.reporter_session_minutes * 60
    # A new value at login: a value planted before it never becomes a session.
    assert morsel.value != before
    page = client.get("/nb/case")
    assert page.status_code == 200
    assert "<h1>Saken din</h1>" in page.text
    assert digits not in page.text


def test_the_case_code_never_appears_in_a_page_or_address(client: TestClient, case: Case) -> None:
    response = log_in(client, case.code)
    page = client.get(response.headers["location"])
    digits = case.code.replace(" ", "")
    assert case.code not in page.text
    assert digits not in page.text
    assert digits not in str(page.url)


def test_without_a_session_the_case_page_sends_you_to_log_in(client: TestClient) -> None:
    response = client.get("/nb/case", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/nb/follow-up?notice=ended"
    page = client.get(response.headers["location"])
    assert "Du er ikke logget inn" in page.text
    assert "etter 30 minutter" in page.text
    for path in ("/en/case/retaliation", "/nn/case/files/" + "0" * 32):
        assert client.get(path, follow_redirects=False).status_code == 303


def test_an_api_token_planted_as_the_cookie_opens_nothing(client: TestClient, case: Case) -> None:
    response = client.post("/api/v1/reporter/session", json={"case_code": case.code})
    api_token = response.json()["token"]
    client.cookies.set(SESSION_COOKIE, api_token)

    page = client.get("/nb/case", follow_redirects=False)

    assert page.status_code == 303
    assert page.headers["location"] == "/nb/follow-up?notice=ended"
    # The token still works where it was issued.
    own = client.get("/api/v1/reporter/case", headers={"Authorization": f"Bearer {api_token}"})
    assert own.status_code == 200


# --------------------------------------------------------------------------
# The case page


def test_case_page_shows_status_deadlines_report_and_the_handlers_message(
    client: TestClient, db: Session, settings: Settings
) -> None:
    case = new_case(
        client,
        db,
        settings,
        where="Fylkesårsmøtet",
        identity={"name": "Kari Nordmann", "contact": "kari@example.org"},
    )
    written = client.post(
        f"/api/v1/cases/{case.case_id}/messages",
        json={"body": "Kan du fortelle mer om <hva> som skjedde?"},
        headers=case.handler,
    )
    assert written.status_code == 201
    page = logged_in(client, case.code)
    assert "Mottatt" in page
    summary = handler_view(client, case)
    due = dt.date.fromisoformat(str(summary["acknowledgement_due"]))
    assert format_date(due, "long", locale="nb") in page
    feedback = dt.date.fromisoformat(str(summary["feedback_due"]))
    assert format_date(feedback, "long", locale="nb") in page
    assert "Kan du fortelle mer om &lt;hva&gt; som skjedde?" in page
    assert "Fra saksbehandlerne" in page
    assert DESCRIPTION in page
    assert "Fylkesårsmøtet" in page
    assert "Kari Nordmann" in page
    assert 'href="/nb/case/retaliation"' in page
    assert 'action="/nb/case/logout"' in page

    english = client.get("/en/case").text
    assert "Received" in english
    assert format_date(due, "long", locale="en") in english
    nynorsk = client.get("/nn/case").text
    assert "Motteke" in nynorsk


def test_status_and_outcome_follow_the_handlers(client: TestClient, case: Case) -> None:
    for status in ("acknowledged", "investigating"):
        changed = client.post(
            f"/api/v1/cases/{case.case_id}/status", json={"status": status}, headers=case.handler
        )
        assert changed.status_code == 200, changed.text
    page = logged_in(client, case.code)
    assert "Under behandling" in page
    concluded = client.post(
        f"/api/v1/cases/{case.case_id}/status",
        json={"status": "concluded", "outcome": "Saken er undersøkt, og tiltak er satt i verk."},
        headers=case.handler,
    )
    assert concluded.status_code == 200, concluded.text
    page = client.get("/nb/case").text
    assert "Konkludert" in page
    assert "Saken er undersøkt, og tiltak er satt i verk." in page
    assert 'id="outcome"' in page


def test_reading_the_case_page_is_audited_without_details(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code)
    db.rollback()
    events = db.scalars(
        select(ReporterAuditEvent).where(ReporterAuditEvent.action == "reporter.case_read")
    ).all()
    assert [e.case_id for e in events] == [case.case_id]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", events[0].day)


# --------------------------------------------------------------------------
# Replying, files, retaliation


def test_a_reply_with_a_file_reaches_the_handler(client: TestClient, case: Case) -> None:
    logged_in(client, case.code)
    content = b"%PDF-1.4 evidence"
    response = send(
        client, "/case/messages", body="Her er referatet.", files=[("referat æøå.pdf", content)]
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/nb/case?sent=message"
    page = client.get(response.headers["location"]).text
    assert "Meldingen din er sendt" in page
    assert "Her er referatet." in page
    assert "referat æøå.pdf" in page

    view = handler_view(client, case)
    assert view["messages"] == [
        {
            "author": "reporter",
            "body": "Her er referatet.",
            "sent_on": dt.date.today().isoformat(),
            "retaliation": False,
        }
    ]
    [stored] = view["files"]
    assert stored["name"] == "referat æøå.pdf"
    download = client.get(
        f"/api/v1/cases/{case.case_id}/files/{stored['id']}", headers=case.handler
    )
    assert download.content == content


def test_files_alone_can_be_sent(client: TestClient, case: Case) -> None:
    logged_in(client, case.code)
    response = send(client, "/case/messages", body="  ", files=[("bilde.png", b"\x89PNG")])
    assert response.status_code == 303
    assert response.headers["location"] == "/nb/case?sent=files"
    view = handler_view(client, case)
    assert view["messages"] == []
    assert [f["name"] for f in view["files"]] == ["bilde.png"]


def test_the_reporter_downloads_their_own_file_as_an_opaque_attachment(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code)
    lying = b"<script>alert(1)</script>"
    send(client, "/case/messages", body="Skjermbilde", files=[("bilde.html", lying)])
    page = client.get("/nb/case").text
    match = re.search(r'href="(/nb/case/files/[0-9a-f]{32})" download>bilde.html<', page)
    assert match is not None, page
    download = client.get(match.group(1))
    assert download.status_code == 200
    assert download.content == lying
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in download.headers
    db.rollback()
    assert db.scalar(
        select(func.count())
        .select_from(ReporterAuditEvent)
        .where(ReporterAuditEvent.action == "reporter.file_downloaded")
    )
    missing = client.get("/nb/case/files/" + "f" * 32)
    assert missing.status_code == 404
    assert "Fant ikke filen" in missing.text


def test_retaliation_opens_a_linked_case_the_reporter_follows_on_their_page(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code)
    page = client.get("/nb/case/retaliation")
    assert page.status_code == 200
    assert "<h1>Meld fra om gjengjeldelse</h1>" in page.text
    response = send(
        client,
        "/case/retaliation",
        body="Jeg ble tatt av lista etter at jeg varslet.",
        files=[("skjermbilde.png", b"png bytes")],
        token=form_token(page.text),
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/nb/case?sent=retaliation"
    # Not a message on the first case: a case of its own, linked to it.
    assert handler_view(client, case)["messages"] == []
    db.commit()
    [linked] = db.scalars(select(CaseRow).where(CaseRow.linked_case_id == case.case_id))
    assert linked.category == "retaliation"
    assert linked.priority == "high"
    case_page = client.get("/nb/case?sent=retaliation").text
    assert "Dine meldinger om gjengjeldelse" in case_page
    match = re.search(r'href="(/nb/case/linked/[0-9a-f]{16})"', case_page)
    assert match is not None
    assert linked.id not in case_page
    linked_page = client.get(match.group(1))
    assert linked_page.status_code == 200
    assert "Jeg ble tatt av lista etter at jeg varslet." in linked_page.text
    assert "skjermbilde.png" in linked_page.text
    file_link = re.search(
        r'href="(/nb/case/linked/[0-9a-f]{16}/files/[0-9a-f]{32})"', linked_page.text
    )
    assert file_link is not None
    assert client.get(file_link.group(1)).content == b"png bytes"
    reply = send(client, match.group(1).removeprefix("/nb") + "/messages", body="Mer om det.")
    assert reply.status_code == 303
    assert reply.headers["location"] == match.group(1) + "?sent=message"
    assert "Mer om det." in client.get(match.group(1)).text
    assert client.get("/nb/case/linked/" + "0" * 16).status_code == 404
    assert "Gjengjelding" in client.get("/nn/case/retaliation").text


def test_the_case_page_offers_to_send_an_unanswered_case_up(
    client: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    make_user(db, settings, "nina", units=(national.id,))
    make_user(db, settings, "hanne", units=(county.id,))
    code = client.post("/api/v1/reports", json=report(county.id)).json()["case_code"]
    page = logged_in(client, code, "en")
    assert "Send the case to the level above" not in page
    db.execute(update(CaseRow).values(acknowledgement_due=dt.date.today() - dt.timedelta(days=1)))
    db.commit()
    page = client.get("/en/case").text
    assert "Send the case to the level above" in page

    response = client.post(
        "/en/case/send-up", data={CSRF_FIELD: form_token(page)}, follow_redirects=False
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/en/case?sent=sent-up"
    page = client.get("/en/case?sent=sent-up").text
    assert "sent to the case handlers at the level above" in page
    assert "Send the case to the level above" not in page
    refused = client.post("/en/case/send-up", data={CSRF_FIELD: form_token(page)})
    assert refused.status_code == 409
    assert "could not be sent to the level above" in refused.text


def test_a_check_in_question_is_answered_on_the_case_page(
    client: TestClient, case: Case, db: Session
) -> None:
    from varsling.cases.models import CheckIn

    db.add(CheckIn(case_id=case.case_id, round=1, sent_on=dt.date.today()))
    db.commit()
    page = logged_in(client, case.code, "nn")
    assert "Eit spørsmål til deg" in page
    action = re.search(r'action="(/nn/case/checkins/\d+)"', page)
    assert action is not None
    unanswered = client.post(action.group(1), data={CSRF_FIELD: form_token(page)})
    assert unanswered.status_code == 422
    assert 'href="#checkin-' in unanswered.text

    response = client.post(
        action.group(1),
        data={CSRF_FIELD: form_token(page), "answer": "yes", "details": "Eg vart fryst ut."},
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/nn/case?sent=checkin-yes"
    page = client.get("/nn/case?sent=checkin-yes").text
    assert "Eit spørsmål til deg" not in page
    assert "/nn/case/linked/" in page
    answers = handler_view(client, case)["checkin_answers"]
    assert [(a["negative_consequences"], a["details"]) for a in answers] == [
        (True, "Eg vart fryst ut.")
    ]


def test_a_check_in_answer_or_send_up_after_the_session_ended_is_refused_plainly(
    client: TestClient, case: Case, db: Session
) -> None:
    """Nothing is done, the page says so (not a redirect that could pass for success),
    and what the reporter wrote about what happened to them is shown back."""
    from varsling.cases.models import CheckIn

    checkin = CheckIn(case_id=case.case_id, round=1, sent_on=dt.date.today())
    db.add(checkin)
    db.commit()
    page = logged_in(client, case.code, "en")
    token = form_token(page)
    client.cookies.clear()

    answered = client.post(
        f"/en/case/checkins/{checkin.id}",
        data={CSRF_FIELD: token, "answer": "yes", "details": "They froze me out."},
        follow_redirects=False,
    )
    sent_up = client.post("/en/case/send-up", data={CSRF_FIELD: token}, follow_redirects=False)

    assert answered.status_code == 401
    assert "Nothing was sent" in answered.text
    assert "They froze me out." in answered.text
    assert sent_up.status_code == 401
    assert "Nothing was sent" in sent_up.text
    db.refresh(checkin)
    assert checkin.answered_on is None


def test_an_empty_reply_is_refused_and_nothing_is_stored(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code)
    response = send(client, "/case/messages", body="   ")
    assert response.status_code == 422
    assert 'class="error-summary"' in response.text
    assert 'href="#message-body"' in response.text
    assert 'aria-describedby="message-body-hint message-body-error-1"' in response.text
    assert reporter_entries(db) == 0

    retaliation = send(client, "/case/retaliation", body="", files=[("a.txt", b"x")])
    assert retaliation.status_code == 422
    assert "Skriv hva som skjedde" in retaliation.text
    assert reporter_entries(db) == 0
    assert attachment_count(db) == 0


def test_without_the_form_token_nothing_is_stored_and_the_text_is_kept(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code)
    typed = "Dette skal <ikke> forsvinne"
    response = send(client, "/case/messages", body=typed, files=[("a.txt", b"x")], token="")
    assert response.status_code == 400
    assert "Skjemaet kunne ikke sendes" in response.text
    assert ">Dette skal &lt;ikke&gt; forsvinne</textarea>" in response.text
    assert "Filene du valgte, ble ikke sendt" in response.text
    forged = send(client, "/case/retaliation", body=typed, token="1.2.3")
    assert forged.status_code == 400
    assert reporter_entries(db) == 0
    assert attachment_count(db) == 0


def test_an_expired_form_explains_itself_and_keeps_the_text(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code, "en")
    signer: CsrfSigner = client.app.state.varsling_csrf  # type: ignore[attr-defined]
    old = signer.token(client.cookies[SESSION_COOKIE], now=1_000_000_000)
    response = send(client, "/case/messages", body="Kept, please", token=old, language="en")
    assert response.status_code == 400
    assert "The form had expired" in response.text
    assert ">Kept, please</textarea>" in response.text
    assert reporter_entries(db) == 0


def test_an_oversize_file_names_the_file_keeps_the_text_and_stores_nothing(
    database_url: str, db: Session
) -> None:
    settings = make_settings(database_url, max_file_bytes=1000, max_files_per_report=2)
    app = create_app(settings)
    with TestClient(app) as client:
        case = new_case(client, db, settings)
        logged_in(client, case.code)
        too_big = send(
            client,
            "/case/messages",
            body="Teksten min",
            files=[("liten.txt", b"ok"), ("for-stor.bin", b"x" * 1001)],
        )
        too_many = send(
            client,
            "/case/messages",
            body="Tre filer",
            files=[(f"fil-{n}.txt", b"x") for n in range(3)],
            language="en",
        )
    app.state.engine.dispose()

    assert too_big.status_code == 413
    assert "Filen for-stor.bin er større enn 1\u00a0kB" in too_big.text
    assert 'href="#message-files"' in too_big.text
    assert ">Teksten min</textarea>" in too_big.text
    assert too_many.status_code == 422
    assert "so fil-2.txt could not be included" in too_many.text
    assert ">Tre filer</textarea>" in too_many.text
    assert reporter_entries(db) == 0
    assert attachment_count(db) == 0


def end_reporter_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=31)
    monkeypatch.setattr("varsling.reports.service.utcnow", lambda: later)


def test_an_ended_session_shows_the_text_back_with_a_way_to_log_in(
    client: TestClient, case: Case, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(client, case.code)
    token = form_token(client.get("/nb/case").text)
    # The session's expiry is sealed: only a later clock ends it.
    end_reporter_sessions(monkeypatch)
    response = send(
        client,
        "/case/messages",
        body="Et langt svar jeg ikke vil miste",
        files=[("vedlegg.pdf", b"%PDF")],
        token=token,
    )
    assert response.status_code == 401
    assert "readonly" in response.text
    assert ">Et langt svar jeg ikke vil miste</textarea>" in response.text
    assert "vedlegg.pdf" in response.text
    assert 'href="/nb/follow-up"' in response.text
    assert reporter_entries(db) == 0
    assert attachment_count(db) == 0
    assert client.get("/nb/case", follow_redirects=False).status_code == 303


def test_a_body_that_cannot_be_read_is_explained_on_the_page(
    client: TestClient, case: Case, db: Session
) -> None:
    page = logged_in(client, case.code, "en")
    response = client.post(
        "/en/case/messages",
        data={"body": "not multipart", CSRF_FIELD: form_token(page)},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "could not be read" in response.text
    assert reporter_entries(db) == 0


def test_an_unknown_notice_is_ignored(client: TestClient) -> None:
    page = client.get("/nb/follow-up?notice=" + "x" * 300)
    assert page.status_code == 200
    assert 'class="notice' not in page.text


def test_a_form_address_opened_directly_leads_back_to_the_case(client: TestClient) -> None:
    for path in ("/nn/case/messages", "/nn/case/logout"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/nn/case"


# --------------------------------------------------------------------------
# Logging out, and cookies


def test_logout_ends_the_session_and_clears_the_cookie(
    client: TestClient, case: Case, db: Session
) -> None:
    page = logged_in(client, case.code)
    token = client.cookies[SESSION_COOKIE]
    response = client.post(
        "/nb/case/logout", data={CSRF_FIELD: form_token(page)}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/nb/follow-up?notice=logged-out"
    [cookie] = set_cookies(response)
    assert cookie[SESSION_COOKIE]["max-age"] == "0"
    assert "Du er logget ut" in client.get(response.headers["location"]).text
    db.rollback()
    assert db.scalar(select(func.count()).select_from(LoginSession)) == 1  # the handler's
    # The old cookie value opens nothing any more.
    client.cookies.set(SESSION_COOKIE, token)
    assert client.get("/nb/case", follow_redirects=False).status_code == 303


def test_logout_without_the_form_token_does_nothing(client: TestClient, case: Case) -> None:
    logged_in(client, case.code)
    response = client.post("/nb/case/logout", data={}, follow_redirects=False)
    assert response.status_code == 400
    assert "Skjemaet kunne ikke sendes" in response.text
    assert client.get("/nb/case").status_code == 200


def test_logging_in_again_ends_the_earlier_session(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code)
    logged_in(client, case.code)
    db.rollback()
    assert db.scalar(select(func.count()).select_from(ReporterSession)) == 1


def test_the_pages_set_no_cookie_but_the_session_cookie(client: TestClient, case: Case) -> None:
    responses = [client.get("/nb/follow-up"), log_in(client, "0" * 20), log_in(client, case.code)]
    responses.append(client.get("/nb/case"))
    responses.append(client.get("/nb/case/retaliation"))
    responses.append(send(client, "/case/messages", body="Hei", files=[("a.txt", b"a")]))
    responses.append(send(client, "/case/messages", body=""))
    token = form_token(client.get("/nb/case").text)
    responses.append(
        client.post("/nb/case/logout", data={CSRF_FIELD: token}, follow_redirects=False)
    )
    names = {name for response in responses for cookie in set_cookies(response) for name in cookie}
    assert names == {SESSION_COOKIE}
    for response in responses:
        for cookie in set_cookies(response):
            assert cookie[SESSION_COOKIE]["httponly"]
            assert cookie[SESSION_COOKIE]["samesite"].lower() == "strict"


# --------------------------------------------------------------------------
# Wording that matches what the service does


def test_a_deadline_that_has_passed_is_shown_as_passed(
    client: TestClient, case: Case, db: Session
) -> None:
    logged_in(client, case.code, "en")
    page = client.get("/en/case").text
    assert "at the latest" in page
    assert "Was due by" not in page
    assert "you are told here" not in page
    assert "You can always write to the case handlers below" in page

    past = dt.date(2020, 1, 2)
    db.execute(
        update(CaseRow)
        .where(CaseRow.id == case.case_id)
        .values(acknowledgement_due=past, feedback_due=past)
    )
    db.commit()
    english = client.get("/en/case").text
    assert english.count("Was due by January 2, 2020.") == 2
    assert "at the latest" not in english
    assert "Fristen var 2. januar 2020." in client.get("/nb/case").text


def test_retaliation_is_described_as_what_it_is(client: TestClient, case: Case) -> None:
    logged_in(client, case.code, "en")
    page = client.get("/en/case/retaliation").text
    assert "see it at once" not in page
    assert "on your case page with the same case code" in page
    start = client.get("/en/").text
    assert "new case with high priority" not in start
    assert "If so, you are told" not in start


def test_the_language_switch_is_only_hidden_where_it_would_lose_text(
    client: TestClient, case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged_in(client, case.code, "en")
    assert "language-switch__list" in client.get("/en/case").text
    assert "language-switch__list" in client.get("/en/case/retaliation").text

    for path in ("/case/messages", "/case/retaliation"):
        refused = send(client, path, body="Kept, please", token="", language="en")
        assert refused.status_code == 400
        assert "language-switch__list" not in refused.text
        assert "so that what you wrote is not lost" in refused.text
        assert '<div class="form-token-notice" tabindex="-1" autofocus>' in refused.text

    empty = send(client, "/case/messages", body=" ", language="en")
    assert empty.status_code == 422
    assert "language-switch__list" not in empty.text
    assert "maxlength" not in empty.text

    token = form_token(client.get("/en/case").text)
    # The session's expiry is sealed: only a later clock ends it.
    end_reporter_sessions(monkeypatch)
    ended = send(client, "/case/messages", body="Not lost", token=token, language="en")
    assert ended.status_code == 401
    assert "language-switch__list" not in ended.text
    assert "so that what you wrote is not lost" in ended.text


# --------------------------------------------------------------------------
# Tampering behind the service's back


@pytest.mark.parametrize(
    ("language", "heading"),
    [
        ("nb", "Saken din kan være endret av noen utenfor tjenesten"),
        ("nn", "Saka di kan vere endra av nokon utanfor tenesta"),
        ("en", "Your case may have been changed by someone outside the service"),
    ],
)
def test_a_deleted_message_is_announced_on_the_case_page(
    client: TestClient, case: Case, db: Session, language: str, heading: str
) -> None:
    written = client.post(
        f"/api/v1/cases/{case.case_id}/messages",
        json={"body": "Kan du fortelle mer?"},
        headers=case.handler,
    )
    assert written.status_code == 201
    page = logged_in(client, case.code, language)
    assert heading not in page
    db.rollback()
    db.execute(
        delete(CaseEntry).where(
            CaseEntry.case_id == case.case_id, CaseEntry.kind == "handler_message"
        )
    )
    db.commit()

    page = client.get(f"/{language}/case").text

    assert heading in page
    assert 'role="alert"' in page
    # The reporter's read found it: the event is in the reporter's chain.
    failed = db.scalars(
        select(ReporterAuditEvent).where(ReporterAuditEvent.action == "case.integrity_failed")
    ).all()
    assert [e.details for e in failed] == ['{"problem": "entry_missing"}']


@pytest.mark.parametrize(
    ("language", "heading", "sentence"),
    [
        ("nb", "En saksbehandler har fått lov til å se hvem du er", "ga en identitetsforvalter"),
        (
            "nn",
            "Ein sakshandsamar har fått lov til å sjå kven du er",
            "gav ein identitetsforvaltar",
        ),
        ("en", "A case handler has been allowed to see who you are", "an identity custodian"),
    ],
)
def test_the_case_page_tells_the_reporter_their_name_was_disclosed(
    client: TestClient, db: Session, settings: Settings, language: str, heading: str, sentence: str
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))
    sent = client.post("/api/v1/reports", json=report(unit.id, identity={"name": "Kari Nordmann"}))
    handler = login(client, "hanne")
    case = Case(sent.json()["case_code"], open_first_case(client, handler), handler)
    assert heading not in logged_in(client, case.code, language)
    asked = client.post(
        f"/api/v1/cases/{case.case_id}/identity-requests",
        json={"justification": "We need to talk to the reporter."},
        headers=case.handler,
    )
    reason = "The handler must hear the reporter <in person> & soon."
    decided = client.post(
        f"/api/v1/identity-requests/{asked.json()['id']}/decision",
        json={"approve": True, "reason": reason},
        headers=login(client, "cora"),
    )
    assert decided.status_code == 200, decided.text

    page = client.get(f"/{language}/case").text
    notices = page[page.index('id="identity-notices"') : page.index('id="status"')]
    assert heading in notices
    assert sentence in notices
    assert format_date(dt.date.today(), format="long", locale=language) in notices
    assert "The handler must hear the reporter &lt;in person&gt; &amp; soon." in notices
    assert 'href="#identity-notices"' in page
