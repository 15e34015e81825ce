"""audit checkpoints and the reporter chain

Reporter events get a chain of their own (own sequence, own head row id 2,
the day only), append-only like the staff chain. Signed checkpoints are kept
in a table that is append-only too. Existing events stay where they are.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS = "0" * 64
_APPEND_ONLY = "audit events are append-only"
_PROTECTED = ("audit_reporter_events", "audit_checkpoints")


def upgrade() -> None:
    op.create_table(
        "audit_reporter_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_reporter_events")),
    )
    with op.batch_alter_table("audit_reporter_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_reporter_events_action"), ["action"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_reporter_events_case_id"), ["case_id"], unique=False
        )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("reporter_seq", sa.Integer(), nullable=False),
        sa.Column("reporter_hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.String(length=40), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=60), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    for table in _PROTECTED:
        _protect(table)
    op.execute(
        sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (2, 0, :h)").bindparams(h=_GENESIS)
    )


def downgrade() -> None:
    op.execute("DELETE FROM audit_head WHERE id = 2")
    for table in _PROTECTED:
        _unprotect(table)
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_reporter_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_reporter_events_case_id"))
        batch_op.drop_index(batch_op.f("ix_audit_reporter_events_action"))
    op.drop_table("audit_reporter_events")


def _protect(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # audit_events_append_only() comes with revision 0001.
        for verb, level in (("UPDATE", "ROW"), ("DELETE", "ROW"), ("TRUNCATE", "STATEMENT")):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"FOR EACH {level} EXECUTE FUNCTION audit_events_append_only()"
            )
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
        )


def _unprotect(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        for verb in ("update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb} ON {table}")
        return
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
