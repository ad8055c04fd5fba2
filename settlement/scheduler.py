"""The scheduled job: create the due periods, run the open ones, close the ended ones."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.metrics import SETTLEMENT_SECONDS
from core.money import DEFAULT_POINT_VALUE
from settlement.closing import _expire_and_close
from settlement.errors import (
    InvalidPeriod,
)
from settlement.periods import GRANULARITIES, _gaps, _now, period_bounds
from settlement.records import SettleReport
from settlement.runs import _create_period, run_period

SETTLE_LOCK = 727_275  # pg advisory lock: one `coalition settle` at a time


async def plan_periods(
    conn: AsyncConnection,
    *,
    now: datetime,
    granularity: str,
    timezone: str,
    currency: str,
    point_value: Decimal = DEFAULT_POINT_VALUE,
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
                conn,
                start=s,
                end=e,
                kind=granularity,
                currency=cur,
                point_value=point_value,
                actor=actor,
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
    point_value: Decimal = DEFAULT_POINT_VALUE,
    now: datetime | None = None,
    actor: str = "system:settle",
    progress: Callable[[int, int, str], None] | None = None,
) -> SettleReport:
    """Create the due periods of `granularity` (days, weeks or months starting in `timezone`,
    settled in `currency`, the operator's points valued at `point_value`), run every open one
    that has started and close (expiry first) those whose end (plus `close_delay`) has passed.
    Safe to run from cron every few minutes: one job at a time (an advisory lock), each period
    in its own unit of work, idempotent."""
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
        started = time.perf_counter()
        try:
            async with engine.begin() as conn:
                created = await plan_periods(
                    conn,
                    now=now,
                    granularity=granularity,
                    timezone=timezone,
                    currency=currency,
                    point_value=point_value,
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
            SETTLEMENT_SECONDS.observe(time.perf_counter() - started)
            await lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SETTLE_LOCK})
            await lock_conn.commit()
