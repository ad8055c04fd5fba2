"""Settlement between the operator and the partners (DOMAIN.md "Settlement").

A period is [start, end) of the ledger's effective time. Running it prices every ledger event in
it at the agreement in force at that event (settlement.pricing) and aggregates, per partner,
points issued (earns, its own bonuses), reversed, redeemed (captures, rewards it delivers) and
returned, the issuance charge and the reimbursement (each summed exactly, then rounded once,
half-even, to the currency's minor unit) and the net; per issuing partner the breakage of the
period; and the inter-partner matrix from the lots (a transferred lot keeps its original
issuer: a transfer is no settlement event). The operator's own points (lots with no issuer:
sign-up and referral bonuses) are on no statement: the period reports what the operator issued
and what of its points expired (valued at the period's `point_value`), and the matrix, the
liability and the adjustments name the operator as NULL. An open
period is recomputed by every run (re-running changes nothing unless the ledger did). Closing
freezes it: the period records what it covered (each ledger transaction is settled once, in one
period: see `frozen_before` and `settlement_assignments`), its contents are sealed with a
SHA-256 hash, and database triggers refuse any later change. An event that arrives later for a
closed range is an adjustment of the next open period, naming the period it adjusts.

What a closed period covers, without writing a row per transaction: every transaction in its
range recorded before its `frozen_before` (an instant before which every ledger transaction had
finished when the close read the ledger; `ledger_events.recorded_at` is the start of the
recording database transaction), plus the few recorded later that the close saw (one
`settlement_assignments` row each), plus the late events assigned to it. A transaction in a
closed range that is none of these is late.

Reading the ledger. Settlement reads the ledger through the views it publishes (`ledger_events`,
`ledger_lots`, `ledger_lot_postings`, `ledger_lot_holds`: migration 0008) and the partners'
agreements through theirs (`partner_agreements`: migration 0009), in set-based SQL: a period of
a million transactions is priced and aggregated by PostgreSQL in a few statements, which no
per-row service call could do. It never writes them; points move only through `ledger.service`
(the expiry run before a close).

Locks, always in this order so that no two settlement jobs deadlock: the `settlement_state` row
(serialises runs, closes and the search for late events), then the period row.

Functions taking a connection never commit: the caller's unit of work does. `expire_and_close`
and `settle_due` take the engine: the expiry run commits in batches of its own.

The functions live one concern per module, all importable from here: `settlement.records`,
`settlement.periods` (period maths), `settlement.reads`, `settlement.runs` (running a period, late
events), `settlement.compute` (pricing and aggregation), `settlement.closing` (close, seal,
verify), `settlement.liability`, `settlement.scheduler` (the scheduled job).
"""

from __future__ import annotations

from settlement.closing import (
    SEAL_VERSION,
    close,
    expire_and_close,
    seal_text,
    settled_in,
    verify,
    verify_many,
)
from settlement.liability import liability, liability_history
from settlement.periods import (
    GRANULARITIES,
    MAX_PERIOD,
    ONE_MICROSECOND,
    Granularity,
    period_bounds,
)
from settlement.reads import (
    adjustments,
    adjustments_many,
    get_period,
    get_period_by_range,
    instructions,
    list_periods,
    matrix,
    matrix_many,
    payment_instructions,
    payment_instructions_many,
    statements,
    statements_many,
)
from settlement.records import (
    Adjustment,
    LiabilityLine,
    LiabilitySnapshot,
    MatrixCell,
    PaymentInstruction,
    Payments,
    Period,
    SettleReport,
    Statement,
    Verification,
)
from settlement.runs import LATE_MARGIN, collect_late_events, run, run_period
from settlement.scheduler import SETTLE_LOCK, plan_periods, settle_due

__all__ = [
    "GRANULARITIES",
    "LATE_MARGIN",
    "MAX_PERIOD",
    "ONE_MICROSECOND",
    "SEAL_VERSION",
    "SETTLE_LOCK",
    "Adjustment",
    "Granularity",
    "LiabilityLine",
    "LiabilitySnapshot",
    "MatrixCell",
    "PaymentInstruction",
    "Payments",
    "Period",
    "SettleReport",
    "Statement",
    "Verification",
    "adjustments",
    "adjustments_many",
    "close",
    "collect_late_events",
    "expire_and_close",
    "get_period",
    "get_period_by_range",
    "instructions",
    "liability",
    "liability_history",
    "list_periods",
    "matrix",
    "matrix_many",
    "payment_instructions",
    "payment_instructions_many",
    "period_bounds",
    "plan_periods",
    "run",
    "run_period",
    "seal_text",
    "settle_due",
    "settled_in",
    "statements",
    "statements_many",
    "verify",
    "verify_many",
]
