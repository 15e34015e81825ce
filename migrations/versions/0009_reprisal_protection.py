"""reprisal protection: declarations, identity requests, linked cases, check-ins, retention

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Cases get a priority, the unit whose handlers hold them, the case a
retaliation case was reported on, a retention hold's review day and the day
a reporter sent them up. Existing cases keep handling_unit_id empty, which
reads as their own unit.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_declarations",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("conflict", sa.Boolean(), nullable=False),
        sa.Column("risk", sa.String(length=10), nullable=True),
        sa.Column("declared_on", sa.Date(), nullable=False),
        sa.Column("tag", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_declarations_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_case_declarations_user_id_users")
        ),
        sa.PrimaryKeyConstraint("case_id", "user_id", name=op.f("pk_case_declarations")),
    )
    op.create_table(
        "checkins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("sent_on", sa.Date(), nullable=False),
        sa.Column("answered_on", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_checkins_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkins")),
        sa.UniqueConstraint("case_id", "round", name=op.f("uq_checkins_case_id")),
    )
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkins_case_id"), ["case_id"], unique=False)

    op.create_table(
        "identity_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requested_on", sa.Date(), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=True),
        sa.Column("decider_id", sa.Integer(), nullable=True),
        sa.Column("sealed_request", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_decision", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_notice", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_identity_requests_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["decider_id"], ["users.id"], name=op.f("fk_identity_requests_decider_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["users.id"], name=op.f("fk_identity_requests_requester_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_requests")),
    )
    with op.batch_alter_table("identity_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identity_requests_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_identity_requests_requester_id"), ["requester_id"], unique=False
        )

    op.create_table(
        "overdue_flags",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("deadline", sa.String(length=20), nullable=False),
        sa.Column("flagged_on", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_overdue_flags_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "deadline", name=op.f("pk_overdue_flags")),
    )
    op.create_table(
        "reporter_links",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("lookup", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_keys", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_reporter_links_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_reporter_links")),
    )
    with op.batch_alter_table("reporter_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reporter_links_lookup"), ["lookup"], unique=False)

    op.create_table(
        "identity_request_keys",
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["identity_requests.id"],
            name=op.f("fk_identity_request_keys_request_id_identity_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_identity_request_keys_user_id_users")
        ),
        sa.PrimaryKeyConstraint("request_id", "user_id", name=op.f("pk_identity_request_keys")),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=10), server_default="normal", nullable=False)
        )
        batch_op.add_column(sa.Column("handling_unit_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("linked_case_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("hold_review_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("escalated_on", sa.Date(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_cases_linked_case_id"), ["linked_case_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_linked_case_id"))
        batch_op.drop_column("escalated_on")
        batch_op.drop_column("hold_review_on")
        batch_op.drop_column("linked_case_id")
        batch_op.drop_column("handling_unit_id")
        batch_op.drop_column("priority")

    op.drop_table("identity_request_keys")
    with op.batch_alter_table("reporter_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reporter_links_lookup"))

    op.drop_table("reporter_links")
    op.drop_table("overdue_flags")
    with op.batch_alter_table("identity_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_requests_requester_id"))
        batch_op.drop_index(batch_op.f("ix_identity_requests_case_id"))

    op.drop_table("identity_requests")
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkins_case_id"))

    op.drop_table("checkins")
    op.drop_table("case_declarations")
