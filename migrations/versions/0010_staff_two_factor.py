"""staff two-factor login and idle session expiry

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Every account gets a `two_factor` row (accounts/two_factor.py), MAC'd with a
key derived from the password pepper, which is configuration:
`varsling migrate` hands the settings in. Without them the migration runs
only on an installation with no accounts yet.

Staff sessions get an idle deadline and a scope; open sessions keep their
absolute expiry as their idle deadline.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from varsling.accounts import two_factor

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _settings(needed: bool) -> Any:
    settings: Any = context.config.attributes.get("settings")
    if settings is None and needed:
        raise RuntimeError(
            "This migration MACs each account's two-factor row with a key derived from "
            "VARSLING_PASSWORD_PEPPER: run it with `varsling migrate`, which reads the "
            "installation's settings."
        )
    return settings


def upgrade() -> None:
    connection = op.get_bind()
    user_ids = connection.execute(sa.text("SELECT id FROM users")).scalars().all()
    settings = _settings(bool(user_ids))

    table = op.create_table(
        "two_factor",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("recovery_digests", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("tag", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_two_factor_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_two_factor")),
    )
    if user_ids:
        rows = [two_factor.new_row(settings, user_id) for user_id in user_ids]
        op.bulk_insert(
            table,
            [
                {
                    "user_id": row.user_id,
                    "sealed_secret": None,
                    "last_step": row.last_step,
                    "recovery_digests": row.recovery_digests,
                    "generation": row.generation,
                    "tag": row.tag,
                }
                for row in rows
            ],
        )

    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idle_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("scope", sa.String(length=10), server_default="full", nullable=False)
        )
    op.execute("UPDATE login_sessions SET idle_until = expires_at")
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "idle_until", existing_type=sa.DateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_column("scope")
        batch_op.drop_column("idle_until")
    op.drop_table("two_factor")
