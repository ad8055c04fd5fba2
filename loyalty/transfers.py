"""Transfers: a member gives available points to another member (family).

The receiver gets lots carrying the issuer, earn date and expiry of the points given, so
traceability and settlement do not change; a transfer is not a settlement event. A sender may
give at most `TRANSFER_DAILY_LIMIT` points a day (the ledger counts them under the sender's
lock; 0: transfers are off)."""

from __future__ import annotations

import uuid

from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from ledger import service as ledger
from ledger.service import TransferRequest, TransferResult
from loyalty.runtime import Runtime
from members.cards import is_valid_card_number

# What `transfer` may raise (gateway.graphql checks the mutation's result union against it).
ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.INSUFFICIENT_POINTS,
        ErrorCode.MEMBER_NOT_FOUND,
        ErrorCode.LIMIT_EXCEEDED,
        ErrorCode.IDEMPOTENCY_CONFLICT,
    }
)


async def transfer(
    rt: Runtime,
    *,
    actor: str,
    key_space: str,
    member_id: uuid.UUID,
    to_card_number: str,
    points: int,
    idempotency_key: str,
) -> TransferResult:
    """Move `points` of the member's available points to the holder of `to_card_number`, in
    one unit of work; a retry with the same key answers as the original did."""
    if not is_valid_card_number(to_card_number):
        raise DomainValidation(
            "toCardNumber must be 16 digits with a valid Luhn check digit", field="toCardNumber"
        )
    if isinstance(points, bool) or not 0 < points <= ledger.MAX_POINTS:
        raise DomainValidation(f"points must be between 1 and {ledger.MAX_POINTS}", field="points")
    to_member = await rt.caches.member_by_card.member_id(rt.pool, to_card_number)
    if to_member == member_id:
        raise DomainValidation("points cannot be transferred to oneself", field="toCardNumber")
    async with rt.engine.begin() as conn:
        return await ledger.transfer_points(
            conn,
            TransferRequest(
                actor=actor,
                key_space=key_space,
                idempotency_key=idempotency_key,
                # What the member sent: a retry replays the original result.
                digest=ledger.client_digest("transferPoints", to_card_number, str(points)),
                from_member_id=member_id,
                to_member_id=to_member,
                points=points,
                daily_limit=rt.settings.transfer_daily_limit,
            ),
        )
