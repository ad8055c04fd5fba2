"""The offers and tiers of DOMAIN.md ("Offers and the earn breakdown", "Tiers") on top of the
ledger model (model.py), for the stateful test of purchases (test_stateful_offers_tiers.py).

It shares no code with the service (it does not call `catalog.breakdown` nor `members.tiers`):
- a purchase's points are lines, each rounded down on its own: BASE = amount x rate (the
  category's rate, else the base rate), at most the rule's cap; TIER = base x (multiplier - 1)
  for the tier held when the earn is recorded; one OFFER line per applying offer, a multiplier
  m adding base x (m - 1), a bonus its points; "base" being the unrounded amount x rate;
- an offer applies in [startsAt, endsAt) (ending it early ends it then), at its partner, in its
  category if it names one, to a member whose tier reaches minTier, who activated it if it
  requires activation and has used it fewer than maxUsesPerMember times; every stackable one
  applies, of the non-stackable ones the one adding the most (ties: the earliest created);
- an offer that added points to an earn was used once more by the member (one that added
  nothing, being rounded down to 0, was not: `catalog.breakdown` leaves its line out);
- a purchase that earns no points is refused;
- qualifying spend at t: the purchase amounts of the member's earns in (t - 12 months, t], each
  less what refunds took back of it. As `members.tiers` documents, what a refund takes back is
  the amount pro rata to the points it reversed (truncated to 4 places): a partial refund of
  less than one point's worth of the purchase takes back nothing, a full refund everything;
- the tier rises after an earn that brings the spend to a threshold (that earn priced at the
  tier held before it); a refund never lowers it; the review sets every member to the tier the
  12 months before it reach, up or down; a member's tier is kept by name across ladders, and a
  name the ladder in force lacks counts as untiered;
- a refund of R of an order of amount A, after refunds totalling S, reverses
  floor(P x (S + R) / A) - floor(P x S / A) of the earn's P points (cumulative pro rata).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any

from core.errors import ValidationError
from tests.ledger.model import N_MEMBERS, MLot, Model, add_months

QUALIFYING_MONTHS = 12
NO_ID = uuid.UUID(int=0)


def floor_points(exact: Decimal) -> int:
    return max(int(exact.to_integral_value(ROUND_FLOOR)), 0)


@dataclass(frozen=True)
class MTier:
    name: str
    threshold: Decimal
    multiplier: Decimal


@dataclass(frozen=True)
class MRule:
    """A partner's earn rule."""

    base_rate: Decimal
    category_rates: dict[str, Decimal]
    cap: int | None
    hold_days: int

    def rate(self, category: str | None) -> Decimal:
        if category is not None and category in self.category_rates:
            return self.category_rates[category]
        return self.base_rate


@dataclass(eq=False)
class MOffer:
    seq: int  # creation order
    partner: int
    multiplier: Decimal | None
    bonus: int | None
    category: str | None
    starts_at: datetime
    ends_at: datetime | None
    requires_activation: bool
    max_uses: int | None
    stackable: bool
    min_tier: str | None
    ended_at: datetime | None = None
    id: uuid.UUID = NO_ID  # the service's, once created

    @property
    def end(self) -> datetime | None:
        """When it stops applying: its end, or when it was ended early if before."""
        ends = [t for t in (self.ends_at, self.ended_at) if t is not None]
        return min(ends) if ends else None

    def over_at(self, at: datetime) -> bool:
        return self.end is not None and self.end <= at

    def adds(self, base: Decimal) -> Decimal:
        if self.multiplier is not None:
            return base * (self.multiplier - 1)
        assert self.bonus is not None
        return Decimal(self.bonus)


# A line: source, points, the offer (OFFER lines only).
MLine = tuple[str, int, MOffer | None]


@dataclass(eq=False)
class MPurchase:
    member: int
    partner: int
    key: str
    ref: str
    amount: Decimal
    category: str | None
    at: datetime
    lines: list[MLine]
    lot: MLot
    refunded: Decimal = Decimal(0)
    result: Any = None  # the service's EarnResult

    @property
    def points(self) -> int:
        return sum(points for _, points, _ in self.lines)


class OffersTiersModel(Model):
    """The ledger model with partners' earn rules, offers and a tier ladder."""

    def __init__(self, now: datetime, validity_months: int) -> None:
        super().__init__(now)
        self.validity_months = validity_months
        self.rules: list[MRule] = []
        self.ladder: list[MTier] = []
        self.tier: list[str | None] = [None] * N_MEMBERS  # the tier name each member holds
        self.offers: list[MOffer] = []
        self.activated: set[tuple[int, int]] = set()  # (offer seq, member)
        self.uses: dict[tuple[int, int], int] = {}  # (offer seq, member) -> earns it added to
        self.purchases: list[MPurchase] = []

    # -- tiers

    def rank(self, name: str | None) -> int | None:
        """A tier's position in the ladder in force (higher is better); None: not on it."""
        return next((i for i, t in enumerate(self.ladder) if t.name == name), None)

    def held(self, m: int) -> MTier | None:
        rank = self.rank(self.tier[m])
        return None if rank is None else self.ladder[rank]

    def spend(self, m: int, at: datetime) -> Decimal:
        """The member's qualifying spend at `at`."""
        since = add_months(at, -QUALIFYING_MONTHS)
        total = Decimal(0)
        for p in self.purchases:
            if p.member != m or not since < p.at <= at:
                continue
            reversed_, points = p.lot.reversed, p.lot.points
            if reversed_ >= points:
                continue
            taken = (p.amount * reversed_ / points).quantize(Decimal("0.0001"), ROUND_DOWN)
            total += p.amount - taken
        return total

    def reached(self, spend: Decimal) -> str | None:
        """The highest tier `spend` reaches (None: untiered)."""
        names = [t.name for t in self.ladder if spend >= t.threshold]
        return names[-1] if names else None

    def set_ladder(self, ladder: list[MTier]) -> None:
        self.ladder = ladder

    def review(self) -> None:
        for m in range(N_MEMBERS):
            self.tier[m] = self.reached(self.spend(m, self.now))

    def upgrade(self, m: int) -> None:
        target = self.rank(self.reached(self.spend(m, self.now)))
        held = self.rank(self.tier[m])
        if target is not None and (held is None or held < target):
            self.tier[m] = self.ladder[target].name

    # -- offers

    def tier_allows(self, offer: MOffer, m: int) -> bool:
        if offer.min_tier is None:
            return True
        needed, held = self.rank(offer.min_tier), self.rank(self.tier[m])
        return needed is not None and held is not None and held >= needed

    def offer_applies(
        self,
        offer: MOffer,
        m: int,
        p: int,
        category: str | None,
        activated: Callable[[MOffer], bool],
        uses: Callable[[MOffer], int],
    ) -> bool:
        return (
            offer.starts_at <= self.now
            and not offer.over_at(self.now)
            and offer.partner == p
            and (offer.category is None or offer.category == category)
            and self.tier_allows(offer, m)
            and (not offer.requires_activation or activated(offer))
            and (offer.max_uses is None or uses(offer) < offer.max_uses)
        )

    def listed(self, m: int) -> set[tuple[uuid.UUID, bool]]:
        """What the member's offer listing shows now: (offer id, activated)."""
        return {
            (o.id, (o.seq, m) in self.activated)
            for o in self.offers
            if o.starts_at <= self.now
            and not o.over_at(self.now)
            and self.tier_allows(o, m)
            and (o.max_uses is None or self.uses.get((o.seq, m), 0) < o.max_uses)
        }

    def create_offer(self, offer: MOffer) -> Callable[[uuid.UUID], None]:
        if (offer.multiplier is None) == (offer.bonus is None):
            raise ValidationError("exactly one of multiplier and bonus")
        if offer.multiplier is not None and offer.multiplier <= 1:
            raise ValidationError("a multiplier of 1 or less")
        if offer.ends_at is not None and offer.ends_at <= offer.starts_at:
            raise ValidationError("an end before the start")

        def apply(offer_id: uuid.UUID) -> None:
            offer.id, offer.seq = offer_id, len(self.offers)
            self.offers.append(offer)

        return apply

    def end_offer(self, offer: MOffer) -> None:
        if offer.ended_at is None:
            offer.ended_at = self.now

    def activate(self, offer: MOffer, m: int) -> None:
        if not offer.requires_activation:
            raise ValidationError("this offer needs no activation")
        if offer.over_at(self.now):
            raise ValidationError("this offer has ended")
        self.activated.add((offer.seq, m))

    # -- purchases

    def lines(self, m: int, p: int, amount: Decimal, category: str | None) -> list[MLine]:
        """The breakdown of a purchase now (lines of 0 points but BASE left out)."""
        return self.counted(m, p, amount, category)[0]

    def counted(
        self, m: int, p: int, amount: Decimal, category: str | None
    ) -> tuple[list[MLine], set[int]]:
        """The breakdown of a purchase now, and the offers (seq) whose use it counts."""
        activated = lambda o: (o.seq, m) in self.activated  # noqa: E731
        uses = lambda o: self.uses.get((o.seq, m), 0)  # noqa: E731
        lines = self._lines(m, p, amount, category, activated, uses)
        return lines, {o.seq for _, _, o in lines if o is not None}

    def _lines(
        self,
        m: int,
        p: int,
        amount: Decimal,
        category: str | None,
        activated: Callable[[MOffer], bool],
        uses: Callable[[MOffer], int],
    ) -> list[MLine]:
        rule = self.rules[p]
        base = amount * rule.rate(category)
        base_points = floor_points(base)
        if rule.cap is not None:
            base_points = min(base_points, rule.cap)
        lines: list[MLine] = [("BASE", base_points, None)]
        held = self.held(m)
        if held is not None:
            lines.append(("TIER", floor_points(base * (held.multiplier - 1)), None))
        applying = [
            o for o in self.offers if self.offer_applies(o, m, p, category, activated, uses)
        ]
        chosen = [o for o in applying if o.stackable]
        others = [o for o in applying if not o.stackable]
        if others:
            best = max(o.adds(base) for o in others)
            chosen.append(next(o for o in others if o.adds(base) == best))  # the earliest
        for o in sorted(chosen, key=lambda o: o.seq):
            lines.append(("OFFER", floor_points(o.adds(base)), o))
        return [line for line in lines if line[0] == "BASE" or line[1] > 0]

    def purchase(
        self, m: int, p: int, amount: Decimal, category: str | None, ref: str, key: str
    ) -> tuple[dict[str, Any], Callable[[Any], MPurchase]]:
        lines, counted = self.counted(m, p, amount, category)
        points = sum(pts for _, pts, _ in lines)
        if points == 0:
            raise ValidationError("this purchase earns no points")
        expected, issue = self.earn(
            m, p, points, self.rules[p].hold_days, self.validity_months, ref
        )

        def apply(result: Any) -> MPurchase:
            issue(result.transaction_id)
            for seq in counted:
                self.uses[(seq, m)] = self.uses.get((seq, m), 0) + 1
            purchase = MPurchase(m, p, key, ref, amount, category, self.now, lines, self.lots[-1])
            purchase.result = result
            self.purchases.append(purchase)
            self.upgrade(m)  # after the earn, which was priced at the tier held before it
            return purchase

        return expected, apply

    def refund(self, purchase: MPurchase, amount: Decimal) -> dict[str, Any]:
        after = purchase.refunded + amount
        if after > purchase.amount:
            raise ValidationError("refund exceeds the order")
        whole, points = purchase.amount, purchase.lot.points
        reversed_ = floor_points(points * after / whole) - floor_points(
            points * purchase.refunded / whole
        )
        if reversed_ > 0:
            self.reverse(purchase.lot, reversed_)  # raises (changing nothing) if too many
        purchase.refunded = after
        return {"points_reversed": reversed_, "points_returned": 0}
