"""catalog: rewards, voucher codes, reward redemptions

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 10:00:00.000000

A reward belongs to the partner that delivers it; its stock is `rewards.stock` (goods and
charity; NULL is unlimited) or, for a voucher, its codes not yet handed out. A redemption
records the ledger transaction that took the points and the code it was handed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("price_points", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("available_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.CheckConstraint("kind IN ('VOUCHER','GOODS','CHARITY')", name="ck_rewards_kind"),
        sa.CheckConstraint("price_points > 0", name="ck_rewards_price"),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name="ck_rewards_stock"),
        sa.CheckConstraint("kind <> 'VOUCHER' OR stock IS NULL", name="ck_rewards_voucher_stock"),
        sa.CheckConstraint(
            "available_from IS NULL OR available_until IS NULL OR available_until > available_from",
            name="ck_rewards_window",
        ),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rewards_partner", "rewards", ["partner_id", "id"], unique=False)
    op.create_index(
        "ix_rewards_live",
        "rewards",
        ["id"],
        unique=False,
        postgresql_where=sa.text("retired_at IS NULL"),
    )
    op.create_table(
        "reward_redemptions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("reward_id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("voucher_code", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name="ck_reward_redemptions_points"),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"]),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"]),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "member_id", "idempotency_key", name="uq_reward_redemptions_member_key"
        ),
        sa.UniqueConstraint("transaction_id", name="uq_reward_redemptions_transaction"),
    )
    op.create_index(
        "ix_reward_redemptions_member", "reward_redemptions", ["member_id", "id"], unique=False
    )
    op.create_index(
        "ix_reward_redemptions_reward", "reward_redemptions", ["reward_id"], unique=False
    )
    op.create_table(
        "voucher_codes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("reward_id", sa.UUID(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("redemption_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("length(code) BETWEEN 1 AND 100", name="ck_voucher_codes_length"),
        sa.ForeignKeyConstraint(["redemption_id"], ["reward_redemptions.id"]),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reward_id", "code", name="uq_voucher_codes_reward_code"),
        sa.UniqueConstraint("redemption_id", name="uq_voucher_codes_redemption"),
    )
    op.create_index(
        "ix_voucher_codes_unused",
        "voucher_codes",
        ["reward_id", "id"],
        unique=False,
        postgresql_where=sa.text("redemption_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_voucher_codes_unused", table_name="voucher_codes")
    op.drop_table("voucher_codes")
    op.drop_index("ix_reward_redemptions_reward", table_name="reward_redemptions")
    op.drop_index("ix_reward_redemptions_member", table_name="reward_redemptions")
    op.drop_table("reward_redemptions")
    op.drop_index("ix_rewards_live", table_name="rewards")
    op.drop_index("ix_rewards_partner", table_name="rewards")
    op.drop_table("rewards")
