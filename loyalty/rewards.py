"""The rewards catalog: partners (or the operator) publish, change and retire rewards and add
voucher codes; anyone browses them; members redeem them for points (`redeem`).

`owner` is whose rewards the caller may change: a partner's own id, or None for the operator
(any partner's). Another partner's reward is NOT_FOUND, like one that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from catalog import service as catalog
from catalog.errors import RewardNotFound
from catalog.service import RedemptionRecord, RewardDraft, RewardRecord
from core.clock import utcnow
from core.errors import ErrorCode
from core.errors import ValidationError as DomainValidation
from ledger import service as ledger
from loyalty.runtime import Runtime

# What each use case may raise (gateway.graphql checks each mutation's result union against it).
PUBLISH_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.PARTNER_NOT_FOUND})
CHANGE_ERRORS = frozenset({ErrorCode.VALIDATION, ErrorCode.NOT_FOUND})


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
    found = await catalog.redemptions(conn, member_id=member_id, limit=limit, before=before)
    rewards = await catalog.get_many(conn, ids=list({r.reward_id for r in found}))
    by_id = {r.id: r for r in rewards if r is not None}
    return [(r, by_id[r.reward_id]) for r in found]
