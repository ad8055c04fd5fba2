"""The rewards catalog: partners (or the operator) publish, change and retire rewards and add
voucher codes; anyone browses them; members redeem them for points (`redeem`).

`owner` is whose rewards the caller may change: a partner's own id, or None for the operator
(any partner's). Another partner's reward is NOT_FOUND, like one that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from catalog import redemptions as taking
from catalog import service as catalog
from catalog.errors import RewardNotFound
from catalog.redemptions import RedemptionRecord
from catalog.service import RewardDraft, RewardRecord
from core.clock import utcnow
from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from core.metrics import REDEEMED_BY_REWARD
from ledger import service as ledger
from ledger.service import RewardSpendRequest, redeem_reward_points
from loyalty.runtime import Runtime
from partners import service as partners

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
PUBLISH_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND})
CHANGE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})
REDEEM_ERRORS = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.NOT_FOUND,
        ErrorCode.INSUFFICIENT_POINTS,
        ErrorCode.OUT_OF_STOCK,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.NO_AGREEMENT,
    }
)

OPERATION = "reward"  # the ledger's operation name for a reward spend (its idempotency keys)


def parse_reward_id(value: str) -> uuid.UUID:
    """A reward id as sent; one that is not even an id is a reward that does not exist."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise RewardNotFound("reward not found") from None


async def publish(
    rt: Runtime,
    *,
    actor: str,
    partner_id: uuid.UUID | None,
    title: str,
    description: str,
    kind: str,
    price_points: int,
    stock: int | None,
    voucher_codes: Sequence[str],
    category: str | None,
    available_from: datetime | None,
    available_until: datetime | None,
) -> RewardRecord:
    """Publish a reward delivered by `partner_id` (required: the operator names the partner)."""
    if partner_id is None:
        raise DomainValidation("partnerId is required", field="partnerId")
    draft = RewardDraft(
        title=title,
        description=description,
        kind=kind,
        price_points=price_points,
        stock=stock,
        category=category,
        available_from=available_from,
        available_until=available_until,
    )
    async with rt.engine.begin() as conn:
        return await catalog.publish(
            conn, partner_id=partner_id, draft=draft, voucher_codes=voucher_codes, actor=actor
        )


async def update(
    rt: Runtime, *, owner: uuid.UUID | None, reward_id: str, changes: dict[str, Any]
) -> RewardRecord:
    """Change some fields of a live reward (`changes`: field name -> new value)."""
    rid = parse_reward_id(reward_id)
    async with rt.engine.begin() as conn:
        return await catalog.update(conn, reward_id=rid, owner=owner, changes=changes)


async def retire(rt: Runtime, *, owner: uuid.UUID | None, reward_id: str) -> RewardRecord:
    """Withdraw a reward for good; redemptions already made stay."""
    rid = parse_reward_id(reward_id)
    async with rt.engine.begin() as conn:
        return await catalog.retire(conn, reward_id=rid, owner=owner, at=utcnow())


async def add_voucher_codes(
    rt: Runtime, *, owner: uuid.UUID | None, reward_id: str, codes: Sequence[str]
) -> tuple[RewardRecord, int]:
    """Add codes to a voucher's pool; with how many were added (all of them, or none)."""
    rid = parse_reward_id(reward_id)
    async with rt.engine.begin() as conn:
        return await catalog.add_codes(conn, reward_id=rid, owner=owner, codes=codes)


async def browse(
    conn: Any,
    *,
    limit: int,
    before: uuid.UUID | None,
    partner_id: uuid.UUID | None,
    category: str | None,
    max_points: int | None,
    affordable_for: uuid.UUID | None,
    include_unavailable: bool,
) -> list[RewardRecord]:
    """A page of the catalog; `affordable_for` a member: only what their available points buy."""
    if affordable_for is not None:
        available = (await ledger.balance(conn, member_id=affordable_for)).available
        max_points = available if max_points is None else min(max_points, available)
    return await catalog.browse(
        conn,
        at=utcnow(),
        limit=limit,
        before=before,
        partner_id=partner_id,
        category=category,
        max_points=max_points,
        include_unavailable=include_unavailable,
    )


async def redemptions(
    conn: Any, *, member_id: uuid.UUID, limit: int, before: uuid.UUID | None
) -> list[tuple[RedemptionRecord, RewardRecord]]:
    """A page of the member's own redemptions, newest first, each with its reward."""
    found = await taking.redemptions(conn, member_id=member_id, limit=limit, before=before)
    rewards = await catalog.get_many(conn, ids=list({r.reward_id for r in found}))
    by_id = {r.id: r for r in rewards if r is not None}
    return [(r, by_id[r.reward_id]) for r in found]


# ---------------------------------------------------------------------------------------------
# Redeeming a reward


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A member's redemption, as first answered (a replay answers the same, code and all)."""

    redemption: RedemptionRecord
    reward: RewardRecord
    replayed: bool


def request_digest(reward_id: uuid.UUID) -> str:
    """What the member sent: the reward (the key is the member's; the price is derived)."""
    return ledger.client_digest(OPERATION, str(reward_id))


async def redeem(
    rt: Runtime, *, actor: str, member_id: uuid.UUID, reward_id: str, idempotency_key: str
) -> Redeemed:
    """Buy a reward with the member's available points, in one unit of work."""
    rid = parse_reward_id(reward_id)
    async with rt.engine.begin() as conn:
        redeemed = await redeem_in(
            conn,
            actor=actor,
            member_id=member_id,
            reward_id=rid,
            idempotency_key=idempotency_key,
        )
    if not redeemed.replayed:
        REDEEMED_BY_REWARD.inc(redeemed.redemption.points)
    return redeemed


async def redeem_in(
    conn: Any,
    *,
    actor: str,
    member_id: uuid.UUID,
    reward_id: uuid.UUID,
    idempotency_key: str,
    at: datetime | None = None,
) -> Redeemed:
    """`redeem` in the caller's unit of work (the demo loads in one).

    Lock order, as everywhere: the idempotency key, the member's wallet, the member's lots (all
    three taken by the ledger's spend), then the reward's row or one of its voucher codes
    (`catalog.redemptions.take`). A redeemer never holds the reward while it waits for a wallet, so no
    two redemptions (of one member, of one reward, or an editor changing the reward) can wait
    on each other in a cycle; and the most contended lock, the last items of a popular reward,
    is held only from the stock's decrement to the commit. Out of stock raises after the
    points were taken: the unit of work rolls back, points, key and all."""
    at = at or utcnow()
    reward = await catalog.get(conn, reward_id=reward_id)
    key_space = ledger.member_key_space(member_id)
    digest = request_digest(reward_id)
    # A replay answers as the original did, even if the reward has since been retired,
    # repriced or sold out; the same key for another reward is a conflict.
    prior = await ledger.stored_result(
        conn, key_space=key_space, operation=OPERATION, key=idempotency_key, digest=digest
    )
    if prior is not None:
        return await _replayed(conn, member_id=member_id, key=idempotency_key, reward=reward)
    catalog.require_offered(reward, at)
    (await partners.get_config(conn, partner_id=reward.partner_id)).require_agreement(at)
    spent = await redeem_reward_points(
        conn,
        RewardSpendRequest(
            actor=actor,
            key_space=key_space,
            idempotency_key=idempotency_key,
            digest=digest,
            member_id=member_id,
            partner_id=reward.partner_id,
            points=reward.price_points,
            ref=f"reward:{reward.id}",
            at=at,
        ),
    )
    if spent.replayed:  # a concurrent request under the key committed first
        return await _replayed(conn, member_id=member_id, key=idempotency_key, reward=reward)
    redemption = await taking.take(
        conn,
        reward=reward,
        member_id=member_id,
        points=spent.points,
        transaction_id=spent.transaction_id,
        idempotency_key=idempotency_key,
        at=at,
    )
    return Redeemed(
        redemption=redemption,
        reward=await catalog.get(conn, reward_id=reward_id),
        replayed=False,
    )


async def _replayed(conn: Any, *, member_id: uuid.UUID, key: str, reward: RewardRecord) -> Redeemed:
    found = await taking.redemption_by_key(conn, member_id=member_id, idempotency_key=key)
    if found is None:  # the ledger's key and the redemption are written in one unit of work
        raise RuntimeError(f"reward spend under key {key!r} has no redemption")
    return Redeemed(redemption=found, reward=reward, replayed=True)
