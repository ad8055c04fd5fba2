"""Partner-funded offers in the earn, with exact numbers (DOMAIN.md "Offers and the earn
breakdown"): an activation-only x5 coupon, two stackable offers, the best of two non-stackable
ones (and after endOffer the other), per-line rounding, maxUsesPerMember (also under
concurrency), a refund reversing the offer's points pro rata with the base, and a coalition-wide
offer applying, issued by the operator.

Offers belong to the test's own partner: other tests' earns never see them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from ledger import service as ledger
from loyalty import earn, offers, refund
from loyalty.runtime import Services
from members import service as members
from tests.ledger.invariants import assert_invariants
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


@pytest.mark.parametrize("path", ["batch", "single"])
async def test_a_coalition_wide_offer_applies_issued_by_the_operator(
    fresh_services: Services, path: str
) -> None:
    """The partner's x2 and a coalition-wide +100: one earn of 400 points, its lines summing to
    them; 300 in the partner's lot, 100 in the operator's (no issuer). An offer that does not
    need the member's activation goes to the group commit; one that does runs the single path,
    with the same result. A refund of a quarter reverses 100: 75 of the partner's, 25 of the
    operator's. (A database of its own: a coalition-wide offer is every member's.)"""
    rt = fresh_services
    partner, m = await shop(rt, "coalition")
    x2 = await offer(rt, partner, multiplier="2")
    single = path == "single"
    wide = await offer(rt, None, bonus_points=100, stackable=True, requires_activation=single)
    if single:
        await offers.activate(rt, member_id=m.id, offer_id=str(wide))
    r = await buy(rt, partner, m.card_number)
    assert (rt.earns.stats.batched_earns, rt.earns.stats.single_path) == (0 if single else 1, 0)
    assert r.points == 400
    assert [(x.source, x.points, x.offer_id, x.funded_by) for x in r.lines] == [
        ("BASE", 150, None, "PARTNER"),
        ("OFFER", 150, x2, "PARTNER"),
        ("OFFER", 100, wide, "OPERATOR"),
    ]
    async with rt.engine.connect() as conn:
        ref = (
            await conn.execute(
                text("SELECT ref FROM transactions WHERE id = :t"), {"t": r.transaction_id}
            )
        ).scalar_one()
        stored = await ledger.earn_lines(conn, transaction_ids=[r.transaction_id])
        items = await ledger.history(conn, member_id=m.id)
    assert stored[r.transaction_id] == r.lines
    # The member's activity shows the earn once, with all of its points.
    assert [(i.kind, i.amount, i.transaction_id) for i in items] == [
        ("earn", 400, r.transaction_id)
    ]
    assert await lots(rt, r.transaction_id) == [(partner, 300, 300, 0), (None, 100, 100, 0)]
    back = await refund.refund(
        rt,
        actor="test",
        partner_id=partner,
        order_ref=ref,
        amount="375",
        currency="RUB",
        idempotency_key=uuid.uuid4().hex,
    )
    assert back.points_reversed == 100
    assert await lots(rt, r.transaction_id) == [(partner, 300, 225, 75), (None, 100, 75, 25)]
    await assert_invariants(rt.engine)


async def lots(rt: Services, tx: uuid.UUID) -> list[tuple[Any, ...]]:
    """The lots of an earn: (issuer, points, remaining, reversed), in id order."""
    async with rt.engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT issuer_id, points, remaining, reversed FROM lots "
                "WHERE earn_tx_id = :t AND transfer_tx_id IS NULL ORDER BY id"
            ),
            {"t": tx},
        )
        return [tuple(x) for x in found]
