"""Tier mutations (operator): the ladder and the review. Each calls one use case of `loyalty`."""

from __future__ import annotations

import strawberry

from gateway.graphql import errors as E
from gateway.graphql.access import guarded
from gateway.graphql.context import Context
from gateway.graphql.tiers.types import RunTierReviewInput, SetTiersInput, TierLadder, TierReview
from loyalty import tiers


@strawberry.type(description="The ladder is in force.")
class SetTiersSuccess:
    ladder: TierLadder = strawberry.field(description="The ladder now in force.")


@strawberry.type(description="The review ran.")
class RunTierReviewSuccess:
    review: TierReview = strawberry.field(description="What it changed.")


SetTiersResult = E.result_union(
    "SetTiersResult", SetTiersSuccess, tiers.SET_TIERS_ERRORS | E.GUARDED
)
RunTierReviewResult = E.result_union(
    "RunTierReviewResult", RunTierReviewSuccess, tiers.REVIEW_ERRORS | E.GUARDED
)


@strawberry.type(description="Tier mutations.")
class TiersMutation:
    @strawberry.mutation(
        description="Replace the tier ladder (operator). Members keep their tier by name; one "
        "whose tier is no longer in the ladder counts as untiered until its next upgrade or "
        "review."
    )
    async def set_tiers(self, info: strawberry.Info, input: SetTiersInput) -> SetTiersResult:
        async def work(ctx: Context) -> SetTiersSuccess:
            ladder = await tiers.set_tiers(
                ctx,
                actor=ctx.actor,
                tiers_in=[
                    tiers.TierInput(t.name, t.threshold.amount, t.threshold.currency, t.multiplier)
                    for t in input.tiers
                ],
            )
            return SetTiersSuccess(ladder=TierLadder.of(ladder))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Run the tier review as of an instant (operator): every member gets the "
        "tier its 12 months before qualify for, up or down. Re-running it for the same "
        "instant changes nothing more; one review runs at a time (LIMIT_EXCEEDED)."
    )
    async def run_tier_review(
        self, info: strawberry.Info, input: RunTierReviewInput
    ) -> RunTierReviewResult:
        async def work(ctx: Context) -> RunTierReviewSuccess:
            r = await tiers.run_review(ctx, as_of=input.as_of)
            return RunTierReviewSuccess(review=TierReview.of(r))

        return await guarded(info, "operator", work)
