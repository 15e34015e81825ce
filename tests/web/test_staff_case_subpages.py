"""A handler's case sub-pages: files, access, identity, hold and the access history.

They answer as the API does (404 without a key, 409 before declaring), keep
what was typed on every error, change nothing on a bad form token, and call
the same services as the API. The attackers: a handler of another unit, a
recused handler, a handler the reporter left out, an admin, a custodian
without the case, and a form token made for another browser.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, report, reporter_login
from tests.staff_web import form_token, logged_in
from varsling.app import create_app
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases.models import Attachment, AttachmentChunk, Case, CaseKey, IdentityRequest
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD

SUBPAGES = ("upload", "grants", "identity", "hold", "access")


@dataclass(frozen=True)
class World:
    app: FastAPI
    api: TestClient
    case_id: str
    case_code: str
    users: dict[str, int]
    tokens: dict[str, dict[str, str]]


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    made = create_app(settings)
    yield made
    made.state.engine.dispose()


@pytest.fixture
def world(app: FastAPI, db: Session, settings: Settings) -> Iterator[World]:
    """A case in the town: hanne declared no conflict, rune recused, eva was left out
    by the reporter, ulrik has not declared; gro (county) may be given the case."""
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    town = make_unit(db, "Bergen", parent_id=county.id, kind="municipal")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    people = {
        "hanne": ("handler", town.id, "Hanne Hansen"),
        "ulrik": ("handler", town.id, "Ulrik Urdal"),
        "rune": ("handler", town.id, "Rune Rud"),
        "eva": ("handler", town.id, "Eva Eide"),
        "gro": ("handler", county.id, "Gro Grande"),
        "otto": ("handler", other.id, "Otto Olsen"),
        "kari": ("custodian", county.id, "Kari Kvam"),
        "adm": ("admin", national.id, "Ada Admin"),
    }
    users = {
        name: make_user(
            db,
            settings,
            name,
            roles=(role,),
            units=(unit,) if role != "admin" else (),
            display_name=display,
        ).id
        for name, (role, unit, display) in people.items()
    }
    api = TestClient(app)
    tokens = {name: login(api, name) for name in people}
    sent = api.post(
        "/api/v1/reports",
        json=report(
            town.id,
            identity={"name": "Kari Nordmann", "contact": "kari@example.org"},
            excluded_recipients=[users["eva"]],
        ),
    )
    assert sent.status_code == 201, sent.text
    listed = api.get("/api/v1/cases", headers=tokens["hanne"]).json()["items"]
    (case_id,) = [item["id"] for item in listed]
    for name, body in (
        ("hanne", {"conflict": False, "risk": "low"}),
        ("rune", {"conflict": True, "reason": "The treasurer is my sister."}),
    ):
        declared = api.post(f"/api/v1/cases/{case_id}/declaration", json=body, headers=tokens[name])
        assert declared.status_code == 201, declared.text
    yield World(app, api, case_id, sent.json()["case_code"], users, tokens)
    api.close()


def browser(world: World, username: str, lang: str = "en") -> TestClient:
    """A browser of its own (its own cookie jar), logged in on the staff login page."""
    client = TestClient(world.app)
    return logged_in(client, username, lang=lang)  # type: ignore[return-value]


@pytest.fixture
def hanne(world: World) -> Iterator[TestClient]:
    client = browser(world, "hanne")
    yield client
    client.close()


def url(world: World, subpage: str, lang: str = "en") -> str:
    return f"/{lang}/staff/cases/{world.case_id}/{subpage}"


def events(db: Session, action: str, case_id: str | None = None) -> list[AuditEvent]:
    db.rollback()
    query = select(AuditEvent).where(AuditEvent.action == action)
    if case_id is not None:
        query = query.where(AuditEvent.case_id == case_id)
    return list(db.execute(query.order_by(AuditEvent.seq)).scalars())


def post_form(client: TestClient, path: str, data: dict[str, str]) -> httpx.Response:
    """Open the page, then send its form with the page's own token, as a browser does."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(
        path, data={**data, CSRF_FIELD: form_token(page.text)}, follow_redirects=False
    )


def error_summary(page: str) -> str:
    found = re.search(r'class="error-summary__list">(.*?)</ul>', page, re.S)
    assert found is not None, "no error summary on the page"
    return found.group(1)


def attachments_of(db: Session, case_id: str) -> int:
    db.rollback()
    return (
        db.scalar(select(func.count()).select_from(Attachment).where(Attachment.case_id == case_id))
        or 0
    )


# --------------------------------------------------------------------------
# Every page: the header, the way back, and who may open it


@pytest.mark.parametrize("subpage", SUBPAGES)
@pytest.mark.parametrize("lang", ["nb", "nn", "en"])
def test_each_subpage_shows_the_case_header_and_the_way_back(
    world: World, subpage: str, lang: str
) -> None:
    client = browser(world, "hanne", lang)
    page = client.get(url(world, subpage, lang))
    assert page.status_code == 200, page.text
    assert f'href="/{lang}/staff/cases/{world.case_id}"' in page.text
    assert "Bergen" in page.text
    category = {"nb": "Trakassering", "nn": "Trakassering", "en": "Harassment"}[lang]
    status = {"nb": "Mottatt", "nn": "Motteke", "en": "Received"}[lang]
    header = page.text.split('class="case-summary"')[1].split("</dl>")[0]
    assert category in header
    assert status in header
    assert f'href="/{lang}/staff/cases/{world.case_id}/{subpage}" aria-current="page"' in page.text


@pytest.mark.parametrize("subpage", SUBPAGES)
@pytest.mark.parametrize(
    ("username", "status"),
    [("otto", 404), ("rune", 404), ("eva", 404), ("adm", 404), ("kari", 404), ("ulrik", 409)],
)
def test_a_subpage_answers_as_the_api_does(
    world: World, db: Session, subpage: str, username: str, status: int
) -> None:
    """No key: the 404 page; a key but no declaration: the 409 page. Same as GET the case."""
    api_status = world.api.get(f"/api/v1/cases/{world.case_id}", headers=world.tokens[username])
    assert api_status.status_code == status
    client = browser(world, username)
    page = client.get(url(world, subpage))
    assert page.status_code == status, page.text
    assert "Kari Nordmann" not in page.text
    assert "Bergen" not in page.text  # not even the header
    if status == 409:
        assert "Declare first" in page.text
        assert events(db, "case.access_refused", world.case_id)


def test_without_a_login_a_subpage_sends_the_browser_to_log_in(world: World) -> None:
    client = TestClient(world.app)
    for subpage in SUBPAGES:
        answer = client.get(url(world, subpage), follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/en/staff/login"


def test_a_malformed_case_id_is_the_404_page(hanne: TestClient) -> None:
    answer = hanne.get("/en/staff/cases/not-a-case/grants")
    assert answer.status_code == 404
    assert "Not found" in answer.text


# --------------------------------------------------------------------------
# Adding files, on the page and through the API


def upload(
    client: TestClient, path: str, files: list[tuple[str, bytes]], token: str | None = None
) -> httpx.Response:
    if token is None:
        token = form_token(client.get(path).text)
    return client.post(
        path,
        data={CSRF_FIELD: token},
        files=[("files", (name, body, "text/plain")) for name, body in files],
        follow_redirects=False,
    )


def test_a_handler_adds_a_file_sealed_and_audited_and_the_reporter_sees_it(
    world: World, hanne: TestClient, db: Session
) -> None:
    secret = b"Minutes of the board meeting, signed by the treasurer."
    answer = upload(hanne, url(world, "upload"), [("board-minutes.txt", secret)])
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == url(world, "upload") + "?done=files"
    done = hanne.get(answer.headers["location"])
    assert 'role="status" tabindex="-1" autofocus' in done.text

    db.rollback()
    stored = db.execute(select(Attachment).where(Attachment.case_id == world.case_id)).scalar_one()
    assert stored.uploaded_by == "handler"
    chunks = db.execute(select(AttachmentChunk.ciphertext)).scalars().all()
    assert all(secret not in blob for blob in chunks)
    assert b"board-minutes" not in stored.sealed_meta
    (added,) = events(db, "case.files_added", world.case_id)
    assert added.actor == f"user:{world.users['hanne']}"
    assert '"files": 1' in added.details
    # The manifest took the file in: the case still reads as intact.
    read = world.api.get(f"/api/v1/cases/{world.case_id}", headers=world.tokens["hanne"])
    assert read.json()["integrity"]["ok"] is True, read.json()["integrity"]
    reporter = reporter_login(world.api, world.case_code)
    files = world.api.get("/api/v1/reporter/case", headers=reporter).json()["files"]
    assert [(f["name"], f["uploaded_by"]) for f in files] == [("board-minutes.txt", "handler")]


def test_a_file_over_the_limit_refuses_the_whole_upload_and_says_why(
    app: FastAPI, world: World, hanne: TestClient, settings: Settings
) -> None:
    limit = 64
    app.state.settings = settings.model_copy(update={"max_file_bytes": limit})
    answer = upload(
        hanne, url(world, "upload"), [("small.txt", b"fine"), ("big.txt", b"x" * (limit + 1))]
    )
    assert answer.status_code == 413
    assert "big.txt" in error_summary(answer.text)
    assert "Choose them again" in answer.text
    assert attachments_of(world_db(app), world.case_id) == 0


def world_db(app: FastAPI) -> Session:
    session: Session = app.state.sessionmaker()
    return session


def test_too_many_files_or_none_add_nothing(
    app: FastAPI, world: World, hanne: TestClient, db: Session, settings: Settings
) -> None:
    app.state.settings = settings.model_copy(update={"max_files_per_report": 1})
    many = upload(hanne, url(world, "upload"), [("a.txt", b"a"), ("b.txt", b"b")])
    assert many.status_code == 422
    assert "b.txt" in error_summary(many.text)
    page = hanne.get(url(world, "upload"))
    empty = hanne.post(
        url(world, "upload"),
        data={CSRF_FIELD: form_token(page.text)},
        files=[("files", ("", b"", "application/octet-stream"))],
        follow_redirects=False,
    )
    assert empty.status_code == 422
    assert "Choose at least one file" in error_summary(empty.text)
    assert attachments_of(db, world.case_id) == 0
    assert not events(db, "case.files_added")


def test_an_upload_with_a_forged_form_token_stores_nothing(
    world: World, hanne: TestClient, db: Session
) -> None:
    other = browser(world, "gro")  # a token made for another browser
    token = form_token(other.get("/en/staff/two-factor").text)
    answer = upload(hanne, url(world, "upload"), [("note.txt", b"note")], token=token)
    assert answer.status_code == 400
    assert "form-token-notice" in answer.text
    assert attachments_of(db, world.case_id) == 0


@pytest.mark.parametrize(("username", "status"), [("otto", 404), ("rune", 404), ("ulrik", 409)])
def test_the_upload_page_refuses_who_the_api_refuses(
    world: World, db: Session, username: str, status: int
) -> None:
    client = browser(world, username)
    token = form_token(client.get("/en/staff/two-factor").text)
    answer = upload(client, url(world, "upload"), [("planted.txt", b"planted")], token=token)
    assert answer.status_code == status
    assert attachments_of(db, world.case_id) == 0


def test_the_upload_api_adds_files_for_a_key_holder_only(
    world: World, db: Session, app: FastAPI, settings: Settings
) -> None:
    path = f"/api/v1/cases/{world.case_id}/files"
    files = [("files", ("report.txt", b"The investigation report.", "text/plain"))]
    for username, status in (("otto", 404), ("rune", 404), ("adm", 404), ("ulrik", 409)):
        refused = world.api.post(path, files=files, headers=world.tokens[username])
        assert refused.status_code == status, refused.text
    reporter = reporter_login(world.api, world.case_code)
    assert world.api.post(path, files=files, headers=reporter).status_code == 401
    assert world.api.post(path, files=files).status_code == 401
    assert attachments_of(db, world.case_id) == 0

    added = world.api.post(path, files=files, headers=world.tokens["hanne"])
    assert added.status_code == 201, added.text
    assert [f["name"] for f in added.json()["files"]] == ["report.txt"]
    assert attachments_of(db, world.case_id) == 1

    app.state.settings = settings.model_copy(update={"max_file_bytes": 10})
    too_large = world.api.post(path, files=files, headers=world.tokens["hanne"])
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "files_refused"
    none = world.api.post(
        path,
        data={"x": "y"},
        files=[("other", ("a", b"", "text/plain"))],
        headers=world.tokens["hanne"],
    )
    assert none.status_code == 422
    assert attachments_of(db, world.case_id) == 1


# --------------------------------------------------------------------------
# Giving access


def test_the_grant_page_lists_the_unit_chain_by_name(world: World, hanne: TestClient) -> None:
    page = hanne.get(url(world, "grants"))
    holders = page.text.split("Who has access now")[1].split("Give someone access")[0]
    form = page.text.split("Who should get access?")[1]
    assert "Hanne Hansen" in holders
    assert "Ulrik Urdal" in holders
    for name in ("Gro Grande", "Kari Kvam"):
        assert name in form
    # The excluded are listed like anyone else: the list must not tell who was left out.
    assert "Eva Eide" in form
    assert "Rune Rud" in form
    # Not on the chain, or no case role: not offered.
    assert "Otto Olsen" not in page.text
    assert "Ada Admin" not in page.text


def test_a_handler_gives_access_and_the_grantee_can_open_the_case(
    world: World, hanne: TestClient, db: Session
) -> None:
    answer = post_form(hanne, url(world, "grants"), {"user_id": str(world.users["gro"])})
    assert answer.status_code == 303, answer.text
    done = hanne.get(answer.headers["location"])
    assert "Gro Grande now has access to the case." in done.text
    assert 'role="status" tabindex="-1" autofocus' in done.text
    gro = world.tokens["gro"]
    declared = world.api.post(
        f"/api/v1/cases/{world.case_id}/declaration",
        json={"conflict": False, "risk": "low"},
        headers=gro,
    )
    assert declared.status_code == 201
    assert world.api.get(f"/api/v1/cases/{world.case_id}", headers=gro).status_code == 200
    assert len(events(db, "case.access_granted", world.case_id)) == 1


def test_granting_the_case_to_someone_the_reporter_left_out_is_refused_and_explained(
    world: World, hanne: TestClient, db: Session
) -> None:
    answer = post_form(hanne, url(world, "grants"), {"user_id": str(world.users["eva"])})
    assert answer.status_code == 403
    assert "named as involved" in error_summary(answer.text)
    db.rollback()
    keys = db.execute(select(CaseKey.user_id).where(CaseKey.case_id == world.case_id)).scalars()
    assert world.users["eva"] not in set(keys)
    (refused,) = events(db, "case.grant_refused", world.case_id)
    assert '"reason": "excluded"' in refused.details
    assert not events(db, "case.access_granted")


@pytest.mark.parametrize(
    ("who", "status", "says"),
    [
        ("otto", 403, "no unit on this case"),
        ("ulrik", 409, "already has access"),
        ("adm", 403, "Only case handlers"),
    ],
)
def test_other_refused_grants_say_why(
    world: World, hanne: TestClient, db: Session, who: str, status: int, says: str
) -> None:
    answer = post_form(hanne, url(world, "grants"), {"user_id": str(world.users[who])})
    assert answer.status_code == status
    assert says in error_summary(answer.text)
    assert not events(db, "case.access_granted")


def test_a_grant_without_a_choice_or_with_a_forged_token_changes_nothing(
    world: World, hanne: TestClient, db: Session
) -> None:
    empty = post_form(hanne, url(world, "grants"), {})
    assert empty.status_code == 422
    assert "Choose who should get access" in error_summary(empty.text)
    other = browser(world, "ulrik")
    forged = hanne.post(
        url(world, "grants"),
        data={
            "user_id": str(world.users["gro"]),
            CSRF_FIELD: form_token(other.get("/en/staff/two-factor").text),
        },
    )
    assert forged.status_code == 400
    assert f'value="{world.users["gro"]}" checked' in forged.text
    assert not events(db, "case.access_granted")


def test_a_handler_of_another_unit_cannot_grant_themselves_the_case(
    world: World, db: Session
) -> None:
    otto = browser(world, "otto")
    token = form_token(otto.get("/en/staff/two-factor").text)
    answer = otto.post(
        url(world, "grants"),
        data={"user_id": str(world.users["otto"]), CSRF_FIELD: token},
    )
    assert answer.status_code == 404
    assert not events(db, "case.access_granted")


# --------------------------------------------------------------------------
# The reporter's identity


def test_asking_for_the_identity_then_reading_it_once_approved(
    world: World, hanne: TestClient, db: Session
) -> None:
    why = "I must call the reporter to ask about the minutes."
    answer = post_form(hanne, url(world, "identity"), {"justification": why})
    assert answer.status_code == 303, answer.text
    page = hanne.get(answer.headers["location"])
    assert "Your request has been sent" in page.text
    assert why in page.text
    assert "waiting for a custodian" in page.text
    assert "Kari Nordmann" not in page.text
    assert "?show=identity" not in page.text
    # Asking again while one waits: no second form.
    assert 'name="justification"' not in page.text

    db.rollback()
    request_id = db.execute(select(IdentityRequest.id)).scalar_one()
    decided = world.api.post(
        f"/api/v1/identity-requests/{request_id}/decision",
        json={"approve": True, "reason": "A call is needed."},
        headers=world.tokens["kari"],
    )
    assert decided.status_code == 200, decided.text
    page = hanne.get(url(world, "identity"))
    assert "approved" in page.text
    assert "Kari Nordmann" not in page.text  # only when asked for
    for _ in range(2):
        shown = hanne.get(url(world, "identity") + "?show=identity")
        assert "Kari Nordmann" in shown.text
        assert "kari@example.org" in shown.text
    assert len(events(db, "case.identity_read", world.case_id)) == 2


def test_an_identity_request_without_a_reason_or_token_keeps_the_text(
    world: World, hanne: TestClient, db: Session
) -> None:
    empty = post_form(hanne, url(world, "identity"), {"justification": "   "})
    assert empty.status_code == 422
    assert "Write why you need to know" in error_summary(empty.text)
    long = post_form(hanne, url(world, "identity"), {"justification": "y" * 5_001})
    assert long.status_code == 422
    assert "y" * 5_001 in long.text
    typed = "Because of <the meeting> & more."
    forged = hanne.post(url(world, "identity"), data={"justification": typed, CSRF_FIELD: "forged"})
    assert forged.status_code == 400
    assert "Because of &lt;the meeting&gt; &amp; more." in forged.text
    assert "language-switch__note" in forged.text  # the switch would lose the text
    db.rollback()
    assert db.scalar(select(func.count()).select_from(IdentityRequest)) == 0


def test_someone_elses_identity_is_not_shown_without_approval(
    world: World, hanne: TestClient, db: Session
) -> None:
    refused = hanne.get(url(world, "identity") + "?show=identity")
    assert refused.status_code == 403
    assert "Kari Nordmann" not in refused.text
    assert events(db, "case.identity_refused", world.case_id)


# --------------------------------------------------------------------------
# Retention hold


def test_placing_and_lifting_a_hold(world: World, hanne: TestClient, db: Session) -> None:
    review = (dt.date.today() + dt.timedelta(days=200)).isoformat()
    placed = post_form(
        hanne, url(world, "hold"), {"reason": "A court case is open.", "review_on": review}
    )
    assert placed.status_code == 303, placed.text
    page = hanne.get(placed.headers["location"])
    assert "The hold has been placed" in page.text
    assert "A court case is open." in page.text
    db.rollback()
    assert db.get(Case, world.case_id).hold_review_on == dt.date.fromisoformat(review)  # type: ignore[union-attr]

    lifted = post_form(hanne, url(world, "hold"), {})  # only to get a token ...
    assert lifted.status_code == 422  # ... an empty hold form is refused
    page = hanne.get(url(world, "hold"))
    answer = hanne.post(
        url(world, "hold") + "/lift",
        data={CSRF_FIELD: form_token(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert "The hold has been lifted" in hanne.get(answer.headers["location"]).text
    db.rollback()
    assert db.get(Case, world.case_id).hold_review_on is None  # type: ignore[union-attr]
    again = hanne.post(url(world, "hold") + "/lift", data={CSRF_FIELD: form_token(page.text)})
    assert again.status_code == 409
    assert "no hold to lift" in error_summary(again.text)
    assert len(events(db, "case.hold_lifted", world.case_id)) == 1


def test_a_review_day_too_far_ahead_is_refused_with_the_text_kept(
    world: World, hanne: TestClient, db: Session
) -> None:
    reason = "Keep it for the appeal."
    too_far = (dt.date.today() + dt.timedelta(days=365 * 11)).isoformat()
    answer = post_form(hanne, url(world, "hold"), {"reason": reason, "review_on": too_far})
    assert answer.status_code == 422
    assert "at most 10 years ahead" in error_summary(answer.text)
    assert reason in answer.text
    assert f'value="{too_far}"' in answer.text
    assert events(db, "case.hold_refused", world.case_id)
    assert not events(db, "case.hold_placed")
    bad = post_form(hanne, url(world, "hold"), {"reason": reason, "review_on": "next spring"})
    assert bad.status_code == 422
    assert "as a date" in error_summary(bad.text)
    assert 'value="next spring"' in bad.text
    db.rollback()
    assert db.get(Case, world.case_id).hold_review_on is None  # type: ignore[union-attr]


def test_the_hold_forms_do_nothing_with_a_forged_token(
    world: World, hanne: TestClient, db: Session
) -> None:
    review = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    answer = hanne.post(
        url(world, "hold"),
        data={"reason": "Keep it.", "review_on": review, CSRF_FIELD: "forged"},
    )
    assert answer.status_code == 400
    assert "Keep it." in answer.text
    lift = hanne.post(url(world, "hold") + "/lift", data={CSRF_FIELD: "forged"})
    assert lift.status_code == 400
    assert not events(db, "case.hold_placed")
    opened = hanne.get(url(world, "hold") + "/lift", follow_redirects=False)
    assert opened.headers["location"] == url(world, "hold")


# --------------------------------------------------------------------------
# The access history


def test_the_access_history_names_who_did_what_and_when(
    world: World, hanne: TestClient, db: Session
) -> None:
    world.api.get(f"/api/v1/cases/{world.case_id}", headers=world.tokens["hanne"])
    world.api.get(f"/api/v1/cases/{world.case_id}", headers=world.tokens["ulrik"])  # refused
    post_form(hanne, url(world, "grants"), {"user_id": str(world.users["eva"])})  # refused
    reporter = reporter_login(world.api, world.case_code)
    world.api.get("/api/v1/reporter/case", headers=reporter)
    world.api.post("/api/v1/reporter/case/messages", json={"body": "More."}, headers=reporter)

    page = hanne.get(url(world, "access"))
    assert page.status_code == 200
    staff = page.text.split("Case handlers, custodians and the service")[1].split(
        'id="reporter-events-title"'
    )[0]
    assert "Hanne Hansen (you)" in staff
    assert "Read the case" in staff
    assert "Ulrik Urdal" in staff
    assert "Looked at the case before declaring a conflict of interest" in staff
    assert "Tried to give someone access to the case, and was refused" in staff
    assert "Stepped aside for a conflict of interest" in staff
    # Never the refused grant's details: who the reporter left out.
    assert "Eva Eide" not in page.text
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00">', staff)
    reporter_part = page.text.split('id="reporter-events-title"')[1]
    assert "Sent the report" in reporter_part
    assert "Sent a message" in reporter_part
    # The reporter's events: the day only, and not their logins or reads.
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\d">', reporter_part)
    assert not re.search(r'<time datetime="[^"]*T', reporter_part)
    assert "Logged in" not in reporter_part
    assert events(db, "case.access_history_read", world.case_id)


def test_the_access_history_api_matches_the_page_and_hides_the_reporters_times(
    world: World, db: Session
) -> None:
    reporter = reporter_login(world.api, world.case_code)
    world.api.get("/api/v1/reporter/case", headers=reporter)
    path = f"/api/v1/cases/{world.case_id}/access"
    for username, status in (
        ("otto", 404),
        ("rune", 404),
        ("adm", 404),
        ("kari", 404),
        ("ulrik", 409),
    ):
        assert world.api.get(path, headers=world.tokens[username]).status_code == status
    assert world.api.get(path, headers=reporter).status_code == 401
    answer = world.api.get(path, headers=world.tokens["hanne"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["page"] == 1
    declared = [e for e in body["staff_events"] if e["action"] == "case.declared"]
    assert declared[0]["actor_name"] == "Hanne Hansen"
    assert declared[0]["occurred"].endswith("+00:00")
    assert {e["action"] for e in body["reporter_events"]} == {"case.submitted"}
    assert set(body["reporter_events"][0]) == {"action", "day"}
    db.rollback()
    # The reporter's read is in their chain, but not told to the handlers.
    logged = db.execute(select(ReporterAuditEvent.action)).scalars().all()
    assert "reporter.case_read" in logged
    assert all("details" not in e for e in body["staff_events"])


def test_the_access_history_is_paged(world: World, hanne: TestClient) -> None:
    for _ in range(55):
        world.api.get(f"/api/v1/cases/{world.case_id}", headers=world.tokens["hanne"])
    first = hanne.get(url(world, "access"))
    assert "Page 1 of 2" in first.text
    second = hanne.get(url(world, "access") + "?page=2")
    assert "Page 2 of 2" in second.text
    assert "Newer" in second.text
    assert hanne.get(url(world, "access") + "?page=x").status_code == 200


def test_a_refusal_shown_at_the_form_undoes_the_work_and_what_it_queued(
    world: World, db: Session
) -> None:
    """The savepoint goes with what the action wrote and queued for the audit trail;
    the refusal's own event is written instead, and the rest of the request stays."""
    from varsling import audit
    from varsling.errors import Conflict
    from varsling.web.staff_case_subpages import _attempt

    def half_done() -> None:
        audit.record(session, actor="user:1", action="case.hold_placed", case_id=world.case_id)
        session.get(Case, world.case_id).hold_review_on = dt.date(2030, 1, 1)  # type: ignore[union-attr]
        session.flush()
        raise Conflict("No.").audited(
            actor="user:1", action="case.hold_refused", case_id=world.case_id
        )

    maker = world.app.state.sessionmaker
    with maker.begin() as session:
        audit.record(session, actor="user:1", action="case.read", case_id=world.case_id)
        refused = _attempt(session, half_done, (Conflict,))
        assert isinstance(refused, Conflict)
        with pytest.raises(KeyError):  # anything else passes on
            _attempt(session, lambda: {}["x"], (Conflict,))
    assert [e.action for e in events(db, "case.read", world.case_id)] == ["case.read"]
    assert events(db, "case.hold_refused", world.case_id)
    assert not events(db, "case.hold_placed", world.case_id)
    assert db.get(Case, world.case_id).hold_review_on is None  # type: ignore[union-attr]
