"""The earn breakdown's arithmetic with exact numbers (DOMAIN.md "Offers and the earn
breakdown"), and its properties under Hypothesis. Pure: no database."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from catalog.breakdown import (
    ApplicableOffer,
    Funder,
    Line,
    Source,
    applicable,
    breakdown,
    floor_points,
)
from partners.service import EarnRuleRecord

PARTNER = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)
T0 = datetime(2026, 12, 5, 10, tzinfo=UTC)
FUEL_RATE, SHOP_RATE = Decimal("0.1"), Decimal("0.3")  # 1 point per 10 RUB; 3 per 10


def offer(n: int, **kw) -> ApplicableOffer:
    fields = {
        "id": uuid.UUID(int=100 + n),
        "partner_id": PARTNER,
        "multiplier": None,
        "bonus_points": None,
        "category": None,
        "starts_at": T0 - timedelta(days=1),
        "ends_at": None,
        "requires_activation": False,
        "max_uses_per_member": None,
        "stackable": False,
        "min_tier": None,
        "created_at": T0 - timedelta(days=10) + timedelta(minutes=n),
        **kw,
    }
    if fields["multiplier"] is None and fields["bonus_points"] is None:
        fields["multiplier"] = Decimal(2)
    return ApplicableOffer(**fields)


def pick(
    offers,
    *,
    at=T0,
    partner_id=PARTNER,
    category=None,
    rank=None,
    activated=(),
    uses=None,
    ranks=None,
):
    return applicable(
        offers,
        at=at,
        partner_id=partner_id,
        category=category,
        member_tier_rank=rank,
        activated_ids=set(activated),
        uses_by_offer=uses or {},
        tier_ranks=ranks,
    )


def points(lines: list[Line]) -> list[int]:
    return [line.points for line in lines]


def test_category_rates_give_the_earn_rules_points() -> None:
    rule = EarnRuleRecord(
        partner_id=PARTNER,
        base_rate=FUEL_RATE,
        category_rates={"shop": SHOP_RATE},
        hold_days=0,
        max_redeem_share=Decimal(1),
        max_points_per_transaction=None,
        recorded_at=T0,
    )
    fuel = breakdown(Decimal("1500.00"), rule.rate_for("fuel"), None, None, [])
    shop = breakdown(Decimal("1500.00"), rule.rate_for("shop"), None, None, [])
    assert fuel == [Line(Source.BASE, 150, None, Funder.PARTNER)]
    assert points(shop) == [450]
    assert rule.points_for(Decimal("1500.00"), "fuel") == 150
    assert rule.points_for(Decimal("1500.00"), "shop") == 450


def test_an_activation_only_x5_coupon_adds_600_to_150_once_activated() -> None:
    coupon = offer(1, multiplier=Decimal(5), requires_activation=True)
    before = breakdown(Decimal("1500.00"), FUEL_RATE, None, None, pick([coupon]))
    assert points(before) == [150]
    after = breakdown(
        Decimal("1500.00"), FUEL_RATE, None, None, pick([coupon], activated=[coupon.id])
    )
    assert after == [
        Line(Source.BASE, 150, None, Funder.PARTNER),
        Line(Source.OFFER, 600, coupon.id, Funder.PARTNER),
    ]
    assert sum(points(after)) == 750


def test_two_stackable_offers_both_apply() -> None:
    x2 = offer(1, multiplier=Decimal(2), stackable=True)
    bonus = offer(2, bonus_points=50, stackable=True, partner_id=None)
    lines = breakdown(Decimal("1000.00"), FUEL_RATE, None, None, pick([x2, bonus]))
    assert lines == [
        Line(Source.BASE, 100, None, Funder.PARTNER),
        Line(Source.OFFER, 100, x2.id, Funder.PARTNER),
        Line(Source.OFFER, 50, bonus.id, Funder.OPERATOR),  # coalition-wide: the operator's
    ]


def test_of_non_stackable_x2_and_x3_only_x3_and_once_x3_ends_x2() -> None:
    x2 = offer(1, multiplier=Decimal(2))
    x3 = offer(2, multiplier=Decimal(3))
    lines = breakdown(Decimal("1000.00"), FUEL_RATE, None, None, pick([x2, x3]))
    assert [(line.points, line.offer_id) for line in lines] == [(100, None), (200, x3.id)]
    ended = dataclasses.replace(x3, ends_at=T0)  # endOffer at T0: the window closes then
    lines = breakdown(Decimal("1000.00"), FUEL_RATE, None, None, pick([x2, ended]))
    assert [(line.points, line.offer_id) for line in lines] == [(100, None), (100, x2.id)]


def test_a_tie_between_non_stackable_offers_goes_to_the_earliest_created() -> None:
    later = offer(2, bonus_points=100)
    earlier = offer(1, multiplier=Decimal(2))  # adds 100 on a base of 100 too
    lines = breakdown(Decimal("1000.00"), FUEL_RATE, None, None, pick([later, earlier]))
    assert [line.offer_id for line in lines] == [None, earlier.id]


def test_each_line_is_rounded_down_on_its_own() -> None:
    x25 = offer(1, multiplier=Decimal("2.5"))
    lines = breakdown(Decimal("1237.00"), FUEL_RATE, None, None, pick([x25]))
    # base 123.7: BASE floor(123.7) = 123, OFFER floor(123.7 x 1.5 = 185.55) = 185
    assert points(lines) == [123, 185] and sum(points(lines)) == 308


def test_the_tier_line_is_the_unrounded_base_times_its_multiplier_less_one() -> None:
    lines = breakdown(Decimal("1237.00"), FUEL_RATE, None, Decimal("1.5"), [])
    assert lines == [
        Line(Source.BASE, 123, None, Funder.PARTNER),
        Line(Source.TIER, 61, None, Funder.PARTNER),  # floor(123.7 x 0.5 = 61.85)
    ]
    assert points(breakdown(Decimal("1237.00"), FUEL_RATE, None, Decimal(1), [])) == [123]


def test_the_cap_bounds_base_only() -> None:
    x2 = offer(1, multiplier=Decimal(2))
    lines = breakdown(Decimal("10000.00"), FUEL_RATE, 500, None, pick([x2]))
    assert points(lines) == [500, 1000]


def test_max_uses_per_member() -> None:
    twice = offer(1, bonus_points=10, max_uses_per_member=2)
    assert pick([twice], uses={twice.id: 1}) == [twice]
    assert pick([twice], uses={twice.id: 2}) == []
    assert pick([twice]) == [twice]


def test_category_window_partner_and_tier() -> None:
    fuel_only = offer(1, category="fuel")
    assert pick([fuel_only], category="fuel") == [fuel_only]
    assert pick([fuel_only], category="shop") == []
    assert pick([fuel_only], category=None) == []
    window = offer(2, starts_at=T0, ends_at=T0 + timedelta(days=2))
    assert pick([window], at=T0) == [window]  # startsAt inclusive
    assert pick([window], at=T0 - timedelta(microseconds=1)) == []
    assert pick([window], at=T0 + timedelta(days=2, microseconds=-1)) == [window]
    assert pick([window], at=T0 + timedelta(days=2)) == []  # endsAt exclusive
    assert pick([offer(3)], partner_id=OTHER) == []  # another partner's offer
    everywhere = offer(4, partner_id=None)
    assert pick([everywhere], partner_id=OTHER) == [everywhere]
    gold = offer(5, min_tier="gold")
    ladder = {"silver": 1, "gold": 2, "platinum": 3}
    assert pick([gold], rank=None, ranks=ladder) == []
    assert pick([gold], rank=1, ranks=ladder) == []
    assert pick([gold], rank=2, ranks=ladder) == [gold]
    assert pick([gold], rank=3, ranks=ladder) == [gold]
    assert pick([gold], rank=3, ranks={"silver": 1}) == []  # a tier off the ladder: nobody


def test_a_zero_point_offer_line_is_left_out() -> None:
    x11 = offer(1, multiplier=Decimal("1.1"))
    assert points(breakdown(Decimal("10.00"), FUEL_RATE, None, None, pick([x11]))) == [1]


offers_st = st.lists(
    st.builds(
        lambda n, m, b, stack, operator: offer(
            n,
            multiplier=None if b else m,
            bonus_points=b,
            stackable=stack,
            partner_id=None if operator else PARTNER,
        ),
        st.integers(0, 10_000),
        st.decimals(Decimal("1.0001"), Decimal(100), places=4),
        st.one_of(st.none(), st.integers(1, 1_000_000)),
        st.booleans(),
        st.booleans(),
    ),
    max_size=6,
    unique_by=lambda o: o.id,
)


@given(
    amount=st.decimals(Decimal("0.01"), Decimal("10000000"), places=2),
    rate=st.decimals(Decimal("0.0001"), Decimal(10), places=4),
    cap=st.one_of(st.none(), st.integers(1, 1_000_000)),
    tier=st.one_of(st.none(), st.decimals(Decimal(1), Decimal(5), places=2)),
    offers=offers_st,
)
def test_breakdown_properties(amount, rate, cap, tier, offers) -> None:
    lines = breakdown(amount, rate, cap, tier, offers)
    exact_base = amount * rate
    assert sum(points(lines)) >= 0 and all(line.points >= 0 for line in lines)
    base = lines[0]
    assert base.source is Source.BASE
    # BASE does not depend on the offers or the tier, and is the earn rule's own points.
    assert base == breakdown(amount, rate, cap, None, [])[0]
    rule = EarnRuleRecord(PARTNER, rate, {}, 0, Decimal(1), cap, T0)
    assert base.points == rule.points_for(amount, None)
    by_id = {o.id: o for o in offers}
    for line in lines[1:]:
        if line.source is Source.TIER:
            assert tier is not None
            assert line.points == floor_points(exact_base * (tier - 1))
        else:
            o = by_id[line.offer_id]
            assert line.points == floor_points(o.exact_points(exact_base)) > 0
            assert line.funded_by is (Funder.OPERATOR if o.partner_id is None else Funder.PARTNER)
    chosen = [line.offer_id for line in lines if line.source is Source.OFFER]
    assert len(chosen) == len(set(chosen))
    assert sum(1 for i in chosen if not by_id[i].stackable) <= 1
    best = max((o.exact_points(exact_base) for o in offers if not o.stackable), default=None)
    if best is not None and floor_points(best) > 0:  # the best non-stackable one is chosen
        (pick_,) = [i for i in chosen if not by_id[i].stackable]
        assert by_id[pick_].exact_points(exact_base) == best
    assert {
        o.id for o in offers if o.stackable and floor_points(o.exact_points(exact_base))
    } <= set(chosen)
