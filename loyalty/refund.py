"""Refund: (part of) a partner's order is refunded; earned points are reversed and points paid
with are returned, pro rata."""

from __future__ import annotations

import uuid

from core.errors import ErrorCode
from core.money import Money
from loyalty.checks import text
from loyalty.runtime import Runtime
from partners import refunds
from partners.refunds import RefundResult

# What `refund` may raise (gateway.graphql checks the mutation's result union against it).
ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.NOT_FOUND,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.TRANSACTION_NOT_FOUND,
        ErrorCode.HOLD_NOT_FOUND,
        ErrorCode.HOLD_NOT_ACTIVE,
        ErrorCode.MEMBER_NOT_FOUND,
        ErrorCode.PARTNER_NOT_FOUND,
    }
)


async def refund(
    rt: Runtime,
    *,
    actor: str,
    partner_id: uuid.UUID,
    order_ref: str,
    amount: str,
    currency: str,
    idempotency_key: str,
) -> RefundResult:
    """Refund `amount` of the partner's order `order_ref`, in one unit of work."""
    money = Money.parse(amount, currency, positive=True)
    async with rt.engine.begin() as conn:
        return await refunds.refund(
            conn,
            actor=actor,
            partner_id=partner_id,
            order_ref=text(order_ref, "orderRef"),
            amount=money,
            idempotency_key=idempotency_key,
        )
