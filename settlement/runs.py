"""Running a period: creating it, the locks, late events, recomputing it while open.

Locks, always in this order so that no two settlement jobs deadlock: the `settlement_state` row
(serialises runs, closes and the search for late events), then the period row."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ids import uuid7
from core.money import DEFAULT_POINT_VALUE
from core.tables import table
from settlement.compute import _compute
from settlement.errors import (
    InvalidPeriod,
    PeriodNotFound,
    PeriodOverlap,
)
from settlement.models import PeriodKind, SettlementPeriod
from settlement.periods import _now, _validate_range
from settlement.reads import _PERIOD_COLUMNS, _period, get_period, get_period_by_range
from settlement.records import Period

# The search for late events never moves its watermark closer than this to "now": covers clock
# skew between the app servers and the database on top of the running-transactions rule.
LATE_MARGIN = timedelta(minutes=10)


async def _create_period(
    conn: AsyncConnection,
    *,
    start: datetime,
    end: datetime,
    kind: str,
    currency: str,
    point_value: Decimal,
    actor: str,
) -> uuid.UUID | None:
    """Insert a period; None when it would overlap another (the exclusion constraint). Its
    currency and `point_value` (which values the operator's own points) stay its own, as the
    agreements' prices do: a later change of the settings never revalues a period."""
    period_id = uuid7()
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(table(SettlementPeriod)).values(
                    id=period_id,
                    period_start=start,
                    period_end=end,
                    kind=kind,
                    currency=currency,
                    point_value=_point_value(point_value),
                    created_by=actor,
                )
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
    point_value: Decimal = DEFAULT_POINT_VALUE,
    now: datetime | None = None,
) -> Period:
    """Settle the range [period_start, period_end): create the period if there is none with
    these bounds (settled in `currency`, the operator's points valued at `point_value` each),
    (re)compute it while open, return it frozen and unchanged once closed."""
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
        point_value=point_value,
        actor=actor,
    )
    if period_id is None:
        # Another period holds part of the range (or a concurrent run just created this one).
        existing = await get_period_by_range(conn, period_start=start, period_end=end)
        if existing is None:
            raise PeriodOverlap(await _overlap_message(conn, start, end))
        period_id = existing.id
    return await run_period(conn, period_id=period_id, actor=actor, now=now)


def _point_value(value: Decimal) -> Decimal:
    value = Decimal(value)
    if not value.is_finite() or value <= 0:
        raise InvalidPeriod("the point value must be a positive amount")
    return value


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
    return (
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
    return (await conn.execute(_LATE_WATERMARK, {"margin": margin})).scalar_one()


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
