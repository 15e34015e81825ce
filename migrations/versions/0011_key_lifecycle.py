"""key lifecycle: key versions on wrapped case keys, the recovery key

Revision ID: 0011
Revises: 0012
Create Date: 2026-12-03

Wrapped case keys record the recipient's key version (existing rows were all
made for version 1, which is what an account starts with). The optional
organisation recovery key gets its table, and the case keys wrapped for it theirs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("key_version", sa.Integer(), server_default="1", nullable=False)
        )
    op.create_table(
        "recovery_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_keys")),
    )
    op.create_table(
        "recovery_wraps",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("recovery_key_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_recovery_wraps_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recovery_key_id"],
            ["recovery_keys.id"],
            name=op.f("fk_recovery_wraps_recovery_key_id_recovery_keys"),
        ),
        sa.PrimaryKeyConstraint(
            "case_id", "purpose", "recovery_key_id", name=op.f("pk_recovery_wraps")
        ),
    )


def downgrade() -> None:
    op.drop_table("recovery_wraps")
    op.drop_table("recovery_keys")
    with op.batch_alter_table("case_keys", schema=None) as batch_op:
        batch_op.drop_column("key_version")
