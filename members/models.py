"""Member tables."""

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
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel


class Member(SQLModel, table=True):
    """A customer of the coalition, known to partners by a 16-digit card number."""

    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("card_number ~ '^[0-9]{16}$'", name="ck_members_card_digits"),
        # Crockford's base 32 (members.referrals.ALPHABET), 8 symbols.
        CheckConstraint(
            "referral_code ~ '^[0-9A-HJKMNP-TV-Z]{8}$'", name="ck_members_referral_code"
        ),
        # Emails are unique case-insensitively.
        Index("uq_members_email_lower", text("lower(email)"), unique=True),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    card_number: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    # What the member gives friends who join (members.referrals).
    referral_code: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    email: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    password_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class RedemptionCode(SQLModel, table=True):
    """A member's consent to pay with points: short-lived, single-use, optionally capped and
    bound to one partner. Only a hash of the code is stored."""

    __tablename__ = "redemption_codes"
    __table_args__ = (
        CheckConstraint("max_points IS NULL OR max_points > 0", name="ck_codes_max_points"),
        Index("ix_codes_member", "member_id", "created_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    code_hash: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    max_points: int | None = Field(default=None, sa_column=Column(BigInteger))
    partner_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    used_by_hold: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))


class CodeAttempt(SQLModel, table=True):
    """Audit of redemption-code presentations by partners; failures throttle guessing."""

    __tablename__ = "code_attempts"
    __table_args__ = (Index("ix_code_attempts_actor_at", "actor", "at"),)

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    partner_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    success: bool = Field(sa_column=Column(Boolean, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))


class Referral(SQLModel, table=True):
    """A member (the friend) who joined with another member's referral code. `points` is the
    referral bonus each of the two was promised under the rules in force at the friend's
    registration; it is paid, once, when the friend's first earn is recorded (`paid_at`)."""

    __tablename__ = "referrals"
    __table_args__ = (
        CheckConstraint("points >= 0", name="ck_referrals_points"),
        CheckConstraint("referrer_id <> friend_id", name="ck_referrals_not_self"),
        # The referrals still to pay: what the earn path's card lookup and the sweep read.
        Index(
            "ix_referrals_unpaid",
            "friend_id",
            postgresql_where=text("paid_at IS NULL AND points > 0"),
        ),
        Index("ix_referrals_referrer", "referrer_id"),
    )

    friend_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), primary_key=True)
    )
    referrer_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    paid_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # The two bonuses' ledger transactions, once paid.
    referrer_tx_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    friend_tx_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))


class BonusRules(SQLModel, table=True):
    """The operator's bonus rules: points given to a new member at sign-up, and to each side
    of a referral. Insert-only: the latest row is in force, the earlier ones are its history;
    none means no bonuses."""

    __tablename__ = "bonus_rules"
    __table_args__ = (
        CheckConstraint("signup_points >= 0", name="ck_bonus_rules_signup"),
        CheckConstraint("referral_points >= 0", name="ck_bonus_rules_referral"),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    signup_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    referral_points: int = Field(sa_column=Column(BigInteger, nullable=False))
    recorded_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    actor: str = Field(sa_column=Column(Text, nullable=False))


class TierLadder(SQLModel, table=True):
    """One version of the operator's tier ladder. Insert-only: the latest is in force, the
    earlier ones are its history (members' tier changes name the version they applied); none
    means no tiers (every member untiered, x1)."""

    __tablename__ = "tier_ladders"

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    recorded_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    actor: str = Field(sa_column=Column(Text, nullable=False))


class Tier(SQLModel, table=True):
    """A rung of a ladder version: reached at `threshold` of qualifying spend (in the
    settlement currency), it multiplies the member's base earn by `multiplier`."""

    __tablename__ = "tiers"
    __table_args__ = (
        CheckConstraint("threshold > 0", name="ck_tiers_threshold"),
        CheckConstraint("multiplier >= 1", name="ck_tiers_multiplier"),
        CheckConstraint("position >= 0", name="ck_tiers_position"),
        UniqueConstraint("ladder_id", "name", name="uq_tiers_ladder_name"),
    )

    ladder_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("tier_ladders.id"), primary_key=True)
    )
    # 0 is the lowest rung; thresholds grow with it (checked by members.tiers.set_tiers).
    position: int = Field(sa_column=Column(Integer, primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    threshold: Decimal = Field(sa_column=Column(Numeric(20, 4), nullable=False))
    currency: str = Field(sa_column=Column(Text, nullable=False))
    multiplier: Decimal = Field(sa_column=Column(Numeric(8, 4), nullable=False))


class MemberTier(SQLModel, table=True):
    """A member's current tier (NULL: untiered), since when and why. The row is also what
    serialises changes of one member's tier (members.tiers locks it)."""

    __tablename__ = "member_tiers"
    __table_args__ = (
        CheckConstraint(
            "reason IS NULL OR reason IN ('upgrade','review')", name="ck_member_tiers_reason"
        ),
    )

    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), primary_key=True)
    )
    tier_name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    since: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    ladder_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("tier_ladders.id"), nullable=True)
    )


class MemberTierChange(SQLModel, table=True):
    """Every change of a member's tier: insert-only history."""

    __tablename__ = "member_tier_changes"
    __table_args__ = (
        CheckConstraint("reason IN ('upgrade','review')", name="ck_member_tier_changes_reason"),
        Index("ix_member_tier_changes_member", "member_id", "id"),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    member_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("members.id"), nullable=False)
    )
    from_tier: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    to_tier: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    # The instant the change applies from: the earn's time for an upgrade, the review's as-of.
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    qualifying_spend: Decimal = Field(sa_column=Column(Numeric(20, 4), nullable=False))
    ladder_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("tier_ladders.id"), nullable=False)
    )
    recorded_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class OperatorUser(SQLModel, table=True):
    """A person of the operator's staff who signs in to the console (the `coalition-console`
    client) with an email and password. Kept with the members because both sign in on the same
    login page with the same password hashing; they are never members, and hold the `operator`
    scope only through the console client."""

    __tablename__ = "operator_users"
    __table_args__ = (
        # Emails are unique case-insensitively.
        Index("uq_operator_users_email_lower", text("lower(email)"), unique=True),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    email: str = Field(sa_column=Column(Text, nullable=False))
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    disabled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
