"""Bonus and transfer types and inputs."""

from __future__ import annotations

from datetime import datetime

import strawberry

from ledger.service import BonusResult, TransferResult
from members.bonus_rules import BonusRulesRecord


@strawberry.type(
    description="The operator's bonus rules in force. Both bonuses are funded by the operator: "
    "their points name no issuing partner."
)
class BonusRules:
    signup_points: int = strawberry.field(
        description="Points a new member gets at registration (0: none)."
    )
    referral_points: int = strawberry.field(
        description="Points the referring member and the friend each get once the friend's "
        "first earn is recorded (0: none); the amount is the one in force when the friend "
        "registered."
    )
    recorded_at: datetime | None = strawberry.field(
        description="When these rules were set (null: never set, no bonuses)."
    )

    @classmethod
    def of(cls, r: BonusRulesRecord) -> BonusRules:
        return cls(
            signup_points=r.signup_points,
            referral_points=r.referral_points,
            recorded_at=r.recorded_at,
        )


@strawberry.type(description="Bonus points a partner credited to a member (a ledger transaction).")
class Bonus:
    id: strawberry.ID = strawberry.field(description="Transaction id.")
    points: int = strawberry.field(description="Points credited.")
    reason: str = strawberry.field(description="What the bonus is for, as the partner gave it.")

    @classmethod
    def of(cls, r: BonusResult, reason: str) -> Bonus:
        return cls(id=strawberry.ID(str(r.transaction_id)), points=r.points, reason=reason.strip())


@strawberry.type(description="Points moved from the calling member to another member.")
class Transfer:
    id: strawberry.ID = strawberry.field(description="Transaction id.")
    points: int = strawberry.field(description="Points transferred.")

    @classmethod
    def of(cls, r: TransferResult) -> Transfer:
        return cls(id=strawberry.ID(str(r.transaction_id)), points=r.points)


@strawberry.input(description="The operator's bonus rules, in force from now on.")
class SetBonusRulesInput:
    signup_points: int = strawberry.field(
        description="Points a new member gets at registration, 0..1000000 (0: none)."
    )
    referral_points: int = strawberry.field(
        description="Points each side of a referral gets after the friend's first earn, "
        "0..1000000 (0: none). Friends who registered before keep the amount promised then."
    )


@strawberry.input(description="The calling partner's own bonus for a non-purchase event.")
class AwardBonusInput:
    card_number: str = strawberry.field(description="The member's 16-digit card number.")
    points: int = strawberry.field(description="Points to credit, 1..100000.")
    reason: str = strawberry.field(
        description="What it is for (shown to the member), 1..200 characters, e.g. a review."
    )
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )


@strawberry.input(description="Points the calling member gives to another member.")
class TransferPointsInput:
    to_card_number: str = strawberry.field(description="The receiving member's card number.")
    points: int = strawberry.field(
        description="Points to give: positive, at most the available points and what is left "
        "of the sender's daily limit."
    )
    idempotency_key: str = strawberry.field(
        description="Unique per request; a retry sends the same key."
    )
