"""GET /api/v1/cases: filters (status, unit, overdue, category) and keyset paging.

The staff case list page uses the same service (cases.service.list_cases), so
what is shown here holds for the page too (tests/web/test_staff_case_pages.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from tests.factories import declare, login, make_unit, make_user, report
from varsling.accounts.models import User
from varsling.accounts.service import StaffPrincipal
from varsling.cases import service
from varsling.cases.models import Case, CaseKey, Category, Status
from varsling.config import Settings


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, Any]:
    """Five cases for hanne (two units, one retaliation case, one overdue) and one she
    does not hold (another county's)."""
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    town = make_unit(db, "Bergen", parent_id=county.id, kind="municipal")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    make_user(db, settings, "hanne", units=(county.id,))
    make_user(db, settings, "rita", units=(other.id,))
    codes = {}
    for name, unit, category in (
        ("first", county.id, "harassment"),
        ("second", town.id, "discrimination"),
        ("third", county.id, "harassment"),
        ("fourth", town.id, "abuse_of_power"),
    ):
        sent = client.post("/api/v1/reports", json=report(unit, category=category))
        assert sent.status_code == 201, sent.text
        codes[name] = sent.json()["case_code"]
    client.post("/api/v1/reports", json=report(other.id))
    reporter = client.post("/api/v1/reporter/session", json={"case_code": codes["second"]})
    opened = client.post(
        "/api/v1/reporter/case/retaliation",
        json={"body": "They froze me out."},
        headers={"Authorization": f"Bearer {reporter.json()['token']}"},
    )
    assert opened.status_code == 201, opened.text
    headers = login(client, "hanne")
    items = client.get("/api/v1/cases", headers=headers).json()["items"]
    ids = [item["id"] for item in items]
    # Received on different days, so the order is plain to see; the first one overdue.
    today = dt.date.today()
    for days, case_id in zip((40, 30, 20, 10, 5), ids, strict=True):
        db.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(
                received_on=today - dt.timedelta(days=days),
                acknowledgement_due=today - dt.timedelta(days=days - 7),
            )
        )
    db.commit()
    return {"headers": headers, "county": county.id, "town": town.id, "ids": ids}


def listed(client: TestClient, headers: dict[str, str], **params: str) -> list[str]:
    response = client.get("/api/v1/cases", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_retaliation_cases_come_first_then_the_oldest(
    client: TestClient, world: dict[str, Any], db: Session
) -> None:
    answer = client.get("/api/v1/cases", headers=world["headers"]).json()
    assert answer["next"] is None
    priorities = [item["priority"] for item in answer["items"]]
    assert priorities == ["high", "normal", "normal", "normal", "normal"]
    received = [item["received_on"] for item in answer["items"][1:]]
    assert received == sorted(received)


def test_each_filter_narrows_the_list(client: TestClient, world: dict[str, Any]) -> None:
    headers = world["headers"]
    everything = listed(client, headers)
    by_status = listed(client, headers, status="received")
    assert set(by_status) == set(everything)
    assert listed(client, headers, status="closed") == []
    town = listed(client, headers, unit=str(world["town"]))
    county = listed(client, headers, unit=str(world["county"]))
    assert len(town) == 3  # two reports and the retaliation case opened from one of them
    assert len(county) == 2
    assert set(town) | set(county) == set(everything)
    assert len(listed(client, headers, category="harassment")) == 2
    assert len(listed(client, headers, category="retaliation")) == 1
    # Everything was received 5 to 40 days ago: all but the newest are past acknowledgement.
    late = listed(client, headers, overdue="true")
    on_time = listed(client, headers, overdue="false")
    assert len(on_time) == 1
    assert set(late) | set(on_time) == set(everything)
    assert not set(late) & set(on_time)
    for item in client.get("/api/v1/cases", params={"overdue": "true"}, headers=headers).json()[
        "items"
    ]:
        assert item["overdue"]
    assert listed(client, headers, unit=str(world["town"]), category="harassment") == []


def test_pages_follow_each_other_without_gaps_or_repeats(
    client: TestClient, world: dict[str, Any]
) -> None:
    headers = world["headers"]
    everything = listed(client, headers)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        answer = client.get("/api/v1/cases", params=params, headers=headers).json()
        seen += [item["id"] for item in answer["items"]]
        pages += 1
        after = answer["next"]
        if after is None:
            break
    assert pages == 3
    assert seen == everything
    # Filters and paging together.
    first = client.get(
        "/api/v1/cases", params={"limit": "1", "category": "harassment"}, headers=headers
    ).json()
    second = client.get(
        "/api/v1/cases",
        params={"limit": "1", "category": "harassment", "after": first["next"]},
        headers=headers,
    ).json()
    assert second["next"] is None
    assert [i["category"] for i in first["items"] + second["items"]] == ["harassment"] * 2


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "open"}, "status"),
        ({"unit": "town"}, "unit"),
        ({"unit": "-1"}, "unit"),
        ({"overdue": "yes"}, "overdue"),
        ({"category": "fraud"}, "category"),
        ({"after": "1.2026-13-40." + "0" * 32}, "after"),
        ({"after": "' OR 1=1 --"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "1000"}, "limit"),
    ],
)
def test_a_filter_value_that_means_nothing_is_422(
    client: TestClient, world: dict[str, Any], params: dict[str, str], named: str
) -> None:
    response = client.get("/api/v1/cases", params=params, headers=world["headers"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert named in error["message"].split(".")[0]


def test_filters_never_reach_cases_the_caller_holds_no_key_to(
    client: TestClient, world: dict[str, Any]
) -> None:
    rita = login(client, "rita")
    mine = listed(client, rita)
    assert len(mine) == 1
    assert listed(client, rita, unit=str(world["county"])) == []
    assert not set(listed(client, rita, overdue="false")) & set(world["ids"])


def test_without_a_limit_the_api_answers_every_case_as_before_paging(
    client: TestClient, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that knows nothing of paging never silently misses a case."""
    monkeypatch.setattr(service, "PAGE_SIZE", 2)
    answer = client.get("/api/v1/cases", headers=world["headers"]).json()
    assert len(answer["items"]) == 5
    assert answer["next"] is None


def _all_pages(
    client: TestClient, headers: dict[str, str], limit: int, **filters: str
) -> tuple[list[str], set[int]]:
    seen: list[str] = []
    totals: set[int] = set()
    after = None
    while True:
        params = {"limit": str(limit), **filters, **({"after": after} if after else {})}
        answer = client.get("/api/v1/cases", params=params, headers=headers).json()
        assert len(answer["items"]) <= limit
        seen += [item["id"] for item in answer["items"]]
        totals.add(answer["total"])
        after = answer["next"]
        if after is None:
            return seen, totals


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "received"},
        {"category": "harassment"},
        {"overdue": "true"},
        {"overdue": "false"},
        {"unit": "town"},
        {"unit": "county", "category": "harassment"},
    ],
)
def test_every_page_size_gives_every_filtered_case_once_with_the_total(
    client: TestClient,
    world: dict[str, Any],
    filters: dict[str, str],
) -> None:
    """Paging with filters returns each case the unpaged list holds, exactly once and in
    its order (the retaliation case first, across the rank boundary), and every page
    counts the whole filtered set."""
    headers = world["headers"]
    filters = {k: str(world[v]) if k == "unit" else v for k, v in filters.items()}
    unpaged = client.get("/api/v1/cases", params=filters, headers=headers).json()
    everything = [item["id"] for item in unpaged["items"]]
    assert unpaged["total"] == len(everything)
    for limit in (1, 2, 3, 200):
        seen, totals = _all_pages(client, headers, limit, **filters)
        assert seen == everything
        assert totals == {len(everything)}


def test_the_total_counts_only_cases_the_caller_holds(
    client: TestClient, world: dict[str, Any]
) -> None:
    rita = login(client, "rita")
    answer = client.get("/api/v1/cases", params={"limit": "1"}, headers=rita).json()
    assert answer["total"] == 1
    mine = client.get("/api/v1/cases", params={"limit": "1"}, headers=world["headers"]).json()
    assert mine["total"] == 5
    assert len(mine["items"]) == 1


def test_a_case_with_a_priority_no_rank_knows_is_still_listed_last(
    client: TestClient, world: dict[str, Any], db: Session
) -> None:
    """Only a database writer makes such a case; it must not vanish from the list."""
    odd = world["ids"][2]
    db.execute(update(Case).where(Case.id == odd).values(priority="urgent"))
    db.commit()
    headers = world["headers"]
    everything = listed(client, headers)
    assert everything[-1] == odd
    seen, totals = _all_pages(client, headers, 2)
    assert seen == everything
    assert totals == {5}


# --------------------------------------------------------------------------
# The list columns each case key carries (kept by triggers, migration 0015)


def _late_from(case: Case) -> dt.date | None:
    """The earliest deadline not yet met, from overdue()'s own rules."""
    open_deadlines = []
    if case.acknowledged_on is None:
        open_deadlines.append(case.acknowledgement_due)
    if case.concluded_on is None:
        open_deadlines.append(case.feedback_due)
    return min(open_deadlines, default=None)


def assert_keys_carry_their_cases(db: Session) -> int:
    """Every case key's copies equal its case's columns; returns how many keys."""
    db.expire_all()
    rows = db.execute(select(CaseKey, Case).join(Case, Case.id == CaseKey.case_id)).all()
    for key, case in rows:
        copied = (key.status, key.unit_id, key.category, key.priority, key.received_on)
        assert copied == (case.status, case.unit_id, case.category, case.priority, case.received_on)
        assert key.late_from == _late_from(case)
    db.rollback()  # end the read, so that this session may write after the app has
    return len(rows)


def test_every_key_follows_its_case_through_the_api_and_bulk_updates(
    client: TestClient, world: dict[str, Any], db: Session
) -> None:
    """Submissions and grants insert keys; the world fixture moved days with a bulk
    UPDATE; here the API moves a case along its lifecycle and a bulk UPDATE (as a job
    or a database writer would) changes them all: the copies follow every write."""
    assert assert_keys_carry_their_cases(db) >= 6
    headers = world["headers"]
    case_id = world["ids"][1]
    declare(client, headers, case_id)
    for status, outcome in (
        ("acknowledged", None),
        ("investigating", None),
        ("concluded", "We found it."),
        ("closed", None),
    ):
        body = {"status": status, **({"outcome": outcome} if outcome else {})}
        moved = client.post(f"/api/v1/cases/{case_id}/status", json=body, headers=headers)
        assert moved.status_code == 200, moved.text
        assert_keys_carry_their_cases(db)
        assert listed(client, headers, status=status) == [case_id]
    assert case_id in listed(client, headers, overdue="false")
    db.execute(
        update(Case).values(
            category="other", priority="high", unit_id=world["town"], concluded_on=None
        )
    )
    db.commit()
    assert assert_keys_carry_their_cases(db) >= 6
    assert sorted(listed(client, headers, category="other", unit=str(world["town"]))) == sorted(
        world["ids"]
    )


def test_the_overdue_filter_agrees_with_overdue_for_every_mix_of_deadlines(
    client: TestClient, world: dict[str, Any], db: Session
) -> None:
    """Acknowledged or not, concluded or not, each deadline past, due today or ahead:
    the listed overdue cases are exactly those overdue() names, and the rest are on time."""
    today = dt.date.today()
    days = (today - dt.timedelta(days=3), today, today + dt.timedelta(days=3))
    mixes = [
        (acknowledged, concluded, ack_due, feedback_due)
        for acknowledged in (None, today - dt.timedelta(days=9))
        for concluded in (None, today - dt.timedelta(days=1))
        for ack_due in days
        for feedback_due in days
    ]
    headers = world["headers"]
    ids = world["ids"]
    for start in range(0, len(mixes), len(ids)):
        for case_id, mix in zip(ids, mixes[start : start + len(ids)], strict=False):
            acknowledged, concluded, ack_due, feedback_due = mix
            db.execute(
                update(Case)
                .where(Case.id == case_id)
                .values(
                    acknowledged_on=acknowledged,
                    concluded_on=concluded,
                    acknowledgement_due=ack_due,
                    feedback_due=feedback_due,
                )
            )
        db.commit()
        db.expire_all()
        cases = db.scalars(select(Case).where(Case.id.in_(ids))).all()
        expected = {case.id for case in cases if service.overdue(case, today)}
        db.rollback()
        assert set(listed(client, headers, overdue="true")) == expected
        assert set(listed(client, headers, overdue="false")) == set(ids) - expected
    assert_keys_carry_their_cases(db)


def test_a_page_and_its_count_read_one_index_of_the_callers_keys(
    client: TestClient, world: dict[str, Any], db: Session, database: Any
) -> None:
    """The shape that keeps a page fast at 100,000 cases (bench/case_list.py): on
    SQLite, whose planner follows the query's shape, every rank's page walks a
    covering index of case_keys in list order (no sort) and reads only the cases it
    returns, and the count reads an index alone. PostgreSQL plans by its statistics."""
    if database.kind != "sqlite":
        pytest.skip("SQLite's plans follow the query; PostgreSQL's follow its statistics")
    statements: list[tuple[str, Any]] = []
    engine = db.get_bind()

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "case_keys" in statement and "EXPLAIN" not in statement:
            statements.append((statement, parameters))

    hanne = db.scalars(select(User).where(User.username == "hanne")).one()
    principal = StaffPrincipal(hanne.id, frozenset(), frozenset(), b"")
    today = dt.date.today()
    for query in (
        service.CaseQuery(limit=2),
        service.CaseQuery(limit=2, after=(1, today, "0" * 32)),
        service.CaseQuery(limit=2, status=Status.RECEIVED),
        service.CaseQuery(limit=2, unit_id=world["town"], category=Category.HARASSMENT),
        service.CaseQuery(limit=2, overdue=True),
        service.CaseQuery(limit=2, overdue=False, category=Category.HARASSMENT),
    ):
        statements.clear()
        event.listen(engine, "before_cursor_execute", grab)
        try:
            with Session(engine) as session:
                service.list_cases(session, principal, today, query)
        finally:
            event.remove(engine, "before_cursor_execute", grab)
        pages = [s for s in statements if s[0].lstrip().startswith("SELECT cases.")]
        counts = [s for s in statements if "count(" in s[0]]
        assert pages, statements
        assert len(counts) == 1, statements
        with engine.connect() as connection:

            def plan(statement: str, parameters: Any) -> list[str]:
                rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                return [row[3] for row in rows]

            for statement, parameters in pages:
                steps = plan(statement, parameters)
                assert any("case_keys USING COVERING INDEX ix_case_keys_list" in s for s in steps)
                assert any(
                    "SEARCH cases USING INDEX sqlite_autoindex_cases_1 (id=?)" in s for s in steps
                )
                assert not any(s.startswith("SCAN") for s in steps), steps
                # Ranks 0 and 1 (priority = ?) come in index order; only rank 2, which
                # only a database writer fills, may sort what it finds.
                if "case_keys.priority = ?" in statement:
                    assert not any("TEMP B-TREE" in s for s in steps), steps
            (count_steps,) = [plan(*counted) for counted in counts]
            assert len(count_steps) == 1
            assert "case_keys USING COVERING INDEX ix_case_keys_list" in count_steps[0]
