"""Statistics and compliance for auditors: metadata only, small counts hidden so that
no sum or difference of what is shown gives one back."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling.app import create_app
from varsling.audit import AuditEvent
from varsling.cases.models import Case
from varsling.config import Settings
from varsling.statistics import _determined, quarter_of, suppress

URL = "/api/v1/statistics"
N = 5


# --------------------------------------------------------------------------
# The suppression rule on its own


def _with_totals(inner: list[list[int]]) -> list[list[int]]:
    rows = [[*row, sum(row)] for row in inner]
    return [*rows, [sum(column) for column in zip(*rows, strict=True)]]


def _lines(table: list[list[int]]) -> list[list[tuple[int, int]]]:
    rows, cols = len(table), len(table[0])
    return [[(r, c) for c in range(cols)] for r in range(rows)] + [
        [(r, c) for r in range(rows)] for c in range(cols)
    ]


def _row_totals(table: list[list[int]]) -> frozenset[tuple[int, int]]:
    """What an auditor knows from the trail: each unit's total."""
    return frozenset((r, len(table[0]) - 1) for r in range(len(table)))


def _attack_by_differencing(
    table: list[list[int]],
    hidden: list[list[bool]],
    public: frozenset[tuple[int, int]] = frozenset(),
) -> list[str]:
    """What an attacker gets from each sum whose total is known: a lone unknown figure,
    or unknown figures adding up to 0 where the total is not 0 (each of them is 0)."""
    found = []
    for line in _lines(table):
        total = line[-1]
        unknown = [p for p in line if hidden[p[0]][p[1]] and p not in public]
        total_known = not hidden[total[0]][total[1]] or total in public
        if len(unknown) == 1:
            found.append(f"{unknown[0]} = the line's other figures")
        elif unknown and total_known and table[total[0]][total[1]] > 0:
            rest = sum(table[r][c] for r, c in unknown if (r, c) != total)
            if rest == 0:
                found.append(f"{unknown} are all 0")
    return found


def test_every_small_count_is_hidden_zero_included() -> None:
    table = _with_totals([[10, 3, 0], [8, 7, 9]])
    hidden = suppress(table, N)
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            if value < N:
                assert hidden[r][c], (r, c)


def test_a_lone_hidden_count_is_not_left_for_its_total_to_give_away() -> None:
    # Hiding only the 2 would leave it as 8 - 6, the 0 as 6 - 6.
    table = _with_totals([[6, 2], [6, 0], [9, 9]])
    public = _row_totals(table)
    hidden = suppress(table, N, public)
    assert hidden[0][1]
    assert _attack_by_differencing(table, hidden, public) == []
    # The naive rule really is attackable (the test can fail).
    naive = [[value < N for value in row] for row in table]
    assert _attack_by_differencing(table, naive, public)


def test_nothing_is_hidden_when_every_count_is_large() -> None:
    table = _with_totals([[10, 12], [8, 7]])
    assert not any(itertools.chain.from_iterable(suppress(table, N)))


@pytest.mark.parametrize("seed", range(60))
def test_random_tables_resist_differencing_and_linear_algebra(seed: int) -> None:
    chance = random.Random(seed)
    # Two categories at least: with one, a unit's only count is its total, which the trail tells.
    rows, cols = chance.randint(1, 6), chance.randint(2, 6)
    inner = [
        [chance.choice([0, 0, 1, 2, 3, 4, 5, 6, 9, 14, 30]) for _ in range(cols)]
        for _ in range(rows)
    ]
    table = _with_totals(inner)
    public = _row_totals(table)
    hidden = suppress(table, N, public)
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            assert hidden[r][c] or value >= N
    assert _attack_by_differencing(table, hidden, public) == []
    unknown = [
        [hidden[r][c] and (r, c) not in public for c in range(cols + 1)] for r in range(rows + 1)
    ]
    assert _determined(table, unknown) == []


def _possible_values(
    table: list[list[int]], known: list[list[bool]], top: int
) -> dict[tuple[int, int], set[int]]:
    """Every 2x2 table (with totals) agreeing with `table` where `known`: the values
    each other position can take."""
    possible: dict[tuple[int, int], set[int]] = {}
    for values in itertools.product(range(top + 1), repeat=4):
        guess = _with_totals([list(values[:2]), list(values[2:])])
        if all(not known[r][c] or guess[r][c] == table[r][c] for r in range(3) for c in range(3)):
            for r in range(3):
                for c in range(3):
                    if not known[r][c]:
                        possible.setdefault((r, c), set()).add(guess[r][c])
    return possible


@pytest.mark.parametrize("seed", range(15))
def test_no_hidden_count_of_a_small_table_is_given_away(seed: int) -> None:
    """The attacker who tries every table: a hidden figure with one possible value, given
    what is shown and the units' totals, must be one the units' totals alone give away
    (a unit with no cases has 0 in every category), never one the shown figures give."""
    chance = random.Random(1000 + seed)
    inner = [[chance.choice([0, 1, 2, 3, 4, 5, 6, 8]) for _ in range(2)] for _ in range(2)]
    table = _with_totals(inner)
    public = _row_totals(table)
    hidden = suppress(table, N, public)
    top = table[2][2]
    shown_or_public = [[not hidden[r][c] or (r, c) in public for c in range(3)] for r in range(3)]
    public_only = [[(r, c) in public for c in range(3)] for r in range(3)]
    given_shown = _possible_values(table, shown_or_public, top)
    given_public = _possible_values(table, public_only, top)
    for position, values in given_shown.items():
        if len(values) == 1:
            assert len(given_public[position]) == 1, (table, hidden, position)


def test_quarters_are_calendar_quarters() -> None:
    assert quarter_of(dt.date(2026, 3, 31)) == "2026-Q1"
    assert quarter_of(dt.date(2026, 4, 1)) == "2026-Q2"
    assert quarter_of(dt.date(2026, 12, 31)) == "2026-Q4"


# --------------------------------------------------------------------------
# The API


@pytest.fixture
def world(client: TestClient, db: Session, settings: Settings) -> dict[str, Any]:
    national = make_unit(db, "Landsstyret")
    town = make_unit(db, "Bygda", parent_id=national.id)
    make_user(db, settings, "nora", units=(national.id,))
    make_user(db, settings, "hanne", units=(town.id,))
    make_user(db, settings, "audun", roles=("auditor",))
    return {"national": national.id, "town": town.id, "auditor": login(client, "audun")}


def _cases(client: TestClient, unit_id: int, category: str, count: int) -> None:
    for _ in range(count):
        response = client.post("/api/v1/reports", json=report(unit_id, category=category))
        assert response.status_code == 201, response.text


def _all_received(db: Session, day: dt.date) -> None:
    db.execute(update(Case).values(received_on=day))
    db.commit()


def _as_table(quarter: dict[str, Any], categories: list[str]) -> list[list[Any]]:
    rows = [[u["counts"][k] for k in categories] + [u["total"]] for u in quarter["units"]]
    rows.append([quarter["category_totals"][k] for k in categories] + [quarter["total"]])
    return rows


def test_statistics_hide_small_counts_and_what_would_give_them_away(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    _cases(client, world["town"], "harassment", 6)
    _cases(client, world["town"], "other", 2)
    _cases(client, world["national"], "harassment", 5)
    _cases(client, world["national"], "discrimination", 1)
    _all_received(db, dt.date(2026, 8, 14))

    response = client.get(URL, headers=world["auditor"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["min_cell"] == N
    quarter = next(q for q in body["quarters"] if q["quarter"] == "2026-Q3")
    shown = _as_table(quarter, body["categories"])
    # Never a small number; a hidden figure is the word "suppressed".
    for value in itertools.chain.from_iterable(shown):
        assert value == "suppressed" or (isinstance(value, int) and value >= N)
    # The attacker differences what is shown: nothing comes back.
    names = {u["unit_id"]: u for u in quarter["units"]}
    assert names[world["town"]]["counts"]["other"] == "suppressed"
    hidden = [[v == "suppressed" for v in row] for row in shown]
    counts = _real_table(db, quarter, body["categories"])
    # The attacker also knows each unit's total from the audit trail.
    public = _row_totals(counts)
    assert _attack_by_differencing(counts, hidden, public) == []
    unknown = [
        [hidden[r][c] and (r, c) not in public for c in range(len(row))]
        for r, row in enumerate(hidden)
    ]
    assert _determined(counts, unknown) == []
    # The shown figures are the true counts.
    for row, real_row in zip(shown, counts, strict=True):
        for value, real in zip(row, real_row, strict=True):
            assert value in ("suppressed", real)
    # Every other quarter up to today is there (all zero, all hidden).
    assert body["quarters"][0]["quarter"] == "2026-Q3"


def _real_table(db: Session, quarter: dict[str, Any], categories: list[str]) -> list[list[int]]:
    cases = db.scalars(select(Case)).all()
    inner = [
        [
            sum(
                1
                for c in cases
                if c.unit_id == u["unit_id"]
                and c.category == k
                and quarter_of(c.received_on) == quarter["quarter"]
            )
            for k in categories
        ]
        for u in quarter["units"]
    ]
    return _with_totals(inner)


def _set_dates(db: Session, case_id: str, **values: Any) -> None:
    db.execute(update(Case).where(Case.id == case_id).values(**values))
    db.commit()


def test_compliance_counts_each_case_against_its_own_deadlines(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    # Cases in the national unit too: with one unit alone, its count would be the
    # quarter's total, and hidden with the small counts of the other units.
    _cases(client, world["national"], "other", 5)
    _all_received(db, dt.date(2026, 7, 1))
    _cases(client, world["town"], "harassment", 7)
    ids = list(db.scalars(select(Case.id).where(Case.unit_id == world["town"]).order_by(Case.id)))
    day = dt.date(2026, 7, 1)
    due_ack, due_feedback = day + dt.timedelta(days=7), dt.date(2026, 10, 8)
    plan: list[dict[str, Any]] = [
        # acknowledged in time, concluded in time
        {"acknowledged_on": day + dt.timedelta(days=3), "concluded_on": dt.date(2026, 9, 1)},
        {"acknowledged_on": due_ack, "concluded_on": due_feedback},
        {"acknowledged_on": day + dt.timedelta(days=1), "concluded_on": None},  # feedback missed
        {"acknowledged_on": day + dt.timedelta(days=9), "concluded_on": dt.date(2026, 10, 9)},
        {"acknowledged_on": None, "concluded_on": None},  # both missed
        {"acknowledged_on": day + dt.timedelta(days=2), "concluded_on": dt.date(2026, 8, 1)},
        # A retaliation case: two days to acknowledge, so day 5 is late.
        {
            "acknowledged_on": day + dt.timedelta(days=5),
            "concluded_on": dt.date(2026, 8, 1),
            "priority": "high",
            "acknowledgement_due": day + dt.timedelta(days=2),
            "feedback_due": dt.date(2026, 8, 6),
        },
    ]
    for case_id, values in zip(ids, plan, strict=True):
        _set_dates(
            db,
            case_id,
            received_on=day,
            **{"acknowledgement_due": due_ack, "feedback_due": due_feedback, **values},
        )

    body = client.get(URL, headers=world["auditor"]).json()
    row = next(
        c for c in body["compliance"] if c["quarter"] == "2026-Q3" and c["unit_id"] == world["town"]
    )
    assert row["acknowledgement"] == {"due": 7, "met": 4, "percent": 57}
    assert row["feedback"] == {"due": 7, "met": 4, "percent": 57}
    national = next(
        c
        for c in body["compliance"]
        if c["quarter"] == "2026-Q3" and c["unit_id"] == world["national"]
    )
    # Its count is shown, but its cases are not due yet (their deadlines were left
    # as made): under five due is too few to tell a share of.
    assert national["acknowledgement"] == national["feedback"] == "suppressed"


def test_compliance_of_a_unit_whose_count_is_hidden_is_hidden_too(
    client: TestClient, db: Session, world: dict[str, Any]
) -> None:
    _cases(client, world["town"], "harassment", 3)
    _all_received(db, dt.date(2026, 7, 1))
    body = client.get(URL, headers=world["auditor"]).json()
    for row in body["compliance"]:
        assert row["acknowledgement"] == row["feedback"] == "suppressed"
    assert "suppressed" in json.dumps(body)


def test_the_setting_moves_the_threshold(database_url: str, db: Session) -> None:
    settings = make_settings(database_url, statistics_min_cell=2)
    app = create_app(settings)
    with TestClient(app) as client:
        unit = make_unit(db, "Landsstyret")
        make_user(db, settings, "nora", units=(unit.id,))
        make_user(db, settings, "audun", roles=("auditor",))
        _cases(client, unit.id, "harassment", 3)
        _cases(client, unit.id, "other", 2)
        body = client.get(URL, headers=login(client, "audun")).json()
    app.state.engine.dispose()
    assert body["min_cell"] == 2
    quarter = body["quarters"][-1]
    assert quarter["units"][0]["counts"]["harassment"] == 3
    assert quarter["units"][0]["counts"]["other"] == "suppressed"


def test_reading_statistics_is_audited_and_for_auditors_only(
    client: TestClient, db: Session, settings: Settings, world: dict[str, Any]
) -> None:
    make_user(db, settings, "adam", roles=("admin",))
    make_user(db, settings, "kari", roles=("custodian",), units=(world["town"],))
    code = client.post("/api/v1/reports", json=report(world["town"])).json()["case_code"]
    for name in ("hanne", "adam", "kari"):
        assert client.get(URL, headers=login(client, name)).status_code == 403, name
    assert client.get(URL, headers=reporter_login(client, code)).status_code == 401
    assert client.get(URL).status_code == 401
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "statistics.read")).all() == []
    assert client.get(URL, headers=world["auditor"]).status_code == 200
    db.rollback()  # a fresh snapshot
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "statistics.read")).one()
    assert json.loads(event.details) == {"quarters": 1, "min_cell": N}
