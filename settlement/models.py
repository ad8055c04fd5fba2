"""Settlement tables.

A period is a range [period_start, period_end) of the ledger's effective time; periods never
overlap (an exclusion constraint). While a period is open its statements are recomputed by
every run; closing it freezes them. A closed period covers the transactions of its range
recorded before its `frozen_before`, those listed for it in `settlement_assignments`, and the
late events assigned to it there (each ledger transaction is settled exactly once, in one
period); the triggers of migration 0004 refuse any change to a closed period or to anything
that belongs to it.
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
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, ExcludeConstraint
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, **kw: Any) -> Column[Any]:
    return Column(DateTime(timezone=True), nullable=nullable, **kw)


def _money(nullable: bool = False, default: bool = True) -> Column[Any]:
    # Amounts rounded to the settlement currency's minor unit (at most 4 digits in ISO 4217).
    return Column(Numeric(20, 4), nullable=nullable, server_default="0" if default else None)


def _points() -> Column[Any]:
    return Column(BigInteger, nullable=False, server_default="0")


class PeriodStatus:
    OPEN = "open"
    CLOSED = "closed"


class PeriodKind:
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CUSTOM = "custom"  # a range an operator asked for


class SettlementPeriod(SQLModel, table=True):
    """A settlement period: open (recomputed by each run) or closed (frozen and sealed)."""

    __tablename__ = "settlement_periods"
    __table_args__ = (
        CheckConstraint("period_end > period_start", name="ck_settlement_periods_range"),
        CheckConstraint("status IN ('open','closed')", name="ck_settlement_periods_status"),
        CheckConstraint(
            "kind IN ('daily','weekly','monthly','custom')", name="ck_settlement_periods_kind"
        ),
        CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL AND content_hash IS NOT NULL "
            "AND frozen_before IS NOT NULL)",
            name="ck_settlement_periods_sealed",
        ),
        ExcludeConstraint(
            (func.tstzrange(Column("period_start"), Column("period_end")), "&&"),
            name="ex_settlement_periods_overlap",
            using="gist",
        ),
        Index("ix_settlement_periods_start", "period_start"),
    )

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    period_start: datetime = Field(sa_column=_ts())
    period_end: datetime = Field(sa_column=_ts())
    kind: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False, server_default="open"))
    currency: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts(server_default=func.now()))
    created_by: str = Field(sa_column=Column(Text, nullable=False))
    run_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    run_by: str | None = Field(default=None, sa_column=Column(Text))
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    closed_by: str | None = Field(default=None, sa_column=Column(Text))
    # Totals of the last run (frozen at close).
    transaction_count: int = Field(default=0, sa_column=_points())
    adjustment_count: int = Field(default=0, sa_column=_points())
    unpriced_events: int = Field(default=0, sa_column=_points())
    operator_margin: Decimal = Field(default=Decimal(0), sa_column=_money())
    breakage_points: int = Field(default=0, sa_column=_points())  # the operator's included
    breakage_value: Decimal = Field(default=Decimal(0), sa_column=_money())
    # The operator's own points (lots with no issuing partner): on no partner's statement.
    operator_issued_points: int = Field(default=0, sa_column=_points())
    operator_breakage_points: int = Field(default=0, sa_column=_points())
    operator_breakage_value: Decimal = Field(default=Decimal(0), sa_column=_money())
    # The face value of a point when the period was created: it values the operator's points
    # (their breakage, their liability line), which no partner's issue price does.
    point_value: Decimal = Field(sa_column=Column(Numeric(20, 8), nullable=False))
    # What a closed period covers: every ledger transaction effective in its range and recorded
    # before `frozen_before` (all of them had committed when the close read the ledger), those
    # recorded later that the close saw (rows in settlement_assignments), and the late events
    # assigned to it. Set at the close.
    frozen_before: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # The seal: sha256 over the sorted ids of the transactions the period covers, and over the
    # canonical text of everything it contains (see settlement.service.seal_text).
    transactions_digest: str | None = Field(default=None, sa_column=Column(Text))
    content_hash: str | None = Field(default=None, sa_column=Column(Text))


class SettlementStatement(SQLModel, table=True):
    """One partner's statement for one period, in the settlement currency."""

    __tablename__ = "settlement_statements"
    __table_args__ = (
        CheckConstraint(
            "net = reimbursement - issuance_charge", name="ck_settlement_statements_net"
        ),
        Index("ix_settlement_statements_partner", "partner_id", "period_id"),
    )

    period_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("settlement_periods.id"), primary_key=True)
    )
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), primary_key=True)
    )
    issued_points: int = Field(default=0, sa_column=_points())
    reversed_points: int = Field(default=0, sa_column=_points())
    redeemed_points: int = Field(default=0, sa_column=_points())
    returned_points: int = Field(default=0, sa_column=_points())
    issuance_charge: Decimal = Field(default=Decimal(0), sa_column=_money())
    reimbursement: Decimal = Field(default=Decimal(0), sa_column=_money())
    net: Decimal = Field(default=Decimal(0), sa_column=_money())
    breakage_points: int = Field(default=0, sa_column=_points())
    breakage_value: Decimal = Field(default=Decimal(0), sa_column=_money())
    adjustment_count: int = Field(default=0, sa_column=_points())
    adjustment_net: Decimal = Field(default=Decimal(0), sa_column=_money())
    unpriced_events: int = Field(default=0, sa_column=_points())


class SettlementMatrixCell(SQLModel, table=True):
    """Points issued by `issuer_id` (NULL: the operator) and accepted at `redeemer_id` in a
    period, and their value. One cell per (period, issuer, redeemer), the operator counting as
    one issuer (NULLS NOT DISTINCT; a primary key cannot hold the NULL, hence `id`)."""

    __tablename__ = "settlement_matrix"
    __table_args__ = (
        UniqueConstraint(
            "period_id",
            "issuer_id",
            "redeemer_id",
            name="uq_settlement_matrix_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    period_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("settlement_periods.id"), nullable=False)
    )
    issuer_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    redeemer_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    points: int = Field(default=0, sa_column=_points())
    value: Decimal = Field(default=Decimal(0), sa_column=_money())


class SettlementAdjustment(SQLModel, table=True):
    """A late event: a transaction effective in an already closed period, settled in this one.

    `amount` is exact (points x unit price); its sign follows the statement: positive raises
    the partner's net (captures and rewards, reversals of earns), negative lowers it (earns and
    bonuses, returns). An expiry's line is breakage of the issuing partner, or of the operator
    (`partner_id` NULL), and does not touch the net.
    """

    __tablename__ = "settlement_adjustments"
    __table_args__ = (
        UniqueConstraint(
            "period_id",
            "transaction_id",
            "partner_id",
            name="uq_settlement_adjustments_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    period_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("settlement_periods.id"), nullable=False)
    )
    transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    partner_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    adjusts_period_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("settlement_periods.id"), nullable=False)
    )
    kind: str = Field(sa_column=Column(Text, nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    unit_price: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 8)))
    amount: Decimal = Field(sa_column=Column(Numeric(30, 8), nullable=False))
    ref: str | None = Field(default=None, sa_column=Column(Text))
    effective_at: datetime = Field(sa_column=_ts())
    recorded_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class SettlementAssignment(SQLModel, table=True):
    """The period that settles a ledger transaction, where its effective time alone does not
    say: a late event (`adjusts_period_id` names the closed period it belongs to), or one that
    the close saw although it was recorded after the period's `frozen_before`. Unique per
    transaction, insert-only; no foreign keys (the insert trigger of migration 0004 checks the
    periods once per statement)."""

    __tablename__ = "settlement_assignments"
    __table_args__ = (
        Index(
            "ix_settlement_assignments_adjustments",
            "period_id",
            postgresql_where=text("adjusts_period_id IS NOT NULL"),
        ),
    )

    transaction_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    period_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    # Set for a late event: the closed period whose range holds its effective time.
    adjusts_period_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )


class SettlementLiability(SQLModel, table=True):
    """Outstanding points of one issuer at a period's end, valued at its issue price then; the
    operator's (`issuer_id` NULL) at the period's point value (settlement.liability)."""

    __tablename__ = "settlement_liability"
    __table_args__ = (
        UniqueConstraint(
            "period_id",
            "issuer_id",
            name="uq_settlement_liability_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    period_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("settlement_periods.id"), nullable=False)
    )
    issuer_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(UUID(as_uuid=True), nullable=True)
    )
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    value: Decimal = Field(sa_column=_money(default=False))
    issue_price: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 8)))
    as_of: datetime = Field(sa_column=_ts())


class SettlementState(SQLModel, table=True):
    """One row: how far the search for late events has looked (by `transactions.recorded_at`)."""

    __tablename__ = "settlement_state"
    __table_args__ = (CheckConstraint("id = 1", name="ck_settlement_state_single"),)

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True))
    # NULL: from the beginning of the ledger.
    late_watermark: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Reconciliation(SQLModel, table=True):
    """A partner's own record of a period matched against the ledger (stored only if valid)."""

    __tablename__ = "settlement_reconciliations"
    __table_args__ = (Index("ix_settlement_reconciliations_period", "period_id", "partner_id"),)

    id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    period_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("settlement_periods.id"), nullable=False)
    )
    partner_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("partners.id"), nullable=False)
    )
    filename: str | None = Field(default=None, sa_column=Column(Text))
    file_sha256: str = Field(sa_column=Column(Text, nullable=False))
    file_lines: int = Field(sa_column=Column(Integer, nullable=False))
    matched: int = Field(sa_column=Column(Integer, nullable=False))
    mismatched: int = Field(sa_column=Column(Integer, nullable=False))
    missing_in_ledger: int = Field(sa_column=Column(Integer, nullable=False))
    missing_in_file: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(sa_column=_ts())
    actor: str = Field(sa_column=Column(Text, nullable=False))


class ReconciliationLine(SQLModel, table=True):
    """One (order reference, kind) of a reconciliation and how the two sides compare."""

    __tablename__ = "settlement_reconciliation_lines"
    __table_args__ = (
        CheckConstraint(
            "status IN ('matched','mismatched','missing_in_ledger','missing_in_file')",
            name="ck_settlement_reconciliation_lines_status",
        ),
    )

    reconciliation_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True), ForeignKey("settlement_reconciliations.id"), primary_key=True
        )
    )
    seq: int = Field(sa_column=Column(Integer, primary_key=True))
    status: str = Field(sa_column=Column(Text, nullable=False))
    order_ref: str | None = Field(default=None, sa_column=Column(Text))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    file_points: int | None = Field(default=None, sa_column=Column(BigInteger))
    file_amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 4)))
    ledger_points: int | None = Field(default=None, sa_column=Column(BigInteger))
    ledger_amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 4)))
    file_line_numbers: list[int] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Integer), nullable=False, server_default=text("'{}'::int[]")),
    )
    transaction_ids: list[uuid.UUID] = Field(
        default_factory=list,
        sa_column=Column(
            ARRAY(UUID(as_uuid=True)), nullable=False, server_default=text("'{}'::uuid[]")
        ),
    )
