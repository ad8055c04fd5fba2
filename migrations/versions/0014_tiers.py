"""Tiers: the operator's ladder (insert-only versions), each member's tier and its history

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-12 12:00:00.000000

- `tier_ladders` and `tiers`: the ladder versions (the latest is in force; none: no tiers) and
  their rungs (name, qualifying-spend threshold in the settlement currency, earn multiplier).
- `member_tiers`: a member's current tier (NULL: untiered), since when, why (upgrade or
  review), under which ladder version; the row serialises changes of the member's tier.
- `member_tier_changes`: every change, insert-only.
- `ix_transactions_member_earns`: a member's earns by time, for the qualifying spend (read
  through the `ledger_events` view, which PostgreSQL inlines).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tier_ladders",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tiers",
        sa.Column("ladder_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Numeric(20, 4), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("multiplier", sa.Numeric(8, 4), nullable=False),
        sa.CheckConstraint("threshold > 0", name="ck_tiers_threshold"),
        sa.CheckConstraint("multiplier >= 1", name="ck_tiers_multiplier"),
        sa.CheckConstraint("position >= 0", name="ck_tiers_position"),
        sa.ForeignKeyConstraint(["ladder_id"], ["tier_ladders.id"]),
        sa.PrimaryKeyConstraint("ladder_id", "position"),
        sa.UniqueConstraint("ladder_id", "name", name="uq_tiers_ladder_name"),
    )
    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("tier_name", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ladder_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "reason IS NULL OR reason IN ('upgrade','review')", name="ck_member_tiers_reason"
        ),
        sa.ForeignKeyConstraint(["ladder_id"], ["tier_ladders.id"]),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"]),
        sa.PrimaryKeyConstraint("member_id"),
    )
    op.create_table(
        "member_tier_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("from_tier", sa.Text(), nullable=True),
        sa.Column("to_tier", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("qualifying_spend", sa.Numeric(20, 4), nullable=False),
        sa.Column("ladder_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("reason IN ('upgrade','review')", name="ck_member_tier_changes_reason"),
        sa.ForeignKeyConstraint(["ladder_id"], ["tier_ladders.id"]),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_member_tier_changes_member", "member_tier_changes", ["member_id", "id"], unique=False
    )
    op.create_index(
        "ix_transactions_member_earns",
        "transactions",
        ["member_id", "effective_at"],
        unique=False,
        postgresql_where=sa.text("kind = 'earn'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_transactions_member_earns",
        table_name="transactions",
        postgresql_where=sa.text("kind = 'earn'"),
    )
    op.drop_index("ix_member_tier_changes_member", table_name="member_tier_changes")
    op.drop_table("member_tier_changes")
    op.drop_table("member_tiers")
    op.drop_table("tiers")
    op.drop_table("tier_ladders")
