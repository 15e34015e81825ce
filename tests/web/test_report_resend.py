"""The report form sent twice, custodians on the form, its limits, the just-sent notice and
the signed receipt."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tests.factories import make_unit, make_user
from tests.web.test_report_pages import case_code, counts, form_token, full_report, open_form, send
from varsling import receipts
from varsling.app import create_app
from varsling.cases.models import Case, CaseKey
from varsling.config import Settings
from varsling.db import make_engine, make_sessionmaker
from varsling.reports import service
from varsling.reports.models import SpentSubmission
from varsling.web.report_pages import SENT_COOKIE
from varsling.web.security import SESSION_COOKIE


@pytest.fixture
def org(db: Session, settings: Settings) -> dict[str, int]:
    """National (handler Nina, custodian Cora) → county (handler Hanne, custodian Kurt)."""
    national = make_unit(db, "Sentralt", kind="national")
    county = make_unit(db, "Vestland fylkesparti", parent_id=national.id, kind="county")
    nina = make_user(db, settings, "nina", units=(national.id,), display_name="Nina Nilsen")
    hanne = make_user(db, settings, "hanne", units=(county.id,), display_name="Hanne Hansen")
    cora = make_user(
        db, settings, "cora", roles=("custodian",), units=(national.id,), display_name="Cora"
    )
    kurt = make_user(
        db, settings, "kurt", roles=("custodian",), units=(county.id,), display_name="Kurt"
    )
    return {
        "national": national.id,
        "county": county.id,
        "nina": nina.id,
        "hanne": hanne.id,
        "cora": cora.id,
        "kurt": kurt.id,
    }


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def site(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as browser:
        yield browser


@pytest.fixture
def other_site(app: FastAPI) -> Iterator[TestClient]:
    """A second browser, with a cookie of its own."""
    with TestClient(app) as browser:
        yield browser


def form_fields(page: str, unit_id: int, **overrides: Any) -> dict[str, Any]:
    """The form as our page posts it: with its submission id and who it named."""
    hidden = {
        name: re.findall(rf'<input type="hidden" name="{name}" value="([^"]+)"', page)
        for name in ("submission", "offered", "offered_custodian", "custodians_named")
    }
    fields = full_report(
        unit_id,
        form_token(page),
        submission=hidden["submission"][0],
        offered=hidden["offered"],
        offered_custodian=hidden["offered_custodian"],
        custodians_named=hidden["custodians_named"][0],
    )
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


def identity_holders(db: Session) -> set[int]:
    db.rollback()
    return set(db.scalars(select(CaseKey.user_id).where(CaseKey.purpose == "identity")))


# --------------------------------------------------------------------------
# A double click never loses the case code


def test_the_same_browser_sending_twice_sees_the_same_receipt(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    fields = form_fields(open_form(site, org["county"]), org["county"])

    first = send(site, "nb", fields)
    second = send(site, "nb", fields)

    assert first.status_code == 200
    assert second.status_code == 200
    assert case_code(second.text) == case_code(first.text)
    assert counts(db)[0] == 1
    # What the row keeps of the receipt is sealed: no code digits, only a day.
    db.rollback()
    [spent] = db.scalars(select(SpentSubmission)).all()
    assert spent.sealed_receipt is not None
    assert case_code(first.text).replace(" ", "").encode() not in spent.sealed_receipt
    assert type(spent.spent_on) is dt.date


def test_the_second_click_gets_its_receipt_even_if_the_handlers_changed_between(
    site: TestClient, db: Session, settings: Settings, org: dict[str, int]
) -> None:
    fields = form_fields(open_form(site, org["county"]), org["county"])
    first = send(site, "nb", fields)
    make_user(db, settings, "ny", units=(org["county"],), display_name="Ny Nyhus")

    second = send(site, "nb", fields)

    assert second.status_code == 200
    assert case_code(second.text) == case_code(first.text)
    assert counts(db)[0] == 1


def test_another_browser_replaying_the_form_never_sees_the_code(
    site: TestClient, other_site: TestClient, db: Session, org: dict[str, int]
) -> None:
    page = open_form(site, org["county"])
    fields = form_fields(page, org["county"])
    assert send(site, "nb", fields).status_code == 200

    # With its own valid form token, and the first form's submission id.
    own_token = form_token(open_form(other_site, org["county"]))
    assert other_site.cookies[SESSION_COOKIE] != site.cookies[SESSION_COOKIE]
    replay = send(other_site, "nb", {**fields, "csrf_token": own_token})

    assert replay.status_code == 409
    assert "allerede sendt" in replay.text
    assert 'class="case-code"' not in replay.text
    # With the first browser's token it is not even accepted as a form.
    copied = send(other_site, "nb", fields)
    assert copied.status_code == 400
    assert 'class="case-code"' not in copied.text
    assert counts(db)[0] == 1


def test_after_ten_minutes_the_same_browser_gets_already_sent_without_the_code(
    site: TestClient, db: Session, org: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = form_fields(open_form(site, org["county"]), org["county"])
    assert send(site, "nb", fields).status_code == 200

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=service.RECEIPT_MINUTES, seconds=5)
    monkeypatch.setattr("varsling.web.report_pages.utcnow", lambda: later)
    again = send(site, "nb", fields)

    assert again.status_code == 409
    assert "allerede sendt" in again.text
    assert 'class="case-code"' not in again.text
    assert counts(db)[0] == 1


def test_kept_receipts_are_cleared_after_a_day_and_marks_after_two(
    db: Session, settings: Settings
) -> None:
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    service.spend_submission(db, settings, "first-form-submission", browser="b" * 43, now=now)
    service.keep_receipt(
        db,
        settings,
        "first-form-submission",
        browser="b" * 43,
        case_code="1234 5678 9012 3456 7890",
        receipt="a receipt",
        now=now,
    )
    db.commit()

    next_day = now + dt.timedelta(days=1, minutes=2)
    service.spend_submission(db, settings, "second-form-submission", browser=None, now=next_day)
    db.commit()
    db.expire_all()
    kept = db.scalars(select(SpentSubmission.sealed_receipt)).all()
    assert len(kept) == 2
    assert sum(receipt is not None for receipt in kept) == 1  # still there the next day

    two_days = now + dt.timedelta(days=2, minutes=2)
    service.spend_submission(db, settings, "third-form-submission", browser=None, now=two_days)
    db.commit()
    db.expire_all()
    receipts = db.scalars(select(SpentSubmission.sealed_receipt)).all()
    assert len(receipts) == 3
    assert receipts == [None, None, None]

    three_days = now + dt.timedelta(days=3, minutes=2)
    service.spend_submission(db, settings, "fourth-form-submission", browser=None, now=three_days)
    db.commit()
    assert db.scalar(select(func.count()).select_from(SpentSubmission)) == 3


def test_another_database_error_says_nothing_was_stored(
    site: TestClient, db: Session, org: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_submit = service.submit_report

    def submit_then_fail(session: Session, *args: Any, **kwargs: Any) -> Any:
        submission = real_submit(session, *args, **kwargs)
        # A constraint the database enforces, hit after the report was written.
        session.execute(text("INSERT INTO cases (id) VALUES (NULL)"))
        return submission

    monkeypatch.setattr(service, "submit_report", submit_then_fail)
    fields = form_fields(open_form(site, org["county"], "en"), org["county"])
    before = counts(db)

    failed = send(site, "en", fields)

    assert failed.status_code == 503
    assert "nothing was stored and nothing was sent" in failed.text
    assert "already been sent" not in failed.text
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in failed.text
    assert counts(db) == before
    assert db.scalar(select(func.count()).select_from(SpentSubmission)) == 0

    # Nothing was spent: the same form goes through once the fault is gone.
    monkeypatch.setattr(service, "submit_report", real_submit)
    assert case_code(send(site, "en", fields).text)
    assert counts(db)[0] == 1


# --------------------------------------------------------------------------
# Custodians on the form


def test_the_form_names_the_custodians_with_a_box_each(
    site: TestClient, org: dict[str, int]
) -> None:
    page = open_form(site, org["county"], "en")

    assert "Identity custodians: leave someone out" in page
    for custodian in ("kurt", "cora"):
        assert f'id="excluded-custodian-{org[custodian]}" name="excluded"' in page
    assert "If you leave out all of them, nobody can ever be given access to your name." in page
    assert "You have left out every identity custodian" not in page


def test_leaving_out_a_custodian_on_the_form_keeps_the_identity_from_them(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    page = open_form(site, org["county"])
    fields = form_fields(page, org["county"], excluded=[str(org["kurt"])])

    assert send(site, "nb", fields).status_code == 200

    assert identity_holders(db) == {org["cora"]}


def test_leaving_out_every_custodian_is_sent_and_the_form_says_nobody_holds_the_name(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    everyone = [str(org["kurt"]), str(org["cora"])]
    page = open_form(site, org["county"], "en")

    # Shown again (no category chosen): the form says what leaving all out means.
    shown = send(site, "en", form_fields(page, org["county"], excluded=everyone, category=None))
    assert shown.status_code == 422
    assert "You have left out every identity custodian, so nobody can ever be given" in shown.text

    sent = send(site, "en", form_fields(shown.text, org["county"], excluded=everyone))
    assert sent.status_code == 200
    assert case_code(sent.text)
    assert identity_holders(db) == set()


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("nb", "Du har holdt alle identitetsforvalterne utenfor"),
        ("nn", "Du har halde alle identitetsforvaltarane utanfor"),
    ],
)
def test_the_nobody_holds_the_name_text_is_in_each_language(
    site: TestClient, org: dict[str, int], language: str, words: str
) -> None:
    page = open_form(site, org["county"], language)
    everyone = [str(org["kurt"]), str(org["cora"])]
    shown = send(site, language, form_fields(page, org["county"], excluded=everyone, category=None))
    assert words in shown.text


def test_a_custodian_the_form_did_not_name_never_gets_the_identity_key(
    site: TestClient, db: Session, settings: Settings, org: dict[str, int]
) -> None:
    page = open_form(site, org["county"], "en")
    make_user(
        db, settings, "nye", roles=("custodian",), units=(org["county"],), display_name="Ny Nyhus"
    )
    before = counts(db)

    refused = send(site, "en", form_fields(page, org["county"]))

    assert refused.status_code == 422
    assert "The identity custodians who would hold your name have changed" in refused.text
    assert "Styret stengte meg ute etter at jeg sa fra på årsmøtet." in refused.text
    assert "Leave out Ny Nyhus</label>" in refused.text
    assert counts(db) == before


def test_a_form_that_named_no_custodian_is_refused_when_one_appears(
    site: TestClient, db: Session, settings: Settings
) -> None:
    unit = make_unit(db, "Sentralt", kind="national")
    make_user(db, settings, "nina", units=(unit.id,), display_name="Nina Nilsen")
    page = open_form(site, unit.id, "en")
    assert "No identity custodian is set up for this part of the party" in page
    make_user(db, settings, "cora", roles=("custodian",), units=(unit.id,))
    before = counts(db)

    refused = send(site, "en", form_fields(page, unit.id))

    assert refused.status_code == 422
    assert "The identity custodians who would hold your name have changed" in refused.text
    assert counts(db) == before


# --------------------------------------------------------------------------
# The limits are known before sending; the back button is no silent second report


def test_text_boxes_carry_the_servers_limits(site: TestClient, org: dict[str, int]) -> None:
    page = open_form(site, org["county"])

    limits = {
        "description": "20000",
        "when": "500",
        "where": "500",
        "involved": "20000",
        "witnesses": "20000",
        "reported_before": "20000",
        "desired_outcome": "20000",
        "identity_name": "500",
        "identity_contact": "500",
    }
    for name, limit in limits.items():
        control = re.search(rf'<(?:input|textarea)[^>]* id="{name}"[^>]*>', page)
        assert control is not None, name
        assert f'maxlength="{limit}"' in control.group(0), name


def test_after_a_receipt_the_form_says_sending_again_makes_a_second_report(
    site: TestClient, other_site: TestClient, org: dict[str, int]
) -> None:
    assert "sent a report from this browser" not in open_form(site, org["county"], "en")
    receipt = send(site, "en", form_fields(open_form(site, org["county"]), org["county"]))
    assert receipt.status_code == 200

    flag = site.cookies[SENT_COOKIE]
    # Only an expiry and its MAC: nothing names the case or the code.
    assert re.fullmatch(r"\d{10}\.[A-Za-z0-9_-]{43}", flag)
    assert case_code(receipt.text).replace(" ", "") not in flag

    again = open_form(site, org["county"], "en")
    assert "You have just sent a report from this browser" in again
    assert "it becomes a second, separate report" in again
    assert "You have just sent a report" in site.get("/en/report").text
    assert "Du har nettopp sendt et varsel fra denne nettleseren" in open_form(site, org["county"])
    assert "Du har nettopp sendt eit varsel frå denne nettlesaren" in open_form(
        site, org["county"], "nn"
    )
    # Another browser, or a forged flag, sees no such notice.
    assert "sent a report from this browser" not in open_form(other_site, org["county"], "en")
    until = flag.split(".")[0]
    other_site.cookies.set(SENT_COOKIE, f"{until}.{'A' * 43}")
    assert "sent a report from this browser" not in open_form(other_site, org["county"], "en")


def test_a_second_click_racing_the_first_waits_and_gets_the_same_code(
    settings: Settings,
) -> None:
    """Two transactions at once, as two quick clicks make them (on PostgreSQL the
    second INSERT waits for the first and then conflicts)."""
    engine = make_engine(settings.database_url)
    maker = make_sessionmaker(engine)
    browser = "c" * 43
    first = maker()
    first.begin()
    service.spend_submission(first, settings, "racing-form-submission", browser=browser)
    outcome: dict[str, object] = {}

    def second_click() -> None:
        with maker.begin() as second:
            try:
                service.spend_submission(
                    second, settings, "racing-form-submission", browser=browser
                )
                outcome["spent"] = True
            except service.AlreadySent as sent:
                outcome["code"] = sent.case_code

    racer = threading.Thread(target=second_click)
    racer.start()
    racer.join(timeout=1)
    assert racer.is_alive()  # it waits for the first click's transaction
    service.keep_receipt(
        first,
        settings,
        "racing-form-submission",
        browser=browser,
        case_code="1111 2222 3333 4444 5555",
        receipt="a receipt",
    )
    first.commit()
    first.close()
    racer.join(timeout=30)

    assert outcome == {"code": "1111 2222 3333 4444 5555"}
    engine.dispose()


# --------------------------------------------------------------------------
# The signed receipt on the receipt page

HEADINGS = {
    "nb": "Den signerte kvitteringen din",
    "nn": "Den signerte kvitteringa di",
    "en": "Your signed receipt",
}
EXPLANATIONS = {
    "nb": "Denne kvitteringen viser at du har sendt et varsel",
    "nn": "Denne kvitteringa viser at du har sendt eit varsel",
    "en": "This receipt proves that you sent a report",
}


def signed_receipt(page: str) -> str:
    block = re.search(r'<pre class="signed-receipt__block">(.*?)</pre>', page, re.S)
    assert block is not None, "no signed receipt on the page"
    return html.unescape(block.group(1))


@pytest.mark.parametrize("language", sorted(HEADINGS))
def test_the_receipt_page_shows_the_signed_receipt_in_every_language(
    site: TestClient, db: Session, settings: Settings, org: dict[str, int], language: str
) -> None:
    page = send(
        site, language, form_fields(open_form(site, org["county"], language), org["county"])
    )

    assert page.status_code == 200
    assert f'<h2 id="signed-receipt-title">{HEADINGS[language]}</h2>' in page.text
    assert EXPLANATIONS[language] in page.text
    text = signed_receipt(page.text)
    db.rollback()
    case = db.scalars(select(Case)).one()
    assert receipts.verify(text, settings.signing_public_key).day == case.received_on
    digits = case_code(page.text).replace(" ", "")
    for secret in (digits, case_code(page.text), case.id, "Kari Nordmann", "Styrelederen"):
        assert secret not in text


def test_a_double_click_shows_the_same_receipt_and_the_row_keeps_it_sealed(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    fields = form_fields(open_form(site, org["county"]), org["county"])

    first = send(site, "en", fields)
    second = send(site, "en", fields)

    assert second.status_code == 200
    assert counts(db)[0] == 1
    assert signed_receipt(second.text) == signed_receipt(first.text)
    db.rollback()
    [spent] = db.scalars(select(SpentSubmission)).all()
    assert spent.sealed_receipt is not None
    parsed = receipts.parse(signed_receipt(first.text))
    for part in (parsed.signature, parsed.submission, parsed.submission.hex().encode()):
        assert part not in spent.sealed_receipt


def test_the_page_receipt_binds_the_fields_the_identity_and_each_file(
    site: TestClient, db: Session, org: dict[str, int]
) -> None:
    evidence = b"a screenshot's bytes " * 10_000  # several chunks
    page = send(
        site,
        "nb",
        form_fields(open_form(site, org["county"]), org["county"]),
        files=[("files", ("bevis.png", evidence, "image/png"))],
    )
    assert page.status_code == 200
    token = site.post("/api/v1/reporter/session", json={"case_code": case_code(page.text)})
    db.rollback()
    principal = service.reporter_principal(db, token.json()["token"])

    canonical = receipts.canonical_submission(
        unit_id=org["county"],
        category="abuse_of_power",
        report={
            "description": "Styret stengte meg ute etter at jeg sa fra på årsmøtet.",
            "when": "Høsten 2025",
            "where": "Årsmøtet på Hotell Norge",
            "involved": "Styrelederen",
            "witnesses": "To andre medlemmer",
            "reported_before": "Til lokallagsleder, i oktober",
            "desired_outcome": "At det blir undersøkt",
            "on_behalf_of_someone_else": True,
            "wants_meeting": True,
        },
        identity={"name": "Kari Nordmann", "contact": "kari@example.org"},
        files=[
            receipts.FileDigest(
                "bevis.png", "image/png", len(evidence), hashlib.sha256(evidence).digest()
            )
        ],
    )
    shown = receipts.parse(signed_receipt(page.text)).submission
    assert shown == receipts.submission_value(principal.case_key, canonical)
