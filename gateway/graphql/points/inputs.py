"""Points inputs: earn, refund, redemption."""

from __future__ import annotations

import strawberry

from gateway.graphql import types as T


@T.plain_input  # the earn path: built without Strawberry's generic per-field conversion
@strawberry.input(description="Points for a purchase at the calling partner.")
class EarnInput:
    card_number: str = strawberry.field(description="The member's 16-digit card number.")
    amount: T.MoneyInput = strawberry.field(
        description="Purchase amount, positive, in the partner's currency."
    )
    category: str | None = strawberry.field(
        default=None, description="Category for category rates."
    )
    order_ref: str = strawberry.field(
        description="The partner's order reference (one earn per order)."
    )
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="A (partial) refund of one of the calling partner's orders.")
class RefundInput:
    order_ref: str = strawberry.field(
        description="The order's reference as given at earn/authorization."
    )
    amount: T.MoneyInput = strawberry.field(description="Amount refunded now, positive.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Reserve a member's points as payment, with their redemption code.")
class AuthorizeRedemptionInput:
    redemption_code: str = strawberry.field(description="The code the member shows (12 digits).")
    points: int = strawberry.field(description="Points to reserve (> 0).")
    purchase_amount: T.MoneyInput = strawberry.field(
        description="The bill, positive, in the partner's currency."
    )
    order_ref: str = strawberry.field(description="The partner's order reference.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Take up to the held points.")
class CaptureRedemptionInput:
    hold_id: strawberry.ID = strawberry.field(description="The hold from authorizeRedemption.")
    points: int = strawberry.field(
        description="Points to capture: at most the hold; the rest is released."
    )
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Release a hold.")
class VoidRedemptionInput:
    hold_id: strawberry.ID = strawberry.field(description="The hold from authorizeRedemption.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="A new redemption code for the calling member.")
class CreateRedemptionCodeInput:
    max_points: int | None = strawberry.field(
        default=None, description="Most points the code lets a partner take."
    )
    partner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Bind the code to this partner."
    )
