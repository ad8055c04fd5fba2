"""Closing a period: computed a last time, what it covers recorded, sealed; checking a seal."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.money import Money, format_amount, minor_units
from ledger import outbox
from ledger import service as ledger
from settlement.compute import _aggregate, _compute
from settlement.errors import (
    ExpiryPending,
    PeriodNotEnded,
)
from settlement.liability import _snapshot_liability
from settlement.models import PeriodStatus
from settlement.periods import ONE_MICROSECOND, _now
from settlement.reads import _PERIOD_COLUMNS, adjustments, get_period, matrix, statements
from settlement.records import Period, Verification
from settlement.runs import _lock_period, _lock_state, _safe_watermark, collect_late_events

SEAL_VERSION = "coalition-settlement-seal/1"


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
    closed = await get_period(conn, period_id=period_id)
    await _announce(conn, closed)
    return closed


def _money(m: Money) -> dict[str, str]:
    return {"amount": format_amount(m.amount, m.currency), "currency": m.currency}


async def _announce(conn: AsyncConnection, period: Period) -> None:
    """`settlement.closed` to each partner with a statement in the period (`ledger.outbox`: to
    those with a webhook for it), in the close's unit of work."""
    assert period.closed_at is not None
    await outbox.record_many(
        conn,
        type="settlement.closed",
        events=[
            (
                s.partner_id,
                None,
                {
                    "periodId": str(period.id),
                    "periodStart": period.period_start.isoformat(),
                    "periodEnd": period.period_end.isoformat(),
                    "closedAt": period.closed_at.isoformat(),
                    "issuedPoints": s.issued_points,
                    "reversedPoints": s.reversed_points,
                    "redeemedPoints": s.redeemed_points,
                    "returnedPoints": s.returned_points,
                    "issuanceCharge": _money(s.issuance_charge),
                    "reimbursement": _money(s.reimbursement),
                    "net": _money(s.net),
                },
            )
            for s in await statements(conn, period_id=period.id)
        ],
        at=period.closed_at,
    )


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


def _who(partner_id: uuid.UUID | None) -> str:
    """A partner in the seal's text; the operator (its own points) where none is named."""
    return "operator" if partner_id is None else str(partner_id)


async def seal_text(conn: AsyncConnection, *, period_id: uuid.UUID) -> str:
    """The canonical text the seal hashes: the period, the digest of the transactions it covers,
    its statements, matrix, adjustments and liability, one line each, in a fixed order.

    The operator's own points add a line only where a period has some (issued or expired): the
    text of every period without them, sealed before they existed, is unchanged, so their
    seals still verify."""
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
    if p.operator_issued_points or p.operator_breakage_points or p.operator_breakage_value:
        lines.append(
            f"operator {p.operator_issued_points} {p.operator_breakage_points} "
            f"{_dec(p.operator_breakage_value, places)} {_dec(p.point_value, 8)}"
        )
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
            f"matrix {_who(c.issuer_id)} {c.redeemer_id} {c.points} {_dec(c.value.amount, places)}"
        )
    for a in await adjustments(conn, period_id=period_id):
        lines.append(
            f"adjustment {a.transaction_id} {_who(a.partner_id)} {a.adjusts_period_id} {a.kind} "
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
            f"liability {_who(r.issuer_id)} {r.points} {_dec(r.value, places)} "
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
    stored_op = (
        period.operator_issued_points,
        period.operator_breakage_points,
        period.operator_breakage_value.amount if period.operator_breakage_value else None,
    )
    op = fresh.operator
    fresh_op = (op.issued, op.breakage_points, op.breakage_value)
    ledger_ok = (
        stored_st == fresh_st
        and stored_mx == fresh_mx
        and stored_adj == fresh_adj
        and stored_op == fresh_op
        and fresh.digest == period.transactions_digest
        and fresh.transaction_count == period.transaction_count
    )
    return Verification(
        period_id, True, period.content_hash, computed, computed == period.content_hash, ledger_ok
    )
