"""case manifest

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

A case's manifest is sealed under its case key, which no migration holds:
cases made before this revision get theirs at their next write by a key
holder, and read as "not yet protected" until then.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed_manifest", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("sealed_manifest")
