"""certified user keys, per-account login backoff, global login slots

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("key_version", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("key_certificate", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_slot", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "login_backoff",
        sa.Column("account", sa.LargeBinary(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_login_backoff")),
    )
    with op.batch_alter_table("login_backoff", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_backoff_last_failure"), ["last_failure"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("login_backoff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_backoff_last_failure"))
    op.drop_table("login_backoff")
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_column("next_slot")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("key_certificate")
        batch_op.drop_column("key_version")
