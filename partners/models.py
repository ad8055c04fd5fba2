"""Partner tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
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


class ImportFile(SQLModel, table=True):
    """A partner's batch file (`POST /imports`, `coalition import`): its lines are applied in
    chunks, each chunk's earns and this row's progress committed together, so a restarted
    import resumes at `position` (data lines done) and never applies a line twice."""

    __tablename__ = "imports"
    __table_args__ = (
        CheckConstraint("status IN ('queued','running','done')", name="ck_imports_status"),
        CheckConstraint("format IN ('csv','jsonl')", name="ck_imports_format"),
        CheckConstraint("position >= 0 AND position <= lines", name="ck_imports_position"),
        Index("ix_imports_partner", "partner_id", "created_at"),
        Index("ix_imports_unfinished", "created_at", postgresql_where=text("status <> 'done'")),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    actor: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False, server_default="queued"))
    format: str = Field(sa_column=Column(Text, nullable=False))
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    lines: int = Field(sa_column=Column(Integer, nullable=False))
    position: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    # Each lane's position once started (`loyalty.imports`: lines split by member, applied side
    # by side); `position` is the lines done in all.
    lanes: list[int] | None = Field(default=None, sa_column=Column(ARRAY(Integer), nullable=True))
    # Each data line's lane, one byte per line, stored when the import starts in several lanes:
    # a resume deals the lines from it (migration 0027). Dropped with `body` once done.
    lane_map: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    applied: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    replayed: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    rejected: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class ImportLineError(SQLModel, table=True):
    """A rejected line of an import: its line number in the file (the header is line 1)."""

    __tablename__ = "import_errors"

    import_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True), ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
        )
    )
    line: int = Field(sa_column=Column(Integer, primary_key=True))
    code: str = Field(sa_column=Column(Text, nullable=False))
    message: str = Field(sa_column=Column(Text, nullable=False))


class Webhook(SQLModel, table=True):
    """A partner's endpoint for its events; the secret signs every delivery."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_partner", "partner_id"),)

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    url: str = Field(sa_column=Column(Text, nullable=False))
    secret: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    deleted_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook (the fan-out trigger of migration 0020 writes it with a copy
    of the event) and how its delivery went: pending until a 2xx answer (delivered) or the
    retry window's end (failed)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending','delivered','failed')", name="ck_webhook_deliveries_status"
        ),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_webhook_deliveries_order",
            "webhook_id",
            "member_id",
            "seq",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_log", "webhook_id", "created_at"),
    )

    id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        )
    )
    webhook_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("webhooks.id"), nullable=False)
    )
    event_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    event_type: str = Field(sa_column=Column(Text, nullable=False))
    event_data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    event_created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    member_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    status: str = Field(sa_column=Column(Text, nullable=False, server_default="pending"))
    attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    last_attempt_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    last_status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    delivered_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
