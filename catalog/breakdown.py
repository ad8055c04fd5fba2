"""The earn breakdown: which offers apply to a purchase, and the points of each line.

Pure functions (no database, no clock) for the earn path, which calls them with what it cached
(the partner's rule and live offers) and what travels with the earn (the member's tier,
activations and uses). The rules are DOMAIN.md's "Offers and the earn breakdown":

- `BASE`: amount x rate, rounded down, at most the rule's cap (the earn rule's own points);
- `TIER`: base x (multiplier - 1) for the member's tier;
- `OFFER`, one line per applying offer: a multiplier m adds base x (m - 1), a bonus its points;

where "base" is the UNROUNDED, uncapped amount x rate, and each line is rounded down on its own.
Every applying stackable offer applies; of the non-stackable ones only the one adding the most
(ties: the earliest created, then the smallest id).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

from core.frozen import fast_init
from partners.service import base_points


class Source(StrEnum):
    """Where a line's points come from."""

    BASE = "BASE"
    TIER = "TIER"
    OFFER = "OFFER"


class Funder(StrEnum):
    """Who issues (and pays for) a line's points: the earning partner, or the operator (a
    coalition-wide offer's)."""

    PARTNER = "PARTNER"
    OPERATOR = "OPERATOR"


@dataclass(frozen=True, slots=True)
class ApplicableOffer:
    """An offer as the earn path evaluates it (`catalog.offers.live_offers` reads them)."""

    id: uuid.UUID
    partner_id: uuid.UUID | None  # None: coalition-wide, the operator's
    multiplier: Decimal | None
    bonus_points: int | None
    category: str | None
    starts_at: datetime
    ends_at: datetime | None  # the earlier of its end and when it was ended early
    requires_activation: bool
    max_uses_per_member: int | None
    stackable: bool
    min_tier: str | None
    created_at: datetime

    def exact_points(self, base: Decimal) -> Decimal:
        """What it adds to an earn of unrounded `base` points, before rounding."""
        if self.multiplier is not None:
            return base * (self.multiplier - 1)
        return Decimal(self.bonus_points or 0)

    @property
    def funded_by(self) -> Funder:
        return Funder.PARTNER if self.partner_id is not None else Funder.OPERATOR


@fast_init
@dataclass(frozen=True, slots=True)
class Line:
    """One line of an earn's breakdown; an earn's points are the sum of its lines."""

    source: Source
    points: int
    offer_id: uuid.UUID | None
    funded_by: Funder


def floor_points(exact: Decimal) -> int:
    """Whole points, rounded down (never below zero)."""
    return max(int(exact.to_integral_value(ROUND_FLOOR)), 0)


def tier_allows(
    min_tier: str | None, member_tier_rank: int | None, tier_ranks: Mapping[str, int]
) -> bool:
    """Whether a member of rank `member_tier_rank` (None: no tier) reaches `min_tier`.

    `tier_ranks` is the ladder, tier name -> rank (higher is better); an offer naming a tier
    no longer on the ladder applies to nobody rather than to everybody."""
    if min_tier is None:
        return True
    needed = tier_ranks.get(min_tier)
    return needed is not None and member_tier_rank is not None and member_tier_rank >= needed


def applicable(
    offers: Iterable[ApplicableOffer],
    *,
    at: datetime,
    partner_id: uuid.UUID,
    category: str | None,
    member_tier_rank: int | None,
    activated_ids: Collection[uuid.UUID],
    uses_by_offer: Mapping[uuid.UUID, int],
    tier_ranks: Mapping[str, int] | None = None,
) -> list[ApplicableOffer]:
    """The offers that may apply to an earn at `at` at `partner_id` in `category`: in their
    window [starts_at, ends_at), the partner's own or coalition-wide, of the earn's category if
    they name one, the member's tier at least min_tier, activated if they require it, used
    fewer than max_uses_per_member times. `breakdown` then keeps every stackable one and the
    best non-stackable one. (`offers_for`, then `usable`.)"""
    return usable(
        offers_for(offers, partner_id=partner_id, category=category),
        at=at,
        member_tier_rank=member_tier_rank,
        activated_ids=activated_ids,
        uses_by_offer=uses_by_offer,
        tier_ranks=tier_ranks,
    )


def offers_for(
    offers: Iterable[ApplicableOffer], *, partner_id: uuid.UUID, category: str | None
) -> tuple[ApplicableOffer, ...]:
    """The part of `applicable` that depends on the purchase's partner and category alone (an
    earn path may keep it with the partner's cached offers): the partner's own offers and the
    coalition-wide ones, of `category` if they name one. Order kept."""
    return tuple(
        o
        for o in offers
        if (o.partner_id is None or o.partner_id == partner_id)
        and (o.category is None or o.category == category)
    )


def usable(
    offers: Iterable[ApplicableOffer],
    *,
    at: datetime,
    member_tier_rank: int | None,
    activated_ids: Collection[uuid.UUID],
    uses_by_offer: Mapping[uuid.UUID, int],
    tier_ranks: Mapping[str, int] | None = None,
) -> list[ApplicableOffer]:
    """The rest of `applicable`, for offers that fit the purchase's partner and category
    (`offers_for`): in their window at `at`, the member's tier reaching their min_tier,
    activated if they require it, used fewer than max_uses_per_member times. Order kept."""
    ranks = tier_ranks or {}
    return [
        o
        for o in offers
        if o.starts_at <= at
        and (o.ends_at is None or at < o.ends_at)
        and (o.min_tier is None or tier_allows(o.min_tier, member_tier_rank, ranks))
        and (not o.requires_activation or o.id in activated_ids)
        and (o.max_uses_per_member is None or uses_by_offer.get(o.id, 0) < o.max_uses_per_member)
    ]


def chosen(offers: Sequence[ApplicableOffer], base: Decimal) -> list[ApplicableOffer]:
    """Of applicable `offers`: every stackable one, and the non-stackable one adding the most
    to `base` (ties: the earliest created, then the smallest id), in creation order."""
    if not offers:  # most purchases (every line of a batch file without live offers)
        return []
    stackable = [o for o in offers if o.stackable]
    others = [o for o in offers if not o.stackable]
    if others:
        best = min(others, key=lambda o: (-o.exact_points(base), o.created_at, o.id.int))
        stackable.append(best)
    return sorted(stackable, key=lambda o: (o.created_at, o.id.int))


def breakdown(
    amount: Decimal,
    rate: Decimal,
    cap: int | None,
    tier_multiplier: Decimal | None,
    offers: Sequence[ApplicableOffer],
) -> list[Line]:
    """The lines of an earn of `amount` at `rate` (the rule's rate for the category) with the
    rule's `cap`, for a member whose tier multiplies by `tier_multiplier` (None: no tier), with
    the `applicable` offers. BASE first (always, even at 0 points), then TIER (when the
    multiplier is above 1), then one OFFER line per chosen offer in creation order; an offer
    line of 0 points is left out (the offer did not add to this earn: it is not a use)."""
    base = amount * rate
    lines = [Line(Source.BASE, base_points(amount, rate, cap), None, Funder.PARTNER)]
    if tier_multiplier is not None and tier_multiplier > 1:
        lines.append(
            Line(Source.TIER, floor_points(base * (tier_multiplier - 1)), None, Funder.PARTNER)
        )
    for offer in chosen(offers, base):
        points = floor_points(offer.exact_points(base))
        if points > 0:
            lines.append(Line(Source.OFFER, points, offer.id, offer.funded_by))
    return lines
