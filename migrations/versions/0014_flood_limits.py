"""flood limits for anonymous submissions and uploads

Revision ID: 0014
Revises: 0010
Create Date: 2026-12-03

One row per kind (`submission`, `upload`), made on first use: the current
minute's start and how many went in, shared by every replica.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flood_counters",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_flood_counters")),
    )


def downgrade() -> None:
    op.drop_table("flood_counters")
