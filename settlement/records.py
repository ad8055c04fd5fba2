"""The settlement's records: periods, statements, matrix cells, adjustments, payments,
liability, verification, the scheduled job's report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from core.money import Money
from settlement.models import PeriodStatus


@dataclass(frozen=True)
class Period:
    """A settlement period. The totals are None in a partner's view (they reveal the others)."""

    id: uuid.UUID
    period_start: datetime
    period_end: datetime
    kind: str
    status: str
    currency: str
    created_at: datetime
    run_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    content_hash: str | None
    # Transactions of the range recorded before this instant are covered by the closed period
    # (see settlement.models.SettlementPeriod.frozen_before).
    frozen_before: datetime | None
    transactions_digest: str | None
    transaction_count: int | None
    adjustment_count: int | None
    unpriced_events: int | None
    operator_margin: Money | None
    breakage_points: int | None  # every point expired in the period, the operator's included
    breakage_value: Money | None
    # The operator's own points (issued by no partner): what it issued in the period, and the
    # part of the breakage that is its own, valued at `point_value` (on no partner's statement).
    operator_issued_points: int | None
    operator_breakage_points: int | None
    operator_breakage_value: Money | None
    point_value: Decimal | None  # the face value of a point that values the operator's points

    @property
    def is_closed(self) -> bool:
        return self.status == PeriodStatus.CLOSED


@dataclass(frozen=True)
class Statement:
    """One partner's statement for one period. Amounts in the settlement currency; the points
    and amounts include the period's adjustments (late events of closed periods)."""

    period_id: uuid.UUID
    partner_id: uuid.UUID
    issued_points: int
    reversed_points: int
    redeemed_points: int
    returned_points: int
    issuance_charge: Money
    reimbursement: Money
    net: Money  # > 0: the operator pays the partner; < 0: the partner pays the operator
    breakage_points: int  # points issued by this partner that expired in the period
    breakage_value: Money  # at their issue price; reported, not paid
    adjustment_count: int
    adjustment_net: Money  # the adjustments' part of `net`
    unpriced_events: int  # events with no agreement in force (priced at zero)


@dataclass(frozen=True)
class MatrixCell:
    """Points issued by `issuer_id` (None: the operator) and accepted at `redeemer_id`, at the
    redemption price."""

    issuer_id: uuid.UUID | None
    redeemer_id: uuid.UUID
    points: int
    value: Money


@dataclass(frozen=True)
class Adjustment:
    """A late event settled in this period, naming the closed period it adjusts."""

    transaction_id: uuid.UUID
    partner_id: uuid.UUID | None  # None: the operator (breakage of its own points)
    adjusts_period_id: uuid.UUID
    # earn, bonus, reversal, capture, reward, return, or expiry (breakage of the issuer)
    kind: str
    points: int
    unit_price: Decimal | None
    # Exact. Signed as its effect on the partner's net; for an expiry, the breakage value
    # (reported, not paid).
    amount: Money
    ref: str | None
    effective_at: datetime
    recorded_at: datetime | None


@dataclass(frozen=True)
class PaymentInstruction:
    """The netted transfer of one partner for a period: to or from the operator."""

    partner_id: uuid.UUID
    payer: Literal["operator", "partner", "none"]
    payee: Literal["operator", "partner", "none"]
    amount: Money  # >= 0
    net: Money  # signed, from the partner's side


@dataclass(frozen=True)
class Payments:
    """Payment instructions and the operator's side: `sum(net) + operator_margin == 0`."""

    period_id: uuid.UUID
    instructions: list[PaymentInstruction]
    operator_margin: Money | None  # None in a partner's view


@dataclass(frozen=True)
class LiabilityLine:
    """Outstanding points issued by one partner, valued at its issue price in force then; or
    the operator's own points (`issuer_id` None), valued at the face value of a point
    (`issue_price` is then that value: see settlement.liability)."""

    issuer_id: uuid.UUID | None
    points: int
    issue_price: Decimal | None
    value: Money
    as_of: datetime


@dataclass(frozen=True)
class LiabilitySnapshot:
    """The liability by issuer at the end of a closed period."""

    period_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    lines: list[LiabilityLine]
    total_points: int
    total_value: Money


@dataclass(frozen=True)
class Verification:
    """Checking a closed period's seal: the stored contents hash to the stored seal, and the
    ledger transactions assigned to it still give the same statements."""

    period_id: uuid.UUID
    sealed: bool
    stored_hash: str | None
    computed_hash: str | None
    hash_matches: bool
    ledger_matches: bool

    @property
    def ok(self) -> bool:
        return self.sealed and self.hash_matches and self.ledger_matches


@dataclass(frozen=True)
class SettleReport:
    """What `settle_due` did."""

    skipped: bool = False  # another settle job held the lock
    created: int = 0
    runs: int = 0
    closed: tuple[uuid.UUID, ...] = ()
    expired_points: int = 0
