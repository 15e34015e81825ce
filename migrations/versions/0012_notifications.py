"""notifications: staff email addresses and the notification outbox

Revision ID: 0012
Revises: 0014
Create Date: 2026-12-03

Staff accounts get an optional email address (set by an administrator).
The outbox holds, per notice, only the recipient, the kind, the unit and
the day: nothing of the case (notifications/).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["users.id"],
            name=op.f("fk_notification_outbox_recipient_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name=op.f("fk_notification_outbox_unit_id_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
    )
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_outbox_claim"), ["claim"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_notification_outbox_recipient_id"), ["recipient_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("notification_outbox")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email")
