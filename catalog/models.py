"""Catalog tables: rewards, their voucher codes, and the members' reward redemptions.

A reward belongs to the partner that delivers it. Its stock is `rewards.stock` for goods and
charity (NULL: unlimited) and, for a voucher, its codes not yet handed out (`stock` is NULL).
A redemption is insert-only; the voucher code it took names it (`voucher_codes.redemption_id`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
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
