"""Catalog tables: rewards, their voucher codes, the members' reward redemptions; offers, their
activations and uses by members, promo codes and their applications.

A reward belongs to the partner that delivers it. Its stock is `rewards.stock` for goods and
charity (NULL: unlimited) and, for a voucher, its codes not yet handed out (`stock` is NULL).
A redemption is insert-only; the voucher code it took names it (`voucher_codes.redemption_id`).

An offer multiplies (`multiplier` > 1) or adds (`bonus_points`) points to the earns it applies to
(DOMAIN.md "Offers and the earn breakdown"); `partner_id` NULL is a coalition-wide offer, issued
and paid for by the operator. A promo code is stored upper-cased, so that codes are unique and
matched case-insensitively; its `redemptions` never exceed `max_redemptions`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel


class RewardKind:
    VOUCHER = "VOUCHER"
    GOODS = "GOODS"
    CHARITY = "CHARITY"


REWARD_KINDS = (RewardKind.VOUCHER, RewardKind.GOODS, RewardKind.CHARITY)


class Reward(SQLModel, table=True):
    """Something a member buys with points, delivered by its partner."""

    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint("kind IN ('VOUCHER','GOODS','CHARITY')", name="ck_rewards_kind"),
        CheckConstraint("price_points > 0", name="ck_rewards_price"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="ck_rewards_stock"),
        # A voucher's stock is its unused codes.
        CheckConstraint("kind <> 'VOUCHER' OR stock IS NULL", name="ck_rewards_voucher_stock"),
        CheckConstraint(
            "available_from IS NULL OR available_until IS NULL OR available_until > available_from",
            name="ck_rewards_window",
        ),
        Index("ix_rewards_partner", "partner_id", "id"),
        # Browsing reads the live rewards, newest first.
        Index("ix_rewards_live", "id", postgresql_where=text("retired_at IS NULL")),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    title: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    price_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    stock: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    category: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    available_from: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    available_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    retired_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    updated_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    actor: str = Field(sa_column=Column(Text, nullable=False))


class RewardRedemption(SQLModel, table=True):
    """A member's redemption of a reward: the points its ledger transaction took, and the
    voucher code it was handed (shown to that member only). Insert-only."""

    __tablename__ = "reward_redemptions"
    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key", name="uq_reward_redemptions_member_key"),
        UniqueConstraint("transaction_id", name="uq_reward_redemptions_transaction"),
        CheckConstraint("points > 0", name="ck_reward_redemptions_points"),
        Index("ix_reward_redemptions_member", "member_id", "id"),
        Index("ix_reward_redemptions_reward", "reward_id"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    reward_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("rewards.id"), nullable=False)
    )
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    voucher_code: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The ledger transaction that took the points (the ledger's own tables are not referenced).
    transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class VoucherCode(SQLModel, table=True):
    """One code of a voucher reward's pool; handed out at most once (`redemption_id`)."""

    __tablename__ = "voucher_codes"
    __table_args__ = (
        UniqueConstraint("reward_id", "code", name="uq_voucher_codes_reward_code"),
        UniqueConstraint("redemption_id", name="uq_voucher_codes_redemption"),
        CheckConstraint("length(code) BETWEEN 1 AND 100", name="ck_voucher_codes_length"),
        # The unused codes of a reward, in upload order: the pool a redemption takes from.
        Index(
            "ix_voucher_codes_unused",
            "reward_id",
            "id",
            postgresql_where=text("redemption_id IS NULL"),
        ),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    reward_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("rewards.id"), nullable=False)
    )
    code: str = Field(sa_column=Column(Text, nullable=False))
    redemption_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("reward_redemptions.id"), nullable=True),
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class ActivationVia:
    APP = "APP"
    PROMO_CODE = "PROMO_CODE"


class Offer(SQLModel, table=True):
    """A campaign: a multiplier or fixed bonus on the earns of a partner (or of every partner)."""

    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint("(multiplier IS NULL) <> (bonus_points IS NULL)", name="ck_offers_kind"),
        CheckConstraint("multiplier IS NULL OR multiplier > 1", name="ck_offers_multiplier"),
        CheckConstraint("bonus_points IS NULL OR bonus_points > 0", name="ck_offers_bonus"),
        CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name="ck_offers_window"),
        CheckConstraint(
            "max_uses_per_member IS NULL OR max_uses_per_member > 0", name="ck_offers_max_uses"
        ),
        Index("ix_offers_partner", "partner_id", "id"),
        # The earn path reads the live offers (of a partner, and the coalition-wide ones).
        Index("ix_offers_live", "partner_id", postgresql_where=text("ended_at IS NULL")),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=True),
    )
    name: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    multiplier: Decimal | None = Field(
        default=None, sa_column=Column(Numeric(12, 4), nullable=True)
    )
    bonus_points: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    category: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    starts_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ends_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    requires_activation: bool = Field(sa_column=Column(Boolean, nullable=False))
    max_uses_per_member: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    stackable: bool = Field(sa_column=Column(Boolean, nullable=False))
    # A tier's name (the ladder is the members' domain); NULL: every member.
    min_tier: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    ended_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    actor: str = Field(sa_column=Column(Text, nullable=False))


class OfferActivation(SQLModel, table=True):
    """A member's activation of an offer that requires one (in the app, or by a promo code)."""

    __tablename__ = "offer_activations"
    __table_args__ = (
        PrimaryKeyConstraint("offer_id", "member_id", name="pk_offer_activations"),
        CheckConstraint("via IN ('APP','PROMO_CODE')", name="ck_offer_activations_via"),
        Index("ix_offer_activations_member", "member_id"),
    )

    offer_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("offers.id"), nullable=False)
    )
    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    activated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    via: str = Field(sa_column=Column(Text, nullable=False))


class OfferUse(SQLModel, table=True):
    """How many earns of a member an offer added points to (for `max_uses_per_member`)."""

    __tablename__ = "offer_uses"
    __table_args__ = (
        PrimaryKeyConstraint("offer_id", "member_id", name="pk_offer_uses"),
        CheckConstraint("uses >= 0", name="ck_offer_uses_uses"),
        Index("ix_offer_uses_member", "member_id"),
    )

    offer_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("offers.id"), nullable=False)
    )
    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    uses: int = Field(sa_column=Column(Integer, nullable=False))


class PromoCode(SQLModel, table=True):
    """A code that activates an offer for the member applying it."""

    __tablename__ = "promo_codes"
    __table_args__ = (
        UniqueConstraint("code", name="uq_promo_codes_code"),
        CheckConstraint("code ~ '^[A-Z0-9-]{3,40}$'", name="ck_promo_codes_code"),
        CheckConstraint("max_redemptions > 0", name="ck_promo_codes_max"),
        CheckConstraint(
            "redemptions >= 0 AND redemptions <= max_redemptions", name="ck_promo_codes_used"
        ),
        Index("ix_promo_codes_offer", "offer_id"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    code: str = Field(sa_column=Column(Text, nullable=False))
    offer_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("offers.id"), nullable=False)
    )
    max_redemptions: int = Field(sa_column=Column(Integer, nullable=False))
    valid_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    redemptions: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))


class PromoCodeApplication(SQLModel, table=True):
    """A member's application of a promo code: at most one per member and code."""

    __tablename__ = "promo_code_applications"
    __table_args__ = (
        PrimaryKeyConstraint("promo_code_id", "member_id", name="pk_promo_code_applications"),
        Index("ix_promo_code_applications_member", "member_id"),
    )

    promo_code_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("promo_codes.id"), nullable=False)
    )
    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    applied_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
