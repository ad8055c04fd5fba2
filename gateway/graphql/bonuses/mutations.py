"""Bonus and transfer mutations: the operator's bonus rules, a partner's bonus, a member's
transfer. Each calls one use case of `loyalty`."""

from __future__ import annotations

import strawberry

from gateway.graphql import errors as E
from gateway.graphql.access import guarded
from gateway.graphql.bonuses.types import (
    AwardBonusInput,
    Bonus,
    BonusRules,
    SetBonusRulesInput,
    Transfer,
    TransferPointsInput,
)
from gateway.graphql.context import Context
from loyalty import bonuses, transfers


@strawberry.type(description="The bonus rules are in force.")
class SetBonusRulesSuccess:
    bonus_rules: BonusRules = strawberry.field(description="The rules now in force.")


@strawberry.type(description="The bonus was credited (or this is the replay of that request).")
class AwardBonusSuccess:
    bonus: Bonus = strawberry.field(description="The bonus's ledger transaction.")
    replayed: bool = strawberry.field(description="True when this answers a retry.")


@strawberry.type(description="The points were transferred (or this is the replay of that request).")
class TransferPointsSuccess:
    transfer: Transfer = strawberry.field(description="The transfer's ledger transaction.")
    replayed: bool = strawberry.field(description="True when this answers a retry.")


SetBonusRulesResult = E.result_union(
    "SetBonusRulesResult", SetBonusRulesSuccess, bonuses.SET_RULES_ERRORS | E.GUARDED
)
AwardBonusResult = E.result_union(
    "AwardBonusResult", AwardBonusSuccess, bonuses.AWARD_ERRORS | E.GUARDED
)
TransferPointsResult = E.result_union(
    "TransferPointsResult", TransferPointsSuccess, transfers.ERRORS | E.GUARDED
)


@strawberry.type(description="Bonus and transfer mutations.")
class BonusesMutation:
    @strawberry.mutation(
        description="Set the sign-up and referral bonuses, funded by the operator (operator)."
    )
    async def set_bonus_rules(
        self, info: strawberry.Info, input: SetBonusRulesInput
    ) -> SetBonusRulesResult:
        async def work(ctx: Context) -> SetBonusRulesSuccess:
            r = await bonuses.set_rules(
                ctx,
                actor=ctx.actor,
                signup_points=input.signup_points,
                referral_points=input.referral_points,
            )
            return SetBonusRulesSuccess(bonus_rules=BonusRules.of(r))

        return await guarded(info, "operator", work)

    @strawberry.mutation(
        description="Credit a member with the calling partner's own bonus points for a "
        "non-purchase event, funded by the partner like its earns (scope points:earn)."
    )
    async def award_bonus(self, info: strawberry.Info, input: AwardBonusInput) -> AwardBonusResult:
        async def work(ctx: Context) -> AwardBonusSuccess:
            assert ctx.principal is not None and ctx.principal.partner_id is not None
            r = await bonuses.award(
                ctx,
                actor=ctx.actor,
                key_space=ctx.key_space,
                partner_id=ctx.principal.partner_id,
                card_number=input.card_number,
                points=input.points,
                reason=input.reason,
                idempotency_key=input.idempotency_key,
            )
            return AwardBonusSuccess(bonus=Bonus.of(r, input.reason), replayed=r.replayed)

        return await guarded(info, "points:earn", work, kind="partner")

    @strawberry.mutation(
        description="Give some of the calling member's available points to another member; "
        "the points keep their issuer, earn date and expiry (member token)."
    )
    async def transfer_points(
        self, info: strawberry.Info, input: TransferPointsInput
    ) -> TransferPointsResult:
        async def work(ctx: Context) -> TransferPointsSuccess:
            assert ctx.principal is not None and ctx.principal.member_id is not None
            r = await transfers.transfer(
                ctx,
                actor=ctx.actor,
                key_space=ctx.key_space,
                member_id=ctx.principal.member_id,
                to_card_number=input.to_card_number,
                points=input.points,
                idempotency_key=input.idempotency_key,
            )
            return TransferPointsSuccess(transfer=Transfer.of(r), replayed=r.replayed)

        return await guarded(info, "member", work, kind="member")
