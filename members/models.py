"""Member tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Text,
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
