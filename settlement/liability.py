"""The points liability: outstanding points by issuer, valued at the issue price in force.

The operator's own points (sign-up and referral bonuses: lots with no issuing partner) are the
operator's line (`issuer_id` None), valued at the face value of a point (POINT_VALUE), not at
zero. Nobody paid an issue price for them, yet the coalition owes their redemption just the
same: every one of them accepted at a partner is reimbursed at that partner's redemption price,
which the face value stands for before the partner is known. Valued at zero they would vanish
from the number the operator watches for unfunded points, which is exactly what they are. The
line's `issue_price` is that face value (the period's, in a snapshot).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.money import DEFAULT_POINT_VALUE, Money, quantize
from settlement.models import PeriodStatus
from settlement.periods import _now
from settlement.pricing import (
    PRICE_CTE,
    price_join,
)
from settlement.reads import list_periods
from settlement.records import LiabilityLine, LiabilitySnapshot, Period

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
    SELECT o.issuer_id, o.points,
           CASE WHEN o.issuer_id IS NULL THEN CAST(:point_value AS numeric(20, 8))
                ELSE pr.issue_price END AS issue_price
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
    point_value: Decimal = DEFAULT_POINT_VALUE,
    at: datetime | None = None,
    partner_id: uuid.UUID | None = None,
) -> list[LiabilityLine]:
    """Outstanding points by issuing partner at `at` (default now) and their value in
    `currency` at the issue price in force then, the operator's own points (the last line,
    `issuer_id` None) at `point_value` each; with `partner_id`, only that issuer's line."""
    at = _now(at)
    cur = currency.upper()
    rows = await conn.execute(
        _LIABILITY,
        {"at": at, "partner": partner_id, "currency": cur, "point_value": Decimal(point_value)},
    )
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
    lines = await liability(
        conn,
        at=period.period_end,
        currency=period.currency,
        point_value=period.point_value or DEFAULT_POINT_VALUE,
    )
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
