"""Partner inputs."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.input(description="A new partner.")
class CreatePartnerInput:
    name: str = strawberry.field(description="Display name.")
    category: str = strawberry.field(description="Business category.")
    currency: str = strawberry.field(description="Currency of its purchases (ISO 4217).")


@strawberry.input(
    description="Prices per point in the settlement currency, from `effectiveFrom` on."
)
class SetAgreementInput:
    partner_id: strawberry.ID = strawberry.field(description="The partner.")
    issue_price: str = strawberry.field(
        description="Decimal string: what the partner pays per point issued."
    )
    redemption_price: str = strawberry.field(
        description="Decimal string: what it is paid per point accepted."
    )
    effective_from: datetime = strawberry.field(description="RFC 3339 date-time with an offset.")


@strawberry.input(description="A category's own earn rate.")
class CategoryRateInput:
    category: str = strawberry.field(description="Free-form category string.")
    rate: str = strawberry.field(description="Points per currency unit, decimal string.")


@strawberry.input(description="A partner's earn rule (replaces the one in force).")
class SetEarnRuleInput:
    partner_id: strawberry.ID = strawberry.field(description="The partner.")
    base_rate: str = strawberry.field(description="Points per currency unit, decimal string.")
    category_rates: list[CategoryRateInput] = strawberry.field(
        default_factory=list, description="Rates replacing the base rate for these categories."
    )
    hold_days: int = strawberry.field(
        default=0, description="Return window in days (>= 0; 0 = at once)."
    )
    max_redeem_share: str = strawberry.field(
        default="1", description="Largest fraction of a bill payable in points, in (0, 1]."
    )
    max_points_per_transaction: int | None = strawberry.field(
        default=None, description="Optional cap on the points of one earn."
    )


@strawberry.input(description="A new OAuth client for a partner.")
class CreatePartnerClientInput:
    partner_id: strawberry.ID = strawberry.field(description="The partner it acts for.")
    scopes: list[str] = strawberry.field(
        description="Any of points:earn, points:redeem, catalog:write, settlement:read."
    )
