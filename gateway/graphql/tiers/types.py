"""Tier types and inputs."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.graphql import types as T
from loyalty.tiers import TierStatus as TierStatusRecord
from members.tiers import Ladder, ReviewReport, TierRecord


@strawberry.type(description="A status tier: reached at a qualifying spend, it multiplies earns.")
class Tier:
    name: str = strawberry.field(description="Tier name, unique in the ladder.")
    threshold: T.Money = strawberry.field(
        description="Qualifying spend (rolling 12 months, every partner, refunds subtracted, "
        "in the settlement currency) from which a member holds the tier."
    )
    multiplier: str = strawberry.field(
        description='Earn multiplier of the tier\'s members, a decimal string ("1.25").'
    )

    @classmethod
    def of(cls, t: TierRecord) -> Tier:
        return cls(
            name=t.name,
            threshold=T.Money.of(t.threshold.amount, t.threshold.currency),
            multiplier=f"{t.multiplier.normalize():f}",
        )


@strawberry.type(description="The tier ladder in force, lowest tier first.")
class TierLadder:
    tiers: list[Tier] = strawberry.field(description="The tiers (empty: no tiers, all x1).")
    recorded_at: datetime | None = strawberry.field(
        description="When the operator set this ladder (null: never)."
    )

    @classmethod
    def of(cls, ladder: Ladder) -> TierLadder:
        return cls(tiers=[Tier.of(t) for t in ladder.tiers], recorded_at=ladder.recorded_at)


@strawberry.type(description="The next tier up and what it takes.")
class NextTier:
    name: str = strawberry.field(description="Tier name.")
    threshold: T.Money = strawberry.field(description="Qualifying spend it needs.")


@strawberry.type(description="A member's standing in the tier ladder.")
class TierStatus:
    name: str | None = strawberry.field(description="The tier held (null: untiered).")
    multiplier: str = strawberry.field(description='Earn multiplier ("1" when untiered).')
    qualifying_spend: T.Money = strawberry.field(
        description="Purchases at every partner over the last 12 months, refunds subtracted, "
        "in the settlement currency (purchases in other currencies do not count)."
    )
    next: NextTier | None = strawberry.field(
        description="The tier above the one held (null: at the top, or no tiers)."
    )

    @classmethod
    def of(cls, s: TierStatusRecord) -> TierStatus:
        spend = s.qualifying_spend
        return cls(
            name=None if s.tier is None else s.tier.name,
            multiplier="1" if s.tier is None else f"{s.tier.multiplier.normalize():f}",
            qualifying_spend=T.Money.of(spend.amount, spend.currency),
            next=None
            if s.next is None
            else NextTier(
                name=s.next.name,
                threshold=T.Money.of(s.next.threshold.amount, s.next.threshold.currency),
            ),
        )


@strawberry.type(description="What a tier review changed.")
class TierReview:
    reviewed: int = strawberry.field(description="Members reviewed.")
    upgraded: int = strawberry.field(description="Members moved to a higher tier.")
    downgraded: int = strawberry.field(description="Members moved to a lower tier or untiered.")

    @classmethod
    def of(cls, r: ReviewReport) -> TierReview:
        return cls(reviewed=r.reviewed, upgraded=r.upgraded, downgraded=r.downgraded)


@strawberry.input(description="One tier of a new ladder.")
class TierInput:
    name: str = strawberry.field(description="1..40 printable characters, unique.")
    threshold: T.MoneyInput = strawberry.field(
        description="Qualifying spend, above zero, in the settlement currency; strictly above "
        "the tier before it."
    )
    multiplier: str = strawberry.field(description='Earn multiplier, 1..10, e.g. "1.25".')


@strawberry.input(description="The new ladder, lowest tier first (empty: no tiers).")
class SetTiersInput:
    tiers: list[TierInput] = strawberry.field(description="At most 20 tiers.")


@strawberry.input(description="The instant of a tier review.")
class RunTierReviewInput:
    as_of: datetime = strawberry.field(
        description="Review as of this instant (RFC 3339 with offset, not in the future): each "
        "member gets the tier its 12 months before qualify for."
    )
