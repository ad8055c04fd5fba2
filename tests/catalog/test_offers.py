"""Offers and promo codes in the database: creation rules, ending, listing for a member,
activation, promo codes (once per member, expiry, exact under concurrency), and the earn
path's reads (`live_offers`, `member_state`) feeding the pure breakdown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from catalog import offers, promo_codes
from catalog.breakdown import applicable, breakdown
from catalog.errors import InvalidPromoCode, OfferNotFound
from catalog.offers import OfferDraft
from core.db import create_engine
from core.errors import ValidationError
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.test_lock_guards import waiting_on_locks

NOW = datetime.now(UTC)
FUEL_RATE = Decimal("0.1")


def draft(**kw: Any) -> OfferDraft:
    fields: dict[str, Any] = {
        "name": "Double points",
        "description": "",
        "multiplier": "2",
        "bonus_points": None,
        "category": None,
        "starts_at": NOW - timedelta(days=1),
        "ends_at": None,
        "requires_activation": False,
        "max_uses_per_member": None,
        "stackable": False,
        "min_tier": None,
        **kw,
    }
    return OfferDraft(**fields)


async def partner(conn: AsyncConnection) -> uuid.UUID:
    return (await partners.create(conn, name="Fuel", category="fuel", currency="RUB")).id


async def test_bad_offers_are_refused_with_the_field_at_fault(conn: AsyncConnection) -> None:
    p = await partner(conn)
    for bad, field in (
        ({"multiplier": "1"}, "multiplier"),
        ({"multiplier": "0.5"}, "multiplier"),
        ({"multiplier": "NaN"}, "multiplier"),
        ({"multiplier": "abc"}, "multiplier"),
        ({"multiplier": "1e9"}, "multiplier"),
        ({"multiplier": "2", "bonus_points": 5}, "multiplier"),
        ({"multiplier": None, "bonus_points": None}, "multiplier"),
        ({"multiplier": None, "bonus_points": 0}, "bonusPoints"),
        ({"multiplier": None, "bonus_points": 2**40}, "bonusPoints"),
        ({"ends_at": NOW - timedelta(days=2)}, "endsAt"),
        ({"ends_at": NOW - timedelta(days=1)}, "endsAt"),
        ({"name": " "}, "name"),
        ({"name": "a\x00"}, "name"),
        ({"category": ""}, "category"),
        ({"max_uses_per_member": 0}, "maxUsesPerMember"),
        ({"starts_at": datetime(2026, 1, 1)}, "startsAt"),  # naive
    ):
        with pytest.raises(ValidationError) as refused:
            await offers.create(conn, partner_id=p, draft=draft(**bad), actor="t", at=NOW)
        assert refused.value.details["field"] == field, bad
    # This partner's offers: other tests of the module commit offers of their own partners.
    made = text("SELECT count(*) FROM offers WHERE partner_id = :p")
    assert (await conn.execute(made, {"p": p})).scalar_one() == 0


async def test_end_offer_and_owners(conn: AsyncConnection) -> None:
    p, q = await partner(conn), await partner(conn)
    mine = await offers.create(conn, partner_id=p, draft=draft(), actor="t", at=NOW)
    wide = await offers.create(conn, partner_id=None, draft=draft(), actor="op", at=NOW)
    with pytest.raises(OfferNotFound):
        await offers.end(conn, offer_id=mine.id, owner=q, at=NOW)
    with pytest.raises(OfferNotFound):
        await offers.end(conn, offer_id=wide.id, owner=p, at=NOW)  # the operator's
    ended = await offers.end(conn, offer_id=mine.id, owner=p, at=NOW)
    assert ended.ended_at == NOW
    again = await offers.end(conn, offer_id=mine.id, owner=None, at=NOW + timedelta(hours=1))
    assert again.ended_at == NOW  # ending it again changes nothing
    assert [o.id for o in await offers.listed(conn, owner=p, limit=10)] == [mine.id]
    assert {o.id for o in await offers.listed(conn, owner=None, limit=10)} >= {mine.id, wide.id}


async def test_x2_and_x3_then_end_offer_through_the_earn_paths_reads(
    conn: AsyncConnection,
) -> None:
    p = await partner(conn)
    m = (await members.create(conn, name="m")).id
    x2 = await offers.create(conn, partner_id=p, draft=draft(multiplier="2"), actor="t", at=NOW)
    x3 = await offers.create(conn, partner_id=p, draft=draft(multiplier="3"), actor="t", at=NOW)

    async def earn_lines(at: datetime) -> list[tuple[int, uuid.UUID | None]]:
        live = await offers.live_offers(conn, partner_id=p, at=at)
        activated, uses = await offers.member_state(
            conn, member_id=m, offer_ids=[o.id for o in live]
        )
        chosen = applicable(
            live,
            at=at,
            partner_id=p,
            category="fuel",
            member_tier_rank=None,
            activated_ids=activated,
            uses_by_offer=uses,
        )
        lines = breakdown(Decimal("1000.00"), FUEL_RATE, None, None, chosen)
        return [(line.points, line.offer_id) for line in lines]

    assert await earn_lines(NOW) == [(100, None), (200, x3.id)]
    await offers.end(conn, offer_id=x3.id, owner=p, at=NOW)
    assert await earn_lines(NOW) == [(100, None), (100, x2.id)]


async def test_activation_is_idempotent_and_refused_where_it_makes_no_sense(
    conn: AsyncConnection,
) -> None:
    p = await partner(conn)
    m = (await members.create(conn, name="m")).id
    coupon = await offers.create(
        conn, partner_id=p, draft=draft(multiplier="5", requires_activation=True), actor="t", at=NOW
    )
    plain = await offers.create(conn, partner_id=p, draft=draft(), actor="t", at=NOW)
    listed = dict(
        (o.id, a)
        for o, a in await offers.for_member(conn, member_id=m, at=NOW, reachable_tiers=(), limit=10)
    )
    assert listed == {coupon.id: False, plain.id: False}
    assert (await offers.activate(conn, offer_id=coupon.id, member_id=m, at=NOW))[1] is True
    assert (await offers.activate(conn, offer_id=coupon.id, member_id=m, at=NOW))[1] is False
    rows = await conn.execute(
        text("SELECT count(*) FROM offer_activations WHERE member_id = :m"), {"m": m}
    )
    assert rows.scalar_one() == 1
    listed = dict(
        (o.id, a)
        for o, a in await offers.for_member(conn, member_id=m, at=NOW, reachable_tiers=(), limit=10)
    )
    assert listed == {coupon.id: True, plain.id: False}
    with pytest.raises(ValidationError):
        await offers.activate(conn, offer_id=plain.id, member_id=m, at=NOW)
    with pytest.raises(OfferNotFound):
        await offers.activate(conn, offer_id=uuid.uuid4(), member_id=m, at=NOW)
    await offers.end(conn, offer_id=coupon.id, owner=None, at=NOW)
    with pytest.raises(ValidationError):
        await offers.activate(conn, offer_id=coupon.id, member_id=m, at=NOW + timedelta(seconds=1))


async def test_member_listing_windows_tiers_and_uses(conn: AsyncConnection) -> None:
    p = await partner(conn)
    m = (await members.create(conn, name="m")).id
    later = await offers.create(
        conn, partner_id=p, draft=draft(starts_at=NOW + timedelta(days=1)), actor="t", at=NOW
    )
    over = await offers.create(
        conn,
        partner_id=p,
        draft=draft(starts_at=NOW - timedelta(days=3), ends_at=NOW),
        actor="t",
        at=NOW,
    )
    gold = await offers.create(conn, partner_id=p, draft=draft(min_tier="gold"), actor="t", at=NOW)
    once = await offers.create(
        conn, partner_id=p, draft=draft(max_uses_per_member=1), actor="t", at=NOW
    )

    async def ids(tiers: set[str]) -> set[uuid.UUID]:
        found = await offers.for_member(conn, member_id=m, at=NOW, reachable_tiers=tiers, limit=10)
        return {o.id for o, _ in found}

    assert await ids(set()) == {once.id}
    ladder = {"silver": 1, "gold": 2}
    assert offers.tier_names_up_to("gold", ladder) == {"silver", "gold"}
    assert offers.tier_names_up_to(None, ladder) == set()
    assert await ids(offers.tier_names_up_to("gold", ladder)) == {once.id, gold.id}
    assert await ids(offers.tier_names_up_to("silver", ladder)) == {once.id}
    await offers.count_uses(conn, member_id=m, offer_ids=[once.id, gold.id])
    assert await offers.uses(conn, member_id=m, offer_ids=[once.id, gold.id, later.id]) == {
        once.id: 1,
        gold.id: 1,
    }
    assert await ids(set()) == set()  # used up
    await offers.count_uses(conn, member_id=m, offer_ids=[gold.id])
    assert (await offers.uses(conn, member_id=m, offer_ids=[gold.id]))[gold.id] == 2
    assert over.id not in {o.id for o in await offers.live_offers(conn, partner_id=p, at=NOW)}


async def test_promo_codes_once_per_member_and_expiry(conn: AsyncConnection) -> None:
    p = await partner(conn)
    anna, boris = (
        (await members.create(conn, name="a")).id,
        (await members.create(conn, name="b")).id,
    )
    coupon = await offers.create(
        conn, partner_id=p, draft=draft(requires_activation=True), actor="t", at=NOW
    )
    plain = await offers.create(conn, partner_id=p, draft=draft(), actor="t", at=NOW)

    async def code(value: str, **kw: Any) -> promo_codes.PromoCodeRecord:
        fields = {"max_redemptions": 10, "valid_until": NOW + timedelta(days=1), **kw}
        return await promo_codes.create_promo_code(
            conn, offer_id=coupon.id, owner=p, code=value, actor="t", at=NOW, **fields
        )

    for bad, kw, field in (
        ("ab", {}, "code"),
        ("A" * 41, {}, "code"),
        ("NO SPACE", {}, "code"),
        ("ÄÖÜ", {}, "code"),
        ("OK-1", {"max_redemptions": 0}, "maxRedemptions"),
        ("OK-1", {"valid_until": NOW}, "validUntil"),
    ):
        with pytest.raises(ValidationError) as refused:
            await code(bad, **kw)
        assert refused.value.details["field"] == field, bad
    with pytest.raises(ValidationError):  # a promo code activates: not for a plain offer
        await promo_codes.create_promo_code(
            conn,
            offer_id=plain.id,
            owner=p,
            code="PLAIN",
            max_redemptions=1,
            valid_until=NOW + timedelta(days=1),
            actor="t",
            at=NOW,
        )
    with pytest.raises(OfferNotFound):  # another partner's offer
        await promo_codes.create_promo_code(
            conn,
            offer_id=coupon.id,
            owner=await partner(conn),
            code="THEIRS",
            max_redemptions=1,
            valid_until=NOW + timedelta(days=1),
            actor="t",
            at=NOW,
        )
    welcome = await code("welcome10")
    assert welcome.code == "WELCOME10"
    with pytest.raises(ValidationError):
        await code("Welcome10")  # unique whatever the case
    assert (
        await promo_codes.apply_promo_code(conn, member_id=anna, code=" Welcome10 ", at=NOW)
    ).id == coupon.id
    activated, _ = await offers.member_state(conn, member_id=anna, offer_ids=[coupon.id])
    assert activated == {coupon.id}
    with pytest.raises(InvalidPromoCode):
        await promo_codes.apply_promo_code(conn, member_id=anna, code="WELCOME10", at=NOW)
    with pytest.raises(InvalidPromoCode):
        await promo_codes.apply_promo_code(conn, member_id=boris, code="NOPE-NOPE", at=NOW)
    with pytest.raises(InvalidPromoCode):
        await promo_codes.apply_promo_code(conn, member_id=boris, code="a\x00", at=NOW)
    with pytest.raises(InvalidPromoCode):  # expired
        await promo_codes.apply_promo_code(
            conn, member_id=boris, code="WELCOME10", at=NOW + timedelta(days=1)
        )
    assert (await promo_codes.promo_code(conn, code="welcome10")).redemptions == 1  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Concurrency: committed units of work on separate connections


@pytest.fixture(scope="module")
def race_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_promo_race")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def race_engine(race_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(race_uri, pool_size=12, max_overflow=4)
    yield eng
    await eng.dispose()


async def _apply(engine: AsyncEngine, member_id: uuid.UUID, code: str) -> uuid.UUID:
    async with engine.begin() as c:
        return (
            await promo_codes.apply_promo_code(
                c, member_id=member_id, code=code, at=datetime.now(UTC)
            )
        ).id


@pytest.mark.slow
async def test_a_two_use_code_is_taken_by_exactly_two_of_eight_concurrent_members(
    race_engine: AsyncEngine,
) -> None:
    """All eight wait on the code's row (held by the test) with their applications written;
    released, exactly two count a use: the others find `redemptions < max_redemptions` false.
    Without that condition the count would pass the maximum (refused by the table's check as
    an error, not INVALID_PROMO_CODE)."""
    async with race_engine.begin() as c:
        p = await partner(c)
        coupon = await offers.create(
            c, partner_id=p, draft=draft(requires_activation=True), actor="t", at=NOW
        )
        promo = await promo_codes.create_promo_code(
            c,
            offer_id=coupon.id,
            owner=None,
            code=f"TWO-{uuid.uuid4().hex[:8]}",
            max_redemptions=2,
            valid_until=NOW + timedelta(days=1),
            actor="t",
            at=NOW,
        )
        racers = [(await members.create(c, name=f"r{i}")).id for i in range(8)]
    holder = await race_engine.connect()
    tx = await holder.begin()
    await holder.execute(
        text("SELECT 1 FROM promo_codes WHERE id = :i FOR UPDATE"), {"i": promo.id}
    )
    tasks = [asyncio.create_task(_apply(race_engine, m, promo.code)) for m in racers]
    await waiting_on_locks(race_engine, 8, still=tasks)
    await tx.rollback()
    await holder.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    won = [r for r in results if r == coupon.id]
    lost = [r for r in results if r != coupon.id]
    assert len(won) == 2 and all(isinstance(x, InvalidPromoCode) for x in lost), results
    async with race_engine.connect() as c:
        row = (
            await c.execute(
                text(
                    "SELECT redemptions, "
                    "(SELECT count(*) FROM promo_code_applications WHERE promo_code_id = :i), "
                    "(SELECT count(*) FROM offer_activations WHERE offer_id = :o) "
                    "FROM promo_codes WHERE id = :i"
                ),
                {"i": promo.id, "o": coupon.id},
            )
        ).one()
    assert tuple(row) == (2, 2, 2)


@pytest.mark.slow
async def test_one_member_applying_a_code_twice_at_once_counts_once(
    race_engine: AsyncEngine,
) -> None:
    async with race_engine.begin() as c:
        p = await partner(c)
        coupon = await offers.create(
            c, partner_id=p, draft=draft(requires_activation=True), actor="t", at=NOW
        )
        promo = await promo_codes.create_promo_code(
            c,
            offer_id=coupon.id,
            owner=None,
            code=f"ONE-{uuid.uuid4().hex[:8]}",
            max_redemptions=5,
            valid_until=NOW + timedelta(days=1),
            actor="t",
            at=NOW,
        )
        m = (await members.create(c, name="twice")).id
    results = await asyncio.gather(
        *(_apply(race_engine, m, promo.code) for _ in range(4)), return_exceptions=True
    )
    assert sum(1 for r in results if r == coupon.id) == 1
    assert all(isinstance(r, InvalidPromoCode) for r in results if r != coupon.id), results
    async with race_engine.connect() as c:
        used = await promo_codes.promo_code(c, code=promo.code)
    assert used is not None and used.redemptions == 1
