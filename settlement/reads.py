"""Reading stored periods, statements, matrix, adjustments and payment instructions (one
statement per view, also for several periods at once)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.money import Money, quantize
from settlement.errors import (
    PeriodNotFound,
)
from settlement.records import (
    Adjustment,
    MatrixCell,
    PaymentInstruction,
    Payments,
    Period,
    Statement,
)

_PERIOD_COLUMNS = (
    "id, period_start, period_end, kind, status, currency, created_at, run_at, closed_at, "
    "closed_by, content_hash, frozen_before, transactions_digest, transaction_count, "
    "adjustment_count, unpriced_events, operator_margin, breakage_points, breakage_value, "
    "operator_issued_points, operator_breakage_points, operator_breakage_value, point_value"
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
            operator_issued_points=None,
            operator_breakage_points=None,
            operator_breakage_value=None,
            point_value=None,
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
        operator_issued_points=int(row.operator_issued_points),
        operator_breakage_points=int(row.operator_breakage_points),
        operator_breakage_value=Money(quantize(row.operator_breakage_value, cur), cur),
        point_value=row.point_value,
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


_MATRIX_COLUMNS = "m.period_id, m.issuer_id, m.redeemer_id, m.points, m.value, p.currency"


def _matrix_cell(r: Any) -> MatrixCell:
    return MatrixCell(
        r.issuer_id, r.redeemer_id, int(r.points), Money(quantize(r.value, r.currency), r.currency)
    )


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
            f"SELECT {_MATRIX_COLUMNS} "
            "FROM settlement_matrix m JOIN settlement_periods p ON p.id = m.period_id "
            "WHERE m.period_id = :p AND (CAST(:partner AS uuid) IS NULL "
            "OR m.issuer_id = :partner OR m.redeemer_id = :partner) "
            "ORDER BY m.issuer_id, m.redeemer_id"
        ),
        {"p": period_id, "partner": partner_id},
    )
    return [_matrix_cell(r) for r in rows]


_ADJUSTMENT_COLUMNS = (
    "a.period_id, a.transaction_id, a.partner_id, a.adjusts_period_id, a.kind, a.points, "
    "a.unit_price, a.amount, a.ref, a.effective_at, a.recorded_at, p.currency"
)


def _adjustment(r: Any) -> Adjustment:
    return Adjustment(
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


async def adjustments(
    conn: AsyncConnection, *, period_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> list[Adjustment]:
    """Late events settled in the period, each naming the closed period it adjusts."""
    await get_period(conn, period_id=period_id)
    rows = await conn.execute(
        text(
            f"SELECT {_ADJUSTMENT_COLUMNS} "
            "FROM settlement_adjustments a JOIN settlement_periods p ON p.id = a.period_id "
            "WHERE a.period_id = :p "
            "AND (CAST(:partner AS uuid) IS NULL OR a.partner_id = :partner) "
            "ORDER BY a.effective_at, a.transaction_id, a.partner_id"
        ),
        {"p": period_id, "partner": partner_id},
    )
    return [_adjustment(r) for r in rows]


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
            f"SELECT {_MATRIX_COLUMNS} "
            "FROM settlement_matrix m JOIN settlement_periods p ON p.id = m.period_id "
            "WHERE m.period_id = ANY(CAST(:ids AS uuid[])) AND (CAST(:partner AS uuid) IS NULL "
            "OR m.issuer_id = :partner OR m.redeemer_id = :partner) "
            "ORDER BY m.period_id, m.issuer_id, m.redeemer_id"
        ),
        {"ids": list(period_ids), "partner": partner_id},
    )
    found: dict[uuid.UUID, list[MatrixCell]] = {pid: [] for pid in period_ids}
    for r in rows:
        found[r.period_id].append(_matrix_cell(r))
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
            f"SELECT {_ADJUSTMENT_COLUMNS} "
            "FROM settlement_adjustments a JOIN settlement_periods p ON p.id = a.period_id "
            "WHERE a.period_id = ANY(CAST(:ids AS uuid[])) "
            "AND (CAST(:partner AS uuid) IS NULL OR a.partner_id = :partner) "
            "ORDER BY a.period_id, a.effective_at, a.transaction_id, a.partner_id"
        ),
        {"ids": list(period_ids), "partner": partner_id},
    )
    found: dict[uuid.UUID, list[Adjustment]] = {pid: [] for pid in period_ids}
    for r in rows:
        found[r.period_id].append(_adjustment(r))
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
