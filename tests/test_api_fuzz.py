"""Schemathesis against the OpenAPI document: no server errors, answers as documented.

Every operation, anonymously and with a reporter's, a handler's and an
administrator's (also custodian and auditor) token, a few generated
requests each, in-process (ASGI) on both databases.
"""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy.orm import Session

from tests.conftest import make_settings
from tests.factories import login, make_unit, make_user, report, reporter_login
from varsling.app import create_app

# Per operation and kind of caller; the whole file stays near ten seconds a database.
EXAMPLES = 2
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
LOGOUT = ("DELETE", "/api/v1/sessions/current")


def test_every_operation_answers_as_documented_and_never_500(
    database_url: str, db: Session
) -> None:
    # Guessed case codes must not slow the run down: the throttle is tested elsewhere.
    app_settings = make_settings(
        database_url, code_failures_per_minute=100_000, code_failure_delay_seconds=0
    )
    unit = make_unit(db, "Sentralt")
    make_user(db, app_settings, "nina", units=(unit.id,))
    make_user(db, app_settings, "anna", roles=("admin", "auditor", "custodian"), units=(unit.id,))
    app = create_app(app_settings)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    calls = 0
    with TestClient(app) as client:
        code = client.post("/api/v1/reports", json=report(unit.id)).json()["case_code"]
        callers: dict[str, Callable[[], dict[str, str]]] = {
            "anonymous": dict,
            "reporter": lambda: reporter_login(client, code),
            "handler": lambda: login(client, "nina"),
            "admin": lambda: login(client, "anna"),
        }
        tokens = {name: log_in() for name, log_in in callers.items()}
        for result in schema.get_all_operations():
            operation = result.ok()
            for caller, log_in in callers.items():
                calls += _fuzz(
                    operation, tokens[caller], f"{operation.label} as {caller}", failures
                )
                if (operation.method.upper(), operation.path) == LOGOUT:
                    tokens[caller] = log_in()
    app.state.engine.dispose()

    assert calls > 100
    assert not failures, "\n\n".join(failures[:5])


def _fuzz(
    operation: schemathesis.APIOperation, headers: dict[str, str], label: str, failures: list[str]
) -> int:
    """Call the operation with EXAMPLES generated requests; failures are collected."""
    calls = 0

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def call(case: schemathesis.Case) -> None:
        nonlocal calls
        calls += 1
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except Exception as failure:  # schemathesis raises its own failure types
            failures.append(f"{label}: {failure}"[:2000])

    call()
    return calls
