"""the case list read from the caller's keys: each case key carries its case's list columns

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-04

A filtered case list used to walk a filter's index on `cases` and ask of every
case it let through whether the caller held its key: 20,000 to 56,000 index
probes for one count at 100,000 cases, 80-170 ms. Now every case key row
carries a copy of what the list filters and orders by (status, unit,
category, priority, received day, and `late_from`: the earliest deadline not
yet met, NULL when none is open), so a list page and its count are one range
of one index of `case_keys`.

The copies are kept by triggers, not by the application, so that every write
to a case (the ORM, a bulk UPDATE, a job) keeps them: inserting a case key
copies its case's columns; updating any of those columns of a case updates its
keys. The indexes on `cases` that 0013 made for the list go; the list no
longer reads them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every index begins with the caller's keys (user, purpose, version); then the
# filter's column, the list's order (priority, received_on, case_id), and the
# other filter columns, so that a combined filter is answered from the index alone.
_INDEXES = {
    "ix_case_keys_list": [
        "priority",
        "received_on",
        "case_id",
        "status",
        "unit_id",
        "category",
        "late_from",
    ],
    "ix_case_keys_list_status": [
        "status",
        "priority",
        "received_on",
        "case_id",
        "unit_id",
        "category",
        "late_from",
    ],
    "ix_case_keys_list_unit": [
        "unit_id",
        "priority",
        "received_on",
        "case_id",
        "status",
        "category",
        "late_from",
    ],
    "ix_case_keys_list_category": [
        "category",
        "priority",
        "received_on",
        "case_id",
        "status",
        "unit_id",
        "late_from",
    ],
}
_HELD = ["user_id", "purpose", "key_version"]
_OLD_CASE_INDEXES = {
    "ix_cases_priority_received_on_id": ["priority", "received_on", "id"],
    "ix_cases_status_rank": ["status", "priority", "received_on", "id"],
    "ix_cases_category_rank": ["category", "priority", "received_on", "id"],
    "ix_cases_unit_rank": ["unit_id", "priority", "received_on", "id"],
}


# late_from: the earliest deadline not yet met, NULL when none is open; a case is
# overdue on a day after it (cases/service.overdue). Written out once per dialect
# (SQLite's two-argument min() is PostgreSQL's LEAST()) and per row (the case's
# own row, or NEW in a trigger on cases).
_LATE_SQLITE = """CASE
    WHEN {r}.acknowledged_on IS NULL AND {r}.concluded_on IS NULL
        THEN min({r}.acknowledgement_due, {r}.feedback_due)
    WHEN {r}.acknowledged_on IS NULL THEN {r}.acknowledgement_due
    WHEN {r}.concluded_on IS NULL THEN {r}.feedback_due
END"""
_LATE_POSTGRESQL = _LATE_SQLITE.replace("min(", "LEAST(")

_SQLITE = [
    # Backfill.
    """UPDATE case_keys SET (status, unit_id, category, priority, received_on, late_from) = (
        SELECT status, unit_id, category, priority, received_on, {late_cases}
        FROM cases WHERE cases.id = case_keys.case_id)""",
    # A new key (or one moved to another case: only a database writer does that)
    # takes its case's columns.
    """CREATE TRIGGER case_keys_copy_case AFTER INSERT ON case_keys BEGIN
        UPDATE case_keys SET (status, unit_id, category, priority, received_on, late_from) = (
            SELECT status, unit_id, category, priority, received_on, {late_cases}
            FROM cases WHERE cases.id = NEW.case_id)
        WHERE id = NEW.id;
    END""",
    """CREATE TRIGGER case_keys_copy_moved_case AFTER UPDATE OF case_id ON case_keys BEGIN
        UPDATE case_keys SET (status, unit_id, category, priority, received_on, late_from) = (
            SELECT status, unit_id, category, priority, received_on, {late_cases}
            FROM cases WHERE cases.id = NEW.case_id)
        WHERE id = NEW.id;
    END""",
    # A changed case: its keys' copies follow.
    """CREATE TRIGGER cases_copy_to_keys AFTER UPDATE OF status, unit_id, category, priority,
        received_on, acknowledged_on, concluded_on, acknowledgement_due, feedback_due
    ON cases BEGIN
        UPDATE case_keys SET status = NEW.status, unit_id = NEW.unit_id,
            category = NEW.category, priority = NEW.priority,
            received_on = NEW.received_on, late_from = {late_new}
        WHERE case_id = NEW.id;
    END""",
]

_POSTGRESQL = [
    """UPDATE case_keys SET (status, unit_id, category, priority, received_on, late_from) = (
        SELECT status, unit_id, category, priority, received_on, {late_cases}
        FROM cases WHERE cases.id = case_keys.case_id)""",
    """CREATE FUNCTION case_keys_copy_case() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        SELECT status, unit_id, category, priority, received_on, {late_cases}
        INTO NEW.status, NEW.unit_id, NEW.category, NEW.priority, NEW.received_on,
            NEW.late_from
        FROM cases WHERE cases.id = NEW.case_id;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER case_keys_copy_case BEFORE INSERT OR UPDATE OF case_id ON case_keys
    FOR EACH ROW EXECUTE FUNCTION case_keys_copy_case()""",
    """CREATE FUNCTION cases_copy_to_keys() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE case_keys SET status = NEW.status, unit_id = NEW.unit_id,
            category = NEW.category, priority = NEW.priority,
            received_on = NEW.received_on, late_from = {late_new}
        WHERE case_id = NEW.id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER cases_copy_to_keys AFTER UPDATE OF status, unit_id, category, priority,
        received_on, acknowledged_on, concluded_on, acknowledgement_due, feedback_due
    ON cases FOR EACH ROW EXECUTE FUNCTION cases_copy_to_keys()""",
]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for column in (
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=30), nullable=True),
        sa.Column("priority", sa.String(length=10), nullable=True),
        sa.Column("received_on", sa.Date(), nullable=True),
        sa.Column("late_from", sa.Date(), nullable=True),
    ):
        op.add_column("case_keys", column)
    late = _LATE_POSTGRESQL if postgresql else _LATE_SQLITE
    for statement in _POSTGRESQL if postgresql else _SQLITE:
        op.execute(
            statement.format(late_cases=late.format(r="cases"), late_new=late.format(r="NEW"))
        )
    for name, columns in _INDEXES.items():
        op.create_index(name, "case_keys", [*_HELD, *columns])
    op.drop_index("ix_case_keys_user_purpose_version_case", table_name="case_keys")
    for name in _OLD_CASE_INDEXES:
        op.drop_index(name, table_name="cases")


def downgrade() -> None:
    for name, columns in _OLD_CASE_INDEXES.items():
        op.create_index(name, "cases", columns)
    op.create_index(
        "ix_case_keys_user_purpose_version_case",
        "case_keys",
        ["user_id", "purpose", "key_version", "case_id"],
    )
    for name in reversed(list(_INDEXES)):
        op.drop_index(name, table_name="case_keys")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS cases_copy_to_keys ON cases")
        op.execute("DROP FUNCTION IF EXISTS cases_copy_to_keys()")
        op.execute("DROP TRIGGER IF EXISTS case_keys_copy_case ON case_keys")
        op.execute("DROP FUNCTION IF EXISTS case_keys_copy_case()")
    else:
        op.execute("DROP TRIGGER IF EXISTS cases_copy_to_keys")
        op.execute("DROP TRIGGER IF EXISTS case_keys_copy_moved_case")
        op.execute("DROP TRIGGER IF EXISTS case_keys_copy_case")
    with op.batch_alter_table("case_keys") as batch_op:
        for column in ("late_from", "received_on", "priority", "category", "unit_id", "status"):
            batch_op.drop_column(column)
