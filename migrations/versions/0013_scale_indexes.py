"""indexes for the case list at scale

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-03

The case list reads the cases a user holds a key to a rank (priority) at a
time, in (received_on, id) order (cases/service.list_cases). With these
indexes a page of 50 comes from an index walk, with or without a status,
category or unit filter, instead of a sort of every case the user holds; a
filtered count starts from its filter's index, and the plain count reads only
the index entries of the user's keys (those made for their current key
version: a key waiting for a re-grant after a password reset opens nothing).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CASE_INDEXES = {
    "ix_cases_priority_received_on_id": ["priority", "received_on", "id"],
    "ix_cases_status_rank": ["status", "priority", "received_on", "id"],
    "ix_cases_category_rank": ["category", "priority", "received_on", "id"],
    "ix_cases_unit_rank": ["unit_id", "priority", "received_on", "id"],
}


def upgrade() -> None:
    op.create_index(
        "ix_case_keys_user_purpose_version_case",
        "case_keys",
        ["user_id", "purpose", "key_version", "case_id"],
    )
    for name, columns in _CASE_INDEXES.items():
        op.create_index(name, "cases", columns)


def downgrade() -> None:
    for name in reversed(list(_CASE_INDEXES)):
        op.drop_index(name, table_name="cases")
    op.drop_index("ix_case_keys_user_purpose_version_case", table_name="case_keys")
