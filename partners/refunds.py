"""Refunds of a partner's orders: earned points reversed, captured points returned, pro rata.

Pro rata is cumulative so rounding never drifts: after refunds totalling R of an order of
amount A, exactly floor(P x R / A) of the P points are reversed (or returned); a full refund
reverses everything. Refunds of one order are serialised by a transaction-scoped advisory lock
on (partner, order), taken before any ledger lock (so it cannot join a lock cycle).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import utcnow
from core.errors import ValidationError
from core.ids import uuid7
from core.money import Money
from ledger import outbox
from ledger import service as ledger
from ledger.errors import IdempotencyConflict
from partners.errors import OrderNotFound


@dataclass(frozen=True)
class RefundResult:
    id: uuid.UUID
    order_ref: str
    amount: Money
    points_reversed: int
    points_returned: int
    replayed: bool = False


def _share(points: int, part: Decimal, whole: Decimal) -> int:
    return int((Decimal(points) * part / whole).to_integral_value(ROUND_FLOOR))


async def refund(
    conn: AsyncConnection,
    *,
    actor: str,
    partner_id: uuid.UUID,
    order_ref: str,
    amount: Money,
    idempotency_key: str,
) -> RefundResult:
    """Refund `amount` of the partner's order `order_ref` (full or partial). Idempotency keys
    are the partner's (whichever of its clients sends the retry); the digest covers what the
    partner sent (order, amount), not the points derived from it."""
    if not order_ref or len(order_ref) > 200:
        raise ValidationError("orderRef must be 1..200 characters")
    if not idempotency_key or len(idempotency_key) > ledger.MAX_KEY_LENGTH:
        raise ValidationError("idempotencyKey must be 1..200 characters")
    if amount.amount <= 0:
        raise ValidationError("refund amount must be positive")
    digest = ledger.request_hash(
        "refund", {"ref": order_ref, "amount": amount.amount, "cur": amount.currency}
    )
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(CAST(:p AS text) || '/' || :ref, 0))"),
        {"p": partner_id, "ref": order_ref},
    )
    prior = (
        await conn.execute(
            text(
                "SELECT id, order_ref, amount, currency, request_hash, points_reversed, points_returned "
                "FROM refunds WHERE partner_id = :p AND idempotency_key = :k"
            ),
            {"p": partner_id, "k": idempotency_key},
        )
    ).one_or_none()
    if prior is not None:
        if prior.request_hash != digest:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was used for another refund"
            )
        return RefundResult(
            prior.id,
            prior.order_ref,
            Money.of(prior.amount, prior.currency),  # stored NUMERIC(20,4): back to minor units
            prior.points_reversed,
            prior.points_returned,
            replayed=True,
        )

    earn = await ledger.order_earn(conn, partner_id=partner_id, order_ref=order_ref)
    holds = await ledger.captured_holds(conn, partner_id=partner_id, order_ref=order_ref)
    if earn is None and not holds:
        raise OrderNotFound(f"order {order_ref!r} has no points to refund")
    totals = [Decimal(earn.amount)] if earn is not None and earn.amount is not None else []
    totals += [Decimal(h.purchase_amount) for h in holds if h.purchase_amount is not None]
    currencies = {earn.currency} if earn is not None and earn.currency else set()
    currencies |= {h.currency for h in holds if h.currency}
    if not totals:
        raise ValidationError(f"order {order_ref!r} has no purchase amount to refund against")
    if currencies and currencies != {amount.currency}:
        raise ValidationError(f"order {order_ref!r} is in {', '.join(sorted(currencies))}")
    order_amount = max(totals)  # the bill: the earn and the points payment are parts of it
    refunded = Decimal(
        (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(amount), 0) FROM refunds WHERE partner_id = :p AND order_ref = :ref"
                ),
                {"p": partner_id, "ref": order_ref},
            )
        ).scalar_one()
    )
    after = refunded + amount.amount
    if after > order_amount:
        raise ValidationError(
            f"refund exceeds the order: {Money.of(order_amount - refunded, amount.currency)} "
            "remain refundable"
        )

    reversed_pts = returned_pts = 0
    reversal_tx = return_tx = None
    if earn is not None:
        reversed_pts = _share(earn.points, after, order_amount) - _share(
            earn.points, refunded, order_amount
        )
        if reversed_pts > 0:
            rev = await ledger.reverse_earn(
                conn,
                actor=actor,
                idempotency_key=f"refund:{idempotency_key}",
                key_space=ledger.partner_key_space(partner_id),
                partner_id=partner_id,
                earn_transaction_id=earn.id,
                points=reversed_pts,
                ref=order_ref,
            )
            reversal_tx = rev.transaction_id
    for i, hold in enumerate(holds):
        back = _share(hold.captured, after, order_amount) - _share(
            hold.captured, refunded, order_amount
        )
        if back > 0:
            ret = await ledger.return_points(
                conn,
                actor=actor,
                idempotency_key=f"refund:{idempotency_key}:{i}",
                key_space=ledger.partner_key_space(partner_id),
                partner_id=partner_id,
                hold_id=hold.id,
                points=back,
                ref=order_ref,
            )
            returned_pts += back
            return_tx = ret.transaction_id
    refund_id = uuid7()
    # The refund's row and its `refund.recorded` event (`ledger.outbox`), in one statement.
    await conn.execute(
        text(
            outbox.REFUND_EVENT_CTE + " "
            "INSERT INTO refunds (id, partner_id, order_ref, amount, currency, idempotency_key, "
            "request_hash, points_reversed, points_returned, reversal_tx_id, return_tx_id, "
            "created_at, actor) VALUES (:id, :p, :ref, :amt, :cur, :k, :h, :rev, :ret, :rtx, "
            ":ttx, :at, :actor)"
        ),
        {
            "id": refund_id,
            "p": partner_id,
            "ref": order_ref,
            "amt": amount.amount,
            "cur": amount.currency,
            "k": idempotency_key,
            "h": digest,
            "rev": reversed_pts,
            "ret": returned_pts,
            "rtx": reversal_tx,
            "ttx": return_tx,
            "at": utcnow(),
            "actor": actor,
        },
    )
    return RefundResult(refund_id, order_ref, amount, reversed_pts, returned_pts)
