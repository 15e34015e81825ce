"""GET /api/v1/cases: filters (status, unit, overdue, category) and keyset paging.

The staff case list page uses the same service (cases.service.list_cases), so
what is shown here holds for the page too (tests/web/test_staff_case_pages.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from tests.factories import login, make_unit, make_user, report
from varsling.cases import service
from varsling.cases.models import Case
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


@pytest.mark.parametrize("drive_from_keys", [0, 5000])
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
    monkeypatch: pytest.MonkeyPatch,
    filters: dict[str, str],
    drive_from_keys: int,
) -> None:
    """Paging with filters returns each case the unpaged list holds, exactly once and in
    its order (the retaliation case first, across the rank boundary), and every page
    counts the whole filtered set. Both ways of reading the list give the same."""
    monkeypatch.setattr(service, "_DRIVE_FROM_KEYS", drive_from_keys)
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
