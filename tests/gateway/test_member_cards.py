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
