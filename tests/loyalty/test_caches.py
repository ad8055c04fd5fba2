"""The partner configuration cache of the earn path: concurrent misses share one load, a failed
load is not kept, and an invalidation is never undone by a load that began before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event

from core.db import create_driver_pool
from core.settings import Settings
from ledger.batch import EarnBatcher
from loyalty import terms
from loyalty.caches import Caches, TTLCache, partner_config
from loyalty.runtime import Services


@pytest.fixture
async def services(engine, db_uri) -> AsyncIterator[Services]:
    pool = create_driver_pool(db_uri, max_size=2)
    await pool.open(wait=True)
    try:
        yield Services(
            engine=engine,
            pool=pool,
            earns=EarnBatcher(pool),
            settings=Settings(database_url=db_uri),
            caches=Caches(),
        )
    finally:
        await pool.close()


async def test_concurrent_misses_share_one_load(services):
    partner = await terms.create_partner(services, name="Herd", category="fuel", currency="RUB")
    services.caches.partner_config.invalidate()
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(services.engine.sync_engine, "before_cursor_execute", seen)
    try:
        # A group commit's worth of earns find the entry missing at once.
        got = await asyncio.gather(*(partner_config(services, partner.id) for _ in range(32)))
        assert {c.partner.id for c in got} == {partner.id}
        one_load = len(statements)
        assert 0 < one_load < 32
        await partner_config(services, partner.id)
        assert len(statements) == one_load  # then from memory
        services.caches.partner_config.invalidate(partner.id)
        await asyncio.gather(*(partner_config(services, partner.id) for _ in range(32)))
        assert len(statements) == 2 * one_load
    finally:
        event.remove(services.engine.sync_engine, "before_cursor_execute", seen)


async def test_a_failed_load_reaches_its_callers_and_is_not_kept():
    cache = TTLCache(ttl=60)
    calls = 0
    release = asyncio.Event()

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("database away")

    first = asyncio.ensure_future(cache.get("k", failing))
    others = [asyncio.ensure_future(cache.get("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    for task in (first, *others):
        with pytest.raises(RuntimeError):
            await task
    assert calls == 4  # the shared load failed: each waiter tried its own, as if alone

    async def working() -> str:
        return "loaded"

    assert await cache.get("k", working) == "loaded"


async def test_a_load_begun_before_an_invalidation_is_not_kept():
    cache = TTLCache(ttl=60)
    release = asyncio.Event()

    async def old_terms() -> str:
        await release.wait()
        return "old"

    async def new_terms() -> str:
        return "new"

    before = asyncio.ensure_future(cache.get("k", old_terms))
    await asyncio.sleep(0)
    cache.invalidate("k")  # the terms changed while the old ones were being read
    assert await cache.get("k", new_terms) == "new"  # a new load, not the one under way
    release.set()
    assert await before == "old"  # that caller asked before the change
    assert await cache.get("k", old_terms) == "new"  # and the old read was not kept


async def test_a_cancelled_caller_does_not_cancel_the_shared_load():
    cache = TTLCache(ttl=60)
    release = asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    first = asyncio.ensure_future(cache.get("k", slow))
    second = asyncio.ensure_future(cache.get("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "value"
    assert calls == 1
    with pytest.raises(asyncio.CancelledError):
        await first
