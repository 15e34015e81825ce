"""reporter privacy: keyed exclusions, reporter sessions apart, kept receipts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Exclusions become one row per case of keyed hashes (cases/exclusions.py).
The hash needs the code pepper, which is configuration, not database:
`varsling migrate` hands the settings in (alembic attributes "settings").
Without them the migration converts only an installation with no cases yet,
and otherwise stops with a message saying to run `varsling migrate`.

Reporter sessions move out of login_sessions into reporter_sessions; open
reporter sessions are ended (they last half an hour at most).
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from varsling.cases import exclusions

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exclusion_key(needed: bool) -> bytes | None:
    settings: Any = context.config.attributes.get("settings")
    if settings is None:
        if needed:
            raise RuntimeError(
                "This migration hashes case exclusions with VARSLING_CODE_PEPPER: run it with "
                "`varsling migrate`, which reads the installation's settings."
            )
        return None
    return exclusions.exclusion_key(settings.secret("code_pepper"))


def upgrade() -> None:
    connection = op.get_bind()
    old_rows = connection.execute(sa.text("SELECT case_id, user_id FROM case_exclusions")).all()
    case_ids = connection.execute(sa.text("SELECT id FROM cases")).scalars().all()
    key = _exclusion_key(bool(case_ids))

    op.drop_table("case_exclusions")
    new_table = op.create_table(
        "case_exclusions",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("digests", sa.LargeBinary(), nullable=False),
        sa.Column("tag", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_exclusions_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_case_exclusions")),
    )
    if key is not None and case_ids:
        excluded: dict[str, list[int]] = {}
        for case_id, user_id in old_rows:
            excluded.setdefault(case_id, []).append(user_id)
        rows = []
        for case_id in case_ids:
            row = exclusions.exclusion_row(key, case_id, excluded.get(case_id, []))
            rows.append({"case_id": case_id, "digests": row.digests, "tag": row.tag})
        op.bulk_insert(new_table, rows)

    op.create_table(
        "reporter_sessions",
        sa.Column("token_lookup", sa.LargeBinary(), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.Column("purge_on", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_reporter_sessions_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_lookup", name=op.f("pk_reporter_sessions")),
    )
    with op.batch_alter_table("reporter_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reporter_sessions_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_reporter_sessions_purge_on"), ["purge_on"], unique=False
        )

    op.execute("DELETE FROM login_sessions WHERE case_id IS NOT NULL OR user_id IS NULL")
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_sessions_case_id"))
        batch_op.drop_constraint(batch_op.f("fk_login_sessions_case_id_cases"), type_="foreignkey")
        batch_op.drop_column("case_id")
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=False)

    with op.batch_alter_table("spent_submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed_receipt", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT case_id, digests FROM case_exclusions")).all()
    key = _exclusion_key(any(digests for _, digests in rows))
    user_ids = connection.execute(sa.text("SELECT id FROM users")).scalars().all()

    with op.batch_alter_table("spent_submissions", schema=None) as batch_op:
        batch_op.drop_column("sealed_receipt")

    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("case_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_login_sessions_case_id_cases"),
            "cases",
            ["case_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_login_sessions_case_id"), ["case_id"], unique=False)

    with op.batch_alter_table("reporter_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reporter_sessions_purge_on"))
        batch_op.drop_index(batch_op.f("ix_reporter_sessions_case_id"))
    op.drop_table("reporter_sessions")

    op.drop_table("case_exclusions")
    old_table = op.create_table(
        "case_exclusions",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_exclusions_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_case_exclusions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("case_id", "user_id", name=op.f("pk_case_exclusions")),
    )
    if key is not None:
        # The digests name nobody; with the key, each user is tried against them.
        restored = [
            {"case_id": case_id, "user_id": user_id, "reason": "reporter"}
            for case_id, digests in rows
            for user_id in user_ids
            if exclusions.user_digest(key, case_id, user_id) in _split(digests)
        ]
        op.bulk_insert(old_table, restored)


def _split(digests: bytes) -> set[bytes]:
    size = exclusions.DIGEST_BYTES
    return {digests[i : i + size] for i in range(0, len(digests), size)}
