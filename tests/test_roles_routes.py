"""Every route of the service, for every role: the status each one gets.

`ROUTES` has one row per route (method and path template, exactly as the app
registers them): how to make a valid request, and what each of the twelve
roles gets. A route the app has and the table lacks, or one the table has and
the app lacks, fails `test_every_route_is_in_the_table`, which names them all;
adding a route is adding one row.

One world per database (module scope): units national -> county -> town and
another county, one person per staff role, a case reported in the town and
one in the other county. A row whose request changes something (a
declaration, a status, a logout, a login that ends the browser's earlier
session...) gets a scene of its own for each cell: a new case, declared on by
the handler and recused from by the recused handler, and new credentials for
the role that acts, so the order of cells never matters.

What a careful design answers: a case route says 404 to every staff member
who holds no key to the case (they may not know it exists), 409
declaration_required to a key holder who has not declared yet, and 401 to
reporters and to nobody; a staff route says 401 to reporter tokens, an
auditor route 403 to other staff; a reporter route says 401 to staff tokens.
The reporter pages (a cookie session, never a bearer token) send whoever has
no reporter session to the login page (303), except form posts (but logging
out), which answer 401 "nothing was sent" with the typed text kept. The staff
pages (a staff cookie session) send whoever has no staff session to the staff
login page (303); a page of one case then answers as the API answers the
case, as a page: 404 without a key, 409 "declare first" before declaring.

Each cell sends the role's bearer token (if it has one) from a client that
holds only the role's reporter cookie (if it has one), so API routes are
also shown to ignore a reporter's cookie, and pages a staff token.

Adding a route: one row in ROUTES, usually with a helper for its answers
(`case_route(201)`, `reporter_api(200)`, `auditor_only(200)`, `custodian_only(200)`,
`everyone(200)`, `reporter_page(200)`, `staff_page(200)`, `staff_case_page(200)`),
`fresh=Fresh.CASE` if it changes the case
(other Fresh values give it an overdue case, a linked retaliation case or a
pending identity request), and `fresh=Fresh.SESSION` if it ends the caller's
session. A cell whose answer is
wrong today goes in the row's `known` with the reason (xfail, strict).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import html
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.routing import Mount

from tests.conftest import make_settings
from tests.factories import PASSWORD, make_unit, make_user, report
from varsling.accounts.service import utcnow
from varsling.app import create_app
from varsling.cases.models import Case, CheckIn
from varsling.db import make_engine, make_sessionmaker
from varsling.web.security import CSRF_FIELD, SESSION_COOKIE, CsrfSigner

# --------------------------------------------------------------------------
# Roles

REPORTER = "reporter of the case"
OTHER_REPORTER = "another reporter"
HANDLER = "handler of the case"
UNDECLARED = "handler before declaring"
RECUSED = "recused handler"
EXCLUDED = "excluded handler"
OTHER_UNIT = "handler of another unit"
CUSTODIAN = "custodian holding the identity key"
OTHER_CUSTODIAN = "custodian without it"
AUDITOR = "auditor"
ADMIN = "admin"
NOBODY = "nobody"

STAFF = (
    HANDLER,
    UNDECLARED,
    RECUSED,
    EXCLUDED,
    OTHER_UNIT,
    CUSTODIAN,
    OTHER_CUSTODIAN,
    AUDITOR,
    ADMIN,
)
REPORTERS = (REPORTER, OTHER_REPORTER)
ROLES = (*REPORTERS, *STAFF, NOBODY)

# Who plays each staff role: (username, roles, unit).
STAFF_ACCOUNTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    HANDLER: ("hanne", ("handler",), "town"),
    UNDECLARED: ("ulrik", ("handler",), "town"),
    RECUSED: ("rune", ("handler",), "town"),
    EXCLUDED: ("eva", ("handler",), "town"),
    OTHER_UNIT: ("otto", ("handler",), "other_county"),
    CUSTODIAN: ("kari", ("custodian",), "county"),
    OTHER_CUSTODIAN: ("kjell", ("custodian",), "other_county"),
    AUDITOR: ("aud", ("auditor",), "national"),
    ADMIN: ("adm", ("admin",), "national"),
}
# Not a role: someone on the case's unit chain whom the handler may grant the case to.
GRANTEE = ("gro", ("handler",), "county")
# Not a role: the level a retaliation case (routed to the town and the county) is sent up to.
ABOVE = ("nils", ("handler",), "national")
# Where the test client keeps the cookies the app sets, so a cookie set here is replaced.
COOKIE_DOMAIN = "testserver.local"


# --------------------------------------------------------------------------
# The world: built once per database


@dataclass(frozen=True)
class Scene:
    """A case, its file, the other reporter's case, and everyone's credentials."""

    case_id: str
    case_code: str
    file_id: str
    other_case_code: str
    # A check-in question on the case, not answered.
    checkin_id: int
    # The retaliation case the reporter opened from the case (their reference for it),
    # its file and a check-in question on it.
    linked_ref: str
    linked_file_id: str
    linked_checkin_id: int
    # The handler's request to see the identity: approved in the shared scene,
    # pending in a Fresh.IDENTITY_REQUEST one.
    request_id: int
    # Bearer tokens: staff sessions, and the reporters' API sessions.
    tokens: Mapping[str, str]
    # The browsers' cookies: the reporters' web sessions, and the staff roles' sessions
    # on the staff pages (each role's browser holds only its own).
    cookies: Mapping[str, str]


@dataclass
class World:
    app: FastAPI
    client: TestClient
    units: dict[str, int]
    user_ids: dict[str, int]
    grantee_id: int
    shared: Scene = field(init=False)

    # ---- building blocks

    def staff_token(self, role: str) -> str:
        username = STAFF_ACCOUNTS[role][0]
        response = self.client.post(
            "/api/v1/sessions", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def staff_cookie(self, role: str) -> str:
        """Log in on the staff login page, as a browser does; the cookie is the session."""
        self.client.cookies.clear()
        try:
            page = self.client.get("/en/staff/login")
            response = self.client.post(
                "/en/staff/login",
                data={
                    "username": STAFF_ACCOUNTS[role][0],
                    "password": PASSWORD,
                    CSRF_FIELD: page_token(page.text),
                },
                follow_redirects=False,
            )
            assert response.status_code == 303, response.text
            cookie = self.client.cookies.get(SESSION_COOKIE)
            assert cookie is not None
            return cookie
        finally:
            self.client.cookies.clear()

    def reporter_token(self, case_code: str) -> str:
        response = self.client.post("/api/v1/reporter/session", json={"case_code": case_code})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def reporter_cookie(self, case_code: str) -> str:
        """Log in on the follow-up page, as a browser does; the cookie is the session."""
        self.client.cookies.clear()
        try:
            page = self.client.get("/nb/follow-up")
            response = self.client.post(
                "/nb/follow-up",
                data={"case_code": case_code, CSRF_FIELD: page_token(page.text)},
                follow_redirects=False,
            )
            assert response.status_code == 303, response.text
            cookie = self.client.cookies.get(SESSION_COOKIE)
            assert cookie is not None
            return cookie
        finally:
            self.client.cookies.clear()

    def submit(self, unit: str, **fields: Any) -> str:
        response = self.client.post("/api/v1/reports", json=report(self.units[unit], **fields))
        assert response.status_code == 201, response.text
        code: str = response.json()["case_code"]
        return code

    def new_case(self, tokens: Mapping[str, str]) -> tuple[str, str]:
        """A case in the town (id and code): the handler declared no
        conflict, the recused handler recused, the excluded handler was left out."""
        before = self.town_cases(tokens)
        code = self.submit(
            "town",
            identity={"name": "Kari Nordmann", "contact": "kari@example.org"},
            involved="The treasurer",
            excluded_recipients=[self.user_ids[EXCLUDED]],
        )
        # The reporter's side never tells the case id: the new one in a handler's list is it.
        (case_id,) = self.town_cases(tokens) - before
        for role, body in (
            (HANDLER, {"conflict": False, "risk": "low"}),
            (RECUSED, {"conflict": True, "reason": "The treasurer is my sister."}),
        ):
            response = self.client.post(
                f"/api/v1/cases/{case_id}/declaration", json=body, headers=bearer(tokens[role])
            )
            assert response.status_code == 201, response.text
        return case_id, code

    @contextlib.contextmanager
    def browser(self, cookie: str | None) -> Iterator[None]:
        """The client as a browser holding `cookie` (a reporter's session) or none at all."""
        self.client.cookies.clear()
        if cookie is not None:
            self.client.cookies.set(SESSION_COOKIE, cookie, domain=COOKIE_DOMAIN)
        try:
            yield
        finally:
            self.client.cookies.clear()

    def town_cases(self, tokens: Mapping[str, str]) -> set[str]:
        listed = self.client.get("/api/v1/cases", headers=bearer(tokens[UNDECLARED]))
        assert listed.status_code == 200, listed.text
        return {item["id"] for item in listed.json()["items"]}

    def build(self) -> None:
        tokens = {role: self.staff_token(role) for role in STAFF}
        case_id, code = self.new_case(tokens)
        tokens[REPORTER] = self.reporter_token(code)
        upload = self.client.post(
            "/api/v1/reporter/case/files",
            files=[("files", ("minutes.txt", b"The minutes of the meeting.", "text/plain"))],
            headers=bearer(tokens[REPORTER]),
        )
        assert upload.status_code == 201, upload.text
        other_code = self.submit("other_county")
        tokens[OTHER_REPORTER] = self.reporter_token(other_code)
        cookie = self.reporter_cookie(code)
        linked_ref, linked_id = self.open_linked(case_id, tokens[REPORTER], cookie=cookie)
        linked = self.client.get(
            f"/api/v1/reporter/cases/{linked_ref}", headers=bearer(tokens[REPORTER])
        )
        assert linked.status_code == 200, linked.text
        request_id = self.ask_identity(case_id, tokens)
        decided = self.client.post(
            f"/api/v1/identity-requests/{request_id}/decision",
            json={"approve": True, "reason": "The handler must interview the reporter."},
            headers=bearer(tokens[CUSTODIAN]),
        )
        assert decided.status_code == 200, decided.text
        self.shared = Scene(
            case_id=case_id,
            case_code=code,
            file_id=upload.json()["files"][0]["id"],
            other_case_code=other_code,
            checkin_id=self.add_checkin(case_id),
            linked_ref=linked_ref,
            linked_file_id=linked.json()["files"][0]["id"],
            linked_checkin_id=self.add_checkin(linked_id),
            request_id=request_id,
            tokens=tokens,
            cookies={
                REPORTER: cookie,
                OTHER_REPORTER: self.reporter_cookie(other_code),
                **{role: self.staff_cookie(role) for role in STAFF},
            },
        )

    # ---- what a cell may need besides a case

    def add_checkin(self, case_id: str) -> int:
        """A check-in question in the reporter's inbox (as `varsling jobs run` sends)."""
        with self.app.state.sessionmaker.begin() as db:
            checkin = CheckIn(case_id=case_id, round=1, sent_on=utcnow().date())
            db.add(checkin)
            db.flush()
            return checkin.id

    def make_overdue(self, case_id: str) -> None:
        """Back-date the case: received ten days ago, its acknowledgement due three days ago."""
        today = utcnow().date()
        with self.app.state.sessionmaker.begin() as db:
            db.execute(
                update(Case)
                .where(Case.id == case_id)
                .values(
                    received_on=today - dt.timedelta(days=10),
                    acknowledgement_due=today - dt.timedelta(days=3),
                )
            )

    def open_linked(
        self, case_id: str, token: str, *, cookie: str | None = None
    ) -> tuple[str, str]:
        """The reporter reports retaliation: their reference and the new case's id.

        With `cookie`, on the page and with a file; else through the API."""
        if cookie is None:
            opened = self.client.post(
                "/api/v1/reporter/case/retaliation",
                json={"body": "They froze me out."},
                headers=bearer(token),
            )
            assert opened.status_code == 201, opened.text
            ref: str = opened.json()["reference"]
        else:
            with self.browser(cookie):
                signer: CsrfSigner = self.app.state.varsling_csrf
                sent = self.client.post(
                    "/nb/case/retaliation",
                    data={
                        "body": "They froze me out.",
                        CSRF_FIELD: signer.token(cookie, now=time.time()),
                    },
                    files=[("files", ("photo.txt", b"The notice on the door.", "text/plain"))],
                    follow_redirects=False,
                )
            assert sent.status_code == 303, sent.text
            listed = self.client.get("/api/v1/reporter/case", headers=bearer(token))
            (ref,) = [item["reference"] for item in listed.json()["linked_cases"]]
        with self.app.state.sessionmaker.begin() as db:
            (linked_id,) = db.execute(
                select(Case.id).where(Case.linked_case_id == case_id)
            ).scalars()
        return ref, linked_id

    def ask_identity(self, case_id: str, tokens: Mapping[str, str]) -> int:
        """The handler asks the custodians to see the reporter's identity."""
        asked = self.client.post(
            f"/api/v1/cases/{case_id}/identity-requests",
            json={"justification": "I must interview the reporter about the meeting."},
            headers=bearer(tokens[HANDLER]),
        )
        assert asked.status_code == 201, asked.text
        request_id: int = asked.json()["id"]
        return request_id

    def scene_for(self, role: str, fresh: Fresh | None) -> Scene:
        """The shared scene, or one where what the cell uses up is new."""
        shared = self.shared
        if fresh is None:
            return shared
        tokens = dict(shared.tokens)
        cookies = dict(shared.cookies)
        scene = dataclasses.replace(shared, tokens=tokens, cookies=cookies)
        if fresh is not Fresh.SESSION:
            case_id, code = self.new_case(shared.tokens)
            scene = dataclasses.replace(
                scene, case_id=case_id, case_code=code, checkin_id=self.add_checkin(case_id)
            )
        if role in STAFF and fresh is Fresh.SESSION:
            tokens[role] = self.staff_token(role)
            cookies[role] = self.staff_cookie(role)
        elif role in REPORTERS and (fresh is Fresh.SESSION or role == REPORTER):
            own = scene.case_code if role == REPORTER else shared.other_case_code
            tokens[role] = self.reporter_token(own)
            cookies[role] = self.reporter_cookie(own)
        if fresh is Fresh.OVERDUE_CASE:
            self.make_overdue(scene.case_id)
        elif fresh is Fresh.IDENTITY_REQUEST:
            scene = dataclasses.replace(scene, request_id=self.ask_identity(scene.case_id, tokens))
        elif fresh is Fresh.LINKED_CASE:
            token = tokens[REPORTER] if role == REPORTER else self.reporter_token(scene.case_code)
            ref, linked_id = self.open_linked(scene.case_id, token)
            self.make_overdue(linked_id)
            scene = dataclasses.replace(
                scene, linked_ref=ref, linked_checkin_id=self.add_checkin(linked_id)
            )
        # The files stay the shared cases': no fresh row downloads one.
        return scene


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_TOKEN_FIELD = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def page_token(page: str) -> str:
    match = _TOKEN_FIELD.search(page)
    assert match is not None, "no form token on the page"
    return html.unescape(match.group(1))


@pytest.fixture(scope="module")
def world(database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = database.fresh(tmp_path_factory.mktemp("roles"))
    settings = make_settings(url)
    engine = make_engine(url, immediate=False)
    with make_sessionmaker(engine)() as db:
        units = _make_units(db)
        user_ids = {
            role: make_user(db, settings, username, roles=roles, units=(units[unit],)).id
            for role, (username, roles, unit) in STAFF_ACCOUNTS.items()
        }
        username, roles, unit = GRANTEE
        grantee_id = make_user(db, settings, username, roles=roles, units=(units[unit],)).id
        username, roles, unit = ABOVE
        make_user(db, settings, username, roles=roles, units=(units[unit],))
    engine.dispose()
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            built = World(app, client, units, user_ids, grantee_id)
            built.build()
            yield built
    finally:
        app.state.engine.dispose()
        database.clean()


def _make_units(db: Session) -> dict[str, int]:
    national = make_unit(db, "Sentralt")
    county = make_unit(db, "Vestland", parent_id=national.id, kind="county")
    town = make_unit(db, "Bergen", parent_id=county.id, kind="municipal")
    other = make_unit(db, "Rogaland", parent_id=national.id, kind="county")
    return {"national": national.id, "county": county.id, "town": town.id, "other_county": other.id}


# --------------------------------------------------------------------------
# A cell: one role's browser or API client, for one request


@dataclass
class Cell:
    world: World
    scene: Scene
    role: str
    # Form tokens made for another browser, as a cross-site form would carry.
    forged_tokens: bool = False

    @property
    def client(self) -> TestClient:
        return self.world.client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send as this role: its bearer token and its reporter cookie, if it has them."""
        token = self.scene.tokens.get(self.role)
        headers = bearer(token) if token else {}
        return self.client.request(method, url, headers=headers, follow_redirects=False, **kwargs)

    def form_token(self) -> str:
        """A form token for this browser; one without a cookie gets one, as from a page."""
        value = self.client.cookies.get(SESSION_COOKIE)
        if value is None:
            value = secrets.token_urlsafe(32)
            self.client.cookies.set(SESSION_COOKIE, value, domain=COOKIE_DOMAIN)
        if self.forged_tokens:
            value = secrets.token_urlsafe(32)
        signer: CsrfSigner = self.world.app.state.varsling_csrf
        return signer.token(value, now=time.time())

    def page_form(self, data: Mapping[str, str], path: str) -> httpx.Response:
        """A reporter page's form, sent as a browser does: multipart, an empty file part."""
        return self.request(
            "POST",
            path,
            data={**data, CSRF_FIELD: self.form_token()},
            files=[("files", ("", b"", "application/octet-stream"))],
        )


class Fresh(enum.Enum):
    """What a row's request changes, made anew for each of its cells."""

    CASE = "a new case with a check-in question (and, for its reporter, a session for it)"
    SESSION = "new credentials for the role (the request ends its session)"
    OVERDUE_CASE = "a new case, as CASE, past its deadline for acknowledgement"
    LINKED_CASE = (
        "a new case, as CASE, and a retaliation case its reporter opened from it, past its "
        "deadline for acknowledgement and with a check-in question"
    )
    IDENTITY_REQUEST = "a new case, as CASE, where the handler asked to see the identity"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the template, as the app registers it
    send: Callable[[Cell], httpx.Response]
    expect: Mapping[str, int]
    # What the request changes, so each cell needs its own (see Fresh).
    fresh: Fresh | None = None
    # More to check in a cell's answer than its status (when it is no error).
    check: Callable[[Cell, httpx.Response], None] | None = None
    # Cells whose current answer differs from `expect`, with why: xfail(strict=True).
    known: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


def staff_only(status: int) -> dict[str, int]:
    return {**everyone(401), **dict.fromkeys(STAFF, status)}


def case_route(status: int, *, handler: int | None = None) -> dict[str, int]:
    """Key holders who declared get `status`; those who did not, 409; other staff, 404."""
    return {
        **everyone(401),
        **dict.fromkeys(STAFF, 404),
        HANDLER: status if handler is None else handler,
        UNDECLARED: 409,
    }


def auditor_only(status: int) -> dict[str, int]:
    return {**everyone(401), **dict.fromkeys(STAFF, 403), AUDITOR: status}


def custodian_only(status: int, *, other_custodian: int | None = None) -> dict[str, int]:
    """The custodian holding the case's identity key gets `status`; other staff, 403."""
    return {
        **everyone(401),
        **dict.fromkeys(STAFF, 403),
        CUSTODIAN: status,
        OTHER_CUSTODIAN: status if other_custodian is None else other_custodian,
    }


def reporter_api(status: int, *, other: int | None = None) -> dict[str, int]:
    """The reporter's own case: the other reporter acts on theirs (or gets `other`)."""
    return {**everyone(401), REPORTER: status, OTHER_REPORTER: status if other is None else other}


def reporter_page(status: int, *, other: int | None = None, outsider: int = 303) -> dict[str, int]:
    """A page of the reporter's own case; anyone without a reporter session gets `outsider`."""
    return {
        **everyone(outsider),
        REPORTER: status,
        OTHER_REPORTER: status if other is None else other,
    }


def staff_page(status: int, *, outsider: int = 303) -> dict[str, int]:
    """A staff page any staff member may open; anyone without a staff session gets `outsider`."""
    return {**everyone(outsider), **dict.fromkeys(STAFF, status)}


def auditor_page(status: int) -> dict[str, int]:
    """An auditor's page: no staff session 303 (to the login page), other staff 403."""
    return {**everyone(303), **dict.fromkeys(STAFF, 403), AUDITOR: status}


def custodian_page(status: int, *, other_custodian: int | None = None) -> dict[str, int]:
    """A custodian's page: no staff session 303, other staff 403."""
    return {
        **everyone(303),
        **dict.fromkeys(STAFF, 403),
        CUSTODIAN: status,
        OTHER_CUSTODIAN: status if other_custodian is None else other_custodian,
    }


def shows_the_request_to_its_custodian_only(cell: Cell, response: httpx.Response) -> None:
    """Waiting (with its form) or among their decisions: the custodian's page only."""
    request_id = cell.scene.request_id
    shown = (
        f"/staff/identity-requests/{request_id}/decision" in response.text
        or f'<th scope="row">{request_id}</th>' in response.text
    )
    assert shown == (cell.role == CUSTODIAN)


def staff_case_page(status: int, *, handler: int | None = None) -> dict[str, int]:
    """A staff page of one case: answered as the API's case routes (`case_route`) answer
    staff, and anyone without a staff session is sent to the login page (303)."""
    return {
        **everyone(303),
        **dict.fromkeys(STAFF, 404),
        HANDLER: status if handler is None else handler,
        UNDECLARED: 409,
    }


def shows_the_case_to_key_holders_only(cell: Cell, response: httpx.Response) -> None:
    if response.status_code != 200:
        return  # sent to the login page
    listed = f"/nb/staff/cases/{cell.scene.case_id}" in response.text
    assert listed == (cell.role in (HANDLER, UNDECLARED)), cell.role


def every_case_list_page(cell: Cell) -> httpx.Response:
    """The case list page by page (other rows add cases to the shared world): the first
    answer, with the text of every page when it is a list."""
    first = cell.request("GET", "/nb/staff/cases")
    texts = [first.text]
    while first.status_code == 200 and len(texts) < 50:
        more = re.search(r'<a href="([^"]+)">Neste side</a>', texts[-1])
        if more is None:
            break
        texts.append(cell.request("GET", html.unescape(more.group(1))).text)
    return httpx.Response(
        first.status_code, headers=first.headers, text="".join(texts), request=first.request
    )


def shows_the_report(cell: Cell, response: httpx.Response) -> None:
    if response.status_code != 200:
        return  # sent to the login page
    assert report(0)["description"] in response.text


def shows_the_declaration_form_only(cell: Cell, response: httpx.Response) -> None:
    """What the undeclared handler gets from every case page (the API's 409)."""
    assert f'action="/nb/staff/cases/{cell.scene.case_id}/declaration"' in response.text
    assert report(0)["description"] not in response.text


def case_page(cell: Cell, subpage: str) -> str:
    return f"/en/staff/cases/{cell.scene.case_id}/{subpage}"


def upload_on_page(cell: Cell) -> httpx.Response:
    """The upload form as a browser sends it: multipart, with a file."""
    return cell.request(
        "POST",
        case_page(cell, "upload"),
        data={CSRF_FIELD: cell.form_token()},
        files=[("files", ("note.txt", b"A note from the handler.", "text/plain"))],
    )


def lift_hold_on_page(cell: Cell) -> httpx.Response:
    """The handler places a hold on the (fresh) case; the cell's role lifts it on the page."""
    placed = cell.client.post(
        f"/api/v1/cases/{cell.scene.case_id}/hold",
        json=hold_body("Keep it."),
        headers=bearer(cell.scene.tokens[HANDLER]),
    )
    assert placed.status_code == 201, placed.text
    return staff_form(cell, case_page(cell, "hold/lift"), {})


def lands_where_they_belong(cell: Cell, response: httpx.Response) -> None:
    """Staff land on their first page; anyone else on the login page."""
    expected = {
        HANDLER: "/nb/staff/cases",
        CUSTODIAN: "/nb/staff/identity-requests",
        AUDITOR: "/nb/staff/audit",
        ADMIN: "/nb/staff/admin/units",
    }
    for role in (UNDECLARED, RECUSED, EXCLUDED, OTHER_UNIT):
        expected[role] = expected[HANDLER]
    expected[OTHER_CUSTODIAN] = expected[CUSTODIAN]
    assert response.headers["location"] == expected.get(cell.role, "/nb/staff/login")


def staff_login(cell: Cell) -> httpx.Response:
    """The role logs in on the staff page with its own account; others try a made-up one."""
    username = STAFF_ACCOUNTS[cell.role][0] if cell.role in STAFF else "somebody"
    return staff_form(cell, "/nb/staff/login", {"username": username, "password": PASSWORD})


def staff_form(cell: Cell, path: str, data: Mapping[str, str]) -> httpx.Response:
    """A staff page's form as the role's browser sends it, with its own form token."""
    return cell.request("POST", path, data={**data, CSRF_FIELD: cell.form_token()})


def admin_page(status: int) -> dict[str, int]:
    """An administrators' page: other staff get a 403 page, anyone else the login page."""
    return {**staff_page(403), ADMIN: status}


ADMIN_PAGES = "/{lang:lang}/staff/admin"


def hold_body(reason: str) -> dict[str, str]:
    review_on = dt.date.today() + dt.timedelta(days=90)
    return {"reason": reason, "review_on": review_on.isoformat()}


def lift_hold(cell: Cell) -> httpx.Response:
    """The handler places a hold on the (fresh) case; the cell's role lifts it."""
    url = f"/api/v1/cases/{cell.scene.case_id}/hold"
    placed = cell.client.post(
        url, json=hold_body("Keep it."), headers=bearer(cell.scene.tokens[HANDLER])
    )
    assert placed.status_code == 201, placed.text
    return cell.request("DELETE", url)


def send_web_report(cell: Cell) -> httpx.Response:
    """Open the form for the town (as this browser), fill it in and send it."""
    page = cell.request("GET", f"/nb/report?unit={cell.world.units['town']}")
    assert page.status_code == 200, page.text
    fields: dict[str, list[str]] = {}
    for name, value in _HIDDEN.findall(page.text):
        fields.setdefault(name, []).append(html.unescape(value))
    fields |= {
        CSRF_FIELD: [cell.form_token()],
        "category": ["harassment"],
        "description": ["Something happened at the county meeting."],
    }
    return cell.request(
        "POST",
        "/nb/report",
        data=fields,
        files=[("files", ("", b"", "application/octet-stream"))],
    )


def lists_the_case_to_key_holders_only(cell: Cell, response: httpx.Response) -> None:
    listed = {item["id"]: item["declared"] for item in response.json()["items"]}
    holders = {HANDLER: True, UNDECLARED: False}
    assert listed.get(cell.scene.case_id) == holders.get(cell.role), listed


def shows_the_identity(cell: Cell, response: httpx.Response) -> None:
    assert response.json()["identity"]["name"] == "Kari Nordmann", response.text


def lists_the_request_to_its_custodian_only(cell: Cell, response: httpx.Response) -> None:
    listed = {item["id"] for item in response.json()["items"]}
    assert (cell.scene.request_id in listed) == (cell.role == CUSTODIAN), listed


def says_sent_to_the_reporter_only(cell: Cell, response: httpx.Response) -> None:
    """A redirect after a form: only the reporter's own answer is confirmed as sent."""
    location = response.headers["location"]
    assert ("sent=" in location) == (cell.role == REPORTER), location


def linked(cell: Cell) -> str:
    return f"/api/v1/reporter/cases/{cell.scene.linked_ref}"


def linked_page(cell: Cell) -> str:
    return f"/nb/case/linked/{cell.scene.linked_ref}"


CASE = "/api/v1/cases/{case_id}"
LINKED = "/api/v1/reporter/cases/{reference}"
LINKED_PAGE = "/{lang:lang}/case/linked/{reference}"
STAFF_CASES = "/{lang:lang}/staff/cases"
STAFF_CASE = "/{lang:lang}/staff/cases/{case_id}"

ROUTES: tuple[Route, ...] = (
    # ---- public API
    Route(
        "GET",
        "/api/v1/openapi.json",
        lambda c: c.request("GET", "/api/v1/openapi.json"),
        everyone(200),
    ),
    Route("GET", "/api/v1/units", lambda c: c.request("GET", "/api/v1/units"), everyone(200)),
    Route(
        "POST",
        "/api/v1/reports",
        lambda c: c.request("POST", "/api/v1/reports", json=report(c.world.units["town"])),
        everyone(201),
    ),
    Route(
        "POST",
        "/api/v1/reporter/session",
        lambda c: c.request(
            "POST", "/api/v1/reporter/session", json={"case_code": c.scene.case_code}
        ),
        everyone(200),
    ),
    Route(
        "POST",
        "/api/v1/sessions",
        lambda c: c.request(
            "POST", "/api/v1/sessions", json={"username": "aud", "password": PASSWORD}
        ),
        everyone(200),
    ),
    # ---- the reporter's API
    Route(
        "GET",
        "/api/v1/reporter/case",
        lambda c: c.request("GET", "/api/v1/reporter/case"),
        reporter_api(200),
    ),
    Route(
        "POST",
        "/api/v1/reporter/case/files",
        lambda c: c.request(
            "POST",
            "/api/v1/reporter/case/files",
            files=[("files", ("note.txt", b"Another note.", "text/plain"))],
        ),
        reporter_api(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "GET",
        "/api/v1/reporter/case/files/{file_id}",
        lambda c: c.request("GET", f"/api/v1/reporter/case/files/{c.scene.file_id}"),
        reporter_api(200, other=404),
    ),
    Route(
        "POST",
        "/api/v1/reporter/case/messages",
        lambda c: c.request(
            "POST", "/api/v1/reporter/case/messages", json={"body": "One more thing."}
        ),
        reporter_api(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        "/api/v1/reporter/case/retaliation",
        lambda c: c.request(
            "POST", "/api/v1/reporter/case/retaliation", json={"body": "They froze me out."}
        ),
        reporter_api(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        "/api/v1/reporter/case/checkins/{checkin_id}",
        lambda c: c.request(
            "POST",
            f"/api/v1/reporter/case/checkins/{c.scene.checkin_id}",
            json={"negative_consequences": False},
        ),
        # The question is on the reporter's case: not the other reporter's to answer.
        reporter_api(201, other=404),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        "/api/v1/reporter/case/escalate",
        lambda c: c.request("POST", "/api/v1/reporter/case/escalate"),
        # The other reporter's case is not past its deadline: acknowledgement_not_yet_due.
        reporter_api(201, other=409),
        fresh=Fresh.OVERDUE_CASE,
    ),
    # ---- the reporter's API on a linked (retaliation) case: the reference is the
    # reporter's own, so another reporter holding it finds nothing (404)
    Route("GET", LINKED, lambda c: c.request("GET", linked(c)), reporter_api(200, other=404)),
    Route(
        "GET",
        f"{LINKED}/files/{{file_id}}",
        lambda c: c.request("GET", f"{linked(c)}/files/{c.scene.linked_file_id}"),
        reporter_api(200, other=404),
    ),
    Route(
        "POST",
        f"{LINKED}/messages",
        lambda c: c.request("POST", f"{linked(c)}/messages", json={"body": "It goes on."}),
        reporter_api(201, other=404),
        fresh=Fresh.LINKED_CASE,
    ),
    Route(
        "POST",
        f"{LINKED}/checkins/{{checkin_id}}",
        lambda c: c.request(
            "POST",
            f"{linked(c)}/checkins/{c.scene.linked_checkin_id}",
            json={"negative_consequences": False},
        ),
        reporter_api(201, other=404),
        fresh=Fresh.LINKED_CASE,
    ),
    Route(
        "POST",
        f"{LINKED}/escalate",
        lambda c: c.request("POST", f"{linked(c)}/escalate"),
        reporter_api(201, other=404),
        fresh=Fresh.LINKED_CASE,
    ),
    # Ends the caller's own session, staff or reporter.
    Route(
        "DELETE",
        "/api/v1/sessions/current",
        lambda c: c.request("DELETE", "/api/v1/sessions/current"),
        {**everyone(204), NOBODY: 401},
        fresh=Fresh.SESSION,
    ),
    # ---- the handlers' API
    Route(
        "GET",
        "/api/v1/cases",
        lambda c: c.request("GET", "/api/v1/cases"),
        staff_only(200),
        check=lists_the_case_to_key_holders_only,
    ),
    Route(
        "GET", CASE, lambda c: c.request("GET", f"/api/v1/cases/{c.scene.case_id}"), case_route(200)
    ),
    Route(
        "POST",
        f"{CASE}/declaration",
        lambda c: c.request(
            "POST",
            f"/api/v1/cases/{c.scene.case_id}/declaration",
            json={"conflict": False, "risk": "low"},
        ),
        # The handler has declared already; the one who had not opens the case.
        {**case_route(409), UNDECLARED: 201},
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{CASE}/grants",
        lambda c: c.request(
            "POST",
            f"/api/v1/cases/{c.scene.case_id}/grants",
            json={"user_id": c.world.grantee_id},
        ),
        case_route(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{CASE}/hold",
        lambda c: c.request(
            "POST", f"/api/v1/cases/{c.scene.case_id}/hold", json=hold_body("A lawsuit is due.")
        ),
        case_route(201),
        fresh=Fresh.CASE,
    ),
    Route("DELETE", f"{CASE}/hold", lift_hold, case_route(200), fresh=Fresh.CASE),
    Route(
        "POST",
        f"{CASE}/discard",
        lambda c: c.request(
            "POST", f"/api/v1/cases/{c.scene.case_id}/discard", json={"reason": "duplicate"}
        ),
        case_route(200),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{CASE}/messages",
        lambda c: c.request(
            "POST", f"/api/v1/cases/{c.scene.case_id}/messages", json={"body": "Thank you."}
        ),
        case_route(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{CASE}/notes",
        lambda c: c.request(
            "POST", f"/api/v1/cases/{c.scene.case_id}/notes", json={"body": "Call the board."}
        ),
        case_route(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{CASE}/status",
        lambda c: c.request(
            "POST", f"/api/v1/cases/{c.scene.case_id}/status", json={"status": "acknowledged"}
        ),
        case_route(200),
        fresh=Fresh.CASE,
    ),
    Route(
        "GET",
        f"{CASE}/files/{{file_id}}",
        lambda c: c.request("GET", f"/api/v1/cases/{c.scene.case_id}/files/{c.scene.file_id}"),
        case_route(200),
    ),
    Route(
        "POST",
        f"{CASE}/files",
        lambda c: c.request(
            "POST",
            f"/api/v1/cases/{c.scene.case_id}/files",
            files=[("files", ("report.txt", b"The investigation report.", "text/plain"))],
        ),
        case_route(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "GET",
        f"{CASE}/access",
        lambda c: c.request("GET", f"/api/v1/cases/{c.scene.case_id}/access"),
        case_route(200),
    ),
    # ---- identity custody: the handler asks, the custodian holding the identity key
    # decides, and only then may the handler read it
    Route(
        "POST",
        f"{CASE}/identity-requests",
        lambda c: c.request(
            "POST",
            f"/api/v1/cases/{c.scene.case_id}/identity-requests",
            json={"justification": "I must interview the reporter about the meeting."},
        ),
        case_route(201),
        fresh=Fresh.CASE,
    ),
    Route(
        "GET",
        f"{CASE}/identity-requests",
        lambda c: c.request("GET", f"/api/v1/cases/{c.scene.case_id}/identity-requests"),
        case_route(200),
    ),
    # The handler's request was approved; the custodian decides but reads no identity here.
    Route(
        "GET",
        f"{CASE}/identity",
        lambda c: c.request("GET", f"/api/v1/cases/{c.scene.case_id}/identity"),
        case_route(200),
        check=shows_the_identity,
    ),
    Route(
        "GET",
        "/api/v1/identity-requests",
        lambda c: c.request("GET", "/api/v1/identity-requests"),
        custodian_only(200),
        check=lists_the_request_to_its_custodian_only,
    ),
    Route(
        "POST",
        "/api/v1/identity-requests/{request_id}/decision",
        lambda c: c.request(
            "POST",
            f"/api/v1/identity-requests/{c.scene.request_id}/decision",
            json={"approve": True, "reason": "The handler must interview the reporter."},
        ),
        # A custodian without the case's identity key may not learn the request exists.
        custodian_only(200, other_custodian=404),
        fresh=Fresh.IDENTITY_REQUEST,
    ),
    # ---- the auditors' API
    Route(
        "GET",
        "/api/v1/audit/verify",
        lambda c: c.request("GET", "/api/v1/audit/verify"),
        auditor_only(200),
    ),
    Route(
        "POST",
        "/api/v1/audit/checkpoints",
        lambda c: c.request("POST", "/api/v1/audit/checkpoints"),
        auditor_only(201),
    ),
    Route(
        "GET",
        "/api/v1/audit/events",
        lambda c: c.request("GET", "/api/v1/audit/events", params={"limit": "5"}),
        auditor_only(200),
    ),
    Route(
        "GET",
        "/api/v1/statistics",
        lambda c: c.request("GET", "/api/v1/statistics"),
        auditor_only(200),
    ),
    # ---- pages anyone opens
    Route(
        "GET", "/static/{path}", lambda c: c.request("GET", "/static/varsling.css"), everyone(200)
    ),
    Route("GET", "/", lambda c: c.request("GET", "/"), everyone(307)),
    Route("HEAD", "/", lambda c: c.request("HEAD", "/"), everyone(307)),
    Route("GET", "/{lang:lang}/", lambda c: c.request("GET", "/nb/"), everyone(200)),
    Route("HEAD", "/{lang:lang}/", lambda c: c.request("HEAD", "/en/"), everyone(200)),
    Route("GET", "/{lang:lang}/report", lambda c: c.request("GET", "/nn/report"), everyone(200)),
    # Anyone may report; the answer is the receipt page.
    Route("POST", "/{lang:lang}/report", send_web_report, everyone(200)),
    Route(
        "GET", "/{lang:lang}/follow-up", lambda c: c.request("GET", "/nb/follow-up"), everyone(200)
    ),
    # Anyone with the code may log in with it; an earlier login in that browser ends.
    Route(
        "POST",
        "/{lang:lang}/follow-up",
        lambda c: c.request(
            "POST",
            "/nb/follow-up",
            data={"case_code": c.scene.case_code, CSRF_FIELD: c.form_token()},
        ),
        everyone(303),
        fresh=Fresh.SESSION,
    ),
    # ---- the reporter's pages (a cookie session)
    Route("GET", "/{lang:lang}/case", lambda c: c.request("GET", "/nb/case"), reporter_page(200)),
    Route(
        "GET",
        "/{lang:lang}/case/retaliation",
        lambda c: c.request("GET", "/en/case/retaliation"),
        reporter_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/case/messages",
        lambda c: c.page_form({"body": "One more thing."}, "/nb/case/messages"),
        # Without a session nothing is stored; the page keeps the typed text (401).
        reporter_page(303, outsider=401),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        "/{lang:lang}/case/retaliation",
        lambda c: c.page_form({"body": "They froze me out."}, "/nb/case/retaliation"),
        reporter_page(303, outsider=401),
        fresh=Fresh.CASE,
    ),
    # A form's address opened directly goes back to the case page.
    Route(
        "GET",
        "/{lang:lang}/case/messages",
        lambda c: c.request("GET", "/nb/case/messages"),
        everyone(303),
    ),
    Route(
        "GET",
        "/{lang:lang}/case/logout",
        lambda c: c.request("GET", "/nb/case/logout"),
        everyone(303),
    ),
    Route(
        "GET",
        "/{lang:lang}/case/files/{file_id}",
        lambda c: c.request("GET", f"/nb/case/files/{c.scene.file_id}"),
        reporter_page(200, other=404),
    ),
    # Form addresses opened directly go back to the case page.
    Route(
        "GET",
        "/{lang:lang}/case/send-up",
        lambda c: c.request("GET", "/nb/case/send-up"),
        everyone(303),
    ),
    Route(
        "GET",
        "/{lang:lang}/case/checkins/{checkin_id}",
        lambda c: c.request("GET", f"/nb/case/checkins/{c.scene.checkin_id}"),
        everyone(303),
    ),
    # Without a session, "nothing was sent" (401), not a redirect that could pass for success.
    Route(
        "POST",
        "/{lang:lang}/case/send-up",
        lambda c: c.request("POST", "/nb/case/send-up", data={CSRF_FIELD: c.form_token()}),
        # The other reporter's case is not past its deadline: the page says so (409).
        reporter_page(303, other=409, outsider=401),
        fresh=Fresh.OVERDUE_CASE,
    ),
    # Someone else's question goes back to their case page and confirms nothing; without
    # a session the typed answer is kept (401).
    Route(
        "POST",
        "/{lang:lang}/case/checkins/{checkin_id}",
        lambda c: c.request(
            "POST",
            f"/nb/case/checkins/{c.scene.checkin_id}",
            data={"answer": "no", CSRF_FIELD: c.form_token()},
        ),
        reporter_page(303, outsider=401),
        fresh=Fresh.CASE,
        check=says_sent_to_the_reporter_only,
    ),
    # ---- the reporter's pages of a linked (retaliation) case
    Route(
        "GET",
        LINKED_PAGE,
        lambda c: c.request("GET", linked_page(c)),
        reporter_page(200, other=404),
    ),
    Route(
        "GET",
        f"{LINKED_PAGE}/files/{{file_id}}",
        lambda c: c.request("GET", f"{linked_page(c)}/files/{c.scene.linked_file_id}"),
        reporter_page(200, other=404),
    ),
    Route(
        "GET",
        f"{LINKED_PAGE}/messages",
        lambda c: c.request("GET", f"{linked_page(c)}/messages"),
        everyone(303),
    ),
    Route(
        "GET",
        f"{LINKED_PAGE}/send-up",
        lambda c: c.request("GET", f"{linked_page(c)}/send-up"),
        everyone(303),
    ),
    Route(
        "GET",
        f"{LINKED_PAGE}/checkins/{{checkin_id}}",
        lambda c: c.request("GET", f"{linked_page(c)}/checkins/{c.scene.linked_checkin_id}"),
        everyone(303),
    ),
    Route(
        "POST",
        f"{LINKED_PAGE}/messages",
        lambda c: c.page_form({"body": "It goes on."}, f"{linked_page(c)}/messages"),
        reporter_page(303, other=404, outsider=401),
        fresh=Fresh.LINKED_CASE,
    ),
    Route(
        "POST",
        f"{LINKED_PAGE}/send-up",
        lambda c: c.request("POST", f"{linked_page(c)}/send-up", data={CSRF_FIELD: c.form_token()}),
        reporter_page(303, other=404, outsider=401),
        fresh=Fresh.LINKED_CASE,
    ),
    Route(
        "POST",
        f"{LINKED_PAGE}/checkins/{{checkin_id}}",
        lambda c: c.request(
            "POST",
            f"{linked_page(c)}/checkins/{c.scene.linked_checkin_id}",
            data={"answer": "no", CSRF_FIELD: c.form_token()},
        ),
        reporter_page(303, outsider=401),
        fresh=Fresh.LINKED_CASE,
        check=says_sent_to_the_reporter_only,
    ),
    Route(
        "POST",
        "/{lang:lang}/case/logout",
        lambda c: c.request("POST", "/nb/case/logout", data={CSRF_FIELD: c.form_token()}),
        everyone(303),
        fresh=Fresh.SESSION,
    ),
    # ---- the staff pages: login, two-factor set-up, logout
    Route(
        "GET",
        "/{lang:lang}/staff/login",
        lambda c: c.request("GET", "/nn/staff/login"),
        everyone(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/login",
        staff_login,
        {**everyone(401), **dict.fromkeys(STAFF, 303)},
        fresh=Fresh.SESSION,
    ),
    Route(
        "GET",
        "/{lang:lang}/staff/",
        lambda c: c.request("GET", "/nb/staff/"),
        everyone(303),
        check=lands_where_they_belong,
    ),
    Route(
        "GET",
        "/{lang:lang}/staff/two-factor",
        lambda c: c.request("GET", "/en/staff/two-factor"),
        staff_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/two-factor",
        # No code: refused on input (a set-up would enrol the shared accounts).
        lambda c: staff_form(c, "/en/staff/two-factor", {"code": "", "enrolment": ""}),
        staff_page(422),
    ),
    # ---- the auditor's and the custodian's pages
    Route(
        "GET",
        "/{lang:lang}/staff/audit",
        lambda c: c.request("GET", "/nb/staff/audit", params={"limit": "5"}),
        auditor_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/audit/checkpoint",
        lambda c: staff_form(c, "/nn/staff/audit/checkpoint", {}),
        auditor_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/audit/export",
        lambda c: staff_form(c, "/en/staff/audit/export", {}),
        auditor_page(200),
    ),
    Route(
        "GET",
        "/{lang:lang}/staff/statistics",
        lambda c: c.request("GET", "/en/staff/statistics"),
        auditor_page(200),
    ),
    Route(
        "GET",
        "/{lang:lang}/staff/identity-requests",
        lambda c: c.request("GET", "/nb/staff/identity-requests"),
        custodian_page(200),
        check=shows_the_request_to_its_custodian_only,
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/identity-requests/{request_id}/decision",
        lambda c: staff_form(
            c,
            f"/nb/staff/identity-requests/{c.scene.request_id}/decision",
            {"decision": "approve", "reason": "The handler must interview the reporter."},
        ),
        # As the API: a custodian without the case's identity key may not learn it exists.
        custodian_page(303, other_custodian=404),
        fresh=Fresh.IDENTITY_REQUEST,
    ),
    # ---- a handler's case sub-pages: answered as the API answers the case (404, 409)
    Route(
        "GET",
        f"{STAFF_CASE}/upload",
        lambda c: c.request("GET", case_page(c, "upload")),
        staff_case_page(200),
    ),
    Route("POST", f"{STAFF_CASE}/upload", upload_on_page, staff_case_page(303), fresh=Fresh.CASE),
    Route(
        "GET",
        f"{STAFF_CASE}/grants",
        lambda c: c.request("GET", case_page(c, "grants")),
        staff_case_page(200),
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/grants",
        lambda c: staff_form(c, case_page(c, "grants"), {"user_id": str(c.world.grantee_id)}),
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    Route(
        "GET",
        f"{STAFF_CASE}/identity",
        lambda c: c.request("GET", case_page(c, "identity")),
        staff_case_page(200),
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/identity",
        lambda c: staff_form(
            c, case_page(c, "identity"), {"justification": "I must interview the reporter."}
        ),
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    Route(
        "GET",
        f"{STAFF_CASE}/hold",
        lambda c: c.request("GET", case_page(c, "hold")),
        staff_case_page(200),
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/hold",
        lambda c: staff_form(c, case_page(c, "hold"), hold_body("A court case is open.")),
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/hold/lift",
        lift_hold_on_page,
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    # The lift form's address opened directly: the hold page (or the login page).
    Route(
        "GET",
        f"{STAFF_CASE}/hold/lift",
        lambda c: c.request("GET", case_page(c, "hold/lift")),
        everyone(303),
    ),
    Route(
        "GET",
        f"{STAFF_CASE}/access",
        lambda c: c.request("GET", case_page(c, "access")),
        staff_case_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/logout",
        lambda c: staff_form(c, "/nb/staff/logout", {}),
        everyone(303),
        fresh=Fresh.SESSION,
    ),
    # ---- the case handler's pages
    Route(
        "GET",
        STAFF_CASES,
        every_case_list_page,
        staff_page(200),
        check=shows_the_case_to_key_holders_only,
    ),
    Route(
        "GET",
        STAFF_CASE,
        lambda c: c.request("GET", f"/nb/staff/cases/{c.scene.case_id}"),
        staff_case_page(200),
        check=shows_the_report,
    ),
    Route(
        "GET",
        f"{STAFF_CASE}/files/{{file_id}}",
        lambda c: c.request("GET", f"/nb/staff/cases/{c.scene.case_id}/files/{c.scene.file_id}"),
        staff_case_page(200),
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/declaration",
        lambda c: staff_form(
            c,
            f"/nb/staff/cases/{c.scene.case_id}/declaration",
            {"conflict": "no", "risk": "low"},
        ),
        # The handler has declared already; the one who had not opens the case.
        {**staff_case_page(409), UNDECLARED: 303},
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/messages",
        lambda c: staff_form(
            c, f"/nb/staff/cases/{c.scene.case_id}/messages", {"body": "Thank you."}
        ),
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/notes",
        lambda c: staff_form(
            c, f"/nb/staff/cases/{c.scene.case_id}/notes", {"body": "Call the board."}
        ),
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    Route(
        "POST",
        f"{STAFF_CASE}/status",
        lambda c: staff_form(
            c, f"/nb/staff/cases/{c.scene.case_id}/status", {"status": "acknowledged"}
        ),
        staff_case_page(303),
        fresh=Fresh.CASE,
    ),
    # ---- the administrators' pages; their forms are refused on input (a change would
    # alter the shared world), but the two-factor reset of the grantee, who logs in nowhere
    Route(
        "GET",
        f"{ADMIN_PAGES}/units",
        lambda c: c.request("GET", "/nb/staff/admin/units"),
        admin_page(200),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/units",
        lambda c: staff_form(
            c,
            "/en/staff/admin/units",
            {"name": " ", "kind": "municipal", "parent": str(c.world.units["county"])},
        ),
        admin_page(422),
    ),
    Route(
        "GET",
        f"{ADMIN_PAGES}/units/{{unit_id}}",
        lambda c: c.request("GET", f"/nn/staff/admin/units/{c.world.units['town']}"),
        admin_page(200),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/units/{{unit_id}}/rename",
        lambda c: staff_form(
            c, f"/en/staff/admin/units/{c.world.units['town']}/rename", {"name": ""}
        ),
        admin_page(422),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/units/{{unit_id}}/move",
        # The town under itself.
        lambda c: staff_form(
            c,
            f"/en/staff/admin/units/{c.world.units['town']}/move",
            {"parent": str(c.world.units["town"])},
        ),
        admin_page(422),
    ),
    Route(
        "GET",
        f"{ADMIN_PAGES}/accounts",
        lambda c: c.request("GET", "/en/staff/admin/accounts"),
        admin_page(200),
    ),
    Route(
        "GET",
        f"{ADMIN_PAGES}/accounts/new",
        lambda c: c.request("GET", "/nb/staff/admin/accounts/new"),
        admin_page(200),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts",
        lambda c: staff_form(
            c,
            "/en/staff/admin/accounts",
            {"username": "", "display_name": "", "password": "", "roles": "auditor"},
        ),
        admin_page(422),
    ),
    Route(
        "GET",
        f"{ADMIN_PAGES}/accounts/{{user_id}}",
        lambda c: c.request("GET", f"/en/staff/admin/accounts/{c.world.user_ids[HANDLER]}"),
        admin_page(200),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts/{{user_id}}/roles",
        # The roles the handler has already.
        lambda c: staff_form(
            c, f"/en/staff/admin/accounts/{c.world.user_ids[HANDLER]}/roles", {"roles": "handler"}
        ),
        admin_page(422),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts/{{user_id}}/units",
        # No unit for a handler.
        lambda c: staff_form(c, f"/en/staff/admin/accounts/{c.world.user_ids[HANDLER]}/units", {}),
        admin_page(422),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts/{{user_id}}/email",
        # Not an address: refused, nothing changes.
        lambda c: staff_form(
            c, f"/en/staff/admin/accounts/{c.world.user_ids[HANDLER]}/email", {"email": "x y"}
        ),
        admin_page(422),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts/{{user_id}}/deactivate",
        # The only administrator.
        lambda c: staff_form(
            c, f"/en/staff/admin/accounts/{c.world.user_ids[ADMIN]}/deactivate", {}
        ),
        admin_page(422),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts/{{user_id}}/two-factor-reset",
        lambda c: staff_form(
            c, f"/en/staff/admin/accounts/{c.world.grantee_id}/two-factor-reset", {}
        ),
        admin_page(303),
    ),
    Route(
        "POST",
        f"{ADMIN_PAGES}/accounts/{{user_id}}/password-reset",
        # Too short: refused on the form (a reset would give the shared grantee a new key).
        lambda c: staff_form(
            c,
            f"/en/staff/admin/accounts/{c.world.grantee_id}/password-reset",
            {"password": "short"},
        ),
        admin_page(422),
    ),
    # ---- key lifecycle: one's own password, restoring access after a reset
    Route(
        "POST",
        "/api/v1/account/password",
        # Too short a new password: refused before the current one is even checked.
        lambda c: c.request(
            "POST",
            "/api/v1/account/password",
            json={"current_password": PASSWORD, "new_password": "short"},
        ),
        staff_only(422),
    ),
    Route(
        "POST",
        "/api/v1/admin/accounts/{user_id}/password-reset",
        lambda c: c.request(
            "POST",
            f"/api/v1/admin/accounts/{c.world.grantee_id}/password-reset",
            json={"new_password": "short"},
        ),
        {**staff_only(403), ADMIN: 422},
    ),
    Route(
        "GET",
        "/api/v1/pending-grants",
        lambda c: c.request("GET", "/api/v1/pending-grants"),
        staff_only(200),
    ),
    Route(
        "POST",
        "/api/v1/pending-grants",
        # Nobody's access waits in the shared world: there is nothing to re-grant.
        lambda c: c.request(
            "POST",
            "/api/v1/pending-grants",
            json={"case_id": c.scene.case_id, "user_id": c.world.grantee_id, "purpose": "case"},
        ),
        staff_only(404),
    ),
    Route(
        "GET",
        "/{lang:lang}/staff/account/password",
        lambda c: c.request("GET", "/en/staff/account/password"),
        staff_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/account/password",
        lambda c: staff_form(
            c,
            "/en/staff/account/password",
            {
                "current_password": PASSWORD,
                "new_password": "short",
                "repeat_password": "short",
            },
        ),
        staff_page(422),
    ),
    Route(
        "GET",
        "/{lang:lang}/staff/pending-grants",
        lambda c: c.request("GET", "/en/staff/pending-grants"),
        staff_page(200),
    ),
    Route(
        "POST",
        "/{lang:lang}/staff/pending-grants",
        lambda c: staff_form(
            c,
            "/en/staff/pending-grants",
            {"case_id": c.scene.case_id, "user_id": str(c.world.grantee_id), "purpose": "case"},
        ),
        staff_page(404),
    ),
)


# --------------------------------------------------------------------------
# The tests


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers, HEAD only where it is registered."""
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            found.add(("GET", route.path_format))
            continue
        methods = set(context.methods or ())
        if not isinstance(route, APIRoute) and "GET" in methods:
            methods.discard("HEAD")  # Starlette adds it to every GET route by itself
        path = context.path
        assert path is not None, f"a route without a path: {route!r}"
        found |= {(method, path) for method in methods}
    return found


def table_problems(table: list[tuple[str, str]], registered: set[tuple[str, str]]) -> list[str]:
    """Each route the table lacks, has but the app does not, or has twice."""
    doubled = sorted({key for key in table if table.count(key) > 1})
    problems = [f"  missing from the table: {m} {p}" for m, p in sorted(registered - set(table))]
    problems += [
        f"  in the table but not in the app: {m} {p}" for m, p in sorted(set(table) - registered)
    ]
    problems += [f"  in the table twice: {m} {p}" for m, p in doubled]
    return problems


def test_every_route_is_in_the_table(world: World) -> None:
    problems = table_problems([route.key for route in ROUTES], app_routes(world.app))

    assert not problems, "ROUTES does not match the app's routes:\n" + "\n".join(problems)


def test_the_route_check_names_what_is_missing_and_what_is_gone() -> None:
    """Routes of included routers, explicit HEADs, plain routes and mounts are all seen."""
    router = APIRouter(prefix="/api/v1/things")
    router.add_api_route("/{thing_id}", lambda thing_id: {}, methods=["GET"])
    router.add_api_route("/{thing_id}", lambda thing_id: {}, methods=["DELETE"])
    outer = APIRouter()
    outer.add_api_route("/ping", lambda: {}, methods=["GET", "HEAD"])
    outer.include_router(router)
    app = FastAPI(openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    app.include_router(outer)
    app.mount("/files", StaticFiles(packages=[("varsling", "static")]))

    registered = app_routes(app)

    assert registered == {
        ("GET", "/openapi.json"),
        ("GET", "/ping"),
        ("HEAD", "/ping"),
        ("GET", "/api/v1/things/{thing_id}"),
        ("DELETE", "/api/v1/things/{thing_id}"),
        ("GET", "/files/{path}"),
    }
    table = [
        ("GET", "/openapi.json"),
        ("GET", "/ping"),
        ("GET", "/ping"),
        ("GET", "/api/v1/things/{thing_id}"),
        ("POST", "/api/v1/things"),
        ("GET", "/files/{path}"),
    ]
    assert table_problems(table, registered) == [
        "  missing from the table: DELETE /api/v1/things/{thing_id}",
        "  missing from the table: HEAD /ping",
        "  in the table but not in the app: POST /api/v1/things",
        "  in the table twice: GET /ping",
    ]


def test_every_row_names_every_role() -> None:
    incomplete = [
        f"{route.method} {route.path}: {sorted(set(ROLES) ^ set(route.expect))}"
        for route in ROUTES
        if set(route.expect) != set(ROLES)
    ]
    assert not incomplete, "rows without an answer for every role:\n" + "\n".join(incomplete)


def _cells() -> Iterator[Any]:
    for route in ROUTES:
        for role in ROLES:
            marks = []
            if role in route.known:
                marks.append(pytest.mark.xfail(strict=True, reason=route.known[role]))
            yield pytest.param(route, role, id=f"{route.method} {route.path} | {role}", marks=marks)


def answer(
    world: World, route: Route, role: str, *, forged_tokens: bool = False
) -> tuple[Cell, httpx.Response]:
    """Send the row's request as `role`, from a browser holding only that role's cookie."""
    cell = Cell(world, world.scene_for(role, route.fresh), role, forged_tokens=forged_tokens)
    with world.browser(cell.scene.cookies.get(role)):
        return cell, route.send(cell)


@pytest.mark.parametrize(("route", "role"), list(_cells()))
def test_route_answers_each_role(world: World, route: Route, role: str) -> None:
    cell, response = answer(world, route, role)

    expected = route.expect[role]
    assert response.status_code == expected, (
        f"{route.method} {route.path} as {role}: {response.status_code}, expected {expected}: "
        f"{response.text[:300]}"
    )
    if expected == 409 and role == UNDECLARED:
        if route.path.startswith("/api/"):
            assert response.json()["error"]["code"] == "declaration_required"
        elif f'action="/nb/staff/cases/{cell.scene.case_id}/declaration"' in response.text:
            shows_the_declaration_form_only(cell, response)
        else:  # a sub-page says the same, in the page's language (English here)
            assert "Declare first" in response.text, response.text[:300]
    if route.check is not None and not response.is_error:
        route.check(cell, response)


PAGE_POSTS = [r for r in ROUTES if r.method == "POST" and not r.path.startswith("/api/")]


@pytest.mark.parametrize("route", PAGE_POSTS, ids=lambda r: f"{r.method} {r.path}")
def test_page_forms_need_a_form_token_of_their_own_browser(world: World, route: Route) -> None:
    """A form sent with a token made for another browser does nothing (400): a reporter's
    on the reporter pages, on the staff pages the first staff role the page is for."""
    staff = "/staff/" in route.path
    # On the staff pages: the first staff role the route does not refuse (a handler for most).
    role = next(r for r in STAFF if route.expect[r] != 403) if staff else REPORTER
    cell, response = answer(world, route, role, forged_tokens=True)

    assert response.status_code == 400, response.text[:300]
    with world.browser(cell.scene.cookies[role]):
        still = world.client.get("/nb/staff/" if staff else "/nb/case", follow_redirects=False)
    if staff:
        # Home for the role, not the login page.
        assert still.headers["location"] in (
            "/nb/staff/cases",
            "/nb/staff/audit",
            "/nb/staff/identity-requests",
            "/nb/staff/admin/units",
        ), "the session did not survive"
    else:
        assert still.status_code == 200, "the reporter's session did not survive a forged form"
