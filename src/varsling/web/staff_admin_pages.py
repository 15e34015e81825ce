"""The administrators' pages: units, accounts and the installation's warnings.

Thin, like every page: each form calls the service function the command
line calls (accounts/service.py, accounts/two_factor.py,
accounts/setup_check.py). A refusal comes back as the same page with the
problem in plain words, in the page's language, and everything typed kept;
nothing is changed. A change answers with a redirect (303) to the page,
which then says what was done.

Administrators never see case content: these pages read units, accounts and
the warnings, nothing from a case. A role given here says what an account may
ask for, never what it can read: case keys are wrapped per person when a
report arrives (see `set_user_roles`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from varsling.accounts import lifecycle, two_factor
from varsling.accounts import service as accounts
from varsling.accounts.models import Role, UnitKind
from varsling.accounts.service import StaffPrincipal, UnitNode
from varsling.accounts.setup_check import SetupWarnings, setup_warnings
from varsling.config import Settings
from varsling.errors import InvalidInput, NotFound, VarslingError
from varsling.request_transaction import DbSession
from varsling.web.i18n import N_, Language
from varsling.web.pages import PageLanguage
from varsling.web.security import CsrfResult
from varsling.web.staff_auth import AdminPage
from varsling.web.staff_pages import form_text, read_staff_form, render_staff, staff_translate

router = APIRouter(include_in_schema=False)

ROLE_LABELS: Final[Mapping[str, str]] = {
    Role.HANDLER.value: N_("Case handler"),
    Role.CUSTODIAN.value: N_("Identity custodian"),
    Role.AUDITOR.value: N_("Auditor"),
    Role.ADMIN.value: N_("Administrator"),
}
ROLE_HINTS: Final[Mapping[str, str]] = {
    Role.HANDLER.value: N_(
        "Receives the reports made about their units, and is named to reporters."
    ),
    Role.CUSTODIAN.value: N_(
        "Holds the key to reporters' names for their units, and decides whether a case "
        "handler may see a name. Named to reporters."
    ),
    Role.AUDITOR.value: N_("Reads the audit trail and the statistics; never a case."),
    Role.ADMIN.value: N_("Manages units and accounts, as on these pages; never a case."),
}
KIND_LABELS: Final[Mapping[str, str]] = {
    UnitKind.NATIONAL.value: N_("National level"),
    UnitKind.COUNTY.value: N_("County party"),
    UnitKind.MUNICIPAL.value: N_("Municipal party"),
    UnitKind.YOUTH.value: N_("Youth organisation"),
    UnitKind.STUDENT.value: N_("Student group"),
}
# What the page says after a change (the `done` of the redirect), by change.
DONE_TEXTS: Final[Mapping[str, str]] = {
    "unit-added": N_("The unit was added."),
    "unit-renamed": N_("The unit was renamed."),
    "unit-moved": N_("The unit was moved."),
    "account-added": N_("The account was added."),
    "roles": N_("The roles were saved."),
    "units": N_("The units were saved."),
    "email": N_("The email address was saved."),
    "deactivated": N_("The account was deactivated. It can no longer log in."),
    "password-reset": N_(
        "The password was reset and the account's sessions were ended. Its cases wait until "
        "a colleague who holds each one restores the access."
    ),
    "two-factor-reset": N_(
        "Two-factor login was reset and the account's sessions were ended. The person sets "
        "it up again at their next login."
    ),
}

# Where a refusal is shown, and what it says, by the service's reason. A form
# names the field for reasons that could mean more than one of its fields.
REFUSALS: Final[Mapping[str, tuple[str, str]]] = {
    "unit_name": ("name", N_("Write a name of 1 to 200 characters.")),
    "sibling_name": (
        "name",
        N_(
            "Another unit under the same parent already has this name. Choose a name "
            "reporters can tell apart."
        ),
    ),
    "unit_kind": ("kind", N_("Choose what kind of unit it is.")),
    "needs_parent": (
        "parent",
        N_("Choose the unit it belongs under. Only the national level has none."),
    ),
    "national_exists": (
        "parent",
        N_("There is already a national level. Choose the unit this one belongs under."),
    ),
    "no_parent_unit": ("parent", N_("That unit does not exist any more. Choose another.")),
    "national_has_no_parent": (
        "kind",
        N_("Only the top of the tree is the national level. Choose another kind."),
    ),
    "national_cannot_move": (
        "parent",
        N_("The national level is the top of the tree. It cannot be moved."),
    ),
    "under_itself": (
        "parent",
        N_(
            "A unit cannot be moved under itself, or under a unit that lies under it. "
            "Choose another unit."
        ),
    ),
    "username": (
        "username",
        N_(
            "A username is 2 to 63 characters: lower-case letters, digits, full stops, "
            "underscores or hyphens, starting with a letter or digit."
        ),
    ),
    "username_taken": ("username", N_("This username is taken. Choose another.")),
    "inactive_account": (
        "password",
        N_("The account is deactivated: a new password would not let it log in."),
    ),
    "roles": ("roles", N_("Choose at least one role.")),
    "password_short": (
        "password",
        N_("The password needs at least %(count)s characters."),
    ),
    "display_name_needed": (
        "display_name",
        N_(
            "Case handlers and identity custodians are named to reporters on the report form. "
            "Write the name reporters will see."
        ),
    ),
    "display_name_long": ("display_name", N_("The name can be at most 200 characters.")),
    "no_unit": ("units", N_("One of the chosen units does not exist any more. Choose again.")),
    "needs_unit": (
        "units",
        N_(
            "A case handler or an identity custodian acts for a unit. Choose at least one unit "
            "for the account."
        ),
    ),
    "same_units": ("units", N_("The account already has exactly these units.")),
    "email_invalid": (
        "email",
        N_(
            "Write an email address like nina.nilsen@example.org, without spaces, quotes, "
            "commas or brackets, or leave the field empty."
        ),
    ),
    "same_email": ("email", N_("The account already has this email address.")),
    "same_roles": ("roles", N_("The account already has exactly these roles.")),
    "already_inactive": ("deactivate", N_("The account is already deactivated.")),
    "choose_parent": ("parent", N_("Choose the unit to move it under.")),
    "last_admin": (
        "roles",
        N_(
            "This is the only active administrator. Give another account the administrator "
            "role first, so that someone can still manage accounts."
        ),
    ),
}
# Moving a unit next to one with its name: the name is fine, the place is not.
SIBLING_THERE: Final = N_(
    "A unit under the chosen parent already has the same name as this one. Choose another "
    "parent, or rename one of them first."
)
# On the account page the roles form explains a missing unit differently.
NEEDS_UNIT_FIRST: Final = N_(
    "A case handler or an identity custodian acts for a unit. Give the account a unit first, "
    "under “Units”, then the role."
)


# --------------------------------------------------------------------------
# Errors and what was typed


@dataclass(frozen=True)
class FieldError:
    field: str  # the id of the control the summary links to
    message: str


@dataclass
class FormErrors:
    items: list[FieldError] = field(default_factory=list)

    def add(self, field_name: str, message: str) -> None:
        self.items.append(FieldError(field_name, message))

    def for_field(self, field_name: str) -> list[str]:
        return [e.message for e in self.items if e.field == field_name]

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass
class Draft:
    """One form's values as typed, to show again; `form` names the form they belong to."""

    form: str = ""
    text: dict[str, str] = field(default_factory=dict)
    choices: dict[str, list[str]] = field(default_factory=dict)
    csrf_status: CsrfResult = "ok"
    errors: FormErrors = field(default_factory=FormErrors)

    def value(self, name: str, default: str = "") -> str:
        return self.text.get(name, default)

    def chosen(self, name: str, default: Sequence[str] = ()) -> list[str]:
        return self.choices.get(name, list(default))

    @property
    def problem(self) -> bool:
        return bool(self.errors) or self.csrf_status != "ok"


def _draft(
    form: FormData,
    csrf_status: CsrfResult,
    name: str,
    *,
    texts: Sequence[str] = (),
    lists: Sequence[str] = (),
) -> Draft:
    return Draft(
        form=name,
        text={key: form_text(form, key, 1_000) for key in texts},
        choices={key: [v for v in form.getlist(key) if isinstance(v, str)][:500] for key in lists},
        csrf_status=csrf_status,
    )


def _ids(values: Sequence[str]) -> list[int]:
    return [int(v) for v in values if v.isascii() and v.isdigit() and len(v) < 12]


def _id(value: str) -> int | None:
    ids = _ids([value])
    return ids[0] if ids else None


def _path_id(value: str) -> int:
    """A unit's or account's id from the path; anything else is a page that does not exist."""
    found = _id(value)
    if found is None or found > 2**31 - 1:
        raise NotFound("There is no such page.")
    return found


def _unit_id(unit_id: str) -> int:
    return _path_id(unit_id)


def _user_id(user_id: str) -> int:
    return _path_id(user_id)


UnitId = Annotated[int, Depends(_unit_id)]
UserId = Annotated[int, Depends(_user_id)]


def _explain(
    request: Request,
    language: Language,
    refused: VarslingError,
    errors: FormErrors,
    *,
    fields: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> None:
    """Add the refusal to `errors` in the page's language; re-raise one we cannot place.

    `fields` moves a reason's message to another control of the form; `overrides`
    gives a reason other words on this form.
    """
    known = REFUSALS.get(refused.reason or "")
    if known is None or isinstance(refused, NotFound):
        raise refused
    field_name, message = known
    message = (overrides or {}).get(refused.reason or "", message)
    text = staff_translate(request, language, message)
    if refused.reason == "password_short":
        text = text % {"count": accounts.MIN_PASSWORD_CHARS}
    errors.add((fields or {}).get(refused.reason or "", field_name), text)


# --------------------------------------------------------------------------
# What the pages show


@dataclass(frozen=True)
class TreeItem:
    """A unit with the units under it, for the nested list of the units page."""

    unit: UnitNode
    children: list[TreeItem]


def _nested(nodes: Sequence[UnitNode]) -> list[TreeItem]:
    items: list[TreeItem] = []
    stack: list[tuple[int, TreeItem]] = []
    for node in nodes:
        item = TreeItem(node, [])
        while stack and stack[-1][0] >= node.depth:
            stack.pop()
        (stack[-1][1].children if stack else items).append(item)
        stack.append((node.depth, item))
    return items


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _common(request: Request, language: Language) -> dict[str, Any]:
    done = request.query_params.get("done", "")

    def t(message: str) -> str:
        return staff_translate(request, language, message)

    return {
        "role_labels": ROLE_LABELS,
        "kind_labels": KIND_LABELS,
        # (value, label, hint, depth) for the role checkboxes.
        "role_options": [
            (role.value, t(ROLE_LABELS[role.value]), t(ROLE_HINTS[role.value]), 0) for role in Role
        ],
        "done_text": t(DONE_TEXTS[done]) if done in DONE_TEXTS else None,
    }


def _unit_options(tree: Sequence[UnitNode]) -> dict[str, Any]:
    """The units as select options (indented by depth) and as checkboxes."""
    return {
        "unit_choices": [(node.id, "\u00a0\u00a0\u00a0" * node.depth + node.name) for node in tree],
        "unit_options": [(node.id, node.name, None, node.depth) for node in tree],
    }


def _unit_names(tree: Sequence[UnitNode]) -> dict[int, str]:
    return {node.id: node.name for node in tree}


def _warnings(session: Session, settings: Settings) -> SetupWarnings:
    return setup_warnings(
        session,
        verifying_key=settings.signing_public_key,
        notifications=settings.notifications_enabled,
    )


def _status(draft: Draft) -> int:
    return 400 if draft.csrf_status != "ok" else 422


def _done(path: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={done}", status_code=303)


Change = Callable[[Session, Draft], object]


def _attempt(
    request: Request,
    language: Language,
    session: Session,
    draft: Draft,
    change: Change,
    *,
    fields: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> bool:
    """Make the change if the form's token checks out; a refusal changes nothing.

    The change runs in a savepoint of the request's transaction, so a refusal
    is undone on its own and the page is shown again from the same session.
    Refusals a form cannot place on a field (a unit or account that does not
    exist) are raised: the app answers them with its error page.
    """
    if draft.csrf_status != "ok":
        return False
    try:
        with session.begin_nested():
            change(session, draft)
    except VarslingError as refused:
        _explain(request, language, refused, draft.errors, fields=fields, overrides=overrides)
        return False
    return True


# --------------------------------------------------------------------------
# Units


def _units_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    draft: Draft | None = None,
) -> HTMLResponse:
    tree = accounts.unit_tree(session)
    draft = draft or Draft()
    return render_staff(
        request,
        language,
        "staff/admin/units.html",
        principal,
        {
            **_common(request, language),
            "tree": _nested(tree),
            **_unit_options(tree),
            "warnings": _warnings(session, _settings(request)),
            "draft": draft,
            "errors": draft.errors,
            "kind_choices": [
                (kind.value, staff_translate(request, language, KIND_LABELS[kind.value]))
                for kind in UnitKind
                if kind != UnitKind.NATIONAL
            ],
        },
        status_code=_status(draft) if draft.problem else 200,
    )


@router.get("/{lang:lang}/staff/admin/units", response_class=HTMLResponse)
def units_page(
    request: Request, language: PageLanguage, principal: AdminPage, session: DbSession
) -> HTMLResponse:
    """The tree of units, the form to add one, and what the installation lacks."""
    return _units_page(request, language, principal, session)


@router.post("/{lang:lang}/staff/admin/units", response_class=HTMLResponse)
async def add_unit(
    request: Request, language: PageLanguage, principal: AdminPage, session: DbSession
) -> Response:
    form, csrf_status = await read_staff_form(request)
    draft = _draft(form, csrf_status, "add", texts=("name", "parent", "kind"))

    def change(nested: Session, draft: Draft) -> object:
        return accounts.create_unit(
            nested,
            name=draft.value("name"),
            parent_id=_id(draft.value("parent")),
            kind=draft.value("kind") or None,
            actor=principal.actor,
        )

    if _attempt(request, language, session, draft, change):
        return _done(f"/{language}/staff/admin/units", "unit-added")
    return _units_page(request, language, principal, session, draft)


def _unit_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    unit_id: int,
    draft: Draft | None = None,
) -> HTMLResponse:
    tree = accounts.unit_tree(session)
    unit = next((node for node in tree if node.id == unit_id), None)
    if unit is None:
        raise NotFound(f"There is no unit with id {unit_id}.")
    draft = draft or Draft()
    return render_staff(
        request,
        language,
        "staff/admin/unit.html",
        principal,
        {
            **_common(request, language),
            "unit": unit,
            **_unit_options([node for node in tree if node.id != unit.id]),
            "unit_names": _unit_names(tree),
            "draft": draft,
            "errors": draft.errors,
        },
        status_code=_status(draft) if draft.problem else 200,
    )


@router.get("/{lang:lang}/staff/admin/units/{unit_id}", response_class=HTMLResponse)
def unit_page(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    unit_id: UnitId,
) -> HTMLResponse:
    """One unit: rename it, move it."""
    return _unit_page(request, language, principal, session, unit_id)


async def _change_unit(
    request: Request,
    session: Session,
    unit_id: int,
    form_name: str,
    change: Change,
    done: str,
    **where: Mapping[str, str],
) -> Response:
    language: Language = request.path_params["lang"]
    principal: StaffPrincipal = request.state.staff_principal
    form, csrf_status = await read_staff_form(request)
    draft = _draft(form, csrf_status, form_name, texts=("name", "parent"))
    if _attempt(request, language, session, draft, change, **where):
        return _done(f"/{language}/staff/admin/units/{unit_id}", done)
    return _unit_page(request, language, principal, session, unit_id, draft)


@router.post("/{lang:lang}/staff/admin/units/{unit_id}/rename", response_class=HTMLResponse)
async def rename_unit(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    unit_id: UnitId,
) -> Response:
    def change(nested: Session, draft: Draft) -> object:
        return accounts.rename_unit(
            nested, unit_id, name=draft.value("name"), actor=principal.actor
        )

    return await _change_unit(request, session, unit_id, "rename", change, "unit-renamed")


@router.post("/{lang:lang}/staff/admin/units/{unit_id}/move", response_class=HTMLResponse)
async def move_unit(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    unit_id: UnitId,
) -> Response:
    def change(nested: Session, draft: Draft) -> object:
        parent_id = _id(draft.value("parent"))
        if parent_id is None:
            raise InvalidInput("Choose the unit to move it under.", reason="choose_parent")
        return accounts.move_unit(nested, unit_id, parent_id=parent_id, actor=principal.actor)

    return await _change_unit(
        request,
        session,
        unit_id,
        "move",
        change,
        "unit-moved",
        fields={"sibling_name": "parent"},
        overrides={"sibling_name": SIBLING_THERE},
    )


# --------------------------------------------------------------------------
# Accounts


def _accounts_page_data(session: Session, settings: Settings) -> dict[str, Any]:
    tree = accounts.unit_tree(session)
    return {
        "accounts": accounts.list_accounts(session, verifying_key=settings.signing_public_key),
        "unit_names": _unit_names(tree),
        "warnings": _warnings(session, settings),
    }


@router.get("/{lang:lang}/staff/admin/accounts", response_class=HTMLResponse)
def accounts_page(
    request: Request, language: PageLanguage, principal: AdminPage, session: DbSession
) -> HTMLResponse:
    """Every account with its roles, units and state; links to add or change one."""
    return render_staff(
        request,
        language,
        "staff/admin/accounts.html",
        principal,
        {**_common(request, language), **_accounts_page_data(session, _settings(request))},
    )


def _new_account_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    draft: Draft | None = None,
) -> HTMLResponse:
    draft = draft or Draft()
    return render_staff(
        request,
        language,
        "staff/admin/account_new.html",
        principal,
        {
            **_common(request, language),
            **_unit_options(accounts.unit_tree(session)),
            "draft": draft,
            "errors": draft.errors,
            "min_password": accounts.MIN_PASSWORD_CHARS,
        },
        status_code=_status(draft) if draft.problem else 200,
    )


@router.get("/{lang:lang}/staff/admin/accounts/new", response_class=HTMLResponse)
def new_account_page(
    request: Request, language: PageLanguage, principal: AdminPage, session: DbSession
) -> HTMLResponse:
    """The form to add an account."""
    return _new_account_page(request, language, principal, session)


@router.post("/{lang:lang}/staff/admin/accounts", response_class=HTMLResponse)
async def add_account(
    request: Request, language: PageLanguage, principal: AdminPage, session: DbSession
) -> Response:
    form, csrf_status = await read_staff_form(request, max_fields=600)
    draft = _draft(
        form,
        csrf_status,
        "add",
        texts=("username", "display_name", "email", "password"),
        lists=("roles", "units"),
    )
    created: list[int] = []

    def change(nested: Session, draft: Draft) -> object:
        user = accounts.create_user(
            nested,
            _settings(request),
            username=draft.value("username"),
            password=draft.value("password"),
            roles=draft.chosen("roles"),
            unit_ids=_ids(draft.chosen("units")),
            display_name=draft.value("display_name"),
            email=draft.value("email"),
            actor=principal.actor,
        )
        created.append(user.id)
        return user

    if _attempt(request, language, session, draft, change):
        return _done(f"/{language}/staff/admin/accounts/{created[0]}", "account-added")
    return _new_account_page(request, language, principal, session, draft)


def _account_page(
    request: Request,
    language: Language,
    principal: StaffPrincipal,
    session: Session,
    user_id: int,
    draft: Draft | None = None,
) -> HTMLResponse:
    settings = _settings(request)
    account = accounts.account_summary(session, user_id, verifying_key=settings.signing_public_key)
    tree = accounts.unit_tree(session)
    draft = draft or Draft()
    return render_staff(
        request,
        language,
        "staff/admin/account.html",
        principal,
        {
            **_common(request, language),
            "account": account,
            "two_factor": two_factor.state(session, settings, account.id),
            "two_factor_required": two_factor.is_required(settings, account.roles),
            **_unit_options(tree),
            "draft": draft,
            "errors": draft.errors,
            "is_self": account.id == principal.user_id,
            "notifications_enabled": settings.notifications_enabled,
            "min_password": accounts.MIN_PASSWORD_CHARS,
        },
        status_code=_status(draft) if draft.problem else 200,
    )


@router.get("/{lang:lang}/staff/admin/accounts/{user_id}", response_class=HTMLResponse)
def account_page(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> HTMLResponse:
    """One account: its roles, units and two-factor login; deactivate it."""
    return _account_page(request, language, principal, session, user_id)


async def _change_account(
    request: Request,
    session: Session,
    user_id: int,
    form_name: str,
    change: Change,
    done: str,
    **where: Mapping[str, str],
) -> Response:
    language: Language = request.path_params["lang"]
    principal: StaffPrincipal = request.state.staff_principal
    form, csrf_status = await read_staff_form(request, max_fields=600)
    draft = _draft(form, csrf_status, form_name, texts=("email",), lists=("roles", "units"))
    if _attempt(request, language, session, draft, change, **where):
        return _done(f"/{language}/staff/admin/accounts/{user_id}", done)
    return _account_page(request, language, principal, session, user_id, draft)


@router.post("/{lang:lang}/staff/admin/accounts/{user_id}/roles", response_class=HTMLResponse)
async def set_roles(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> Response:
    def change(nested: Session, draft: Draft) -> object:
        return accounts.set_user_roles(
            nested, user_id, roles=draft.chosen("roles"), actor=principal.actor
        )

    return await _change_account(
        request,
        session,
        user_id,
        "roles",
        change,
        "roles",
        fields={"needs_unit": "roles", "no_unit": "roles"},
        overrides={"needs_unit": NEEDS_UNIT_FIRST},
    )


@router.post("/{lang:lang}/staff/admin/accounts/{user_id}/units", response_class=HTMLResponse)
async def set_units(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> Response:
    def change(nested: Session, draft: Draft) -> object:
        return accounts.set_user_units(
            nested, user_id, unit_ids=_ids(draft.chosen("units")), actor=principal.actor
        )

    return await _change_account(request, session, user_id, "units", change, "units")


@router.post("/{lang:lang}/staff/admin/accounts/{user_id}/email", response_class=HTMLResponse)
async def set_email(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> Response:
    def change(nested: Session, draft: Draft) -> object:
        return accounts.set_user_email(
            nested, user_id, email=draft.value("email"), actor=principal.actor
        )

    return await _change_account(request, session, user_id, "email", change, "email")


@router.post("/{lang:lang}/staff/admin/accounts/{user_id}/deactivate", response_class=HTMLResponse)
async def deactivate(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> Response:
    def change(nested: Session, _draft: Draft) -> object:
        return accounts.deactivate_user(nested, user_id, actor=principal.actor)

    return await _change_account(
        request,
        session,
        user_id,
        "deactivate",
        change,
        "deactivated",
        fields={"last_admin": "deactivate"},
    )


@router.post(
    "/{lang:lang}/staff/admin/accounts/{user_id}/two-factor-reset", response_class=HTMLResponse
)
async def reset_two_factor(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> Response:
    settings = _settings(request)

    def change(nested: Session, _draft: Draft) -> object:
        # No such account: the page's 404.
        accounts.account_summary(nested, user_id, verifying_key=settings.signing_public_key)
        two_factor.reset_two_factor(nested, settings, user_id, actor=principal.actor)
        return None

    return await _change_account(
        request, session, user_id, "two-factor", change, "two-factor-reset"
    )


@router.post(
    "/{lang:lang}/staff/admin/accounts/{user_id}/password-reset", response_class=HTMLResponse
)
async def reset_password(
    request: Request,
    language: PageLanguage,
    principal: AdminPage,
    session: DbSession,
    user_id: UserId,
) -> Response:
    settings = _settings(request)
    form, csrf_status = await read_staff_form(request, max_fields=10)
    draft = _draft(form, csrf_status, "password", texts=("password",))

    def change(nested: Session, draft: Draft) -> object:
        return lifecycle.reset_password(
            nested, settings, user_id, new_password=draft.value("password"), actor=principal.actor
        )

    if _attempt(request, language, session, draft, change):
        return _done(f"/{language}/staff/admin/accounts/{user_id}", "password-reset")
    return _account_page(request, language, principal, session, user_id, draft)
