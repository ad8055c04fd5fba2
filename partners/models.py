"""Partner tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlmodel import Field, SQLModel


class Partner(SQLModel, table=True):
    """A merchant of the coalition: it issues points to its customers and accepts them."""

    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("hold_days >= 0 AND hold_days <= 365", name="ck_partners_hold_days"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="ck_partners_currency"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    category: str = Field(sa_column=Column(Text, nullable=False))
    currency: str = Field(sa_column=Column(Text, nullable=False))
    hold_days: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class Agreement(SQLModel, table=True):
    """Prices per point in the settlement currency, effective from an instant. Insert-only.

    An event is priced by the agreement with the latest `effective_from` not after the event,
    among those already recorded when the event was: `recorded_at` makes that answerable.
    """

    __tablename__ = "agreements"
    __table_args__ = (
        CheckConstraint("issue_price >= 0", name="ck_agreements_issue_price"),
        CheckConstraint("redemption_price >= 0", name="ck_agreements_redemption_price"),
        Index("ix_agreements_partner", "partner_id", "effective_from", "recorded_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    issue_price: Decimal = Field(sa_column=Column(Numeric(20, 8), nullable=False))
    redemption_price: Decimal = Field(sa_column=Column(Numeric(20, 8), nullable=False))
    currency: str = Field(sa_column=Column(Text, nullable=False))
    effective_from: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))


class EarnRule(SQLModel, table=True):
    """A partner's earn rule; the newest row is in force. Insert-only (history kept)."""

    __tablename__ = "earn_rules"
    __table_args__ = (
        CheckConstraint("base_rate >= 0", name="ck_earn_rules_base_rate"),
        CheckConstraint("hold_days >= 0 AND hold_days <= 365", name="ck_earn_rules_hold_days"),
        CheckConstraint(
            "max_redeem_share > 0 AND max_redeem_share <= 1", name="ck_earn_rules_redeem_share"
        ),
        CheckConstraint(
            "max_points_per_transaction IS NULL OR max_points_per_transaction > 0",
            name="ck_earn_rules_cap",
        ),
        Index("ix_earn_rules_partner", "partner_id", "recorded_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    base_rate: Decimal = Field(sa_column=Column(Numeric(20, 8), nullable=False))
    # Rates by category, as decimal strings (JSON has no exact decimals).
    category_rates: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))
    max_points_per_transaction: int | None = Field(default=None, sa_column=Column(BigInteger))
    hold_days: int = Field(sa_column=Column(Integer, nullable=False))
    max_redeem_share: Decimal = Field(sa_column=Column(Numeric(6, 5), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))


class Refund(SQLModel, table=True):
    """A partner's (partial) refund of one of its orders, and the ledger movements it caused."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("partner_id", "idempotency_key", name="uq_refunds_partner_key"),
        CheckConstraint("amount > 0", name="ck_refunds_amount"),
        Index("ix_refunds_order", "partner_id", "order_ref"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    order_ref: str = Field(sa_column=Column(Text, nullable=False))
    amount: Decimal = Field(sa_column=Column(Numeric(20, 4), nullable=False))
    currency: str = Field(sa_column=Column(Text, nullable=False))
    idempotency_key: str = Field(sa_column=Column(Text, nullable=False))
    request_hash: str = Field(sa_column=Column(Text, nullable=False))
    points_reversed: int = Field(sa_column=Column(BigInteger, nullable=False))
    points_returned: int = Field(sa_column=Column(BigInteger, nullable=False))
    reversal_tx_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    return_tx_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))


class OAuthClient(SQLModel, table=True):
    """An OAuth 2.0 client: a partner's integration, an operator tool, the public member app
    (`app`) or the public operator console (`console`, signing in operator users).

    Secrets are stored as argon2 hashes only. During a rotation's grace period the previous
    hash keeps working until `previous_secret_expires_at`. Redirect URIs that start with `/`
    are relative to the deployment's public URL (the issuer).
    """

    __tablename__ = "oauth_clients"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('partner','operator','app','console')", name="ck_oauth_clients_kind"
        ),
        CheckConstraint(
            "(kind = 'partner') = (partner_id IS NOT NULL)", name="ck_oauth_clients_partner"
        ),
        CheckConstraint(
            "(kind IN ('app','console')) = (secret_hash IS NULL)",
            name="ck_oauth_clients_public_no_secret",
        ),
        Index("ix_oauth_clients_partner", "partner_id"),
    )

    client_id: str = Field(sa_column=Column(Text, primary_key=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    partner_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=True)
    )
    name: str = Field(sa_column=Column(Text, nullable=False))
    scopes: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    redirect_uris: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    )
    secret_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_secret_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_secret_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    secret_rotated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    disabled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
