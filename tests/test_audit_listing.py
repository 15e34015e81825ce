"""GET /api/v1/audit/events: auditors page through one chain; nothing is skipped,
repeated, or told that the trail does not hold; the reporter chain tells days only."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling import audit
from varsling.accounts.models import Unit
from varsling.audit import AuditEvent, ReporterAuditEvent
from varsling.config import Settings

URL = "/api/v1/audit/events"


@pytest.fixture
def auditor(client: TestClient, db: Session, settings: Settings) -> dict[str, str]:
    make_user(db, settings, "audun", roles=("auditor",))
    return login(client, "audun")


def _page(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _seqs(body: dict[str, Any]) -> list[int]:
    return [e["seq"] for e in body["events"]]


def _root(db: Session) -> int:
    root = db.scalars(select(Unit).where(Unit.parent_id.is_(None))).first()
    return root.id if root is not None else make_unit(db).id


def _units(db: Session, count: int, prefix: str = "Unit") -> None:
    """`count` new staff events (a unit each)."""
    root = _root(db)
    for number in range(count):
        make_unit(db, f"{prefix} {number}", parent_id=root)


def test_paging_back_never_skips_or_repeats_while_new_events_arrive(
    client: TestClient, db: Session, auditor: dict[str, str]
) -> None:
    _units(db, 12)
    first = _page(client, auditor, limit=4)
    seen = _seqs(first)
    assert seen == sorted(seen, reverse=True)
    top = seen[0]
    cursor = first["older"]
    while cursor is not None:
        # Someone acts while the auditor pages: new events land on top, not in the pages.
        _units(db, 1, f"Meanwhile {cursor}")
        body = _page(client, auditor, limit=4, before=cursor)
        assert _seqs(body) == sorted(_seqs(body), reverse=True)
        seen += _seqs(body)
        cursor = body["older"]
    assert seen == list(range(top, 0, -1))
    # The first page's `newer` cursor leads to the events that arrived meanwhile.
    assert first["newer"] is None
    newer = _page(client, auditor, limit=200, after=top)
    arrived = {e["seq"] for e in newer["events"]}
    assert arrived == set(range(top + 1, max(arrived) + 1))
    assert not arrived & set(seen)


def test_paging_forward_from_the_start_reaches_the_newest_without_gaps(
    client: TestClient, db: Session, auditor: dict[str, str]
) -> None:
    _units(db, 7)
    seen: list[int] = []
    cursor: int | None = 0
    pages = 0
    while cursor is not None and pages < 50:
        body = _page(client, auditor, limit=3, after=cursor)
        # Each page is newest first; forward paging reads them oldest to newest.
        seen += list(reversed(_seqs(body)))
        _units(db, 1, f"Meanwhile {pages}")
        cursor = body["newer"]
        pages += 1
    assert pages < 50
    assert seen == list(range(1, seen[-1] + 1))
    # And the way back from a page's oldest event is its `older` cursor.
    middle = _page(client, auditor, limit=3, after=3)
    assert _seqs(middle) == [6, 5, 4]
    assert middle["older"] == 4
    assert _seqs(_page(client, auditor, limit=3, before=4)) == [3, 2, 1]


def test_an_empty_page_still_leads_back(
    client: TestClient, db: Session, auditor: dict[str, str]
) -> None:
    _units(db, 2)
    head = max(db.scalars(select(AuditEvent.seq)))
    body = _page(client, auditor, after=head + 1000)
    assert body["events"] == []
    assert body["older"] == head + 1001
    assert _seqs(_page(client, auditor, before=body["older"], limit=1)) == [head + 1]


def test_filters_by_case_actor_action_and_days(
    client: TestClient, db: Session, settings: Settings, auditor: dict[str, str]
) -> None:
    unit = make_unit(db)
    hanne = make_user(db, settings, "hanne", units=(unit.id,))
    client.post("/api/v1/reports", json=report(unit.id))
    client.post("/api/v1/reports", json=report(unit.id))
    handler = login(client, "hanne")
    case_ids = [c["id"] for c in client.get("/api/v1/cases", headers=handler).json()["items"]]
    assert len(case_ids) == 2
    for case_id in case_ids:
        client.post(
            f"/api/v1/cases/{case_id}/declaration",
            json={"conflict": False, "risk": "low"},
            headers=handler,
        )
    first = case_ids[0]

    by_case = _page(client, auditor, case_id=first.upper(), limit=200)["events"]
    assert by_case
    assert {e["case_id"] for e in by_case} == {first}
    stored = db.scalars(select(AuditEvent).where(AuditEvent.case_id == first)).all()
    assert sorted(e["seq"] for e in by_case) == sorted(e.seq for e in stored)

    by_actor = _page(client, auditor, actor=f"user:{hanne.id}", limit=200)["events"]
    assert len(by_actor) >= 3  # login and two declarations
    assert {e["actor"] for e in by_actor} == {f"user:{hanne.id}"}

    by_action = _page(client, auditor, action="user.login", limit=200)["events"]
    assert {e["action"] for e in by_action} == {"user.login"}
    assert len(by_action) == 2  # the auditor's and the handler's

    today = dt.datetime.now(dt.UTC).date()
    assert _page(client, auditor, **{"from": today.isoformat(), "to": today.isoformat()})["events"]
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert _page(client, auditor, **{"from": tomorrow})["events"] == []
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    assert _page(client, auditor, to=yesterday)["events"] == []


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"case_id": "../../etc"}, "case id"),
        ({"actor": "hanne"}, "actor"),
        ({"action": "DROP TABLE"}, "action"),
        ({"from": "yesterday"}, "from day"),
        ({"from": "2026-02-02", "to": "2026-02-01"}, "first day"),
        ({"chain": "secret"}, "chain"),
        ({"chain": "reporter", "actor": "user:1"}, "actor"),
        ({"limit": "0"}, "page size"),
        ({"limit": "201"}, "page size"),
        ({"limit": "many"}, "page size"),
        ({"after": "x"}, "after"),
        ({"after": "1", "before": "5"}, "not both"),
    ],
)
def test_a_bad_filter_is_refused_with_a_plain_message_and_not_listed(
    client: TestClient, db: Session, auditor: dict[str, str], params: dict[str, str], word: str
) -> None:
    response = client.get(URL, params=params, headers=auditor)
    assert response.status_code == 422
    assert word in response.json()["error"]["message"]
    listed = db.scalars(select(AuditEvent).where(AuditEvent.action == "audit.listed")).all()
    assert listed == []


def test_listing_is_audited_with_its_filter(
    client: TestClient, db: Session, auditor: dict[str, str]
) -> None:
    _page(client, auditor, action="unit.created", limit=2)
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "audit.listed")).one()
    assert event.actor.startswith("user:")
    details = json.loads(event.details)
    assert details["action"] == "unit.created"
    assert details["chain"] == "staff"
    assert details["events"] == 0


def test_events_are_shown_exactly_as_the_trail_holds_them(
    client: TestClient, db: Session, settings: Settings, auditor: dict[str, str]
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    secret = "Nils Nilsen groped me at the county meeting"
    client.post("/api/v1/reports", json=report(unit.id, description=secret))
    body = _page(client, auditor, limit=200)
    rows = {r.seq: r for r in db.scalars(select(AuditEvent))}
    for event in body["events"]:
        row = rows[event["seq"]]
        assert event["occurred"] == row.occurred
        assert event["actor"] == row.actor
        assert event["action"] == row.action
        assert event["case_id"] == row.case_id
        assert event["details"] == json.loads(row.details)
        assert event["hash"] == row.hash
    assert "Nils" not in json.dumps(body)


def _reporter_event(db: Session, day: dt.date, case_id: str) -> None:
    moment = dt.datetime.combine(day, dt.time(14, 37, 12), tzinfo=dt.UTC)
    audit.record(db, actor=audit.REPORTER, action="reporter.login", case_id=case_id, now=moment)
    db.commit()


def test_the_reporter_chain_lists_earlier_days_only_and_no_time_of_day(
    client: TestClient, db: Session, settings: Settings, auditor: dict[str, str]
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    _reporter_event(db, today - dt.timedelta(days=2), "a" * 32)
    _reporter_event(db, today - dt.timedelta(days=1), "b" * 32)
    # Today's events, from a real reporter and by hand.
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    reporter_login(client, code)
    today_seqs = set(
        db.scalars(select(ReporterAuditEvent.seq).where(ReporterAuditEvent.day == str(today)))
    )
    assert len(today_seqs) >= 2

    response = client.get(URL, params={"chain": "reporter"}, headers=auditor)
    assert response.status_code == 200
    body = response.json()
    assert _seqs(body) == [2, 1]
    assert body["newer"] is None  # today's events are not even hinted at
    for event in body["events"]:
        assert event["occurred"] is None
        assert event["actor"] == "reporter"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", event["day"])
    assert not re.search(r"\d{2}:\d{2}", response.text)
    # Cursors cannot reach today's events either.
    assert _page(client, auditor, chain="reporter", after=2)["events"] == []
    assert _page(client, auditor, chain="reporter", before=max(today_seqs) + 1)["events"] != []
    assert not today_seqs & set(
        _seqs(_page(client, auditor, chain="reporter", before=max(today_seqs) + 1))
    )
    assert _page(client, auditor, chain="reporter", **{"from": str(today)})["events"] == []
    # The staff event of the listing counts only what it showed.
    db.rollback()  # a fresh snapshot
    listed = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "audit.listed").order_by(AuditEvent.seq)
    ).first()
    assert listed is not None
    assert json.loads(listed.details)["events"] == 2


def test_only_auditors_list_events(
    client: TestClient, db: Session, settings: Settings, auditor: dict[str, str]
) -> None:
    unit = make_unit(db)
    make_user(db, settings, "hanne", units=(unit.id,))
    make_user(db, settings, "adam", roles=("admin",))
    make_user(db, settings, "kari", roles=("custodian",), units=(unit.id,))
    code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
    for name in ("hanne", "adam", "kari"):
        response = client.get(URL, headers=login(client, name))
        assert response.status_code == 403, name
    assert client.get(URL, headers=reporter_login(client, code)).status_code == 401
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers={"Authorization": "Bearer forged"}).status_code == 401
    listed = db.scalars(select(AuditEvent).where(AuditEvent.action == "audit.listed")).all()
    assert listed == []
