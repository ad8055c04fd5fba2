"""The earn path's card lookup: one query for the cards of concurrent requests, known cards
remembered, unknown cards refused with the members domain's error."""

from __future__ import annotations

import asyncio

import pytest

from core.db import create_driver_pool
from loyalty.caches import MemberCards
from members import service as members
from members.cards import new_card_number
from members.errors import MemberNotFound


async def test_concurrent_lookups_share_one_query(engine, db_uri):
    async with engine.begin() as c:
        ms = [await members.create(c, name=f"card {i}") for i in range(30)]
    pool = create_driver_pool(db_uri, max_size=2)
    await pool.open(wait=True)
    try:
        cards = MemberCards()
        unknown = new_card_number()  # valid Luhn, held by nobody
        got = await asyncio.gather(
            *(cards.member_id(pool, m.card_number) for m in ms),
            cards.member_id(pool, unknown),
            return_exceptions=True,
        )
        assert got[:-1] == [m.id for m in ms]
        assert isinstance(got[-1], MemberNotFound)
        assert cards.queries == 1  # 31 lookups, one statement
        # Known cards are answered from memory; an unknown one is asked again (it may be issued).
        assert await cards.member_id(pool, ms[3].card_number) == ms[3].id
        assert cards.queries == 1
        with pytest.raises(MemberNotFound):
            await cards.member_id(pool, unknown)
        assert cards.queries == 2
    finally:
        await pool.close()


async def test_an_ordinary_earn_costs_one_batch_statement(engine, db_uri):
    """No ladder and no offers: once the caches are warm, an earn sends the batch statement and
    nothing else (no card, ladder or configuration query; no SQLAlchemy statement at all)."""
    from sqlalchemy import event

    from core.settings import Settings
    from ledger import service as ledger
    from ledger.batch import EarnBatcher
    from loyalty import earn, offers
    from loyalty.caches import Caches
    from loyalty.runtime import Services
    from tests.loyalty.conftest import partner_in_force

    pool = create_driver_pool(db_uri, max_size=2)
    await pool.open(wait=True)
    earns = EarnBatcher(pool)
    rt = Services(
        engine=engine,
        pool=pool,
        earns=earns,
        settings=Settings(database_url=db_uri),
        caches=Caches(),
    )
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    try:
        partner = await partner_in_force(rt, "Ordinary")
        async with engine.begin() as c:
            m = await members.create(c, name="ordinary")

        async def buy(ref: str) -> int:
            r = await earn.earn(
                rt,
                actor="test",
                key_space=ledger.partner_key_space(partner),
                partner_id=partner,
                card_number=m.card_number,
                amount="100",
                currency="RUB",
                category=None,
                order_ref=ref,
                idempotency_key=ref,
            )
            return r.points

        assert await buy("warm") == 100
        queries, batches = rt.caches.member_by_card.queries, earns.stats.batches
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            assert await buy("ordinary") == 100
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert statements == []
        assert rt.caches.member_by_card.queries == queries
        assert earns.stats.batches == batches + 1
        # A live offer that needs neither activation nor counting costs nothing more either
        # (the partner's offers are cached; its line goes in the same batch statement).
        await offers.create(
            rt,
            actor="test",
            partner_id=partner,
            name="x2",
            description="",
            multiplier="2",
            bonus_points=None,
            category=None,
            starts_at=None,
            ends_at=None,
            requires_activation=False,
            max_uses_per_member=None,
            stackable=True,
            min_tier=None,
        )
        assert await buy("warm offers") == 200
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            assert await buy("with an offer") == 200
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert statements == []
        assert earns.stats.batches == batches + 3 and earns.stats.single_path == 0
    finally:
        await earns.drain()
        await pool.close()
