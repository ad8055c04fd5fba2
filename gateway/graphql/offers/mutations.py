"""Offer mutations: a partner's (or the operator's) offers and promo codes, and a member's
activations. Each calls one use case of `loyalty.offers`."""

from __future__ import annotations

import strawberry

from gateway import authz
from gateway.graphql import errors as E
from gateway.graphql.access import guarded
from gateway.graphql.context import Context
from gateway.graphql.offers.inputs import (
    ActivateOfferInput,
    ApplyPromoCodeInput,
    CreateOfferInput,
    CreatePromoCodeInput,
    EndOfferInput,
)
from gateway.graphql.offers.types import Offer, PromoCode
from loyalty import offers
from loyalty.terms import parse_id


@strawberry.type(description="The offer is created.")
class CreateOfferSuccess:
    offer: Offer = strawberry.field(description="The new offer.")


@strawberry.type(description="The offer is ended (it was already, or is now).")
class EndOfferSuccess:
    offer: Offer = strawberry.field(description="The ended offer.")


@strawberry.type(description="The offer is activated for the member (it was already, or is now).")
class ActivateOfferSuccess:
    offer: Offer = strawberry.field(description="The activated offer.")


@strawberry.type(description="The promo code is created.")
class CreatePromoCodeSuccess:
    promo_code: PromoCode = strawberry.field(description="The new promo code.")


@strawberry.type(description="The promo code is applied: its offer is activated for the member.")
class ApplyPromoCodeSuccess:
    offer: Offer = strawberry.field(description="The offer it activated.")


CreateOfferResult = E.result_union(
    "CreateOfferResult", CreateOfferSuccess, offers.CREATE_ERRORS | E.GUARDED
)
EndOfferResult = E.result_union("EndOfferResult", EndOfferSuccess, offers.END_ERRORS | E.GUARDED)
ActivateOfferResult = E.result_union(
    "ActivateOfferResult", ActivateOfferSuccess, offers.ACTIVATE_ERRORS | E.GUARDED
)
CreatePromoCodeResult = E.result_union(
    "CreatePromoCodeResult", CreatePromoCodeSuccess, offers.CREATE_PROMO_ERRORS | E.GUARDED
)
ApplyPromoCodeResult = E.result_union(
    "ApplyPromoCodeResult", ApplyPromoCodeSuccess, offers.APPLY_PROMO_ERRORS | E.GUARDED
)


@strawberry.type(description="Offer mutations.")
class OffersMutation:
    @strawberry.mutation(
        description="Create an offer: a partner with catalog:write for its own purchases; the "
        "operator for a partner's, or coalition-wide (no partnerId; applies at every partner, "
        "its points issued and paid for by the operator)."
    )
    async def create_offer(
        self, info: strawberry.Info, input: CreateOfferInput
    ) -> CreateOfferResult:
        async def work(ctx: Context) -> CreateOfferSuccess:
            assert ctx.principal is not None
            requested = (
                None if input.partner_id is None else parse_id(input.partner_id, "partnerId")
            )
            r = await offers.create(
                ctx,
                actor=ctx.actor,
                partner_id=authz.catalog_partner(ctx.principal, requested),
                name=input.name,
                description=input.description,
                multiplier=input.multiplier,
                bonus_points=input.bonus_points,
                category=input.category,
                starts_at=input.starts_at,
                ends_at=input.ends_at,
                requires_activation=input.requires_activation,
                max_uses_per_member=input.max_uses_per_member,
                stackable=input.stackable,
                min_tier=input.min_tier,
            )
            return CreateOfferSuccess(offer=Offer.of(r))

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="End an offer now (its partner with catalog:write, or the operator); earns "
        "from now on no longer get it."
    )
    async def end_offer(self, info: strawberry.Info, input: EndOfferInput) -> EndOfferResult:
        async def work(ctx: Context) -> EndOfferSuccess:
            assert ctx.principal is not None
            r = await offers.end(
                ctx, owner=authz.catalog_owner(ctx.principal), offer_id=input.offer_id
            )
            return EndOfferSuccess(offer=Offer.of(r))

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="Activate an offer that requires activation, for the calling member "
        "(member token); activating it again changes nothing."
    )
    async def activate_offer(
        self, info: strawberry.Info, input: ActivateOfferInput
    ) -> ActivateOfferResult:
        async def work(ctx: Context) -> ActivateOfferSuccess:
            assert ctx.principal is not None and ctx.principal.member_id is not None
            r = await offers.activate(
                ctx, member_id=ctx.principal.member_id, offer_id=input.offer_id
            )
            return ActivateOfferSuccess(offer=Offer.of(r, activated=True))

        return await guarded(info, "member", work, kind="member")

    @strawberry.mutation(
        description="Create a promo code for an offer that requires activation (the offer's "
        "partner with catalog:write, or the operator)."
    )
    async def create_promo_code(
        self, info: strawberry.Info, input: CreatePromoCodeInput
    ) -> CreatePromoCodeResult:
        async def work(ctx: Context) -> CreatePromoCodeSuccess:
            assert ctx.principal is not None
            r = await offers.create_promo_code(
                ctx,
                actor=ctx.actor,
                owner=authz.catalog_owner(ctx.principal),
                offer_id=input.offer_id,
                code=input.code,
                max_redemptions=input.max_redemptions,
                valid_until=input.valid_until,
            )
            return CreatePromoCodeSuccess(promo_code=PromoCode.of(r))

        return await guarded(info, authz.CATALOG_EDITORS, work)

    @strawberry.mutation(
        description="Apply a promo code (member token): activates its offer for the member, at "
        "most once per member and maxRedemptions times in all, before validUntil."
    )
    async def apply_promo_code(
        self, info: strawberry.Info, input: ApplyPromoCodeInput
    ) -> ApplyPromoCodeResult:
        async def work(ctx: Context) -> ApplyPromoCodeSuccess:
            assert ctx.principal is not None and ctx.principal.member_id is not None
            r = await offers.apply_promo_code(
                ctx, member_id=ctx.principal.member_id, code=input.code
            )
            return ApplyPromoCodeSuccess(offer=Offer.of(r, activated=True))

        return await guarded(info, "member", work, kind="member")
