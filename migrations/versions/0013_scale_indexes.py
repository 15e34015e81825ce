"""indexes for the case list at scale

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-03

The case list reads the cases a user holds a key to, a rank at a time, in
(received_on, id) order (cases/service.list_cases): these indexes let a page
of 50 come from an index walk instead of sorting every case the user holds,
and the count read only index entries for the user's keys.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_case_keys_user_id_purpose_case_id", "case_keys", ["user_id", "purpose", "case_id"]
    )
    op.create_index(
        "ix_cases_priority_received_on_id", "cases", ["priority", "received_on", "id"]
    )
    op.create_index("ix_cases_received_on_id", "cases", ["received_on", "id"])


def downgrade() -> None:
    op.drop_index("ix_cases_received_on_id", table_name="cases")
    op.drop_index("ix_cases_priority_received_on_id", table_name="cases")
    op.drop_index("ix_case_keys_user_id_purpose_case_id", table_name="case_keys")
