"""Partner-funded offers in the earn, with exact numbers (DOMAIN.md "Offers and the earn
breakdown"): an activation-only x5 coupon, two stackable offers, the best of two non-stackable
ones (and after endOffer the other), per-line rounding, maxUsesPerMember (also under
concurrency), a refund reversing the offer's points pro rata with the base, and coalition-wide
offers not applying yet.

Offers belong to the test's own partner: other tests' earns never see them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text

from ledger import service as ledger
from loyalty import earn, offers, refund
from loyalty.runtime import Services
from members import service as members
from tests.loyalty.conftest import partner_in_force


async def shop(services: Services, name: str) -> tuple[uuid.UUID, Any]:
    """A partner of 1 point per 10 RUB and a member."""
    partner = await partner_in_force(services, f"{name} {uuid.uuid4().hex[:6]}", base_rate="0.1")
    async with services.engine.begin() as conn:
        member = await members.create(conn, name=name)
    return partner, member


async def offer(services: Services, partner: uuid.UUID | None, **fields: Any) -> uuid.UUID:
    spec: dict[str, Any] = {
        "name": "offer",
        "description": "",
        "multiplier": None,
        "bonus_points": None,
        "category": None,
        "starts_at": None,
        "ends_at": None,
        "requires_activation": False,
        "max_uses_per_member": None,
        "stackable": False,
        "min_tier": None,
    }
    spec.update(fields)
    return (await offers.create(services, actor="test", partner_id=partner, **spec)).id


async def buy(
    services: Services, partner: uuid.UUID, card: str, amount: str = "1500"
) -> ledger.EarnResult:
    ref = uuid.uuid4().hex
    return await earn.earn(
        services,
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


def shape(r: ledger.EarnResult) -> list[tuple[str, int, uuid.UUID | None]]:
    return [(line.source, line.points, line.offer_id) for line in r.lines]


async def test_an_activation_only_coupon(services: Services) -> None:
    partner, m = await shop(services, "coupon")
    x5 = await offer(services, partner, multiplier="5", requires_activation=True)
    before = await buy(services, partner, m.card_number)
    assert (before.points, shape(before)) == (150, [("BASE", 150, None)])
    await offers.activate(services, member_id=m.id, offer_id=str(x5))
    after = await buy(services, partner, m.card_number)
    assert (after.points, shape(after)) == (750, [("BASE", 150, None), ("OFFER", 600, x5)])
    async with services.engine.connect() as conn:
        stored = await ledger.earn_lines(conn, transaction_ids=[after.transaction_id])
    assert stored[after.transaction_id] == after.lines


async def test_stackable_offers_all_apply_and_only_the_best_other(services: Services) -> None:
    partner, m = await shop(services, "stack")
    x2s = await offer(services, partner, multiplier="2", stackable=True)
    bonus = await offer(services, partner, bonus_points=50, stackable=True)
    r = await buy(services, partner, m.card_number)
    assert shape(r) == [("BASE", 150, None), ("OFFER", 150, x2s), ("OFFER", 50, bonus)]
    assert r.points == 350

    partner, m = await shop(services, "best")
    x2 = await offer(services, partner, multiplier="2")
    x3 = await offer(services, partner, multiplier="3")
    r = await buy(services, partner, m.card_number)
    assert (r.points, shape(r)) == (450, [("BASE", 150, None), ("OFFER", 300, x3)])
    await offers.end(services, owner=partner, offer_id=str(x3))  # seen at once in this process
    r = await buy(services, partner, m.card_number)
    assert (r.points, shape(r)) == (300, [("BASE", 150, None), ("OFFER", 150, x2)])


async def test_each_line_is_rounded_down_on_its_own(services: Services) -> None:
    partner, m = await shop(services, "rounding")
    x25 = await offer(services, partner, multiplier="2.5")
    r = await buy(services, partner, m.card_number, "1237.00")
    # base 123.7: BASE 123, OFFER floor(123.7 x 1.5) = 185.
    assert (r.points, shape(r)) == (308, [("BASE", 123, None), ("OFFER", 185, x25)])


async def test_max_uses_per_member_even_under_concurrency(services: Services) -> None:
    partner, m = await shop(services, "limited")
    once = await offer(services, partner, bonus_points=100, max_uses_per_member=2)
    first = await buy(services, partner, m.card_number)
    assert (first.points, shape(first)) == (250, [("BASE", 150, None), ("OFFER", 100, once)])
    # Ten earns of the member at once: exactly one more gets the offer.
    rest = await asyncio.gather(*(buy(services, partner, m.card_number) for _ in range(10)))
    assert sorted(r.points for r in rest) == [150] * 9 + [250]
    async with services.engine.connect() as conn:
        uses = (
            await conn.execute(
                text("SELECT uses FROM offer_uses WHERE offer_id = :o AND member_id = :m"),
                {"o": once, "m": m.id},
            )
        ).scalar_one()
    assert uses == 2


async def test_a_refund_reverses_offer_points_pro_rata(services: Services) -> None:
    partner, m = await shop(services, "refund")
    await offer(services, partner, multiplier="5")
    r = await buy(services, partner, m.card_number)
    assert r.points == 750  # 150 base + 600 offer, one lot issued by the partner
    async with services.engine.connect() as conn:
        ref = (
            await conn.execute(
                text("SELECT ref FROM transactions WHERE id = :t"), {"t": r.transaction_id}
            )
        ).scalar_one()
    back = await refund.refund(
        services,
        actor="test",
        partner_id=partner,
        order_ref=ref,
        amount="750",
        currency="RUB",
        idempotency_key=uuid.uuid4().hex,
    )
    assert back.points_reversed == 375


async def test_coalition_wide_offers_do_not_apply_yet(fresh_services: Services) -> None:
    # A database of its own: a coalition-wide offer is every member's.
    partner, m = await shop(fresh_services, "coalition")
    await offer(fresh_services, None, multiplier="3", stackable=True)
    r = await buy(fresh_services, partner, m.card_number)
    assert (r.points, shape(r)) == (150, [("BASE", 150, None)])
