"""Offer types."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from catalog.offers import OfferRecord
from catalog.promo_codes import PromoCodeRecord
from gateway.graphql import types as T


@strawberry.type(
    description="An offer: a multiplier or fixed bonus points on the earns it applies to "
    "(DOMAIN.md 'Offers and the earn breakdown')."
)
class Offer:
    id: strawberry.ID = strawberry.field(description="Offer id.")
    name: str = strawberry.field(description="Short name.")
    description: str = strawberry.field(description="What the member gets (may be empty).")
    multiplier: str | None = strawberry.field(
        description="A decimal above 1: the offer adds base x (multiplier - 1); null for a bonus."
    )
    bonus_points: int | None = strawberry.field(
        description="Fixed points the offer adds; null for a multiplier."
    )
    category: str | None = strawberry.field(
        description="Only purchases of this category (null: any)."
    )
    starts_at: datetime = strawberry.field(description="Applies from this instant on.")
    ends_at: datetime | None = strawberry.field(
        description="Applies until this instant, excluded (null: no end)."
    )
    ended_at: datetime | None = strawberry.field(description="When it was ended early, if it was.")
    requires_activation: bool = strawberry.field(
        description="The member must activate it (activateOffer, or a promo code) first."
    )
    max_uses_per_member: int | None = strawberry.field(
        description="How many earns of one member it applies to (null: unlimited)."
    )
    stackable: bool = strawberry.field(
        description="Applies with every other applying offer; of the non-stackable ones only "
        "the one adding the most applies."
    )
    min_tier: str | None = strawberry.field(
        description="The lowest tier that gets it (null: every member)."
    )
    coalition_wide: bool = strawberry.field(
        description="Applies at every partner; its points are issued and paid for by the "
        "operator (charged to no partner)."
    )
    activated: bool | None = strawberry.field(
        description="Whether the calling member activated it (null for partners and the operator)."
    )
    partner_id: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The partner whose purchases it applies to (null: every one).")
    async def partner(self, info: strawberry.Info) -> T.Partner | None:
        if self.partner_id is None:
            return None
        record = await info.context.partner_loader.load(self.partner_id)
        return T.Partner.of(record) if record else None

    @classmethod
    def of(cls, r: OfferRecord, activated: bool | None = None) -> Offer:
        return cls(
            id=strawberry.ID(str(r.id)),
            name=r.name,
            description=r.description,
            multiplier=None if r.multiplier is None else str(r.multiplier.normalize()),
            bonus_points=r.bonus_points,
            category=r.category,
            starts_at=r.starts_at,
            ends_at=r.ends_at,
            ended_at=r.ended_at,
            requires_activation=r.requires_activation,
            max_uses_per_member=r.max_uses_per_member,
            stackable=r.stackable,
            min_tier=r.min_tier,
            coalition_wide=r.partner_id is None,
            activated=activated,
            partner_id=r.partner_id,
        )


@strawberry.type(description="A promo code: applying it activates its offer for the member.")
class PromoCode:
    id: strawberry.ID = strawberry.field(description="Promo code id.")
    code: str = strawberry.field(description="The code (upper-case; matched in any case).")
    offer_id: strawberry.ID = strawberry.field(description="The offer it activates.")
    max_redemptions: int = strawberry.field(description="How many members may apply it.")
    redemptions: int = strawberry.field(description="How many have.")
    valid_until: datetime = strawberry.field(description="It may be applied until then.")

    @classmethod
    def of(cls, r: PromoCodeRecord) -> PromoCode:
        return cls(
            id=strawberry.ID(str(r.id)),
            code=r.code,
            offer_id=strawberry.ID(str(r.offer_id)),
            max_redemptions=r.max_redemptions,
            redemptions=r.redemptions,
            valid_until=r.valid_until,
        )
