"""Settlement exports: a partner's statement as CSV or PDF, the points liability as CSV (the
reads here; the writing and rendering, CPU work, in a worker thread)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.money import DEFAULT_POINT_VALUE, quantize
from partners import service as partners
from settlement import service as settlement
from settlement.csvfile import write_csv
from settlement.errors import PeriodNotFound
from settlement.pricing import CANDIDATES_FROZEN, CANDIDATES_OPEN, SETTLED_KINDS_SQL, priced
from settlement.statement_pdf import render_statement_pdf

# The event lines start with the reconciliation file's columns (order_ref, kind, points,
# amount), so a partner can compare the statement with its own records line by line.
CSV_COLUMNS = (
    "line_type",
    "order_ref",
    "kind",
    "points",
    "amount",
    "exact_amount",
    "unit_price",
    "currency",
    "effective_at",
    "transaction_id",
    "adjusts_period_id",
)

LIABILITY_COLUMNS = (
    "as_of",
    "period_id",
    "issuer_id",
    "issuer",
    "points",
    "issue_price",
    "value",
    "currency",
)


def _events_sql(period: settlement.Period, *, grouped: bool) -> Any:
    template = CANDIDATES_FROZEN if period.is_closed else CANDIDATES_OPEN
    candidates = template.format(
        where=f"AND t.partner_id = :partner AND t.kind IN ({SETTLED_KINDS_SQL})"
    )
    if grouped:
        return text(
            f"SELECT kind, price, (adjusts IS NOT NULL) AS adjustment, sum(points) AS points, "
            f"sum(points * price) AS exact, count(*) AS n FROM ({priced(candidates)}) x "
            "GROUP BY kind, price, (adjusts IS NOT NULL) ORDER BY kind, adjustment, price"
        )
    return text(
        f"SELECT id, kind, points, price, ref, effective_at, adjusts FROM ({priced(candidates)}) x "
        "ORDER BY effective_at, id"
    )


async def _statement_of(
    conn: AsyncConnection, period_id: uuid.UUID, partner_id: uuid.UUID
) -> tuple[settlement.Period, settlement.Statement | None]:
    period = await settlement.get_period(conn, period_id=period_id, partner_id=partner_id)
    await partners.get(conn, partner_id=partner_id)
    found = await settlement.statements(conn, period_id=period_id, partner_id=partner_id)
    return period, (found[0] if found else None)


def _params(period: settlement.Period, partner_id: uuid.UUID) -> dict[str, Any]:
    return {
        "start": period.period_start,
        "end": period.period_end,
        "period": period.id,
        "partner": partner_id,
        "currency": period.currency,
        "frozen_before": period.frozen_before,
    }


async def statement_csv(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID
) -> str:
    """A partner's statement as CSV: one line per ledger event, then the totals."""
    period, st = await _statement_of(conn, period_id, partner_id)
    events = (
        await conn.execute(_events_sql(period, grouped=False), _params(period, partner_id))
    ).all()
    return await asyncio.to_thread(_statement_rows_csv, period, st, events)


def _statement_rows_csv(
    period: settlement.Period, st: settlement.Statement | None, events: Sequence[Any]
) -> str:
    cur = period.currency
    rows: list[list[Any]] = []
    for r in events:
        exact = Decimal(r.points) * (r.price or Decimal(0))
        rows.append(
            [
                "adjustment" if r.adjusts else "event",
                r.ref or "",
                r.kind,
                r.points,
                quantize(exact, cur),
                exact,
                "" if r.price is None else r.price,
                cur,
                r.effective_at.astimezone(UTC).isoformat(),
                r.id,
                r.adjusts or "",
            ]
        )
    if st is not None:
        for kind, points, amount in [
            ("issued", st.issued_points, None),
            ("reversed", st.reversed_points, None),
            ("redeemed", st.redeemed_points, None),
            ("returned", st.returned_points, None),
            ("issuance_charge", None, st.issuance_charge.amount),
            ("reimbursement", None, st.reimbursement.amount),
            ("net", None, st.net.amount),
            ("breakage", st.breakage_points, st.breakage_value.amount),
            ("adjustments", st.adjustment_count, st.adjustment_net.amount),
        ]:
            rows.append(
                [
                    "total",
                    "",
                    kind,
                    "" if points is None else points,
                    "" if amount is None else amount,
                    "",
                    "",
                    cur,
                    "",
                    "",
                    "",
                ]
            )
    return write_csv(CSV_COLUMNS, rows)


# The operator's line of the liability (its own points, issued by no partner).
OPERATOR_ISSUER = "operator"


async def liability_csv(
    conn: AsyncConnection,
    *,
    currency: str,
    point_value: Decimal = DEFAULT_POINT_VALUE,
    at: datetime | None = None,
    history: int = 24,
) -> str:
    """The points liability by issuing partner now (valued in `currency`; the operator's own
    points, issuer "operator" with no id, at `point_value`), then at the end of each closed
    period."""
    now_lines = await settlement.liability(conn, currency=currency, point_value=point_value, at=at)
    snapshots = await settlement.liability_history(conn, first=history)
    ids = list(
        {x.issuer_id for x in now_lines if x.issuer_id is not None}
        | {x.issuer_id for s in snapshots for x in s.lines if x.issuer_id is not None}
    )
    names = {p.id: p.name for p in await partners.get_many(conn, ids=ids) if p is not None}

    def issuer(x: settlement.LiabilityLine) -> list[Any]:
        if x.issuer_id is None:
            return ["", OPERATOR_ISSUER]
        return [x.issuer_id, names.get(x.issuer_id, "")]

    cur = currency.upper()
    rows: list[list[Any]] = [
        [
            x.as_of.isoformat(),
            "",
            *issuer(x),
            x.points,
            x.issue_price if x.issue_price is not None else "",
            x.value.amount,
            cur,
        ]
        for x in now_lines
    ]
    rows += [
        [
            s.period_end.isoformat(),
            s.period_id,
            *issuer(x),
            x.points,
            x.issue_price if x.issue_price is not None else "",
            x.value.amount,
            x.value.currency,
        ]
        for s in snapshots
        for x in s.lines
    ]
    return await asyncio.to_thread(write_csv, LIABILITY_COLUMNS, rows)


async def statement_pdf(
    conn: AsyncConnection,
    *,
    period_id: uuid.UUID,
    partner_id: uuid.UUID,
    operator_name: str,
) -> bytes:
    """A partner's statement as a PDF invoice issued by `operator_name`: the reads here, the
    rendering in a worker thread (reportlab takes tens of milliseconds of CPU per statement,
    which would stall the loop)."""
    period, st = await _statement_of(conn, period_id, partner_id)
    if period is None:  # pragma: no cover - get_period raises
        raise PeriodNotFound(str(period_id))
    partner = await partners.get(conn, partner_id=partner_id)
    groups = (
        await conn.execute(_events_sql(period, grouped=True), _params(period, partner_id))
    ).all()
    adjustments = await settlement.adjustments(conn, period_id=period_id, partner_id=partner_id)
    adjusted: dict[uuid.UUID, Any] = {}
    if adjustments:
        adjusted = {
            r.id: r
            for r in await conn.execute(
                text(
                    "SELECT id, period_start, period_end FROM settlement_periods "
                    "WHERE id = ANY(:ids)"
                ),
                {"ids": list({a.adjusts_period_id for a in adjustments})},
            )
        }
    return await asyncio.to_thread(
        render_statement_pdf,
        period=period,
        statement=st,
        partner=partner,
        operator=operator_name,
        groups=groups,
        adjustments=adjustments,
        adjusted=adjusted,
    )
