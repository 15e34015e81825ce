"""Seed the login throttle counters, so concurrent first failures never race an insert.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("case_code", "staff_login")


def upgrade() -> None:
    throttle = sa.table(
        "login_throttle",
        sa.column("name", sa.String),
        sa.column("window_start", sa.DateTime(timezone=True)),
        sa.column("failures", sa.Integer),
    )
    existing = {row[0] for row in op.get_bind().execute(sa.select(throttle.c.name))}
    rows = [
        {"name": name, "window_start": sa.func.now(), "failures": 0}
        for name in COUNTERS
        if name not in existing
    ]
    for row in rows:
        op.execute(throttle.insert().values(**row))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM login_throttle WHERE name IN ('case_code', 'staff_login')"))
