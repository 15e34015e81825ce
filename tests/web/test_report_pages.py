"""The report form and the receipt, on the real app and database."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import declare, login, make_unit, make_user, open_first_case, reporter_login
from varsling.app import create_app
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.cases.exclusions import is_excluded
from varsling.cases.models import Attachment, Case
from varsling.config import Settings
from varsling.web.security import CSRF_FIELD, SESSION_COOKIE, CsrfSigner

CODE = re.compile(r"\d{4} \d{4} \d{4} \d{4} \d{4}")
DASH = "\u2013"
TOKEN = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')


@pytest.fixture
def org(db: Session, settings: Settings) -> dict[str, int]:
    """National → Vestland (county) → Bergen (municipal, no handlers of its own), and youth."""
    national = make_unit(db, "Sentralt", kind="national")
    vestland = make_unit(db, "Vestland fylkesparti", parent_id=national.id, kind="county")
    bergen = make_unit(db, "Bergen kommuneparti", parent_id=vestland.id, kind="municipal")
    askoy = make_unit(db, "Askøy kommuneparti", parent_id=vestland.id, kind="municipal")
    oslo = make_unit(db, "Oslo fylkesparti", parent_id=national.id, kind="county")
    youth = make_unit(db, "Ungdomspartiet", parent_id=national.id, kind="youth")
    students = make_unit(db, "Studentlaget i Bergen", parent_id=youth.id, kind="student")
    nina = make_user(db, settings, "nina", units=(national.id,), display_name="Nina Nilsen")
    hanne = make_user(db, settings, "hanne", units=(vestland.id,), display_name="Hanne Hansen")
    ola = make_user(db, settings, "ola", units=(vestland.id,), display_name="Ola Olsen")
    cora = make_user(
        db, settings, "cora", roles=("custodian",), units=(national.id,), display_name="Cora"
    )
    return {
        "national": national.id,
        "vestland": vestland.id,
        "bergen": bergen.id,
        "askoy": askoy.id,
        "oslo": oslo.id,
        "youth": youth.id,
        "students": students.id,
        "nina": nina.id,
        "hanne": hanne.id,
        "ola": ola.id,
        "cora": cora.id,
    }


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def site(app: FastAPI) -> Iterator[TestClient]:
    """A browser on the whole service: it keeps its cookie between requests."""
    with TestClient(app) as test_client:
        yield test_client


def form_token(page: str) -> str:
    match = TOKEN.search(page)
    assert match is not None, "the page has no form token"
    return html.unescape(match.group(1))


def open_form(site: TestClient, unit_id: int | str, language: str = "nb") -> str:
    response = site.get(f"/{language}/report", params={"unit": str(unit_id)})
    assert response.status_code == 200, response.text
    return response.text


NO_FILE = ("files", ("", b"", "application/octet-stream"))


def send(
    site: TestClient,
    language: str,
    data: dict[str, Any],
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
) -> Any:
    """Post the form as a browser does: multipart, an empty file part if no file is chosen."""
    return site.post(f"/{language}/report", data=data, files=files or [NO_FILE])


def full_report(unit_id: int, token: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        CSRF_FIELD: token,
        "unit": str(unit_id),
        "category": "abuse_of_power",
        "description": "Styret stengte meg ute etter at jeg sa fra på årsmøtet.",
        "when": "Høsten 2025",
        "where": "Årsmøtet på Hotell Norge",
        "involved": "Styrelederen",
        "witnesses": "To andre medlemmer",
        "reported_before": "Til lokallagsleder, i oktober",
        "desired_outcome": "At det blir undersøkt",
        "on_behalf_of_someone_else": "yes",
        "wants_meeting": "yes",
        "identity_name": "Kari Nordmann",
        "identity_contact": "kari@example.org",
    }
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not None}


def counts(db: Session) -> tuple[int, int, int]:
    db.rollback()
    return (
        db.scalar(select(func.count()).select_from(Case)) or 0,
        db.scalar(select(func.count()).select_from(Attachment)) or 0,
        (db.scalar(select(func.count()).select_from(AuditEvent)) or 0)
        + (db.scalar(select(func.count()).select_from(ReporterAuditEvent)) or 0),
    )


def case_code(page: str) -> str:
    block = re.search(r'<p class="case-code">(.*?)</p>', page, re.S)
    assert block is not None, "no case code on the page"
    code = " ".join(re.findall(r"\d{4}", block.group(1)))
    assert CODE.fullmatch(code)
    return code


# --------------------------------------------------------------------------
# Step 1: where it happened


def test_step_one_groups_units_national_first_then_counties_then_youth(
    site: TestClient, org: dict[str, int]
) -> None:
    response = site.get("/en/report")

    assert response.status_code == 200
    page = response.text
    assert '<form class="report-form" method="get" action="/en/report"' in page
    labels = re.findall(r'<optgroup label="([^"]+)">', page)
    assert labels == [
        "National level",
        "Oslo fylkesparti",
        "Vestland fylkesparti",
        "Youth and students",
    ]
    vestland = page.split('<optgroup label="Vestland fylkesparti">')[1].split("</optgroup>")[0]
    names = re.findall(r'<option value="\d+">([^<]+)</option>', vestland)
    # The county party first, then its municipal parties in Norwegian order (æ, ø, å last).
    assert names == ["Vestland fylkesparti", "Askøy kommuneparti", "Bergen kommuneparti"]
    youth = page.split('<optgroup label="Youth and students">')[1].split("</optgroup>")[0]
    assert "Studentlaget i Bergen" in youth
    assert "Ungdomspartiet" in youth
    assert (
        '<option value="national">Don\u2019t know \u2013 send to the national level</option>'
        in page
    )
    # A GET form needs no token and sets no cookie.
    assert SESSION_COOKIE not in site.cookies


def test_step_one_offers_no_unit_nobody_can_receive_for(
    site: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    vestland = make_unit(db, "Vestland fylkesparti", parent_id=national.id, kind="county")
    oslo = make_unit(db, "Oslo fylkesparti", parent_id=national.id, kind="county")
    make_user(db, settings, "hanne", units=(vestland.id,), display_name="Hanne Hansen")

    page = site.get("/en/report").text

    offered = re.findall(r'<option value="(\d+)">', page)
    assert offered == [str(vestland.id)]
    assert "Oslo fylkesparti" not in page
    assert "Sentralt" not in page
    assert str(oslo.id) not in offered


def test_step_one_says_so_when_nobody_can_receive_at_all(
    site: TestClient, db: Session, settings: Settings
) -> None:
    national = make_unit(db, "Sentralt")
    make_user(db, settings, "cora", roles=("custodian",), units=(national.id,))

    page = site.get("/en/report").text

    assert "<select" not in page
    assert "The reporting channel has not been set up yet" in page


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ("", "Choose where in the party it happened."),
        ("99999", "We could not find that part of the party. Choose again."),
        ("abc", "We could not find that part of the party. Choose again."),
    ],
)
def test_no_or_unknown_unit_goes_back_to_step_one_with_an_error(
    site: TestClient, org: dict[str, int], unit: str, message: str
) -> None:
    response = site.get("/en/report", params={"unit": unit})

    assert response.status_code == 422
    page = response.text
    assert '<section class="error-summary"' in page
    assert f'<a href="#unit">{message}</a>' in page
    assert 'aria-describedby="unit-hint unit-error" aria-invalid="true"' in page
    assert f"<title>Error: Send a report {DASH} Varsling</title>" in page


def test_dont_know_opens_the_form_for_the_national_level(
    site: TestClient, org: dict[str, int]
) -> None:
    page = open_form(site, "national", "en")

    assert f'<input type="hidden" name="unit" value="{org["national"]}">' in page
    assert "The report goes to the ethics committee for Sentralt." in page
    assert "Case handlers who receive it: Nina Nilsen." in page
    # Already the national level: nothing to choose between.
    assert 'name="destination"' not in page


# --------------------------------------------------------------------------
# Step 2: the form


def test_form_lists_who_receives_it_and_offers_to_leave_each_out(
    site: TestClient, org: dict[str, int]
) -> None:
    page = open_form(site, org["bergen"], "en")

    assert "Bergen kommuneparti has no case handlers of its own, so the report goes to " in page
    assert "Case handlers who receive it: Hanne Hansen, Ola Olsen." in page
    assert "Straight to the national level" in page
    assert "Case handlers who receive it: Nina Nilsen." in page
    boxes = re.findall(r'<input type="checkbox" id="([^"]+)" name="excluded" value="(\d+)"', page)
    # The handlers, then the identity custodian, each with a box of its own.
    assert [int(value) for _, value in boxes] == [
        org["hanne"],
        org["ola"],
        org["nina"],
        org["cora"],
    ]
    assert boxes[0][0] == "excluded"
    assert boxes[3][0] == f"excluded-custodian-{org['cora']}"
    assert f'<label for="excluded-custodian-{org["cora"]}">Leave out Cora</label>' in page
    assert "If you leave out all of them, nobody can ever be given access to your name." in page
    named = re.findall(r'<input type="hidden" name="offered_custodian" value="(\d+)"', page)
    assert [int(value) for value in named] == [org["cora"]]
    assert '<label for="excluded">Leave out Hanne Hansen</label>' in page
    assert "It never goes to anyone who is not named here." in page
    assert "Case handlers for Vestland fylkesparti:" in page
    assert (
        "If you leave out everyone above, the report goes to the case handlers for "
        "Sentralt instead:" in page
    )
    offered = re.findall(r'<input type="hidden" name="offered" value="(\d+)"', page)
    assert [int(value) for value in offered] == [org["hanne"], org["ola"], org["nina"]]
    assert "only the identity custodians hold" in page
    assert "They are not case handlers" not in page
    # Not an error state: the language switch is there.
    assert "language-switch__list" in page
    assert "Nobody can recover it if you lose it." in page
    assert 'enctype="multipart/form-data"' in page
    assert '<input type="file" id="files" name="files" multiple' in page
    assert "up to 10 files of at most 20\u00a0MB each" in page
    # Every control has a label.
    for control_id in re.findall(r'<(?:input|textarea|select)[^>]* id="([^"]+)"', page):
        assert f'<label for="{control_id}"' in page, control_id
    # The language switch keeps the chosen unit.
    assert f'href="/nb/report?unit={org["bergen"]}"' in page
    assert SESSION_COOKIE in site.cookies


def test_form_never_offers_a_handler_whose_key_is_not_certified(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    """A database writer swapped Hanne's public key: the form leaves her out."""
    from sqlalchemy import update

    from varsling import crypto
    from varsling.accounts.models import User

    db.execute(
        update(User)
        .where(User.id == org["hanne"])
        .values(public_key=crypto.generate_keypair().public_key)
    )
    db.commit()

    page = open_form(site, org["bergen"], "en")

    assert "Case handlers who receive it: Ola Olsen." in page
    assert "Hanne Hansen" not in page
    # The handlers' leave-out boxes (the custodians' own boxes come after them).
    boxes = re.findall(r'id="excluded(?:-\d+)?" name="excluded" value="(\d+)"', page)
    assert [int(value) for value in boxes] == [org["ola"], org["nina"]]


def test_form_says_when_nobody_can_be_granted_the_identity(
    site: TestClient, unit_without_custodian: int
) -> None:
    page = open_form(site, unit_without_custodian, "en")

    assert "No identity custodian is set up for this part of the party" in page
    assert "only the identity custodians hold" not in page


@pytest.fixture
def unit_without_custodian(db: Session, settings: Settings) -> int:
    unit = make_unit(db, "Sentralt", kind="national")
    make_user(db, settings, "hanne", units=(unit.id,), display_name="Hanne Hansen")
    return unit.id


@pytest.mark.parametrize(
    ("language", "heading", "category"),
    [
        ("nb", "Hvem som får varselet", "Seksuell trakassering"),
        ("nn", "Kven som får varselet", "Seksuell trakassering"),
        ("en", "Who receives the report", "Sexual harassment"),
    ],
)
def test_form_is_in_the_chosen_language(
    site: TestClient, org: dict[str, int], language: str, heading: str, category: str
) -> None:
    page = open_form(site, org["vestland"], language)

    assert f'<html lang="{language}">' in page
    assert heading in page
    assert f">{category}</label>" in page


# --------------------------------------------------------------------------
# Sending


def test_full_submission_with_files_reaches_the_handler_and_the_code_opens_it(
    site: TestClient, org: dict[str, int], db: Session, settings: Settings
) -> None:
    token = form_token(open_form(site, org["vestland"]))
    photo = bytes(range(256)) * 600  # more than two chunks

    response = send(
        site,
        "nb",
        full_report(org["vestland"], token, excluded=[str(org["ola"])]),
        files=[
            ("files", ("skjermbilde æøå.png", photo, "image/png")),
            ("files", ("notat.txt", b"Notater fra motet", "text/plain")),
        ],
    )

    assert response.status_code == 200, response.text
    code = case_code(response.text)
    assert "Varselet ditt er sendt" in response.text

    handler = login(site, "hanne")
    items = site.get("/api/v1/cases", headers=handler).json()["items"]
    assert len(items) == 1
    declare(site, handler, items[0]["id"])
    case = site.get(f"/api/v1/cases/{items[0]['id']}", headers=handler).json()
    report = case["report"]
    assert report["category"] == "abuse_of_power"
    assert report["description"] == "Styret stengte meg ute etter at jeg sa fra på årsmøtet."
    assert report["when"] == "Høsten 2025"
    assert report["where"] == "Årsmøtet på Hotell Norge"
    assert report["involved"] == "Styrelederen"
    assert report["witnesses"] == "To andre medlemmer"
    assert report["reported_before"] == "Til lokallagsleder, i oktober"
    assert report["desired_outcome"] == "At det blir undersøkt"
    assert report["on_behalf_of_someone_else"] is True
    assert report["wants_meeting"] is True
    assert case["has_identity"] is True
    assert "Kari" not in str(case)
    files = {f["name"]: f for f in case["files"]}
    assert set(files) == {"skjermbilde æøå.png", "notat.txt"}
    download = site.get(
        f"/api/v1/cases/{items[0]['id']}/files/{files['skjermbilde æøå.png']['id']}",
        headers=handler,
    )
    assert download.status_code == 200
    assert download.content == photo

    # Ola was left out: he never receives the case.
    assert site.get("/api/v1/cases", headers=login(site, "ola")).json()["items"] == []
    db.rollback()
    case_id = items[0]["id"]
    assert is_excluded(db, settings, case_id, org["ola"])
    assert not is_excluded(db, settings, case_id, org["hanne"])

    reporter = reporter_login(site, code)
    own = site.get("/api/v1/reporter/case", headers=reporter).json()
    assert own["report"]["identity"] == {"name": "Kari Nordmann", "contact": "kari@example.org"}
    assert own["report"]["description"].startswith("Styret stengte meg ute")


def test_optional_fields_left_empty_are_not_stored(site: TestClient, org: dict[str, int]) -> None:
    token = form_token(open_form(site, org["national"]))
    empty_optional = dict.fromkeys(
        (
            "when",
            "where",
            "involved",
            "witnesses",
            "reported_before",
            "desired_outcome",
            "identity_name",
            "identity_contact",
        ),
        "  ",
    )
    data = full_report(
        org["national"],
        token,
        on_behalf_of_someone_else=None,
        wants_meeting=None,
        **empty_optional,
    )

    response = send(site, "en", data, files=[NO_FILE])

    assert response.status_code == 200, response.text
    handler = login(site, "nina")
    case_id = open_first_case(site, handler)
    case = site.get(f"/api/v1/cases/{case_id}", headers=handler).json()
    assert case["report"] == {
        "category": "abuse_of_power",
        "description": "Styret stengte meg ute etter at jeg sa fra på årsmøtet.",
        "on_behalf_of_someone_else": False,
        "wants_meeting": False,
    }
    assert case["has_identity"] is False
    assert case["files"] == []


def test_sending_straight_to_the_national_level(site: TestClient, org: dict[str, int]) -> None:
    token = form_token(open_form(site, org["bergen"]))

    response = send(site, "nb", full_report(org["bergen"], token, destination="national"))

    assert response.status_code == 200, response.text
    assert site.get("/api/v1/cases", headers=login(site, "hanne")).json()["items"] == []
    items = site.get("/api/v1/cases", headers=login(site, "nina")).json()["items"]
    assert len(items) == 1


def test_receipt_is_not_cached_and_the_code_is_in_no_url(
    site: TestClient, org: dict[str, int]
) -> None:
    token = form_token(open_form(site, org["vestland"], "en"))

    response = send(site, "en", full_report(org["vestland"], token))

    assert response.status_code == 200
    assert response.history == []
    assert "location" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert str(response.url).endswith("/en/report")
    code = case_code(response.text)
    digits = code.replace(" ", "")
    urls = re.findall(r'(?:href|src|action)="([^"]*)"', response.text)
    assert urls
    assert not [url for url in urls if digits[:8] in url.replace(" ", "")]
    # The language switch is replaced by a note: switching would lose the code.
    assert "language-switch__list" not in response.text
    assert "The language cannot be changed on this page" in response.text
    assert 'href="/en/follow-up"' in response.text
    assert "Within 7 days" in response.text
    assert "Nobody can recover it" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


# --------------------------------------------------------------------------
# Bad input: everything typed is kept, nothing is stored


def test_missing_fields_keep_everything_typed_and_store_nothing(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    token = form_token(open_form(site, org["bergen"], "en"))
    before = counts(db)
    data = full_report(
        org["bergen"],
        token,
        category=None,
        description="   ",
        where='Møtet <script>alert("x")</script>',
        destination="national",
        excluded=[str(org["ola"]), str(org["nina"])],
    )

    response = send(
        site, "en", data, files=[("files", ("bevis.pdf", b"%PDF-1.4", "application/pdf"))]
    )

    assert response.status_code == 422
    page = response.text
    assert counts(db) == before
    summary = page.split('<section class="error-summary"')[1].split("</section>")[0]
    assert 'tabindex="-1" autofocus' in summary
    # Every problem at once, in page order: leaving out Nina leaves nobody at the national level.
    assert re.findall(r'href="#([^"]+)"', summary) == [
        "excluded",
        "category",
        "description",
        "files",
    ]
    assert "Nobody would be left to receive the report" in summary
    assert "Choose what the report is about." in summary
    assert "Describe what happened." in summary
    assert "Choose these files again: bevis.pdf." in summary
    assert f"<title>Error: Send a report {DASH} Varsling</title>" in page
    assert 'aria-describedby="description-hint description-error" aria-invalid="true"' in page
    assert '<fieldset class="field field--error" aria-describedby="category-error">' in page
    # Everything typed is there again, escaped.
    assert 'value="Møtet &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in page
    assert "<script>" not in page
    for name in ("when", "involved", "witnesses", "reported_before", "desired_outcome"):
        assert html.escape(data[name], quote=True) in page, name
    assert 'value="Kari Nordmann"' in page
    assert 'value="kari@example.org"' in page
    assert 'id="on_behalf_of_someone_else" name="on_behalf_of_someone_else" value="yes"' in page
    assert re.search(r'id="wants_meeting"[^>]* checked', page)
    assert re.search(r'id="on_behalf_of_someone_else"[^>]* checked', page)
    assert re.search(r'id="destination-national"[^>]* checked', page)
    assert not re.search(r'id="destination-unit"[^>]* checked', page)
    checked = re.findall(r'name="excluded" value="(\d+)" checked', page)
    assert sorted(int(c) for c in checked) == sorted([org["ola"], org["nina"]])
    # A fresh token, so the reporter can send again straight away.
    resent = send(
        site,
        "en",
        {
            **data,
            CSRF_FIELD: form_token(page),
            "description": "Nå med tekst.",
            "category": "other",
            "excluded": [str(org["ola"])],
        },
    )
    assert resent.status_code == 200, resent.text
    assert counts(db)[0] == before[0] + 1


def test_too_long_text_is_explained_in_the_page_language_and_kept(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    token = form_token(open_form(site, org["national"], "nn"))
    before = counts(db)
    long_text = "å" * 20_001

    response = send(
        site,
        "nn",
        full_report(org["national"], token, description=long_text, when="x" * 501),
    )

    assert response.status_code == 422
    assert counts(db) == before
    assert "«Kva skjedde?» kan ha høgst 20\u00a0000 teikn. Du skreiv 20\u00a0001." in response.text
    assert "«Når skjedde det?» kan ha høgst 500 teikn. Du skreiv 501." in response.text
    assert f">\n{long_text}</textarea>" in response.text


def test_contact_without_a_name_asks_for_the_name(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    token = form_token(open_form(site, org["national"], "en"))
    before = counts(db)

    response = send(site, "en", full_report(org["national"], token, identity_name=""))

    assert response.status_code == 422
    assert counts(db) == before
    assert '<a href="#identity_name">Write your name, or leave both fields' in response.text
    assert 'value="kari@example.org"' in response.text


def test_leaving_out_everyone_up_to_the_top_is_refused_and_keeps_the_text(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    token = form_token(open_form(site, org["bergen"], "en"))
    before = counts(db)
    everyone = [str(org["hanne"]), str(org["ola"]), str(org["nina"])]

    response = send(
        site,
        "en",
        full_report(org["bergen"], token, excluded=everyone),
        files=[("files", ("bevis.pdf", b"%PDF-1.4", "application/pdf"))],
    )

    assert response.status_code == 422
    assert counts(db) == before
    page = response.text
    assert '<a href="#excluded">Nobody would be left to receive the report' in page
    assert 'id="excluded-error"' in page
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in page
    assert len(re.findall(r'name="excluded" value="\d+" checked', page)) == 3
    assert "Choose these files again: bevis.pdf." in page


def test_a_file_too_large_is_named_and_nothing_is_stored(database_url: str, db: Session) -> None:
    settings = make_settings(database_url, max_file_bytes=1000, max_files_per_report=2)
    unit = make_unit(db, "Sentralt", kind="national")
    make_user(db, settings, "nina", units=(unit.id,), display_name="Nina Nilsen")
    app = create_app(settings)
    with TestClient(app) as site:
        page = open_form(site, unit.id, "en")
        assert "up to 2 files of at most 1\u00a0kB each" in page
        before = counts(db)
        too_large = send(
            site,
            "en",
            full_report(unit.id, form_token(page)),
            files=[
                ("files", ("small.txt", b"fine", "text/plain")),
                ("files", ("huge.mov", b"x" * 1001, "video/quicktime")),
            ],
        )
        too_many = send(
            site,
            "en",
            full_report(unit.id, form_token(page)),
            files=[("files", (f"{n}.txt", b"x", "text/plain")) for n in range(3)],
        )
    app.state.engine.dispose()

    assert too_large.status_code == 422
    assert "The file “huge.mov” is larger than 1\u00a0kB. It was not sent." in too_large.text
    assert "Choose these files again: small.txt." in too_large.text
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in too_large.text
    assert 'aria-describedby="files-hint files-error" aria-invalid="true"' in too_large.text
    assert too_many.status_code == 422
    assert "You can add at most 2 files. “2.txt” was not sent." in too_many.text
    assert counts(db) == before


@pytest.mark.parametrize("token", [None, "forged", "1.2.3"])
def test_a_missing_or_forged_form_token_is_refused_and_keeps_the_text(
    site: TestClient, org: dict[str, int], db: Session, token: str | None
) -> None:
    open_form(site, org["national"], "en")
    before = counts(db)

    response = send(site, "en", full_report(org["national"], token))

    assert response.status_code == 400
    assert counts(db) == before
    assert "The form could not be sent" in response.text
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in response.text
    assert not CODE.search(response.text)


def test_a_token_from_another_browser_is_refused(
    app: FastAPI, org: dict[str, int], db: Session
) -> None:
    with TestClient(app) as first, TestClient(app) as second:
        token = form_token(open_form(first, org["national"]))
        open_form(second, org["national"])
        before = counts(db)
        response = send(second, "nb", full_report(org["national"], token))
    assert response.status_code == 400
    assert "Skjemaet kunne ikke sendes" in response.text
    assert counts(db) == before


def test_an_expired_form_explains_itself_and_keeps_the_text(
    site: TestClient, app: FastAPI, org: dict[str, int], db: Session
) -> None:
    open_form(site, org["national"], "nb")
    signer: CsrfSigner = app.state.varsling_csrf
    old = signer.token(site.cookies[SESSION_COOKIE], now=1_000_000_000)
    before = counts(db)

    response = send(
        site,
        "nb",
        full_report(org["national"], old),
        files=[("files", ("bevis.pdf", b"%PDF-1.4", "application/pdf"))],
    )

    assert response.status_code == 400
    assert counts(db) == before
    page = response.text
    assert "Skjemaet var utløpt" in page
    assert '<div class="form-token-notice" tabindex="-1" autofocus>' in page
    # The switch (a link) would lose the text: it is not offered on the error state.
    assert "language-switch__list" not in page
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in page
    assert 'value="Kari Nordmann"' in page
    assert "bevis.pdf" in page
    assert form_token(page) != old


def test_a_form_that_cannot_be_read_is_answered_with_a_page_not_json(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    # (A field far over the limit is cut and shown again: tests/web/test_page_uploads.py.)
    before = counts(db)

    response = site.post("/en/report", data={"description": "x"})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "The form could not be read, so nothing was sent." in response.text
    assert counts(db) == before


def test_a_form_for_a_unit_that_no_longer_exists_goes_back_to_step_one(
    site: TestClient, org: dict[str, int], db: Session
) -> None:
    token = form_token(open_form(site, org["national"], "en"))
    before = counts(db)

    response = send(site, "en", full_report(99999, token))

    assert response.status_code == 422
    assert "We could not find that part of the party. Choose again." in response.text
    assert counts(db) == before


def test_a_reloaded_receipt_does_not_send_the_report_twice(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    page = open_form(site, org["vestland"])
    submission = re.search(r'name="submission" value="([^"]+)"', page)
    assert submission is not None
    fields = full_report(org["vestland"], form_token(page), submission=submission.group(1))

    first = send(site, "nb", fields)
    again = send(site, "nb", fields)

    assert first.status_code == 200
    # The same browser, moments later: the same receipt, not a second report.
    assert again.status_code == 200
    assert case_code(again.text) == case_code(first.text)
    assert counts(db)[0] == 1


# --------------------------------------------------------------------------
# The whole chain of people who may receive it


@pytest.fixture
def chain(db: Session, settings: Settings) -> dict[str, int]:
    """National → Nordland (county) → Bodø (municipal), each with one case handler."""
    national = make_unit(db, "Sentralt", kind="national")
    county = make_unit(db, "Nordland fylkesparti", parent_id=national.id, kind="county")
    town = make_unit(db, "Bodø kommuneparti", parent_id=county.id, kind="municipal")
    nina = make_user(db, settings, "nina", units=(national.id,), display_name="Nina Nilsen")
    frode = make_user(db, settings, "frode", units=(county.id,), display_name="Frode Fylke")
    kari = make_user(db, settings, "kari", units=(town.id,), display_name="Kari Kommune")
    return {
        "national": national.id,
        "county": county.id,
        "town": town.id,
        "nina": nina.id,
        "frode": frode.id,
        "kari": kari.id,
    }


def test_the_form_names_everyone_up_the_chain_with_a_box_for_each(
    site: TestClient, chain: dict[str, int]
) -> None:
    page = open_form(site, chain["town"], "en")

    levels = re.findall(r'<legend class="fallback-level__title">(.*?)</legend>', page, re.S)
    assert [html.unescape(level.strip()) for level in levels] == [
        "Case handlers for Bodø kommuneparti:",
        "If you leave out everyone above, the report goes to the case handlers for "
        "Nordland fylkesparti instead:",
        "If you leave out everyone above, the report goes to the case handlers for "
        "Sentralt instead:",
    ]
    boxes = re.findall(r'name="excluded" value="(\d+)"', page)
    assert [int(value) for value in boxes] == [chain["kari"], chain["frode"], chain["nina"]]
    for name in ("Kari Kommune", "Frode Fylke", "Nina Nilsen"):
        assert f"Leave out {name}</label>" in page


def test_leaving_out_the_municipal_handler_sends_only_to_the_county_handler(
    site: TestClient, chain: dict[str, int], db: Session, settings: Settings
) -> None:
    page = open_form(site, chain["town"])
    offered = re.findall(r'name="offered" value="(\d+)"', page)
    data = full_report(
        chain["town"], form_token(page), excluded=[str(chain["kari"])], offered=offered
    )

    response = send(site, "nb", data)

    assert response.status_code == 200, response.text
    frode = login(site, "frode")
    items = site.get("/api/v1/cases", headers=frode).json()["items"]
    assert len(items) == 1
    case_id = items[0]["id"]
    declare(site, frode, case_id)
    assert site.get(f"/api/v1/cases/{case_id}", headers=frode).status_code == 200
    for other in ("kari", "nina"):
        assert site.get(f"/api/v1/cases/{case_id}", headers=login(site, other)).status_code == 404
    db.rollback()
    assert is_excluded(db, settings, case_id, chain["kari"])
    assert not is_excluded(db, settings, case_id, chain["frode"])


def test_leaving_out_the_first_two_levels_sends_to_the_national_handler(
    site: TestClient, chain: dict[str, int]
) -> None:
    page = open_form(site, chain["town"])
    data = full_report(
        chain["town"],
        form_token(page),
        excluded=[str(chain["kari"]), str(chain["frode"])],
        offered=re.findall(r'name="offered" value="(\d+)"', page),
    )

    assert send(site, "nb", data).status_code == 200
    assert len(site.get("/api/v1/cases", headers=login(site, "nina")).json()["items"]) == 1
    assert site.get("/api/v1/cases", headers=login(site, "frode")).json()["items"] == []


def test_someone_the_form_did_not_name_never_receives_it(
    site: TestClient, chain: dict[str, int], db: Session, settings: Settings
) -> None:
    page = open_form(site, chain["town"], "en")
    offered = re.findall(r'name="offered" value="(\d+)"', page)
    # A new case handler joins the county after the reporter opened the form.
    make_user(db, settings, "nils", units=(chain["county"],), display_name="Nils Ny")
    before = counts(db)

    response = send(
        site,
        "en",
        full_report(
            chain["town"], form_token(page), excluded=[str(chain["kari"])], offered=offered
        ),
    )

    assert response.status_code == 422
    assert counts(db) == before
    page = response.text
    assert '<a href="#excluded">The case handlers who would receive the report have changed' in page
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in page
    # The form now names the newcomer, who can be left out too.
    assert "Leave out Nils Ny</label>" in page
    assert "language-switch__list" not in page
    assert "language-switch__note" in page
