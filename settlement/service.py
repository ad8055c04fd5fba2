"""Settlement between the operator and the partners (DOMAIN.md "Settlement").

A period is [start, end) of the ledger's effective time. Running it prices every ledger event in
it at the agreement in force at that event (settlement.pricing) and aggregates, per partner,
points issued, reversed, redeemed and returned, the issuance charge and the reimbursement (each
summed exactly, then rounded once, half-even, to the currency's minor unit) and the net; per
issuing partner the breakage of the period; and the inter-partner matrix from the lots. An open
period is recomputed by every run (re-running changes nothing unless the ledger did). Closing
freezes it: the period records what it covered (each ledger transaction is settled once, in one
period: see `frozen_before` and `settlement_assignments`), its contents are sealed with a
SHA-256 hash, and database triggers refuse any later change. An event that arrives later for a
closed range is an adjustment of the next open period, naming the period it adjusts.

What a closed period covers, without writing a row per transaction: every transaction in its
range recorded before its `frozen_before` (an instant before which every ledger transaction had
finished when the close read the ledger; `transactions.recorded_at` is the start of the
recording database transaction), plus the few recorded later that the close saw (one
`settlement_assignments` row each), plus the late events assigned to it. A transaction in a
closed range that is none of these is late.

Reading other domains' tables. This module reads the ledger's tables (transactions, lots,
lot_postings, holds, hold_allocations) and the partners' agreements directly, in set-based SQL:
a period of a million transactions is priced and aggregated by PostgreSQL in a few statements,
which no per-row service call could do. It never writes them; points move only through
`ledger.service` (the expiry run before a close).

Locks, always in this order so that no two settlement jobs deadlock: the `settlement_state` row
(serialises runs, closes and the search for late events), then the period row.

Functions taking a connection never commit: the caller's unit of work does. `expire_and_close`
and `settle_due` take the engine: the expiry run commits in batches of its own.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.clock import ensure_aware, utcnow
from core.ids import uuid7
from core.money import Money, minor_units, quantize
from ledger import service as ledger
from settlement.errors import (
    ExpiryPending,
    InvalidPeriod,
    PeriodNotEnded,
    PeriodNotFound,
    PeriodOverlap,
)
from settlement.models import PeriodKind, PeriodStatus
from settlement.pricing import (
    CANDIDATES_FROZEN,
    CANDIDATES_OPEN,
    NET_SIGN,
    PRICE_CTE,
    price_join,
    priced,
)

Granularity = Literal["daily", "weekly", "monthly"]
GRANULARITIES: tuple[str, ...] = ("daily", "weekly", "monthly")
MAX_PERIOD = timedelta(days=366)
ONE_MICROSECOND = timedelta(microseconds=1)
# The search for late events never moves its watermark closer than this to "now": covers clock
# skew between the app servers and the database on top of the running-transactions rule.
LATE_MARGIN = timedelta(minutes=10)
SEAL_VERSION = "coalition-settlement-seal/1"


# ---------------------------------------------------------------------------------------------
# Results


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
    breakage_points: int | None
    breakage_value: Money | None

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
    """Points issued by `issuer_id` and accepted at `redeemer_id`, at the redemption price."""

    issuer_id: uuid.UUID
    redeemer_id: uuid.UUID
    points: int
    value: Money


@dataclass(frozen=True)
class Adjustment:
    """A late event settled in this period, naming the closed period it adjusts."""

    transaction_id: uuid.UUID
    partner_id: uuid.UUID
    adjusts_period_id: uuid.UUID
    kind: str  # earn, reversal, capture, return, or expiry (breakage of the issuer)
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
    """Outstanding points issued by one partner, valued at its issue price in force then."""

    issuer_id: uuid.UUID
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


# ---------------------------------------------------------------------------------------------
# Periods: calendar


def period_bounds(
    at: datetime, *, granularity: str, timezone: str = "UTC"
) -> tuple[datetime, datetime]:
    """The day, ISO week (from Monday) or month holding `at`, in `timezone`, as UTC instants."""
    if granularity not in GRANULARITIES:
        raise InvalidPeriod(f"period must be one of {', '.join(GRANULARITIES)}")
    tz = ZoneInfo(timezone)
    day = ensure_aware(at).astimezone(tz).date()
    if granularity == "daily":
        first, nxt = day, day + timedelta(days=1)
    elif granularity == "weekly":
        first = day - timedelta(days=day.weekday())
        nxt = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        nxt = first + relativedelta(months=1)
    start = datetime.combine(first, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(nxt, time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def _now(now: datetime | None) -> datetime:
    return utcnow() if now is None else ensure_aware(now)


# ---------------------------------------------------------------------------------------------
# Reads


_PERIOD_COLUMNS = (
    "id, period_start, period_end, kind, status, currency, created_at, run_at, closed_at, "
    "closed_by, content_hash, frozen_before, transactions_digest, transaction_count, "
    "adjustment_count, unpriced_events, operator_margin, breakage_points, breakage_value"
)


def _period(row: Any, *, partner_view: bool = False) -> Period:
    cur = row.currency
    common = {
        "id": row.id,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "kind": row.kind,
        "status": row.status,
        "currency": cur,
        "created_at": row.created_at,
        "run_at": row.run_at,
        "closed_at": row.closed_at,
        "content_hash": row.content_hash,
        "frozen_before": row.frozen_before,
    }
    if partner_view:
        return Period(
            **common,
            closed_by=None,
            transactions_digest=None,
            transaction_count=None,
            adjustment_count=None,
            unpriced_events=None,
            operator_margin=None,
            breakage_points=None,
            breakage_value=None,
        )
    return Period(
        **common,
        closed_by=row.closed_by,
        transactions_digest=row.transactions_digest,
        transaction_count=int(row.transaction_count),
        adjustment_count=int(row.adjustment_count),
        unpriced_events=int(row.unpriced_events),
        operator_margin=Money(quantize(row.operator_margin, cur), cur),
        breakage_points=int(row.breakage_points),
        breakage_value=Money(quantize(row.breakage_value, cur), cur),
    )


async def get_period(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> Period:
    """One period; with `partner_id`, the partner's view (no coalition-wide totals)."""
    row = (
        await conn.execute(
            text(f"SELECT {_PERIOD_COLUMNS} FROM settlement_periods WHERE id = :id"),
            {"id": period_id},
        )
    ).one_or_none()
    if row is None:
        raise PeriodNotFound(f"settlement period {period_id} not found")
    return _period(row, partner_view=partner_id is not None)


async def get_period_by_range(
    conn: AsyncConnection, *, period_start: datetime, period_end: datetime
) -> Period | None:
    """The period with exactly these bounds, if there is one."""
    row = (
        await conn.execute(
            text(
                f"SELECT {_PERIOD_COLUMNS} FROM settlement_periods "
                "WHERE period_start = :s AND period_end = :e"
            ),
            {"s": period_start, "e": period_end},
        )
    ).one_or_none()
    return None if row is None else _period(row)


async def list_periods(
    conn: AsyncConnection,
    *,
    first: int = 20,
    before: datetime | None = None,
    status: str | None = None,
    partner_id: uuid.UUID | None = None,
) -> list[Period]:
    """Periods newest first, keyset-paginated by `period_start` (unique: periods never overlap)."""
    rows = await conn.execute(
        text(
            f"SELECT {_PERIOD_COLUMNS} FROM settlement_periods "
            "WHERE (CAST(:before AS timestamptz) IS NULL OR period_start < :before) "
            "AND (CAST(:status AS text) IS NULL OR status = :status) "
            "ORDER BY period_start DESC LIMIT :n"
        ),
        {"before": before, "status": status, "n": max(1, min(first, 500))},
    )
    return [_period(r, partner_view=partner_id is not None) for r in rows]


_STATEMENT_COLUMNS = (
    "s.period_id, s.partner_id, s.issued_points, s.reversed_points, s.redeemed_points, "
    "s.returned_points, s.issuance_charge, s.reimbursement, s.net, s.breakage_points, "
    "s.breakage_value, s.adjustment_count, s.adjustment_net, s.unpriced_events, p.currency"
)


def _statement(r: Any) -> Statement:
    cur = r.currency

    def m(v: Decimal) -> Money:
        return Money(quantize(v, cur), cur)

    return Statement(
        r.period_id,
        r.partner_id,
        int(r.issued_points),
        int(r.reversed_points),
        int(r.redeemed_points),
        int(r.returned_points),
        m(r.issuance_charge),
        m(r.reimbursement),
        m(r.net),
        int(r.breakage_points),
        m(r.breakage_value),
        int(r.adjustment_count),
        m(r.adjustment_net),
        int(r.unpriced_events),
    )


async def statements(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> list[Statement]:
    """The period's statements by partner id; with `partner_id`, only that partner's."""
    await get_period(conn, period_id=period_id)
    rows = await conn.execute(
        text(
            f"SELECT {_STATEMENT_COLUMNS} FROM settlement_statements s "
            "JOIN settlement_periods p ON p.id = s.period_id "
            "WHERE s.period_id = :p "
            "AND (CAST(:partner AS uuid) IS NULL OR s.partner_id = :partner) "
            "ORDER BY s.partner_id"
        ),
        {"p": period_id, "partner": partner_id},
    )
    return [_statement(r) for r in rows]


async def matrix(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> list[MatrixCell]:
    """The inter-partner matrix; with `partner_id`, only the cells in its row or column."""
    await get_period(conn, period_id=period_id)
    rows = await conn.execute(
        text(
            "SELECT m.issuer_id, m.redeemer_id, m.points, m.value, p.currency "
            "FROM settlement_matrix m JOIN settlement_periods p ON p.id = m.period_id "
            "WHERE m.period_id = :p AND (CAST(:partner AS uuid) IS NULL "
            "OR m.issuer_id = :partner OR m.redeemer_id = :partner) "
            "ORDER BY m.issuer_id, m.redeemer_id"
        ),
        {"p": period_id, "partner": partner_id},
    )
    return [
        MatrixCell(
            r.issuer_id,
            r.redeemer_id,
            int(r.points),
            Money(quantize(r.value, r.currency), r.currency),
        )
        for r in rows
    ]


async def adjustments(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> list[Adjustment]:
    """Late events settled in the period, each naming the closed period it adjusts."""
    await get_period(conn, period_id=period_id)
    rows = await conn.execute(
        text(
            "SELECT a.transaction_id, a.partner_id, a.adjusts_period_id, a.kind, a.points, "
            "a.unit_price, a.amount, a.ref, a.effective_at, a.recorded_at, p.currency "
            "FROM settlement_adjustments a JOIN settlement_periods p ON p.id = a.period_id "
            "WHERE a.period_id = :p "
            "AND (CAST(:partner AS uuid) IS NULL OR a.partner_id = :partner) "
            "ORDER BY a.effective_at, a.transaction_id, a.partner_id"
        ),
        {"p": period_id, "partner": partner_id},
    )
    return [
        Adjustment(
            r.transaction_id,
            r.partner_id,
            r.adjusts_period_id,
            r.kind,
            int(r.points),
            r.unit_price,
            Money(r.amount, r.currency),
            r.ref,
            r.effective_at,
            r.recorded_at,
        )
        for r in rows
    ]


async def payment_instructions(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> Payments:
    """One transfer per partner, to or from the operator; with the operator's side (its margin)
    they sum to zero."""
    period = await get_period(conn, period_id=period_id, partner_id=partner_id)
    items = instructions(await statements(conn, period_id=period_id, partner_id=partner_id))
    return Payments(period_id, items, period.operator_margin)


def instructions(statements: Sequence[Statement]) -> list[PaymentInstruction]:
    """One transfer per statement: the operator pays a positive net, the partner a negative one."""
    items = []
    for s in statements:
        amount = Money(abs(s.net.amount), s.net.currency)
        if s.net.amount > 0:
            items.append(PaymentInstruction(s.partner_id, "operator", "partner", amount, s.net))
        elif s.net.amount < 0:
            items.append(PaymentInstruction(s.partner_id, "partner", "operator", amount, s.net))
        else:
            items.append(PaymentInstruction(s.partner_id, "none", "none", amount, s.net))
    return items


# Batch reads: the same views for several periods in ONE statement each (a GraphQL request's
# DataLoaders: a page of periods with their statements, matrix and adjustments costs a fixed
# number of statements, not a few per period). Periods that do not exist map to empty lists.


async def statements_many(
    conn: AsyncConnection,
    *,
    period_ids: Sequence[uuid.UUID],
    partner_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[Statement]]:
    """`statements` of several periods, by period id, in one query."""
    rows = await conn.execute(
        text(
            f"SELECT {_STATEMENT_COLUMNS} FROM settlement_statements s "
            "JOIN settlement_periods p ON p.id = s.period_id "
            "WHERE s.period_id = ANY(CAST(:ids AS uuid[])) "
            "AND (CAST(:partner AS uuid) IS NULL OR s.partner_id = :partner) "
            "ORDER BY s.period_id, s.partner_id"
        ),
        {"ids": list(period_ids), "partner": partner_id},
    )
    found: dict[uuid.UUID, list[Statement]] = {pid: [] for pid in period_ids}
    for r in rows:
        found[r.period_id].append(_statement(r))
    return found


async def matrix_many(
    conn: AsyncConnection,
    *,
    period_ids: Sequence[uuid.UUID],
    partner_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[MatrixCell]]:
    """`matrix` of several periods, by period id, in one query."""
    rows = await conn.execute(
        text(
            "SELECT m.period_id, m.issuer_id, m.redeemer_id, m.points, m.value, p.currency "
            "FROM settlement_matrix m JOIN settlement_periods p ON p.id = m.period_id "
            "WHERE m.period_id = ANY(CAST(:ids AS uuid[])) AND (CAST(:partner AS uuid) IS NULL "
            "OR m.issuer_id = :partner OR m.redeemer_id = :partner) "
            "ORDER BY m.period_id, m.issuer_id, m.redeemer_id"
        ),
        {"ids": list(period_ids), "partner": partner_id},
    )
    found: dict[uuid.UUID, list[MatrixCell]] = {pid: [] for pid in period_ids}
    for r in rows:
        found[r.period_id].append(
            MatrixCell(
                r.issuer_id,
                r.redeemer_id,
                int(r.points),
                Money(quantize(r.value, r.currency), r.currency),
            )
        )
    return found


async def adjustments_many(
    conn: AsyncConnection,
    *,
    period_ids: Sequence[uuid.UUID],
    partner_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[Adjustment]]:
    """`adjustments` of several periods, by period id, in one query."""
    rows = await conn.execute(
        text(
            "SELECT a.period_id, a.transaction_id, a.partner_id, a.adjusts_period_id, a.kind, "
            "a.points, a.unit_price, a.amount, a.ref, a.effective_at, a.recorded_at, p.currency "
            "FROM settlement_adjustments a JOIN settlement_periods p ON p.id = a.period_id "
            "WHERE a.period_id = ANY(CAST(:ids AS uuid[])) "
            "AND (CAST(:partner AS uuid) IS NULL OR a.partner_id = :partner) "
            "ORDER BY a.period_id, a.effective_at, a.transaction_id, a.partner_id"
        ),
        {"ids": list(period_ids), "partner": partner_id},
    )
    found: dict[uuid.UUID, list[Adjustment]] = {pid: [] for pid in period_ids}
    for r in rows:
        found[r.period_id].append(
            Adjustment(
                r.transaction_id,
                r.partner_id,
                r.adjusts_period_id,
                r.kind,
                int(r.points),
                r.unit_price,
                Money(r.amount, r.currency),
                r.ref,
                r.effective_at,
                r.recorded_at,
            )
        )
    return found


async def payment_instructions_many(
    conn: AsyncConnection,
    *,
    period_ids: Sequence[uuid.UUID],
    partner_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[PaymentInstruction]]:
    """The payment instructions of several periods, by period id, in one query."""
    found = await statements_many(conn, period_ids=period_ids, partner_id=partner_id)
    return {pid: instructions(rows) for pid, rows in found.items()}


# ---------------------------------------------------------------------------------------------
# Running a period


def _validate_range(
    period_start: datetime, period_end: datetime, now: datetime
) -> tuple[datetime, datetime]:
    try:
        start, end = ensure_aware(period_start), ensure_aware(period_end)
    except ValueError:
        raise InvalidPeriod("periodStart and periodEnd must carry a time zone") from None
    if end <= start:
        raise InvalidPeriod("periodEnd must be after periodStart")
    if end - start > MAX_PERIOD:
        raise InvalidPeriod(f"a period is at most {MAX_PERIOD.days} days long")
    if start > now:
        raise InvalidPeriod(
            "a period can be run once it has started (a range in the past or present)"
        )
    return start, end


async def _create_period(
    conn: AsyncConnection, *, start: datetime, end: datetime, kind: str, currency: str, actor: str
) -> uuid.UUID | None:
    """Insert a period; None when it would overlap another (the exclusion constraint)."""
    period_id = uuid7()
    try:
        async with conn.begin_nested():
            await conn.execute(
                text(
                    "INSERT INTO settlement_periods (id, period_start, period_end, kind, currency, "
                    "created_by) VALUES (:id, :s, :e, :kind, :cur, :actor)"
                ),
                {
                    "id": period_id,
                    "s": start,
                    "e": end,
                    "kind": kind,
                    "cur": currency,
                    "actor": actor,
                },
            )
    except IntegrityError as exc:
        if "ex_settlement_periods_overlap" in str(exc.orig):
            return None
        raise
    return period_id


async def run(
    conn: AsyncConnection,
    *,
    period_start: datetime,
    period_end: datetime,
    actor: str,
    currency: str,
    now: datetime | None = None,
) -> Period:
    """Settle the range [period_start, period_end): create the period if there is none with
    these bounds (settled in `currency`), (re)compute it while open, return it frozen and
    unchanged once closed."""
    start, end = _validate_range(period_start, period_end, _now(now))
    existing = await get_period_by_range(conn, period_start=start, period_end=end)
    if existing is not None:
        return await run_period(conn, period_id=existing.id, actor=actor, now=now)
    period_id = await _create_period(
        conn,
        start=start,
        end=end,
        kind=PeriodKind.CUSTOM,
        currency=currency.upper(),
        actor=actor,
    )
    if period_id is None:
        # Another period holds part of the range (or a concurrent run just created this one).
        existing = await get_period_by_range(conn, period_start=start, period_end=end)
        if existing is None:
            raise PeriodOverlap(await _overlap_message(conn, start, end))
        period_id = existing.id
    return await run_period(conn, period_id=period_id, actor=actor, now=now)


async def _overlap_message(conn: AsyncConnection, start: datetime, end: datetime) -> str:
    rows = (
        await conn.execute(
            text(
                "SELECT id, period_start, period_end FROM settlement_periods "
                "WHERE tstzrange(period_start, period_end) && tstzrange(:s, :e) "
                "ORDER BY period_start"
            ),
            {"s": start, "e": end},
        )
    ).all()
    names = ", ".join(
        f"{r.id} [{r.period_start.isoformat()}, {r.period_end.isoformat()})" for r in rows
    )
    return f"the range overlaps existing settlement periods with other bounds: {names}"


async def run_period(
    conn: AsyncConnection, *, period_id: uuid.UUID, actor: str, now: datetime | None = None
) -> Period:
    """Recompute an open period from the ledger (idempotent); a closed one is returned as is."""
    await _lock_state(conn)
    period = await _lock_period(conn, period_id)
    if period.is_closed:
        return period
    if period.period_start > _now(now):
        raise InvalidPeriod("a period can be run once it has started")
    await collect_late_events(conn)
    await _compute(conn, period, actor=actor)
    return await get_period(conn, period_id=period_id)


async def _lock_state(conn: AsyncConnection) -> datetime | None:
    return (  # type: ignore[no-any-return]
        await conn.execute(
            text("SELECT late_watermark FROM settlement_state WHERE id = 1 FOR UPDATE")
        )
    ).scalar_one()


async def _lock_period(conn: AsyncConnection, period_id: uuid.UUID) -> Period:
    row = (
        await conn.execute(
            text(f"SELECT {_PERIOD_COLUMNS} FROM settlement_periods WHERE id = :id FOR UPDATE"),
            {"id": period_id},
        )
    ).one_or_none()
    if row is None:
        raise PeriodNotFound(f"settlement period {period_id} not found")
    return _period(row)


# Late events: transactions whose effective time lies in a closed period but which that period
# does not cover (they were recorded, or committed, after it closed). Each goes to the earliest
# open period starting at or after the end of the closed one. Only transactions recorded since
# the watermark are read (BRIN on recorded_at): the watermark never passes the start of a
# transaction still running, so nothing committed later can be older than it.
_LATE_WATERMARK = text(
    """
    SELECT least(now() - CAST(:margin AS interval),
                 (SELECT min(xact_start) FROM pg_stat_activity
                  WHERE datname = current_database() AND xact_start IS NOT NULL))
    """
)

_LATE_EVENTS = text(
    """
    WITH closed AS (
        SELECT c.id, c.period_start, c.period_end, c.frozen_before,
               (SELECT o.id FROM settlement_periods o
                WHERE o.status = 'open' AND o.period_start >= c.period_end
                ORDER BY o.period_start LIMIT 1) AS target
        FROM settlement_periods c WHERE c.status = 'closed'
    ), late AS (
        SELECT t.id, c.id AS closed_id, c.target
        FROM ledger_events t
        JOIN closed c ON t.effective_at >= c.period_start AND t.effective_at < c.period_end
        WHERE t.recorded_at >= coalesce(CAST(:watermark AS timestamptz), '-infinity')
          AND t.recorded_at >= c.frozen_before
          AND NOT EXISTS (SELECT 1 FROM settlement_assignments a WHERE a.transaction_id = t.id)
    ), ins AS (
        INSERT INTO settlement_assignments (transaction_id, period_id, adjusts_period_id)
        SELECT id, target, closed_id FROM late WHERE target IS NOT NULL
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins) AS assigned,
           (SELECT count(*) FROM late WHERE target IS NULL) AS waiting
    """
)


async def _safe_watermark(conn: AsyncConnection) -> datetime:
    """An instant before which every ledger transaction has finished: the start of the oldest
    transaction running in this database, and never later than now - LATE_MARGIN."""
    margin = f"{int(LATE_MARGIN.total_seconds())} seconds"
    return (await conn.execute(_LATE_WATERMARK, {"margin": margin})).scalar_one()  # type: ignore[no-any-return]


async def collect_late_events(conn: AsyncConnection) -> int:
    """Assign late events to the next open period (runs and closes do this first); returns how
    many were found. Late events with no open period after them wait for the next one."""
    watermark = await _lock_state(conn)
    new_watermark = await _safe_watermark(conn)
    any_closed = (
        await conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM settlement_periods WHERE status = 'closed')")
        )
    ).scalar_one()
    assigned = waiting = 0
    if any_closed:
        row = (await conn.execute(_LATE_EVENTS, {"watermark": watermark})).one()
        assigned, waiting = int(row.assigned), int(row.waiting)
    if waiting == 0 and (watermark is None or new_watermark > watermark):
        await conn.execute(
            text("UPDATE settlement_state SET late_watermark = :w WHERE id = 1"),
            {"w": new_watermark},
        )
    return assigned


# The period's events, priced, in a temporary table that every aggregate below reads: one
# scan of the ledger per run, and one consistent set for the statements and the assignment.
def _materialize_sql(frozen: bool) -> str:
    candidates = (CANDIDATES_FROZEN if frozen else CANDIDATES_OPEN).format(where="")
    return f"CREATE TEMPORARY TABLE settle_tx ON COMMIT DROP AS {priced(candidates)}"


_STATEMENT_SUMS = text(
    """
    SELECT partner_id,
           coalesce(sum(points) FILTER (WHERE kind = 'earn'), 0) AS issued,
           coalesce(sum(points) FILTER (WHERE kind = 'reversal'), 0) AS reversed,
           coalesce(sum(points) FILTER (WHERE kind = 'capture'), 0) AS redeemed,
           coalesce(sum(points) FILTER (WHERE kind = 'return'), 0) AS returned,
           coalesce(sum(points * price) FILTER (WHERE kind = 'earn'), 0)
             - coalesce(sum(points * price) FILTER (WHERE kind = 'reversal'), 0) AS charge,
           coalesce(sum(points * price) FILTER (WHERE kind = 'capture'), 0)
             - coalesce(sum(points * price) FILTER (WHERE kind = 'return'), 0) AS reimbursement,
           count(*) FILTER (WHERE adjusts IS NOT NULL) AS adjustments,
           coalesce(sum(CASE WHEN kind IN ('earn', 'return') THEN -points * price
                             ELSE points * price END) FILTER (WHERE adjusts IS NOT NULL), 0)
             AS adjustment_net,
           count(*) FILTER (WHERE price IS NULL) AS unpriced
    FROM settle_tx
    WHERE kind IN ('earn', 'reversal', 'capture', 'return')
    GROUP BY partner_id
    """
)

# Breakage: what expiry took from lots in the period, at the issue price of each lot's earn.
_BREAKAGE = text(
    f"""
    WITH {PRICE_CTE}
    SELECT l.issuer_id, x.adjusts,
           CASE WHEN x.adjusts IS NOT NULL THEN x.id END AS transaction_id,
           -sum(lp.points) AS points,
           -sum(lp.points * pr.issue_price) AS value,
           count(*) FILTER (WHERE pr.issue_price IS NULL) AS unpriced,
           min(x.effective_at) AS effective_at, min(x.recorded_at) AS recorded_at
    FROM settle_tx x
    JOIN ledger_lot_postings lp ON lp.transaction_id = x.id AND lp.kind = 'expiry'
    JOIN ledger_lots l ON l.id = lp.lot_id
    JOIN ledger_events e ON e.id = l.earn_tx_id
    {price_join("pr", "l.issuer_id", "e.effective_at", "e.recorded_at")}
    WHERE x.kind = 'expiry'
    GROUP BY l.issuer_id, x.adjusts, CASE WHEN x.adjusts IS NOT NULL THEN x.id END
    """
)

# The matrix: captured (minus returned) points by the lots' issuer and the redeeming partner,
# valued at the redemption price of the capture (a return carries its capture's price).
_MATRIX = text(
    """
    SELECT l.issuer_id, x.partner_id AS redeemer_id,
           -sum(lp.points) AS points, -sum(lp.points * x.price) AS value
    FROM settle_tx x
    JOIN ledger_lot_postings lp ON lp.transaction_id = x.id AND lp.kind IN ('capture', 'return')
    JOIN ledger_lots l ON l.id = lp.lot_id
    WHERE x.kind IN ('capture', 'return')
    GROUP BY l.issuer_id, x.partner_id
    """
)

_ADJUSTMENT_LINES = text(
    """
    SELECT id, partner_id, adjusts, kind, points, price, ref, effective_at, recorded_at
    FROM settle_tx
    WHERE adjusts IS NOT NULL AND kind IN ('earn', 'reversal', 'capture', 'return')
    """
)

_COUNTS = text(
    "SELECT count(*) AS n, count(*) FILTER (WHERE adjusts IS NOT NULL) AS adjustments "
    "FROM settle_tx"
)

# The seal's digest of the transactions a period covers: sha256 over their sorted ids.
_DIGEST = text(
    """
    SELECT encode(sha256(convert_to(coalesce(string_agg(CAST(id AS text), E'\\n' ORDER BY id),
                                             ''), 'UTF8')), 'hex') AS digest
    FROM settle_tx
    """
)


@dataclass
class _Computed:
    statements: list[dict[str, Any]]
    matrix: list[dict[str, Any]]
    adjustments: list[dict[str, Any]]
    transaction_count: int
    adjustment_count: int
    digest: str | None = None


async def _aggregate(
    conn: AsyncConnection, period: Period, *, frozen: bool, digest: bool = False
) -> _Computed:
    """Price and aggregate the period's events (set-based; a few rows come back per partner)."""
    cur = period.currency
    await conn.execute(text("DROP TABLE IF EXISTS pg_temp.settle_tx"))
    await conn.execute(
        text(_materialize_sql(frozen)),
        {
            "start": period.period_start,
            "end": period.period_end,
            "period": period.id,
            "currency": cur,
            "frozen_before": period.frozen_before,
        },
    )
    await conn.execute(text("ANALYZE pg_temp.settle_tx"))
    by_partner: dict[uuid.UUID, dict[str, Any]] = {}

    def row_for(partner: uuid.UUID) -> dict[str, Any]:
        if partner not in by_partner:
            by_partner[partner] = {
                "partner_id": partner,
                "issued": 0,
                "reversed": 0,
                "redeemed": 0,
                "returned": 0,
                "charge": Decimal(0),
                "reimbursement": Decimal(0),
                "adjustments": 0,
                "adjustment_net": Decimal(0),
                "unpriced": 0,
                "breakage_points": 0,
                "breakage_value": Decimal(0),
            }
        return by_partner[partner]

    for r in await conn.execute(_STATEMENT_SUMS):
        s = row_for(r.partner_id)
        s.update(
            issued=int(r.issued),
            reversed=int(r.reversed),
            redeemed=int(r.redeemed),
            returned=int(r.returned),
            charge=r.charge,
            reimbursement=r.reimbursement,
            adjustments=int(r.adjustments),
            adjustment_net=r.adjustment_net,
            unpriced=int(r.unpriced),
        )
    adjustment_lines = []
    for r in await conn.execute(_ADJUSTMENT_LINES):
        exact = Decimal(r.points) * (r.price or Decimal(0)) * NET_SIGN[r.kind]
        adjustment_lines.append(
            {
                "transaction_id": r.id,
                "partner_id": r.partner_id,
                "adjusts": r.adjusts,
                "kind": r.kind,
                "points": int(r.points),
                "unit_price": r.price,
                "amount": exact,
                "ref": r.ref,
                "effective_at": r.effective_at,
                "recorded_at": r.recorded_at,
            }
        )
    for r in await conn.execute(_BREAKAGE, {"currency": cur}):
        s = row_for(r.issuer_id)
        s["breakage_points"] += int(r.points)
        s["breakage_value"] += r.value or Decimal(0)
        s["unpriced"] += int(r.unpriced)
        if r.adjusts is not None:
            s["adjustments"] += 1
            adjustment_lines.append(
                {
                    "transaction_id": r.transaction_id,
                    "partner_id": r.issuer_id,
                    "adjusts": r.adjusts,
                    "kind": "expiry",
                    "points": int(r.points),
                    "unit_price": None,
                    "amount": r.value or Decimal(0),
                    "ref": None,
                    "effective_at": r.effective_at,
                    "recorded_at": r.recorded_at,
                }
            )
    statements_out = []
    for s in sorted(by_partner.values(), key=lambda s: s["partner_id"]):
        charge = quantize(s["charge"], cur)  # rounded once per partner and period
        reimbursement = quantize(s["reimbursement"], cur)
        statements_out.append(
            {
                **s,
                "charge": charge,
                "reimbursement": reimbursement,
                "net": reimbursement - charge,
                "adjustment_net": quantize(s["adjustment_net"], cur),
                "breakage_value": quantize(s["breakage_value"], cur),
            }
        )
    cells = [
        {
            "issuer_id": r.issuer_id,
            "redeemer_id": r.redeemer_id,
            "points": int(r.points),
            "value": quantize(r.value or Decimal(0), cur),
        }
        for r in await conn.execute(_MATRIX)
        if r.points != 0 or (r.value or 0) != 0
    ]
    cells.sort(key=lambda c: (c["issuer_id"], c["redeemer_id"]))
    counts = (await conn.execute(_COUNTS)).one()
    adjustment_lines.sort(key=lambda a: (a["effective_at"], a["transaction_id"], a["partner_id"]))
    digest_hex = (await conn.execute(_DIGEST)).scalar_one() if digest else None
    return _Computed(
        statements_out, cells, adjustment_lines, int(counts.n), len(adjustment_lines), digest_hex
    )


async def _store(conn: AsyncConnection, period: Period, result: _Computed, *, actor: str) -> None:
    """Replace the open period's contents with `result` (one statement per table)."""
    p = period.id
    for table in ("settlement_statements", "settlement_matrix", "settlement_adjustments"):
        await conn.execute(text(f"DELETE FROM {table} WHERE period_id = :p"), {"p": p})
    st = result.statements
    if st:
        await conn.execute(
            text(
                """
                INSERT INTO settlement_statements (period_id, partner_id, issued_points,
                    reversed_points, redeemed_points, returned_points, issuance_charge,
                    reimbursement, net, breakage_points, breakage_value, adjustment_count,
                    adjustment_net, unpriced_events)
                SELECT :p, * FROM unnest(CAST(:partner AS uuid[]), CAST(:issued AS bigint[]),
                    CAST(:reversed AS bigint[]), CAST(:redeemed AS bigint[]),
                    CAST(:returned AS bigint[]), CAST(:charge AS numeric[]),
                    CAST(:reimbursement AS numeric[]), CAST(:net AS numeric[]),
                    CAST(:bp AS bigint[]), CAST(:bv AS numeric[]), CAST(:adj AS bigint[]),
                    CAST(:adjnet AS numeric[]), CAST(:unpriced AS bigint[]))
                """
            ),
            {
                "p": p,
                "partner": [s["partner_id"] for s in st],
                "issued": [s["issued"] for s in st],
                "reversed": [s["reversed"] for s in st],
                "redeemed": [s["redeemed"] for s in st],
                "returned": [s["returned"] for s in st],
                "charge": [s["charge"] for s in st],
                "reimbursement": [s["reimbursement"] for s in st],
                "net": [s["net"] for s in st],
                "bp": [s["breakage_points"] for s in st],
                "bv": [s["breakage_value"] for s in st],
                "adj": [s["adjustments"] for s in st],
                "adjnet": [s["adjustment_net"] for s in st],
                "unpriced": [s["unpriced"] for s in st],
            },
        )
    mx = result.matrix
    if mx:
        await conn.execute(
            text(
                "INSERT INTO settlement_matrix (period_id, issuer_id, redeemer_id, points, value) "
                "SELECT :p, * FROM unnest(CAST(:i AS uuid[]), CAST(:r AS uuid[]), "
                "CAST(:pts AS bigint[]), CAST(:v AS numeric[]))"
            ),
            {
                "p": p,
                "i": [c["issuer_id"] for c in mx],
                "r": [c["redeemer_id"] for c in mx],
                "pts": [c["points"] for c in mx],
                "v": [c["value"] for c in mx],
            },
        )
    adj = result.adjustments
    if adj:
        await conn.execute(
            text(
                """
                INSERT INTO settlement_adjustments (period_id, transaction_id, partner_id,
                    adjusts_period_id, kind, points, unit_price, amount, ref, effective_at,
                    recorded_at)
                SELECT :p, * FROM unnest(CAST(:tx AS uuid[]), CAST(:partner AS uuid[]),
                    CAST(:adjusts AS uuid[]), CAST(:kind AS text[]), CAST(:points AS bigint[]),
                    CAST(:price AS numeric[]), CAST(:amount AS numeric[]), CAST(:ref AS text[]),
                    CAST(:eff AS timestamptz[]), CAST(:rec AS timestamptz[]))
                """
            ),
            {
                "p": p,
                "tx": [a["transaction_id"] for a in adj],
                "partner": [a["partner_id"] for a in adj],
                "adjusts": [a["adjusts"] for a in adj],
                "kind": [a["kind"] for a in adj],
                "points": [a["points"] for a in adj],
                "price": [a["unit_price"] for a in adj],
                "amount": [a["amount"] for a in adj],
                "ref": [a["ref"] for a in adj],
                "eff": [a["effective_at"] for a in adj],
                "rec": [a["recorded_at"] for a in adj],
            },
        )
    margin = -sum((s["net"] for s in st), Decimal(0))
    await conn.execute(
        text(
            """
            UPDATE settlement_periods SET run_at = now(), run_by = :actor,
                transaction_count = :n, adjustment_count = :adj, unpriced_events = :unpriced,
                operator_margin = :margin, breakage_points = :bp, breakage_value = :bv
            WHERE id = :p
            """
        ),
        {
            "p": p,
            "actor": actor,
            "n": result.transaction_count,
            "adj": result.adjustment_count,
            "unpriced": sum(s["unpriced"] for s in st),
            "margin": margin,
            "bp": sum(s["breakage_points"] for s in st),
            "bv": sum((s["breakage_value"] for s in st), Decimal(0)),
        },
    )


async def _compute(
    conn: AsyncConnection,
    period: Period,
    *,
    actor: str,
    frozen_before: datetime | None = None,
) -> _Computed:
    closing = frozen_before is not None
    result = await _aggregate(conn, period, frozen=False, digest=closing)
    await _store(conn, period, result, actor=actor)
    if closing:
        # The same materialised set that the statements count. Its transactions recorded before
        # `frozen_before` are covered by the period's range alone; the few recorded since (the
        # last minutes, or still running when the close began) are recorded one by one.
        await conn.execute(
            text(
                "INSERT INTO settlement_assignments (transaction_id, period_id) "
                "SELECT id, :p FROM settle_tx WHERE adjusts IS NULL AND recorded_at >= :fb"
            ),
            {"p": period.id, "fb": frozen_before},
        )
    await conn.execute(text("DROP TABLE IF EXISTS pg_temp.settle_tx"))
    return result


# ---------------------------------------------------------------------------------------------
# Closing


async def settled_in(conn: AsyncConnection, *, transaction_id: uuid.UUID) -> uuid.UUID | None:
    """The period that settles a ledger transaction (an open one: as things stand); None when
    no period covers it yet (no period for its time, or a late event waiting for one)."""
    row = (
        await conn.execute(
            text(
                """
                SELECT coalesce(
                    (SELECT a.period_id FROM settlement_assignments a
                     WHERE a.transaction_id = t.id),
                    (SELECT p.id FROM settlement_periods p
                     WHERE t.effective_at >= p.period_start AND t.effective_at < p.period_end
                       AND (p.status = 'open' OR t.recorded_at < p.frozen_before))) AS period_id
                FROM ledger_events t WHERE t.id = :t
                """
            ),
            {"t": transaction_id},
        )
    ).one_or_none()
    return None if row is None else row.period_id


async def close(
    conn: AsyncConnection, *, period_id: uuid.UUID, actor: str, now: datetime | None = None
) -> Period:
    """Close a period: compute it a last time, record what it covers, seal it.
    Refused while its end is in the future or expired points in it await the expiry run.
    Closing a closed period returns it unchanged."""
    now = _now(now)
    await _lock_state(conn)
    period = await _lock_period(conn, period_id)
    if period.is_closed:
        return period
    if period.period_end > now:
        raise PeriodNotEnded(_not_ended(period))
    pending = (
        await conn.execute(
            text("SELECT count(*) FROM ledger_lots WHERE remaining > 0 AND expires_at < :end"),
            {"end": period.period_end},
        )
    ).scalar_one()
    if pending:
        raise ExpiryPending(
            f"{pending} lots expired before the period end still hold points: run the expiry up to "
            "the period end first (expire_and_close does)"
        )
    await collect_late_events(conn)
    # Every transaction recorded before this instant had committed (or rolled back) before the
    # ledger is read below: the watermark never passes the start of a running transaction.
    frozen_before = await _safe_watermark(conn)
    result = await _compute(conn, period, actor=actor, frozen_before=frozen_before)
    await _snapshot_liability(conn, period)
    # Seal what is stored: the same text `verify` recomputes from the stored rows.
    await conn.execute(
        text(
            "UPDATE settlement_periods SET transactions_digest = :d, frozen_before = :fb "
            "WHERE id = :p"
        ),
        {"d": result.digest, "fb": frozen_before, "p": period_id},
    )
    content_hash = hashlib.sha256((await seal_text(conn, period_id=period_id)).encode()).hexdigest()
    await conn.execute(
        text(
            "UPDATE settlement_periods SET status = 'closed', closed_at = now(), "
            "closed_by = :actor, "
            "content_hash = :h WHERE id = :p"
        ),
        {"actor": actor, "h": content_hash, "p": period_id},
    )
    return await get_period(conn, period_id=period_id)


async def expire_and_close(
    engine: AsyncEngine,
    *,
    period_id: uuid.UUID,
    actor: str,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Period:
    """Run the expiry up to the period's end (its breakage lands in the period), then close it
    in one unit of work. What closeSettlementPeriod should call."""
    period, _ = await _expire_and_close(
        engine, period_id=period_id, actor=actor, now=_now(now), progress=progress
    )
    return period


async def _expire_and_close(
    engine: AsyncEngine,
    *,
    period_id: uuid.UUID,
    actor: str,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Period, int]:
    async with engine.connect() as conn:
        period = await get_period(conn, period_id=period_id)
    if period.is_closed:
        return period, 0
    if period.period_end > now:
        raise PeriodNotEnded(_not_ended(period))
    # The last instant of [start, end): lots expired by then are swept with that effective time.
    report = await ledger.expire_points(
        engine,
        at=period.period_end - ONE_MICROSECOND,
        now=now,
        actor="system:settlement",
        progress=progress,
    )
    async with engine.begin() as conn:
        return await close(conn, period_id=period_id, actor=actor, now=now), report.points


def _not_ended(period: Period) -> str:
    end = period.period_end.isoformat()
    return f"the period ends at {end}, in the future: it cannot be closed yet"


def _dec(value: Decimal | None, places: int) -> str:
    if value is None:
        return "-"
    return f"{Decimal(value).quantize(Decimal(1).scaleb(-places)):f}"


def _ts(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).isoformat()


async def seal_text(conn: AsyncConnection, *, period_id: uuid.UUID) -> str:
    """The canonical text the seal hashes: the period, the digest of the transactions it covers,
    its statements, matrix, adjustments and liability, one line each, in a fixed order."""
    p = (
        await conn.execute(
            text(f"SELECT {_PERIOD_COLUMNS} FROM settlement_periods WHERE id = :id"),
            {"id": period_id},
        )
    ).one()
    places = minor_units(p.currency)
    lines = [
        SEAL_VERSION,
        f"period {p.id} {_ts(p.period_start)} {_ts(p.period_end)} {p.currency}",
        f"covers recorded-before {_ts(p.frozen_before)}",
        f"transactions {p.transaction_count} {p.transactions_digest}",
        f"totals {_dec(p.operator_margin, places)} {p.breakage_points} "
        f"{_dec(p.breakage_value, places)} {p.adjustment_count} {p.unpriced_events}",
    ]
    for s in await statements(conn, period_id=period_id):
        lines.append(
            f"statement {s.partner_id} {s.issued_points} {s.reversed_points} {s.redeemed_points} "
            f"{s.returned_points} {_dec(s.issuance_charge.amount, places)} "
            f"{_dec(s.reimbursement.amount, places)} {_dec(s.net.amount, places)} "
            f"{s.breakage_points} {_dec(s.breakage_value.amount, places)} {s.adjustment_count} "
            f"{_dec(s.adjustment_net.amount, places)} {s.unpriced_events}"
        )
    for c in await matrix(conn, period_id=period_id):
        lines.append(
            f"matrix {c.issuer_id} {c.redeemer_id} {c.points} {_dec(c.value.amount, places)}"
        )
    for a in await adjustments(conn, period_id=period_id):
        lines.append(
            f"adjustment {a.transaction_id} {a.partner_id} {a.adjusts_period_id} {a.kind} "
            f"{a.points} "
            f"{_dec(a.unit_price, 8)} {_dec(a.amount.amount, 8)} {_ts(a.effective_at)}"
        )
    for r in await conn.execute(
        text(
            "SELECT issuer_id, points, value, issue_price, as_of FROM settlement_liability "
            "WHERE period_id = :p ORDER BY issuer_id"
        ),
        {"p": period_id},
    ):
        lines.append(
            f"liability {r.issuer_id} {r.points} {_dec(r.value, places)} "
            f"{_dec(r.issue_price, 8)} {_ts(r.as_of)}"
        )
    return "\n".join(lines) + "\n"


async def verify_many(
    conn: AsyncConnection, *, period_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Verification]:
    """`verify` for several periods on one connection: one query finds the closed ones, and only
    those are recomputed (an open period has no seal to check)."""
    rows = (
        await conn.execute(
            text("SELECT id, status FROM settlement_periods WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": list(period_ids)},
        )
    ).all()
    found: dict[uuid.UUID, Verification] = {}
    for r in rows:
        if r.status == PeriodStatus.CLOSED:
            found[r.id] = await verify(conn, period_id=r.id)
        else:
            found[r.id] = Verification(r.id, False, None, None, False, False)
    return found


async def verify(conn: AsyncConnection, *, period_id: uuid.UUID) -> Verification:
    """Check a closed period: its stored contents hash to its seal, and recomputing it from the
    ledger transactions assigned to it gives the same statements, matrix and adjustments."""
    period = await get_period(conn, period_id=period_id)
    if not period.is_closed:
        return Verification(period_id, False, None, None, False, False)
    computed = hashlib.sha256((await seal_text(conn, period_id=period_id)).encode()).hexdigest()
    fresh = await _aggregate(conn, period, frozen=True, digest=True)
    await conn.execute(text("DROP TABLE IF EXISTS pg_temp.settle_tx"))
    stored_st = {
        s.partner_id: (
            s.issued_points,
            s.reversed_points,
            s.redeemed_points,
            s.returned_points,
            s.issuance_charge.amount,
            s.reimbursement.amount,
            s.net.amount,
            s.breakage_points,
            s.breakage_value.amount,
            s.adjustment_count,
            s.adjustment_net.amount,
            s.unpriced_events,
        )
        for s in await statements(conn, period_id=period_id)
    }
    fresh_st = {
        s["partner_id"]: (
            s["issued"],
            s["reversed"],
            s["redeemed"],
            s["returned"],
            s["charge"],
            s["reimbursement"],
            s["net"],
            s["breakage_points"],
            s["breakage_value"],
            s["adjustments"],
            s["adjustment_net"],
            s["unpriced"],
        )
        for s in fresh.statements
    }
    stored_mx = {
        (c.issuer_id, c.redeemer_id): (c.points, c.value.amount)
        for c in await matrix(conn, period_id=period_id)
    }
    fresh_mx = {(c["issuer_id"], c["redeemer_id"]): (c["points"], c["value"]) for c in fresh.matrix}
    stored_adj = {
        (a.transaction_id, a.partner_id): (a.adjusts_period_id, a.kind, a.points, a.amount.amount)
        for a in await adjustments(conn, period_id=period_id)
    }
    fresh_adj = {
        (a["transaction_id"], a["partner_id"]): (a["adjusts"], a["kind"], a["points"], a["amount"])
        for a in fresh.adjustments
    }
    ledger_ok = (
        stored_st == fresh_st
        and stored_mx == fresh_mx
        and stored_adj == fresh_adj
        and fresh.digest == period.transactions_digest
        and fresh.transaction_count == period.transaction_count
    )
    return Verification(
        period_id, True, period.content_hash, computed, computed == period.content_hash, ledger_ok
    )


# ---------------------------------------------------------------------------------------------
# Liability


# Outstanding points at `at` by issuer, as the ledger knows them now: unexpired lots earned
# before `at`, with what they hold now (remaining + reserved by live holds) minus what their
# postings changed since. Reads only live lots and the postings since `at`.
_LIABILITY = text(
    f"""
    WITH {PRICE_CTE}, held AS (
        SELECT lot_id, points AS pts FROM ledger_lot_holds
    ), later AS (
        SELECT lot_id, sum(points) AS pts FROM ledger_lot_postings WHERE effective_at >= :at
        GROUP BY lot_id
    ), ids AS (
        SELECT id FROM ledger_lots WHERE remaining > 0 AND expires_at > :at
        UNION SELECT lot_id FROM held
        UNION SELECT lot_id FROM later
    ), outstanding AS (
        SELECT l.issuer_id,
               sum(l.remaining + coalesce(held.pts, 0) - coalesce(later.pts, 0)) AS points
        FROM ids JOIN ledger_lots l ON l.id = ids.id
        LEFT JOIN held ON held.lot_id = l.id
        LEFT JOIN later ON later.lot_id = l.id
        WHERE l.earned_at < :at AND l.expires_at > :at
          AND (CAST(:partner AS uuid) IS NULL OR l.issuer_id = :partner)
        GROUP BY l.issuer_id
    )
    SELECT o.issuer_id, o.points, pr.issue_price
    FROM outstanding o
    {price_join("pr", "o.issuer_id", "CAST(:at AS timestamptz)", "now()")}
    WHERE o.points <> 0
    ORDER BY o.issuer_id
    """
)


async def liability(
    conn: AsyncConnection,
    *,
    currency: str,
    at: datetime | None = None,
    partner_id: uuid.UUID | None = None,
) -> list[LiabilityLine]:
    """Outstanding points by issuing partner at `at` (default now) and their value in
    `currency` at the issue price in force then; with `partner_id`, only that issuer's line."""
    at = _now(at)
    cur = currency.upper()
    rows = await conn.execute(_LIABILITY, {"at": at, "partner": partner_id, "currency": cur})
    return [
        LiabilityLine(
            r.issuer_id,
            int(r.points),
            r.issue_price,
            Money(quantize(Decimal(r.points) * (r.issue_price or Decimal(0)), cur), cur),
            at,
        )
        for r in rows
    ]


async def _snapshot_liability(conn: AsyncConnection, period: Period) -> None:
    lines = await liability(conn, at=period.period_end, currency=period.currency)
    if lines:
        await conn.execute(
            text(
                "INSERT INTO settlement_liability "
                "(period_id, issuer_id, points, value, issue_price, as_of) "
                "SELECT :p, * FROM unnest(CAST(:i AS uuid[]), CAST(:pts AS bigint[]), "
                "CAST(:v AS numeric[]), CAST(:price AS numeric[]), CAST(:at AS timestamptz[]))"
            ),
            {
                "p": period.id,
                "i": [x.issuer_id for x in lines],
                "pts": [x.points for x in lines],
                "v": [x.value.amount for x in lines],
                "price": [x.issue_price for x in lines],
                "at": [x.as_of for x in lines],
            },
        )


async def liability_history(
    conn: AsyncConnection,
    *,
    partner_id: uuid.UUID | None = None,
    first: int = 24,
    before: datetime | None = None,
) -> list[LiabilitySnapshot]:
    """The liability at the end of each closed period, newest first."""
    periods = await list_periods(conn, first=first, before=before, status=PeriodStatus.CLOSED)
    if not periods:
        return []
    rows = await conn.execute(
        text(
            "SELECT period_id, issuer_id, points, value, issue_price, as_of "
            "FROM settlement_liability WHERE period_id = ANY(:ids) "
            "AND (CAST(:partner AS uuid) IS NULL OR issuer_id = :partner) "
            "ORDER BY issuer_id"
        ),
        {"ids": [p.id for p in periods], "partner": partner_id},
    )
    by_period: dict[uuid.UUID, list[LiabilityLine]] = {p.id: [] for p in periods}
    currency = {p.id: p.currency for p in periods}
    for r in rows:
        cur = currency[r.period_id]
        by_period[r.period_id].append(
            LiabilityLine(
                r.issuer_id,
                int(r.points),
                r.issue_price,
                Money(quantize(r.value, cur), cur),
                r.as_of,
            )
        )
    return [
        LiabilitySnapshot(
            p.id,
            p.period_start,
            p.period_end,
            by_period[p.id],
            sum(x.points for x in by_period[p.id]),
            Money(sum((x.value.amount for x in by_period[p.id]), Decimal(0)), p.currency),
        )
        for p in periods
    ]


# ---------------------------------------------------------------------------------------------
# The scheduled job


SETTLE_LOCK = 727_275  # pg advisory lock: one `coalition settle` at a time


def _gaps(
    start: datetime, end: datetime, taken: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """Parts of [start, end) not covered by the sorted, disjoint ranges `taken`."""
    gaps, cursor = [], start
    for s, e in taken:
        if e <= cursor or s >= end:
            continue
        if s > cursor:
            gaps.append((cursor, s))
        cursor = max(cursor, e)
        if cursor >= end:
            break
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


async def plan_periods(
    conn: AsyncConnection,
    *,
    now: datetime,
    granularity: str,
    timezone: str,
    currency: str,
    actor: str = "system:settle",
) -> int:
    """Create the periods of `granularity` missing between the ledger's first event and `now`
    (the current one included, open); ranges already covered, e.g. by an operator's custom
    period, are left alone and only the gaps around them are filled. Returns how many."""
    earliest = (
        await conn.execute(
            text(
                "SELECT least((SELECT min(effective_at) FROM ledger_events), "
                "(SELECT min(period_start) FROM settlement_periods))"
            )
        )
    ).scalar_one()
    if earliest is None or earliest > now:
        return 0
    taken = [
        (r.period_start, r.period_end)
        for r in await conn.execute(
            text("SELECT period_start, period_end FROM settlement_periods ORDER BY period_start")
        )
    ]
    cur = currency.upper()
    created = 0
    slot_start, slot_end = period_bounds(earliest, granularity=granularity, timezone=timezone)
    while slot_start <= now:
        for s, e in _gaps(slot_start, slot_end, taken):
            if await _create_period(
                conn, start=s, end=e, kind=granularity, currency=cur, actor=actor
            ):
                created += 1
        slot_start, slot_end = period_bounds(slot_end, granularity=granularity, timezone=timezone)
    return created


async def settle_due(
    engine: AsyncEngine,
    *,
    granularity: str,
    timezone: str,
    close_delay: timedelta,
    currency: str,
    now: datetime | None = None,
    actor: str = "system:settle",
    progress: Callable[[int, int, str], None] | None = None,
) -> SettleReport:
    """Create the due periods of `granularity` (days, weeks or months starting in `timezone`,
    settled in `currency`), run every open one that has started and close (expiry first) those
    whose end (plus `close_delay`) has passed. Safe to run from cron every few minutes: one job
    at a time (an advisory lock), each period in its own unit of work, idempotent."""
    now = _now(now)
    delay = close_delay
    if granularity not in GRANULARITIES:
        raise InvalidPeriod(f"period must be one of {', '.join(GRANULARITIES)}")
    async with engine.connect() as lock_conn:
        got = (
            await lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SETTLE_LOCK})
        ).scalar_one()
        await lock_conn.commit()  # the session lock outlives the transaction; no idle transaction
        if not got:
            return SettleReport(skipped=True)
        try:
            async with engine.begin() as conn:
                created = await plan_periods(
                    conn,
                    now=now,
                    granularity=granularity,
                    timezone=timezone,
                    currency=currency,
                    actor=actor,
                )
            async with engine.connect() as conn:
                due = (
                    await conn.execute(
                        text(
                            "SELECT id, period_start, period_end FROM settlement_periods "
                            "WHERE status = 'open' AND period_start <= :now ORDER BY period_start"
                        ),
                        {"now": now},
                    )
                ).all()
            closed: list[uuid.UUID] = []
            runs = expired = 0
            for i, p in enumerate(due):
                label = f"{p.period_start:%Y-%m-%d %H:%M} .. {p.period_end:%Y-%m-%d %H:%M}"
                if progress is not None:
                    progress(i, len(due), label)
                if p.period_end + delay <= now:
                    _, points = await _expire_and_close(
                        engine, period_id=p.id, actor=actor, now=now
                    )
                    expired += points
                    closed.append(p.id)
                else:
                    async with engine.begin() as conn:
                        await run_period(conn, period_id=p.id, actor=actor, now=now)
                runs += 1
            if progress is not None:
                progress(len(due), len(due), "done")
            return SettleReport(False, created, runs, tuple(closed), expired)
        finally:
            await lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SETTLE_LOCK})
            await lock_conn.commit()
