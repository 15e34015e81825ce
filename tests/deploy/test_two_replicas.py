"""Scale-out, for real: two `varsling serve` processes on one PostgreSQL database
behind Debian's Caddy, on loopback.

Caddy runs the shipped deploy/Caddyfile (copied, with its settings in the
environment: CADDY_SITE_ADDRESS=http://127.0.0.1:PORT, so plain http on
loopback, no certificate; CADDY_UPSTREAMS the two replicas). Requests go to
replica A and replica B directly and through Caddy: a report sent to one is
followed up and handled through the other, sessions and the login backoff hold
across both, and the audit chain verifies afterwards. Then the replicas stop
one by one: Caddy fails over to the one left, answers 502 with the security
headers when none is left, and its log holds no client address.

Skipped when caddy or PostgreSQL is missing; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from tests.conftest import _postgres_reachable, _postgres_url, make_settings
from tests.deploy.stack import (
    MARKER_AGENT,
    Processes,
    answers,
    caddy_env,
    free_port,
    require_caddy,
    separate_postgres_database,
    shipped_caddyfile,
    skip_or_fail,
    varsling_env,
)
from tests.factories import PASSWORD, make_unit, make_user
from varsling import cli
from varsling.db import make_engine

REPORT_TEXT = "The treasurer shouted at a volunteer after the board meeting (marker 5c1e)."
REPLY_TEXT = "Thank you; we have opened the case (marker 9d2b)."


@dataclass
class Stack:
    a: httpx.Client
    b: httpx.Client
    caddy: httpx.Client
    unit_id: int
    processes: Processes


@pytest.fixture
def stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Stack]:
    caddy = require_caddy()
    base_url = _postgres_url()
    problem = _postgres_reachable(base_url)
    if problem is not None:
        skip_or_fail(f"PostgreSQL not reachable at {base_url} ({problem})")
    database_url = separate_postgres_database(base_url, "replicas")
    env = varsling_env(database_url, tmp_path)
    # `varsling migrate` in this process (the same command, without another
    # interpreter's start-up): the schema, and the secrets' fingerprints.
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if name.startswith("VARSLING_"):
                patch.setenv(name, value)
        cli.migrate()
    assert "Created the database schema" in capsys.readouterr().out

    settings = make_settings(database_url)
    engine = make_engine(database_url)
    with Session(engine) as session:
        unit = make_unit(session, "Sentralt")
        make_user(session, settings, "nina", units=(unit.id,), display_name="Nina Nilsen")
        make_user(session, settings, "olav", units=(unit.id,), display_name="Olav Olsen")
        make_user(session, settings, "audun", roles=("auditor",))
        unit_id = unit.id
    engine.dispose()

    processes = Processes(tmp_path)
    clients: list[httpx.Client] = []
    try:
        ports = {"a": free_port(), "b": free_port()}
        for name, port in ports.items():
            command = [sys.executable, "-m", "varsling", "serve", "--host", "127.0.0.1"]
            processes.start(f"replica-{name}", [*command, "--port", str(port)], env)
        # Caddy checks the replicas' health as it starts: start it once they answer.
        for name, port in ports.items():
            processes.wait_until(
                f"replica-{name}", answers(f"http://127.0.0.1:{port}/api/v1/units")
            )
        caddy_port = free_port()
        caddyfile = shipped_caddyfile(tmp_path)
        processes.start(
            "caddy",
            [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            caddy_env(
                tmp_path,
                CADDY_SITE_ADDRESS=f"http://127.0.0.1:{caddy_port}",
                CADDY_UPSTREAMS=f"127.0.0.1:{ports['a']} 127.0.0.1:{ports['b']}",
            ),
        )
        processes.wait_until("caddy", answers(f"http://127.0.0.1:{caddy_port}/api/v1/units"))

        def client(port: int) -> httpx.Client:
            made = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"User-Agent": MARKER_AGENT},
                timeout=30,
            )
            clients.append(made)
            return made

        yield Stack(
            a=client(ports["a"]),
            b=client(ports["b"]),
            caddy=client(caddy_port),
            unit_id=unit_id,
            processes=processes,
        )
    finally:
        for made in clients:
            made.close()
        processes.stop_all()


def _bearer(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_a_case_goes_through_both_replicas_and_caddy(stack: Stack) -> None:
    a, b, caddy = stack.a, stack.b, stack.caddy

    # A report through replica A.
    sent = a.post(
        "/api/v1/reports",
        json={"unit_id": stack.unit_id, "category": "harassment", "description": REPORT_TEXT},
    )
    assert sent.status_code == 201, sent.text
    case_code = sent.json()["case_code"]

    # The reporter logs in on B, and the session made there works on A and through Caddy.
    reporter = _bearer(b.post("/api/v1/reporter/session", json={"case_code": case_code}))
    for client in (a, b, caddy):
        read = client.get("/api/v1/reporter/case", headers=reporter)
        assert read.status_code == 200, read.text
        assert read.json()["report"]["description"] == REPORT_TEXT

    # The handler logs in on B, declares and replies on B; the session made on B
    # works on A and through Caddy too.
    handler = _bearer(b.post("/api/v1/sessions", json={"username": "nina", "password": PASSWORD}))
    listed = a.get("/api/v1/cases", headers=handler)
    assert listed.status_code == 200, listed.text
    case_id = listed.json()["items"][0]["id"]
    closed = caddy.get(f"/api/v1/cases/{case_id}", headers=handler)
    assert closed.status_code == 409, closed.text
    assert closed.json()["error"]["code"] == "declaration_required"
    declared = b.post(
        f"/api/v1/cases/{case_id}/declaration",
        json={"conflict": False, "risk": "low"},
        headers=handler,
    )
    assert declared.status_code == 201, declared.text
    for client in (a, caddy):
        opened = client.get(f"/api/v1/cases/{case_id}", headers=handler)
        assert opened.status_code == 200, opened.text
        assert opened.json()["report"]["description"] == REPORT_TEXT
    replied = b.post(
        f"/api/v1/cases/{case_id}/messages", json={"body": REPLY_TEXT}, headers=handler
    )
    assert replied.status_code == 201, replied.text

    # The reporter sees the reply on A, answers through Caddy; the handler reads it on B.
    inbox = a.get("/api/v1/reporter/case", headers=reporter).json()
    assert [m["body"] for m in inbox["messages"] if m["author"] == "handler"] == [REPLY_TEXT]
    answered = caddy.post(
        "/api/v1/reporter/case/messages", json={"body": "Thanks."}, headers=reporter
    )
    assert answered.status_code == 201, answered.text
    case = b.get(f"/api/v1/cases/{case_id}", headers=handler).json()
    assert case["integrity"]["ok"] is True
    assert [m["body"] for m in case["messages"]][-1] == "Thanks."

    # A logout on B ends the session on A and through Caddy too.
    assert b.delete("/api/v1/sessions/current", headers=handler).status_code in (200, 204)
    assert a.get("/api/v1/cases", headers=handler).status_code == 401
    assert caddy.get("/api/v1/cases", headers=handler).status_code == 401

    # The per-account login backoff: five failures on A, then B and Caddy refuse even
    # the right password.
    for _ in range(5):
        failed = a.post("/api/v1/sessions", json={"username": "olav", "password": "wrong"})
        assert failed.status_code == 401, failed.text
    for client in (b, caddy):
        blocked = client.post("/api/v1/sessions", json={"username": "olav", "password": PASSWORD})
        assert blocked.status_code == 429, blocked.text
        assert int(blocked.headers["Retry-After"]) > 0

    # The audit chain verifies after all that, asked on each replica and through Caddy.
    auditor = _bearer(
        caddy.post("/api/v1/sessions", json={"username": "audun", "password": PASSWORD})
    )
    for client in (a, b, caddy):
        verified = client.get("/api/v1/audit/verify", headers=auditor)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.json()
        assert verified.json()["events"] > 10

    # Caddy's answers carry the headers; the app's own CSP stands; no Server header.
    page = caddy.get("/nb/")
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert len(page.headers.get_list("X-Frame-Options")) == 1
    assert "server" not in page.headers

    # One replica gone: Caddy sends everything to the other.
    stack.processes.stop("replica-b")
    for _ in range(4):
        assert caddy.get("/api/v1/units").status_code == 200
    # Both gone: Caddy's own 502, with the headers and without a Server header.
    stack.processes.stop("replica-a")
    gone = caddy.get("/api/v1/units")
    assert gone.status_code == 502
    assert gone.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "server" not in gone.headers
    stack.processes.stop("caddy")

    # No client address, user agent or content in any log: Caddy logged a 502 above,
    # which its default error log would have written with remote_ip and headers.
    caddy_log = stack.processes.log("caddy")
    assert "server running" in caddy_log
    for log in (caddy_log, stack.processes.log("replica-a"), stack.processes.log("replica-b")):
        for secret in (MARKER_AGENT, "remote_ip", "remote_port", "client_ip", case_code):
            assert secret not in log
        assert "marker 5c1e" not in log
        assert "marker 9d2b" not in log
