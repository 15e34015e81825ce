"""Plain factory functions: make_unit(session, ...), make_user(session, ...)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from varsling.accounts import service as accounts
from varsling.accounts.models import Unit, User
from varsling.config import Settings

PASSWORD = "correct horse battery staple"


def make_unit(session: Session, name: str = "Sentralt", **overrides: Any) -> Unit:
    unit = accounts.create_unit(session, name=name, **overrides)
    session.commit()
    return unit


def make_user(
    session: Session,
    settings: Settings,
    username: str,
    *,
    roles: tuple[str, ...] = ("handler",),
    units: tuple[int, ...] = (),
    display_name: str | None = None,
) -> User:
    user = accounts.create_user(
        session,
        settings,
        username=username,
        password=PASSWORD,
        roles=roles,
        unit_ids=units,
        # Handlers and custodians need one (reporters see it); the username will do here.
        display_name=display_name or username,
    )
    session.commit()
    return user


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/v1/sessions", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def report(unit_id: int, **overrides: Any) -> dict[str, Any]:
    return {
        "unit_id": unit_id,
        "category": "harassment",
        "description": "Something happened at the county meeting.",
        **overrides,
    }


def reporter_login(client: TestClient, case_code: str) -> dict[str, str]:
    response = client.post("/api/v1/reporter/session", json={"case_code": case_code})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def declare(
    client: TestClient, headers: dict[str, str], case_id: str, risk: str = "low"
) -> dict[str, Any]:
    """Declare no conflict of interest, so the case's content opens to this handler."""
    response = client.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": risk},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def open_first_case(client: TestClient, headers: dict[str, str]) -> str:
    """The id of the handler's first case, declared (no conflict) so its content opens."""
    response = client.get("/api/v1/cases", headers=headers)
    assert response.status_code == 200, response.text
    case_id: str = response.json()["items"][0]["id"]
    declare(client, headers, case_id)
    return case_id
