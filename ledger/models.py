"""Ledger tables.

Entries and transactions are insert-only (enforced by triggers in the migration). Only
member-owned accounts (wallet, debt) keep a stored balance, maintained by a statement-level
trigger on `entries`; partner and operator accounts derive theirs from entries, so no partner
row is locked by an earn and a hot partner does not serialise the coalition.
"""

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
    Identity,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, **kw: Any) -> Column[Any]:
    return Column(DateTime(timezone=True), nullable=nullable, **kw)


class AccountKind:
    WALLET = "wallet"  # a member's points; never below zero
    DEBT = "debt"  # a member's debt (<= 0): refunds of points already spent
    ISSUANCE = "issuance"  # per partner: points it issued (goes negative)
    REDEMPTION = "redemption"  # per partner: points it accepted as payment
    BREAKAGE = "breakage"  # operator: expired points
    ADJUSTMENTS = "adjustments"  # operator: manual corrections
    PROMOTIONS = "promotions"  # operator: points the operator issues (goes negative)

    MEMBER = (WALLET, DEBT)
    PARTNER = (ISSUANCE, REDEMPTION)
    OPERATOR = (BREAKAGE, ADJUSTMENTS, PROMOTIONS)
    ALL = (WALLET, DEBT, ISSUANCE, REDEMPTION, BREAKAGE, ADJUSTMENTS, PROMOTIONS)


class TransactionKind:
    EARN = "earn"  # a purchase's points, issued by the partner: a new lot
    BONUS = "bonus"  # points for a non-purchase event (category: the reason): a new lot
    REVERSAL = "reversal"  # an earn taken back (a refund of the purchase)
    CAPTURE = "capture"  # held points taken by a partner as payment
    RETURN = "return"  # captured points given back (a refund of a purchase paid with points)
    REWARD = "reward"  # a catalog reward paid in points at once (lot postings: capture)
    TRANSFER = "transfer"  # points given by a member (member_id) to another member
    EXPIRY = "expiry"  # what is left of expired lots, to breakage
    ADJUSTMENT = "adjustment"  # an operator's correction


class Account(SQLModel, table=True):
    """A ledger account. `owner_id` is the member or partner; NULL for operator accounts."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint(
            "kind", "owner_id", name="uq_accounts_kind_owner", postgresql_nulls_not_distinct=True
        ),
        CheckConstraint(
            "kind IN ('wallet','debt','issuance','redemption','breakage','adjustments',"
            "'promotions')",
            name="ck_accounts_kind",
        ),
        CheckConstraint("kind <> 'wallet' OR balance >= 0", name="ck_accounts_wallet_nonnegative"),
        CheckConstraint("kind <> 'debt' OR balance <= 0", name="ck_accounts_debt_nonpositive"),
        CheckConstraint(
            "(kind IN ('wallet','debt')) = (balance IS NOT NULL)", name="ck_accounts_stored_balance"
        ),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    owner_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    balance: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = Field(sa_column=_ts(server_default=func.now()))


class LedgerTransaction(SQLModel, table=True):
    """A movement of points: its entries sum to zero. Insert-only."""

    __tablename__ = "transactions"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('earn','reversal','capture','return','expiry','adjustment',"
            "'bonus','reward','transfer')",
            name="ck_transactions_kind",
        ),
        CheckConstraint(
            "operator_points >= 0 AND operator_points <= points",
            name="ck_transactions_operator_points",
        ),
        Index("ix_transactions_effective_at", "effective_at"),
        Index(
            "ix_transactions_reverses",
            "reverses_id",
            postgresql_where=text("reverses_id IS NOT NULL"),
        ),
        # Settlement's search for late events reads only recently recorded rows (migration
        # 0004). BRIN: a few pages for millions of rows, next to nothing per insert.
        Index("ix_transactions_recorded_at_brin", "recorded_at", postgresql_using="brin"),
        # A sender's transfers in a time window: the daily limit reads them.
        Index(
            "ix_transactions_transfer_sender",
            "member_id",
            "effective_at",
            postgresql_where=text("kind = 'transfer'"),
        ),
        # A member's earns in a time window: the qualifying spend of tiers (members.tiers).
        # `member_id IS NOT NULL` keeps it out of the order probe's reach (migration 0017).
        Index(
            "ix_transactions_member_earns",
            "member_id",
            "effective_at",
            postgresql_where=text("kind = 'earn' AND member_id IS NOT NULL"),
        ),
        # The latest expiry run: the operator console's health page (migration 0020).
        Index(
            "ix_transactions_expiry",
            "effective_at",
            postgresql_where=text("kind = 'expiry'"),
        ),
        # One earn per partner order.
        Index(
            "uq_transactions_earn_order",
            "partner_id",
            "ref",
            unique=True,
            postgresql_where=text("kind = 'earn' AND ref IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    partner_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    member_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    hold_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    reverses_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    ref: str | None = Field(default=None, sa_column=Column(Text))
    # The business amount behind the movement (a purchase's amount for an earn), for refunds
    # pro rata and for reconciliation against partners' own records.
    amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 4)))
    currency: str | None = Field(default=None, sa_column=Column(Text))
    category: str | None = Field(default=None, sa_column=Column(Text))
    effective_at: datetime = Field(sa_column=_ts())
    recorded_at: datetime = Field(sa_column=_ts(server_default=func.now()))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    # Of `points`, those the operator issued (an earn's coalition-wide offer lines, in a lot of
    # their own with no issuer; a reversal's share of them): its partner answers for the rest.
    operator_points: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class Entry(SQLModel, table=True):
    """One leg of a transaction on one account. Insert-only."""

    __tablename__ = "entries"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="ck_entries_nonzero"),
        Index("ix_entries_account", "account_id", "id"),
        Index("ix_entries_transaction", "transaction_id"),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    # References transactions.id and accounts.id, checked per statement by the entries_post
    # trigger rather than by per-row foreign keys (migration 0006).
    transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    account_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    effective_at: datetime = Field(sa_column=_ts())
    actor: str = Field(sa_column=Column(Text, nullable=False))


class Lot(SQLModel, table=True):
    """Points of one earn or bonus, or of one transfer: spent earliest-expiry first, traceable
    to the partner that issued them (`issuer_id`; NULL: the operator issued them). An earn
    with coalition-wide offer points makes two: the partner's (its other lines' points, when
    there are any) and the operator's (`transactions.operator_points`), created in that order.

    A transfer gives the receiver new lots, one per lot the points came from (`origin_lot_id`,
    by `transfer_tx_id`), carrying that lot's issuer, earn, availability and expiry. Their
    `earn_tx_id` stays the ORIGINAL earn or bonus, whatever chain of transfers brought them:
    everything that prices a lot at its issue (settlement's breakage: the issuer's price at the
    earn's time) reads one join, with no walk up the origins, and a transfer, which is not a
    settlement event, changes no price. So (`earn_tx_id`, `issuer_id`) is unique only among the
    lots an earn or bonus created (`transfer_tx_id IS NULL`); the reversal of an earn finds its
    own lots there.
    A transferred lot's points come in by a `transfer` posting (+N), as the sender's go out by
    one (-N): a lot's remaining is what its earn credited (a transferred lot: nothing) plus its
    postings, minus live holds; and the points liability at any past instant (settlement reads
    lots as of then by subtracting later postings) counts transferred points once.
    Its references (earn, transfer, wallet, origin) are checked once per INSERT statement by the
    trigger `lots_references`, not by per-row foreign keys (migration 0026).
    """

    __tablename__ = "lots"
    __table_args__ = (
        CheckConstraint("points > 0", name="ck_lots_points_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="ck_lots_remaining_range"),
        CheckConstraint("reversed >= 0 AND reversed <= points", name="ck_lots_reversed_range"),
        CheckConstraint(
            "(origin_lot_id IS NULL) = (transfer_tx_id IS NULL)", name="ck_lots_transfer"
        ),
        Index(
            "ix_lots_member_fifo",
            "member_id",
            "expires_at",
            "earned_at",
            "id",
            postgresql_where=text("remaining > 0"),
        ),
        Index("ix_lots_expiry", "expires_at", postgresql_where=text("remaining > 0")),
        # One lot per earn (or bonus) and issuer: an earn with coalition-wide offer points has
        # the partner's lot and the operator's (migration 0019).
        Index(
            "ix_lots_earn_tx",
            "earn_tx_id",
            "issuer_id",
            unique=True,
            postgresql_where=text("transfer_tx_id IS NULL"),
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    member_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    wallet_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    issuer_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    earn_tx_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    remaining: int = Field(sa_column=Column(BigInteger, nullable=False))
    reversed: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    earned_at: datetime = Field(sa_column=_ts())
    available_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    actor: str = Field(sa_column=Column(Text, nullable=False))
    origin_lot_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    transfer_tx_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )


class LotPosting(SQLModel, table=True):
    """A change of a lot's remaining points caused by a ledger transaction (traceability)."""

    __tablename__ = "lot_postings"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('capture','return','reversal','expiry','transfer')",
            name="ck_lot_postings_kind",
        ),
        CheckConstraint("points <> 0", name="ck_lot_postings_nonzero"),
        Index("ix_lot_postings_tx", "transaction_id"),
        Index("ix_lot_postings_lot", "lot_id"),
        Index("ix_lot_postings_effective_at", "effective_at"),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    lot_id: int = Field(sa_column=Column(BigInteger, ForeignKey("lots.id"), nullable=False))
    transaction_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("transactions.id"), nullable=False)
    )
    kind: str = Field(sa_column=Column(Text, nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    effective_at: datetime = Field(sa_column=_ts())
    actor: str = Field(sa_column=Column(Text, nullable=False))


class HoldStatus:
    ACTIVE = "active"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


class Hold(SQLModel, table=True):
    """An authorization: points reserved from lots until captured, voided or expired."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(
            "status IN ('active','captured','voided','expired')", name="ck_holds_status"
        ),
        CheckConstraint("points > 0", name="ck_holds_points_positive"),
        CheckConstraint("captured >= 0 AND captured <= points", name="ck_holds_captured_range"),
        CheckConstraint("returned >= 0 AND returned <= captured", name="ck_holds_returned_range"),
        Index("ix_holds_member_active", "member_id", postgresql_where=text("status = 'active'")),
        Index("ix_holds_expiry", "expires_at", postgresql_where=text("status = 'active'")),
        Index("ix_holds_partner_ref", "partner_id", "order_ref"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    member_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    wallet_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False))
    partner_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    captured: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    returned: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    status: str = Field(sa_column=Column(Text, nullable=False))
    order_ref: str | None = Field(default=None, sa_column=Column(Text))
    purchase_amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 4)))
    currency: str | None = Field(default=None, sa_column=Column(Text))
    capture_tx_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), ForeignKey("transactions.id"))
    )
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    actor: str = Field(sa_column=Column(Text, nullable=False))


class HoldAllocation(SQLModel, table=True):
    """Which lots a hold reserved from, in FIFO order; what of it was captured and returned."""

    __tablename__ = "hold_allocations"
    __table_args__ = (
        CheckConstraint("points > 0", name="ck_hold_alloc_points_positive"),
        CheckConstraint("captured >= 0 AND captured <= points", name="ck_hold_alloc_captured"),
        CheckConstraint("returned >= 0 AND returned <= captured", name="ck_hold_alloc_returned"),
    )

    hold_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("holds.id"), primary_key=True)
    )
    seq: int = Field(sa_column=Column(Integer, primary_key=True))
    lot_id: int = Field(sa_column=Column(BigInteger, ForeignKey("lots.id"), nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    captured: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    returned: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class IdempotencyKey(SQLModel, table=True):
    """An idempotency key for one operation, unique in its key space (a partner's, shared by all
    of its OAuth clients; a member's; the operator's): the request's hash and its result."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("key_space", "operation", "key", name="uq_idempotency_space_op_key"),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    key_space: str = Field(sa_column=Column(Text, nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))  # the client that claimed it
    operation: str = Field(sa_column=Column(Text, nullable=False))
    key: str = Field(sa_column=Column(Text, nullable=False))
    request_hash: str = Field(sa_column=Column(Text, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    created_at: datetime = Field(sa_column=_ts(server_default=func.now()))


class EarnBreakdown(SQLModel, table=True):
    """An earn's breakdown (`ledger.earn`), stored only for an earn with more than its BASE
    line: its lines in order, each `[source, points, offer id or null, funded by]`, summing to
    its points (one row per earn, not per line: migration 0024)."""

    __tablename__ = "earn_breakdowns"
    __table_args__ = (
        CheckConstraint(
            "jsonb_typeof(lines) = 'array' AND jsonb_array_length(lines) > 1",
            name="ck_earn_breakdowns_lines",
        ),
    )

    transaction_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("transactions.id"), primary_key=True)
    )
    lines: list[Any] = Field(sa_column=Column(JSONB, nullable=False))


class OutboxEvent(SQLModel, table=True):
    """An event of the ledger for partners' webhooks (the transactional outbox): written in the
    same statement or transaction as the movement it tells of, and only for a partner with a
    webhook for its type (`webhook_wanted()`, migration 0020). A trigger fans it out to the
    partner's webhooks (`webhook_deliveries`); `seq` orders one member's events."""

    __tablename__ = "outbox_events"

    id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        )
    )
    seq: int = Field(sa_column=Column(BigInteger, Identity(), nullable=False))
    partner_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    member_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    type: str = Field(sa_column=Column(Text, nullable=False))
    data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(sa_column=_ts(server_default=func.now()))
