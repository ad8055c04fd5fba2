"""Computing a period: its events priced and aggregated in set-based SQL, stored as its
statements, matrix and adjustments."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.money import quantize
from core.tables import table
from settlement.models import (
    SettlementAdjustment,
    SettlementMatrixCell,
    SettlementPeriod,
    SettlementStatement,
)
from settlement.pricing import (
    CANDIDATES_FROZEN,
    CANDIDATES_OPEN,
    NET_SIGN,
    PRICE_CTE,
    SETTLED_KINDS_SQL,
    price_join,
    priced,
)
from settlement.records import Period


# The period's events, priced, in a temporary table that every aggregate below reads: one
# scan of the ledger per run, and one consistent set for the statements and the assignment.
def _materialize_sql(frozen: bool) -> str:
    candidates = (CANDIDATES_FROZEN if frozen else CANDIDATES_OPEN).format(where="")
    return f"CREATE TEMPORARY TABLE settle_tx ON COMMIT DROP AS {priced(candidates)}"


# Per partner: what it issued (earns, its bonuses) and accepted (captures, rewards). Events
# with no partner are not on any statement: an operator's bonus (no partner pays for it; the
# partner that accepts its points is reimbursed by the capture or reward) and a transfer (no
# settlement event). Nor are the operator's points of an earn (its coalition-wide offer lines)
# and of the earn's reversals: `points` here are the partner's (`settlement.pricing.priced`).
_STATEMENT_SUMS = text(
    f"""
    SELECT partner_id,
           coalesce(sum(points) FILTER (WHERE kind IN ('earn', 'bonus')), 0) AS issued,
           coalesce(sum(points) FILTER (WHERE kind = 'reversal'), 0) AS reversed,
           coalesce(sum(points) FILTER (WHERE kind IN ('capture', 'reward')), 0) AS redeemed,
           coalesce(sum(points) FILTER (WHERE kind = 'return'), 0) AS returned,
           coalesce(sum(points * price) FILTER (WHERE kind IN ('earn', 'bonus')), 0)
             - coalesce(sum(points * price) FILTER (WHERE kind = 'reversal'), 0) AS charge,
           coalesce(sum(points * price) FILTER (WHERE kind IN ('capture', 'reward')), 0)
             - coalesce(sum(points * price) FILTER (WHERE kind = 'return'), 0) AS reimbursement,
           count(*) FILTER (WHERE adjusts IS NOT NULL) AS adjustments,
           coalesce(sum(CASE WHEN kind IN ('earn', 'bonus', 'return') THEN -points * price
                             ELSE points * price END) FILTER (WHERE adjusts IS NOT NULL), 0)
             AS adjustment_net,
           count(*) FILTER (WHERE price IS NULL) AS unpriced
    FROM settle_tx
    WHERE kind IN ({SETTLED_KINDS_SQL}) AND partner_id IS NOT NULL
    GROUP BY partner_id
    """
)

# The points the operator issued itself (its bonuses, with no issuing partner, and the
# coalition-wide offer points of earns): reported on the period, paid by nobody. Reversals of
# the latter are not subtracted: the period reports what was issued in it.
_OPERATOR_ISSUED = text(
    "SELECT coalesce(sum(points) FILTER (WHERE kind = 'bonus' AND partner_id IS NULL), 0) "
    "+ coalesce(sum(operator_points) FILTER (WHERE kind = 'earn'), 0) FROM settle_tx"
)

# Breakage: what expiry took from lots in the period, at the issue price of each lot's earn or
# bonus (a transferred lot names its original one, so it is priced at the original issue). The
# operator's lots (no issuer) have no issue price: they are valued at the period's point value.
_BREAKAGE = text(
    f"""
    WITH {PRICE_CTE}
    SELECT l.issuer_id, x.adjusts,
           CASE WHEN x.adjusts IS NOT NULL THEN x.id END AS transaction_id,
           -sum(lp.points) AS points,
           -sum(lp.points * CASE WHEN l.issuer_id IS NULL THEN CAST(:point_value AS numeric)
                                 ELSE pr.issue_price END) AS value,
           count(*) FILTER (WHERE l.issuer_id IS NOT NULL AND pr.issue_price IS NULL)
             AS unpriced,
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

# The matrix: captured and rewarded (minus returned) points by the lots' issuer (NULL: the
# operator; a transferred lot carries its original issuer) and the redeeming partner, valued at
# the redemption price of the capture or reward (a return carries its capture's price). A
# reward's lot postings are `capture`s.
_MATRIX = text(
    """
    SELECT l.issuer_id, x.partner_id AS redeemer_id,
           -sum(lp.points) AS points, -sum(lp.points * x.price) AS value
    FROM settle_tx x
    JOIN ledger_lot_postings lp ON lp.transaction_id = x.id AND lp.kind IN ('capture', 'return')
    JOIN ledger_lots l ON l.id = lp.lot_id
    WHERE x.kind IN ('capture', 'reward', 'return')
    GROUP BY l.issuer_id, x.partner_id
    """
)

_ADJUSTMENT_LINES = text(
    f"""
    SELECT id, partner_id, adjusts, kind, points, price, ref, effective_at, recorded_at
    FROM settle_tx
    WHERE adjusts IS NOT NULL AND kind IN ({SETTLED_KINDS_SQL}) AND partner_id IS NOT NULL
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


_NIL = uuid.UUID(int=0)


@dataclass
class _Operator:
    """The operator's own points in a period: on no partner's statement."""

    issued: int = 0
    breakage_points: int = 0
    breakage_value: Decimal = Decimal(0)


@dataclass
class _Computed:
    statements: list[dict[str, Any]]
    matrix: list[dict[str, Any]]
    adjustments: list[dict[str, Any]]
    transaction_count: int
    adjustment_count: int
    operator: _Operator
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
    operator = _Operator(
        issued=int((await conn.execute(_OPERATOR_ISSUED)).scalar_one()),
    )
    breakage = await conn.execute(_BREAKAGE, {"currency": cur, "point_value": period.point_value})
    for r in breakage:
        if r.issuer_id is None:  # the operator's points: its breakage, on no statement
            operator.breakage_points += int(r.points)
            operator.breakage_value += r.value or Decimal(0)
        else:
            s = row_for(r.issuer_id)
            s["breakage_points"] += int(r.points)
            s["breakage_value"] += r.value or Decimal(0)
            s["unpriced"] += int(r.unpriced)
            if r.adjusts is not None:
                s["adjustments"] += 1
        if r.adjusts is not None:
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
    # The operator (None) sorts after every partner, as PostgreSQL sorts NULLs.
    cells.sort(key=lambda c: (c["issuer_id"] is None, c["issuer_id"] or _NIL, c["redeemer_id"]))
    counts = (await conn.execute(_COUNTS)).one()
    adjustment_lines.sort(
        key=lambda a: (
            a["effective_at"],
            a["transaction_id"],
            a["partner_id"] is None,
            a["partner_id"] or _NIL,
        )
    )
    operator.breakage_value = quantize(operator.breakage_value, cur)
    digest_hex = (await conn.execute(_DIGEST)).scalar_one() if digest else None
    return _Computed(
        statements_out,
        cells,
        adjustment_lines,
        int(counts.n),
        len(adjustment_lines),
        operator,
        digest_hex,
    )


async def _store(conn: AsyncConnection, period: Period, result: _Computed, *, actor: str) -> None:
    """Replace the open period's contents with `result` (one statement per table)."""
    p = period.id
    for model in (SettlementStatement, SettlementMatrixCell, SettlementAdjustment):
        contents = table(model)
        await conn.execute(delete(contents).where(contents.c.period_id == p))
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
    periods = table(SettlementPeriod)
    op = result.operator
    await conn.execute(
        update(periods)
        .where(periods.c.id == p)
        .values(
            run_at=func.now(),
            run_by=actor,
            transaction_count=result.transaction_count,
            adjustment_count=result.adjustment_count,
            unpriced_events=sum(s["unpriced"] for s in st),
            operator_margin=-sum((s["net"] for s in st), Decimal(0)),
            breakage_points=sum(s["breakage_points"] for s in st) + op.breakage_points,
            breakage_value=sum((s["breakage_value"] for s in st), op.breakage_value),
            operator_issued_points=op.issued,
            operator_breakage_points=op.breakage_points,
            operator_breakage_value=op.breakage_value,
        )
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
