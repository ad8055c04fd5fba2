"""Redeeming a reward: one of its stock, or one code of its voucher pool, for a member whose
points the ledger has just taken in the same unit of work (`loyalty.rewards.redeem_in`).

A reward with stock N is redeemed at most N times whatever the concurrency (a conditional
decrement of the stock); a voucher hands each redemption one code of its pool, never the same
code twice (the unused code is taken `FOR UPDATE SKIP LOCKED`), shown only to its member.
Nothing here commits.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.errors import OutOfStock, RewardChanged
from catalog.models import RewardKind, RewardRedemption, VoucherCode
from catalog.service import RewardRecord, get, require_offered
from core.ids import uuid7
from core.tables import table

_codes = table(VoucherCode)
_redemptions = table(RewardRedemption)


@dataclass(frozen=True, slots=True)
class RedemptionRecord:
    """A member's redemption of a reward. `voucher_code` is that member's eyes only."""

    id: uuid.UUID
    member_id: uuid.UUID
    reward_id: uuid.UUID
    partner_id: uuid.UUID
    points: int
    voucher_code: str | None
    transaction_id: uuid.UUID
    created_at: datetime


_REDEMPTION = select(
    _redemptions.c.id,
    _redemptions.c.member_id,
    _redemptions.c.reward_id,
    _redemptions.c.partner_id,
    _redemptions.c.points,
    _redemptions.c.voucher_code,
    _redemptions.c.transaction_id,
    _redemptions.c.created_at,
)


_TAKE_STOCK = text(
    """
    UPDATE rewards SET stock = stock - 1
    WHERE id = :id AND stock > 0 AND price_points = :price AND retired_at IS NULL
      AND (available_from IS NULL OR available_from <= :at)
      AND (available_until IS NULL OR available_until > :at)
    RETURNING stock
    """
)
_HOLD_REWARD = text(
    """
    SELECT id FROM rewards
    WHERE id = :id AND stock IS NULL AND price_points = :price AND retired_at IS NULL
      AND (available_from IS NULL OR available_from <= :at)
      AND (available_until IS NULL OR available_until > :at)
    FOR SHARE
    """
)
_TAKE_CODE = text(
    """
    SELECT id, code FROM voucher_codes
    WHERE reward_id = :id AND redemption_id IS NULL
    ORDER BY id LIMIT 1
    FOR UPDATE SKIP LOCKED
    """
)


async def take(
    conn: AsyncConnection,
    *,
    reward: RewardRecord,
    member_id: uuid.UUID,
    points: int,
    transaction_id: uuid.UUID,
    idempotency_key: str,
    at: datetime,
) -> RedemptionRecord:
    """Take one of the reward's stock (or one code of its voucher pool) for a redemption whose
    points the ledger has just taken in this unit of work, and record the redemption.

    OutOfStock (or RewardNotFound / RewardChanged when the reward was retired, moved out of its
    window or repriced since it was read) raises: the caller's unit of work rolls back, points
    and all. The reward's row is locked last, after the ledger's key, wallet and lots (the lock
    order of `loyalty.rewards.redeem`)."""
    params = {"id": reward.id, "price": points, "at": at}
    code: Any = None
    if reward.kind == RewardKind.VOUCHER:
        # The reward row FOR SHARE (not retired or repriced before the commit; redeemers share
        # it), then one unused code that no other transaction holds: SKIP LOCKED hands each
        # concurrent redeemer a different code, and the recheck of `redemption_id IS NULL` on
        # the locked row never hands out a code another redeemer has just committed.
        if (await conn.execute(_HOLD_REWARD, params)).one_or_none() is None:
            await _refuse(conn, reward=reward, points=points, at=at)
        code = (await conn.execute(_TAKE_CODE, {"id": reward.id})).one_or_none()
        if code is None:
            raise OutOfStock("this voucher has no codes left")
    elif reward.stock is not None:
        # The conditional decrement: concurrent redeemers queue on the row, and each one
        # rechecks `stock > 0` on the row as the one before it left it. At most `stock` succeed.
        if (await conn.execute(_TAKE_STOCK, params)).one_or_none() is None:
            await _refuse(conn, reward=reward, points=points, at=at)
    elif (await conn.execute(_HOLD_REWARD, params)).one_or_none() is None:
        await _refuse(conn, reward=reward, points=points, at=at)
    redemption = RedemptionRecord(
        id=uuid7(),
        member_id=member_id,
        reward_id=reward.id,
        partner_id=reward.partner_id,
        points=points,
        voucher_code=code.code if code is not None else None,
        transaction_id=transaction_id,
        created_at=at,
    )
    await conn.execute(
        insert(_redemptions).values(
            **dataclasses.asdict(redemption), idempotency_key=idempotency_key
        )
    )
    if code is not None:
        await conn.execute(
            sql_update(_codes).where(_codes.c.id == code.id).values(redemption_id=redemption.id)
        )
    return redemption


async def _refuse(
    conn: AsyncConnection, *, reward: RewardRecord, points: int, at: datetime
) -> None:
    """Why the reward could not be taken, as read now (it changed since it was read)."""
    now = await get(conn, reward_id=reward.id)
    require_offered(now, at)
    if now.price_points != points or (now.stock is None) != (reward.stock is None):
        raise RewardChanged("the reward changed while it was being redeemed: try again")
    raise OutOfStock("this reward is out of stock")


async def redemption_by_key(
    conn: AsyncConnection, *, member_id: uuid.UUID, idempotency_key: str
) -> RedemptionRecord | None:
    """The member's redemption made under `idempotency_key`, if any."""
    row = (
        await conn.execute(
            _REDEMPTION.where(
                _redemptions.c.member_id == member_id,
                _redemptions.c.idempotency_key == idempotency_key,
            )
        )
    ).one_or_none()
    return RedemptionRecord(*row) if row is not None else None


async def redemptions(
    conn: AsyncConnection, *, member_id: uuid.UUID, limit: int, before: uuid.UUID | None = None
) -> list[RedemptionRecord]:
    """A member's own redemptions, newest first."""
    query = (
        _REDEMPTION.where(_redemptions.c.member_id == member_id)
        .order_by(_redemptions.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(_redemptions.c.id < before)
    return [RedemptionRecord(*r) for r in await conn.execute(query)]
