"""Tiers in the earn, with exact numbers: the TIER line at the tier held before the earn, the
upgrade on the earn AFTER the one that crossed the threshold, kept after a refund, dropped at
the review; a ladder set in this process is seen by the next earn.

A database of its own: the ladder is global (every earn of a shared database would see it)."""

from __future__ import annotations

import uuid

import pytest

from core.clock import utcnow
from ledger import service as ledger
from loyalty import earn, offers, refund, tiers
from loyalty.runtime import Services
from members import service as members
from members import tiers as member_tiers
from tests.loyalty.conftest import partner_in_force

LADDER = [
    tiers.TierInput("Silver", "1000", "RUB", "1.5"),
    tiers.TierInput("Gold", "5000", "RUB", "2"),
]


@pytest.fixture
def rt(fresh_services: Services) -> Services:
    return fresh_services


async def buy(rt: Services, partner: uuid.UUID, card: str, amount: str, ref: str) -> int:
    r = await earn.earn(
        rt,
        actor="test",
        key_space=ledger.partner_key_space(partner),
        partner_id=partner,
        card_number=card,
        amount=amount,
        currency="RUB",
        category=None,
        order_ref=ref,
        idempotency_key=ref,
    )
    return r.points


async def held(rt: Services, member_id: uuid.UUID) -> str | None:
    async with rt.engine.connect() as conn:
        return (await member_tiers.member_tier(conn, member_id=member_id)).tier


async def test_upgrade_applies_on_the_earn_after_the_one_that_crossed(rt: Services) -> None:
    partner = await partner_in_force(rt, "Tiered", base_rate="0.1")  # 1 point per 10 RUB
    async with rt.engine.begin() as conn:
        m = await members.create(conn, name="climber")
    assert await buy(rt, partner, m.card_number, "600", "t1") == 60  # no ladder: x1
    await tiers.set_tiers(rt, actor="test", tiers_in=LADDER)
    # 600 + 600 reaches Silver's 1000: this earn still counts untiered...
    assert await buy(rt, partner, m.card_number, "600", "t2") == 60
    assert await held(rt, m.id) == "Silver"
    # ...the next one at Silver: BASE 10 + TIER floor(10 x 0.5) = 15.
    assert await buy(rt, partner, m.card_number, "100", "t3") == 15
    # A replay answers as the original, whatever the tier now.
    assert await buy(rt, partner, m.card_number, "600", "t2") == 60
    # A refund takes the spend below the threshold: the tier is kept until the review.
    await refund.refund(
        rt,
        actor="test",
        partner_id=partner,
        order_ref="t2",
        amount="600",
        currency="RUB",
        idempotency_key="r-t2",
    )
    assert await buy(rt, partner, m.card_number, "100", "t4") == 15
    assert await held(rt, m.id) == "Silver"
    await tiers.run_review(rt, as_of=utcnow())
    assert await held(rt, m.id) is None
    assert await buy(rt, partner, m.card_number, "100", "t5") == 10


async def test_a_rounding_tier_line_and_no_upgrade_past_the_top(rt: Services) -> None:
    partner = await partner_in_force(rt, "Rounding", base_rate="0.1")
    async with rt.engine.begin() as conn:
        m = await members.create(conn, name="top")
    await tiers.set_tiers(rt, actor="test", tiers_in=LADDER)
    assert await buy(rt, partner, m.card_number, "5000", "g1") == 500  # crosses to Gold
    assert await held(rt, m.id) == "Gold"
    # 1237.00 x 0.1 = 123.7: BASE 123 + TIER floor(123.7 x 1) = 123 -> 246.
    assert await buy(rt, partner, m.card_number, "1237.00", "g2") == 246
    # An empty ladder (set in this process) prices at x1 at once.
    await tiers.set_tiers(rt, actor="test", tiers_in=[])
    assert await buy(rt, partner, m.card_number, "1237.00", "g3") == 123


async def test_min_tier_offers_in_the_earn_and_the_listing(rt: Services) -> None:
    partner = await partner_in_force(rt, "Min tier", base_rate="0.1")
    async with rt.engine.begin() as conn:
        gold, plain = (await members.create(conn, name="g")), (await members.create(conn))
    await tiers.set_tiers(rt, actor="test", tiers_in=LADDER)
    assert await buy(rt, partner, gold.card_number, "5000", "m1") == 500  # crosses to Gold
    x2 = await offers.create(
        rt,
        actor="test",
        partner_id=partner,
        name="Silver and up",
        description="",
        multiplier="2",
        bonus_points=None,
        category=None,
        starts_at=None,
        ends_at=None,
        requires_activation=False,
        max_uses_per_member=None,
        stackable=True,
        min_tier="Silver",
    )
    # Gold: BASE 100 + TIER 100 + OFFER 100; untiered (and staying so): BASE 50.
    assert await buy(rt, partner, gold.card_number, "1000", "m2") == 300
    assert await buy(rt, partner, plain.card_number, "500", "m3") == 50
    async with rt.engine.connect() as conn:
        listed = {
            m: [o.id for o, _ in await offers.for_member(conn, member_id=m, limit=10, before=None)]
            for m in (gold.id, plain.id)
        }
    assert listed == {gold.id: [x2.id], plain.id: []}
