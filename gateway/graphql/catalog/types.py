"""Catalog types: rewards and the member's reward redemptions."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from catalog.redemptions import RedemptionRecord
from catalog.service import RewardRecord
from gateway.graphql import types as T


@strawberry.type(
    description="A reward of the catalog: something a member buys with points, delivered by "
    "its partner."
)
class Reward:
    id: strawberry.ID = strawberry.field(description="Reward id: pass to redeemReward.")
    title: str = strawberry.field(description="Short title.")
    description: str = strawberry.field(description="What the member gets (may be empty).")
    kind: str = strawberry.field(
        description="VOUCHER (a code from a pool), GOODS or CHARITY (a donation)."
    )
    price_points: int = strawberry.field(description="Points it costs (> 0).")
    stock_left: int | None = strawberry.field(
        description="How many may still be redeemed (a voucher: its unused codes); null is "
        "unlimited."
    )
    category: str | None = strawberry.field(description="Free-form category, if any.")
    available_from: datetime | None = strawberry.field(
        description="Offered from this instant on (null: since publication)."
    )
    available_until: datetime | None = strawberry.field(
        description="Offered until this instant, excluded (null: no end)."
    )
    retired_at: datetime | None = strawberry.field(
        description="When its partner withdrew it (only the partner and the operator list "
        "retired rewards)."
    )
    partner_id: strawberry.Private[uuid.UUID]

    @strawberry.field(description="The partner that delivers it.")
    async def partner(self, info: strawberry.Info) -> T.Partner | None:
        record = await info.context.partner_loader.load(self.partner_id)
        return T.Partner.of(record) if record else None

    @classmethod
    def of(cls, r: RewardRecord) -> Reward:
        return cls(
            id=strawberry.ID(str(r.id)),
            title=r.title,
            description=r.description,
            kind=r.kind,
            price_points=r.price_points,
            stock_left=r.stock_left,
            category=r.category,
            available_from=r.available_from,
            available_until=r.available_until,
            retired_at=r.retired_at,
            partner_id=r.partner_id,
        )


@strawberry.type(
    description="A member's redemption of a reward. Only that member ever sees it (and its "
    "voucher code)."
)
class RewardRedemption:
    id: strawberry.ID = strawberry.field(description="Redemption id.")
    points: int = strawberry.field(description="Points it took.")
    voucher_code: str | None = strawberry.field(
        description="The voucher's code handed to the member (VOUCHER rewards only)."
    )
    transaction_id: strawberry.ID = strawberry.field(
        description="The ledger transaction that took the points."
    )
    created_at: datetime = strawberry.field(description="When it was redeemed.")
    reward: Reward = strawberry.field(description="The reward redeemed.")

    @classmethod
    def of(cls, r: RedemptionRecord, reward: RewardRecord) -> RewardRedemption:
        return cls(
            id=strawberry.ID(str(r.id)),
            points=r.points,
            voucher_code=r.voucher_code,
            transaction_id=strawberry.ID(str(r.transaction_id)),
            created_at=r.created_at,
            reward=Reward.of(reward),
        )
