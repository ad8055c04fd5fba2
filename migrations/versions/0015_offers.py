"""catalog: offers, their activations and uses, promo codes and their applications

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-13 10:00:00.000000

An offer multiplies or adds points to the earns it applies to (DOMAIN.md "Offers and the earn
breakdown"); `partner_id` NULL is coalition-wide (the operator's). A promo code is stored
upper-cased (unique, matched case-insensitively) and counts its redemptions, never more than
`max_redemptions`; an application is unique per code and member.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "offers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("partner_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("multiplier", sa.Numeric(12, 4), nullable=True),
        sa.Column("bonus_points", sa.BigInteger(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        _at("starts_at"),
        _at("ends_at", nullable=True),
        sa.Column("requires_activation", sa.Boolean(), nullable=False),
        sa.Column("max_uses_per_member", sa.Integer(), nullable=True),
        sa.Column("stackable", sa.Boolean(), nullable=False),
        sa.Column("min_tier", sa.Text(), nullable=True),
        _at("created_at"),
        _at("ended_at", nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.CheckConstraint("(multiplier IS NULL) <> (bonus_points IS NULL)", name="ck_offers_kind"),
        sa.CheckConstraint("multiplier IS NULL OR multiplier > 1", name="ck_offers_multiplier"),
        sa.CheckConstraint("bonus_points IS NULL OR bonus_points > 0", name="ck_offers_bonus"),
        sa.CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name="ck_offers_window"),
        sa.CheckConstraint(
            "max_uses_per_member IS NULL OR max_uses_per_member > 0", name="ck_offers_max_uses"
        ),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_offers_partner", "offers", ["partner_id", "id"], unique=False)
    op.create_index(
        "ix_offers_live",
        "offers",
        ["partner_id"],
        unique=False,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "offer_activations",
        sa.Column("offer_id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        _at("activated_at"),
        sa.Column("via", sa.Text(), nullable=False),
        sa.CheckConstraint("via IN ('APP','PROMO_CODE')", name="ck_offer_activations_via"),
        sa.ForeignKeyConstraint(["offer_id"], ["offers.id"]),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"]),
        sa.PrimaryKeyConstraint("offer_id", "member_id", name="pk_offer_activations"),
    )
    op.create_index("ix_offer_activations_member", "offer_activations", ["member_id"], unique=False)
    op.create_table(
        "offer_uses",
        sa.Column("offer_id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.CheckConstraint("uses >= 0", name="ck_offer_uses_uses"),
        sa.ForeignKeyConstraint(["offer_id"], ["offers.id"]),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"]),
        sa.PrimaryKeyConstraint("offer_id", "member_id", name="pk_offer_uses"),
    )
    op.create_index("ix_offer_uses_member", "offer_uses", ["member_id"], unique=False)
    op.create_table(
        "promo_codes",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("offer_id", sa.UUID(), nullable=False),
        sa.Column("max_redemptions", sa.Integer(), nullable=False),
        _at("valid_until"),
        sa.Column("redemptions", sa.Integer(), server_default="0", nullable=False),
        _at("created_at"),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.CheckConstraint("code ~ '^[A-Z0-9-]{3,40}$'", name="ck_promo_codes_code"),
        sa.CheckConstraint("max_redemptions > 0", name="ck_promo_codes_max"),
        sa.CheckConstraint(
            "redemptions >= 0 AND redemptions <= max_redemptions", name="ck_promo_codes_used"
        ),
        sa.ForeignKeyConstraint(["offer_id"], ["offers.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code", name="uq_promo_codes_code"),
    )
    op.create_index("ix_promo_codes_offer", "promo_codes", ["offer_id"], unique=False)
    op.create_table(
        "promo_code_applications",
        sa.Column("promo_code_id", sa.UUID(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        _at("applied_at"),
        sa.ForeignKeyConstraint(["promo_code_id"], ["promo_codes.id"]),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"]),
        sa.PrimaryKeyConstraint("promo_code_id", "member_id", name="pk_promo_code_applications"),
    )
    op.create_index(
        "ix_promo_code_applications_member",
        "promo_code_applications",
        ["member_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("promo_code_applications")
    op.drop_table("promo_codes")
    op.drop_table("offer_uses")
    op.drop_table("offer_activations")
    op.drop_table("offers")
