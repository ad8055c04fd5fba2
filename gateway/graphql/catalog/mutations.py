"""Catalog mutations: a partner's (or the operator's) rewards, and a member's redemption of
one. Each calls one use case of `loyalty.rewards`."""

from __future__ import annotations

import strawberry

from gateway import authz
from gateway.graphql import errors as E
from gateway.graphql.access import guarded
from gateway.graphql.catalog.inputs import (
    AddVoucherCodesInput,
    PublishRewardInput,
    RedeemRewardInput,
    RetireRewardInput,
    UpdateRewardInput,
)
from gateway.graphql.catalog.types import Reward, RewardRedemption
from gateway.graphql.context import Context
from loyalty import rewards
from loyalty.terms import parse_id


@strawberry.type(description="The reward is published.")
class PublishRewardSuccess:
    reward: Reward = strawberry.field(description="The new reward.")


@strawberry.type(description="The reward was changed.")
class UpdateRewardSuccess:
    reward: Reward = strawberry.field(description="The reward as it is now.")


@strawberry.type(description="The reward is retired (it was already, or is now).")
class RetireRewardSuccess:
    reward: Reward = strawberry.field(description="The retired reward.")


@strawberry.type(description="The codes were added to the voucher's pool.")
class AddVoucherCodesSuccess:
    reward: Reward = strawberry.field(description="The voucher, with its stock left.")
    added: int = strawberry.field(description="Codes added by this call.")


@strawberry.type(
    description="The reward is the member's (or this is the replay of that request): its points "
    "were taken, and a voucher's code is in the redemption."
)
class RedeemRewardSuccess:
    redemption: RewardRedemption = strawberry.field(description="The redemption.")
    replayed: bool = strawberry.field(
        description="True when this answers a retry of an earlier request."
    )


PublishRewardResult = E.result_union(
    "PublishRewardResult", PublishRewardSuccess, rewards.PUBLISH_ERRORS | E.GUARDED
)
UpdateRewardResult = E.result_union(
    "UpdateRewardResult", UpdateRewardSuccess, rewards.CHANGE_ERRORS | E.GUARDED
)
RetireRewardResult = E.result_union(
    "RetireRewardResult", RetireRewardSuccess, rewards.CHANGE_ERRORS | E.GUARDED
)
AddVoucherCodesResult = E.result_union(
    "AddVoucherCodesResult", AddVoucherCodesSuccess, rewards.CHANGE_ERRORS | E.GUARDED
)
RedeemRewardResult = E.result_union(
    "RedeemRewardResult", RedeemRewardSuccess, rewards.REDEEM_ERRORS | E.GUARDED
)

# The fields of UpdateRewardInput that name a change (all but the reward).
_CHANGES = (
    "title",
    "description",
    "price_points",
    "stock",
    "category",
    "available_from",
    "available_until",
)


@strawberry.type(description="Catalog mutations.")
class CatalogMutation:
    @strawberry.mutation(
        description="Publish a reward (a partner with catalog:write, its own; the operator, "
        "any partner's)."
    )
    async def publish_reward(
        self, info: strawberry.Info, input: PublishRewardInput
    ) -> PublishRewardResult:
        async def work(ctx: Context) -> PublishRewardSuccess:
            assert ctx.principal is not None
            requested = (
                None if input.partner_id is None else parse_id(input.partner_id, "partnerId")
            )
            r = await rewards.publish(
                ctx,
                actor=ctx.actor,
                partner_id=authz.catalog_partner(ctx.principal, requested),
                title=input.title,
                description=input.description,
                kind=input.kind,
                price_points=input.price_points,
                stock=input.stock,
                voucher_codes=input.voucher_codes,
                category=input.category,
                available_from=input.available_from,
                available_until=input.available_until,
            )
            return PublishRewardSuccess(reward=Reward.of(r))

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="Change a live reward's fields (its partner with catalog:write, or the "
        "operator)."
    )
    async def update_reward(
        self, info: strawberry.Info, input: UpdateRewardInput
    ) -> UpdateRewardResult:
        async def work(ctx: Context) -> UpdateRewardSuccess:
            assert ctx.principal is not None
            changes = {
                name: getattr(input, name)
                for name in _CHANGES
                if getattr(input, name) is not strawberry.UNSET
            }
            r = await rewards.update(
                ctx,
                owner=authz.catalog_owner(ctx.principal),
                reward_id=input.reward_id,
                changes=changes,
            )
            return UpdateRewardSuccess(reward=Reward.of(r))

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="Withdraw a reward for good (its partner with catalog:write, or the "
        "operator); redemptions already made stay."
    )
    async def retire_reward(
        self, info: strawberry.Info, input: RetireRewardInput
    ) -> RetireRewardResult:
        async def work(ctx: Context) -> RetireRewardSuccess:
            assert ctx.principal is not None
            r = await rewards.retire(
                ctx, owner=authz.catalog_owner(ctx.principal), reward_id=input.reward_id
            )
            return RetireRewardSuccess(reward=Reward.of(r))

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="Add codes to a voucher reward's pool (its partner with catalog:write, or "
        "the operator)."
    )
    async def add_voucher_codes(
        self, info: strawberry.Info, input: AddVoucherCodesInput
    ) -> AddVoucherCodesResult:
        async def work(ctx: Context) -> AddVoucherCodesSuccess:
            assert ctx.principal is not None
            r, added = await rewards.add_voucher_codes(
                ctx,
                owner=authz.catalog_owner(ctx.principal),
                reward_id=input.reward_id,
                codes=input.codes,
            )
            return AddVoucherCodesSuccess(reward=Reward.of(r), added=added)

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="Buy a reward with the calling member's available points, taken at once "
        "(member token). A voucher's code is in the answer and in me { rewardRedemptions }, "
        "and nowhere else."
    )
    async def redeem_reward(
        self, info: strawberry.Info, input: RedeemRewardInput
    ) -> RedeemRewardResult:
        async def work(ctx: Context) -> RedeemRewardSuccess:
            assert ctx.principal is not None and ctx.principal.member_id is not None
            r = await rewards.redeem(
                ctx,
                actor=ctx.actor,
                member_id=ctx.principal.member_id,
                reward_id=input.reward_id,
                idempotency_key=input.idempotency_key,
            )
            return RedeemRewardSuccess(
                redemption=RewardRedemption.of(r.redemption, r.reward), replayed=r.replayed
            )

        return await guarded(info, "member", work, kind="member")
