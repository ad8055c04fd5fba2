"""Catalog inputs."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.input(description="A new reward of the catalog.")
class PublishRewardInput:
    partner_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The partner that delivers it: required for the operator; a partner may "
        "only name itself (or leave it out).",
    )
    title: str = strawberry.field(description="Short title, 1..200 characters.")
    description: str = strawberry.field(
        default="", description="What the member gets, up to 4000 characters."
    )
    kind: str = strawberry.field(description="VOUCHER, GOODS or CHARITY.")
    price_points: int = strawberry.field(description="Points it costs, 1..1000000000.")
    stock: int | None = strawberry.field(
        default=None,
        description="How many may be redeemed (>= 0); null is unlimited. Not for a VOUCHER, "
        "whose stock is its unused codes.",
    )
    voucher_codes: list[str] = strawberry.field(
        default_factory=list,
        description="A VOUCHER's first codes (each 1..100 characters, no two alike, at most "
        "10000); more with addVoucherCodes.",
    )
    category: str | None = strawberry.field(
        default=None, description="Free-form category, 1..100 characters."
    )
    available_from: datetime | None = strawberry.field(
        default=None, description="Offered from this instant on (null: at once)."
    )
    available_until: datetime | None = strawberry.field(
        default=None, description="Offered until this instant, excluded (null: no end)."
    )


@strawberry.input(
    description="Change a live reward: only the fields given change (the kind never does). "
    "For stock, category and the window, null clears the value (stock null: unlimited)."
)
class UpdateRewardInput:
    reward_id: strawberry.ID = strawberry.field(description="The reward.")
    title: str | None = strawberry.field(default=strawberry.UNSET, description="New title.")
    description: str | None = strawberry.field(
        default=strawberry.UNSET, description="New description."
    )
    price_points: int | None = strawberry.field(
        default=strawberry.UNSET, description="New price in points (> 0)."
    )
    stock: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="Stock left from now on (>= 0), null for unlimited; not for a VOUCHER.",
    )
    category: str | None = strawberry.field(
        default=strawberry.UNSET, description="New category, null for none."
    )
    available_from: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="New start of the window, null for none."
    )
    available_until: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="New end of the window, null for none."
    )


@strawberry.input(description="Withdraw a reward from the catalog for good.")
class RetireRewardInput:
    reward_id: strawberry.ID = strawberry.field(description="The reward.")


@strawberry.input(description="More codes for a voucher reward's pool.")
class AddVoucherCodesInput:
    reward_id: strawberry.ID = strawberry.field(description="The VOUCHER reward.")
    codes: list[str] = strawberry.field(
        description="1..10000 codes, each 1..100 characters, none already in the pool, no two "
        "alike; all are added or none. The request body is at most 64 KiB: send large pools "
        "in several calls."
    )


@strawberry.input(description="Buy a reward with the calling member's points.")
class RedeemRewardInput:
    reward_id: strawberry.ID = strawberry.field(description="The reward.")
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key and gets the same "
        "redemption (and voucher code)."
    )
