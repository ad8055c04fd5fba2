"""Offer inputs."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.input(description="A new offer: exactly one of multiplier and bonusPoints.")
class CreateOfferInput:
    partner_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The partner whose purchases it applies to: a partner may only name itself "
        "(or leave it out); the operator names one, or none for a coalition-wide offer.",
    )
    name: str = strawberry.field(description="Short name, 1..200 characters.")
    description: str = strawberry.field(default="", description="Up to 4000 characters.")
    multiplier: str | None = strawberry.field(
        default=None, description="A decimal string above 1 (at most 100, 4 places)."
    )
    bonus_points: int | None = strawberry.field(
        default=None, description="Fixed points added, 1..1000000000."
    )
    category: str | None = strawberry.field(
        default=None, description="Only purchases of this category (null: any)."
    )
    starts_at: datetime | None = strawberry.field(
        default=None, description="Applies from this instant on (null: now)."
    )
    ends_at: datetime | None = strawberry.field(
        default=None, description="Applies until this instant, excluded (null: no end)."
    )
    requires_activation: bool = strawberry.field(
        default=False, description="The member must activate it first."
    )
    max_uses_per_member: int | None = strawberry.field(
        default=None, description="Earns per member it applies to, 1..1000000 (null: unlimited)."
    )
    stackable: bool = strawberry.field(
        default=False, description="Applies together with every other applying offer."
    )
    min_tier: str | None = strawberry.field(
        default=None, description="The name of the lowest tier that gets it (null: all)."
    )


@strawberry.input(description="End an offer now.")
class EndOfferInput:
    offer_id: strawberry.ID = strawberry.field(description="The offer.")


@strawberry.input(description="Activate an offer that requires activation.")
class ActivateOfferInput:
    offer_id: strawberry.ID = strawberry.field(description="The offer.")


@strawberry.input(description="A promo code for an offer that requires activation.")
class CreatePromoCodeInput:
    offer_id: strawberry.ID = strawberry.field(description="The offer it activates.")
    code: str = strawberry.field(
        description="3..40 of A-Z, 0-9 and '-' (stored upper-case; unique in any case)."
    )
    max_redemptions: int = strawberry.field(description="How many members may apply it (>= 1).")
    valid_until: datetime = strawberry.field(description="It may be applied until then.")


@strawberry.input(description="Apply a promo code: activates its offer for the calling member.")
class ApplyPromoCodeInput:
    code: str = strawberry.field(description="The code, in any case.")
