"""The tier upgrade committed in the group commit's statement (`members.tiers.upgrade_follow_up`)
and its guards, each shown by a race that fails without it.

The races are made deterministic as in tests/ledger/test_lock_guards.py: the member's wallet
is locked by the test, the earn statements start (their snapshot is taken) and block on it,
something else commits meanwhile, then the lock is released.

A database of each test's own: the ladder is global."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.db import create_driver_pool, create_engine
from core.money import Money
from ledger import service as ledger
from ledger.batch import EarnBatcher
from members import service as members
from members import tiers
from partners import service as partners
from tests.ledger.invariants import assert_invariants
from tests.ledger.test_lock_guards import waiting_on_locks

LADDER = [
    tiers.TierSpec("Silver", Money.of(Decimal(1000), "RUB"), "1.5"),
    tiers.TierSpec("Gold", Money.of(Decimal(5000), "RUB"), "2"),
    tiers.TierSpec("Platinum", Money.of(Decimal(15000), "RUB"), "3"),
]


@pytest.fixture
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(fresh_database, pool_size=5, max_overflow=5)
    yield eng
    await eng.dispose()


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_driver_pool(fresh_database, max_size=6)
    await p.open(wait=True)
    yield p
    await p.close()


class World:
    def __init__(self, engine: AsyncEngine, pool: AsyncConnectionPool) -> None:
        self.engine, self.pool = engine, pool
        self.partner_id = uuid.UUID(int=0)
        self.ladder: tiers.Ladder | None = None

    async def setup(self) -> None:
        async with self.engine.begin() as c:
            self.partner_id = (
                await partners.create(c, name="P", category="shop", currency="RUB")
            ).id

    async def set_ladder(self) -> None:
        async with self.engine.begin() as c:
            self.ladder = await tiers.set_tiers(c, tiers=LADDER, currency="RUB", actor="t")

    async def member(self) -> uuid.UUID:
        async with self.engine.begin() as c:
            return (await members.create(c, name="m")).id

    def request(self, member_id: uuid.UUID, amount: int) -> ledger.EarnRequest:
        return ledger.EarnRequest(
            actor="t",
            idempotency_key=f"k-{uuid.uuid4()}",
            member_id=member_id,
            partner_id=self.partner_id,
            points=amount // 10,
            ref=f"o-{uuid.uuid4()}",
            amount=Decimal(amount),
            currency="RUB",
            follow_up=None if self.ladder is None else tiers.upgrade_follow_up(self.ladder, "RUB"),
        )

    async def earn_alone(self, member_id: uuid.UUID, amount: int) -> ledger.EarnResult:
        async with self.engine.begin() as c:
            return await ledger.earn(c, self.request(member_id, amount))

    async def tier(self, member_id: uuid.UUID) -> str | None:
        async with self.engine.connect() as c:
            return (await tiers.member_tier(c, member_id=member_id)).tier

    async def changes(self, member_id: uuid.UUID) -> list[tuple[str | None, str | None, str]]:
        async with self.engine.connect() as c:
            rows = await c.execute(
                text(
                    "SELECT from_tier, to_tier, reason FROM member_tier_changes "
                    "WHERE member_id = :m ORDER BY id"
                ),
                {"m": member_id},
            )
            return [(r.from_tier, r.to_tier, r.reason) for r in rows]


@pytest.fixture
async def world(engine: AsyncEngine, pool: AsyncConnectionPool) -> World:
    w = World(engine, pool)
    await w.setup()
    return w


async def test_the_upgrade_commits_in_the_batch_statement(world: World) -> None:
    await world.set_ladder()
    m = await world.member()
    batcher = EarnBatcher(world.pool)
    first = await batcher.earn(world.request(m, 600))
    assert first.follow_up is None and await world.tier(m) is None
    request = world.request(m, 600)
    crossing = await batcher.earn(request)  # 1,200 reaches Silver's 1,000
    assert crossing.follow_up == "Silver" and crossing.points == 60
    assert await world.tier(m) == "Silver"
    # Two earns of one batch statement each, none on the single path: no extra transaction.
    assert batcher.stats.batches == 2 and batcher.stats.single_path == 0
    assert await world.changes(m) == [(None, "Silver", "upgrade")]
    async with world.engine.connect() as c:
        spend = (
            await c.execute(
                text("SELECT qualifying_spend FROM member_tier_changes WHERE member_id = :m"),
                {"m": m},
            )
        ).scalar_one()
    assert spend == Decimal("1200.0000")
    # A replay answers as the original and upgrades nothing.
    again = await batcher.earn(request)
    assert again.replayed and again.follow_up is None
    assert await world.changes(m) == [(None, "Silver", "upgrade")]
    await assert_invariants(world.engine)


async def test_an_earn_committed_meanwhile_sends_the_batch_to_the_single_path(
    world: World,
) -> None:
    """`tier_fresh`: two earns of one member in two statements (two processes' batchers): the
    second's snapshot misses the first's earn; judged on it, it would stop at Gold."""
    await world.set_ladder()
    m = await world.member()
    await world.earn_alone(m, 1000)
    assert await world.tier(m) == "Silver"
    a, b = EarnBatcher(world.pool), EarnBatcher(world.pool)
    async with world.engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM accounts WHERE kind = 'wallet' AND owner_id = :m FOR UPDATE"),
            {"m": m},
        )
        tasks = [
            asyncio.create_task(a.earn(world.request(m, 4000))),
            asyncio.create_task(b.earn(world.request(m, 10000))),
        ]
        await waiting_on_locks(world.engine, 2, still=tasks)
        await holder.rollback()
    results = await asyncio.gather(*tasks)
    # 1,000 + 4,000 + 10,000: Platinum, through Gold whichever committed first.
    assert await world.tier(m) == "Platinum", (results, a.stats, b.stats, await world.changes(m))
    assert await world.changes(m) == [
        (None, "Silver", "upgrade"),
        ("Silver", "Gold", "upgrade"),
        ("Gold", "Platinum", "upgrade"),
    ]
    assert sorted(r.follow_up or "" for r in results) == ["Gold", "Platinum"]
    assert a.stats.refused_batches + b.stats.refused_batches == 1
    await assert_invariants(world.engine)


async def test_one_batchers_earns_of_a_member_wait_for_its_running_batch(world: World) -> None:
    """`EarnBatcher._take`: a member's second earn arriving while a batch of this batcher holding
    their first runs waits for the next batch. Taken at once, its statement would queue on the
    wallet's lock behind the first, find the wallet changed under its snapshot and send its
    batch to the single path (`tier_fresh`)."""
    await world.set_ladder()
    m = await world.member()
    batcher = EarnBatcher(world.pool, max_in_flight=2)
    async with world.engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM accounts WHERE kind = 'wallet' AND owner_id = :m FOR UPDATE"),
            {"m": m},
        )
        tasks = [asyncio.create_task(batcher.earn(world.request(m, 4000)))]
        await waiting_on_locks(world.engine, 1, still=tasks)
        second = world.request(m, 10000)
        tasks.append(asyncio.create_task(batcher.earn(second)))

        def waiting() -> bool:
            return any(r.request is second for r in batcher._pending)

        # Two turns of the loop (no time waited): the earn is submitted and starts a batch, then
        # that batch takes what it may.
        for _ in range(2):
            await asyncio.sleep(0)
        assert batcher._starting == 0
        if not waiting():  # taken (no guard): its statement queues on the lock too
            await waiting_on_locks(world.engine, 2, still=tasks)
        await holder.rollback()
    results = await asyncio.gather(*tasks)
    assert [r.follow_up for r in results] == ["Silver", "Gold"]
    assert batcher.stats.batches == 2
    assert batcher.stats.refused_batches == 0 and batcher.stats.single_path == 0
    assert await world.tier(m) == "Gold"
    await assert_invariants(world.engine)


async def test_a_review_meanwhile_is_not_recorded_again_by_the_upsert(world: World) -> None:
    """The upsert's guard: the member had no tier row in the statement's snapshot; a review
    gave it Silver meanwhile; the earn reaching Silver must not record a second change."""
    m = await world.member()
    await world.earn_alone(m, 1200)  # before any ladder: untiered, no row
    await world.set_ladder()
    batcher = EarnBatcher(world.pool)
    async with world.engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM accounts WHERE kind = 'wallet' AND owner_id = :m FOR UPDATE"),
            {"m": m},
        )
        task = asyncio.create_task(batcher.earn(world.request(m, 100)))
        await waiting_on_locks(world.engine, 1, still=[task])
        async with world.engine.begin() as c:
            await tiers.review(c, as_of=utcnow(), currency="RUB")
        await holder.rollback()
    result = await task
    assert result.follow_up is None and await world.tier(m) == "Silver"
    assert await world.changes(m) == [(None, "Silver", "review")]


async def test_the_change_records_the_tier_a_review_left_meanwhile(world: World) -> None:
    """`tier_held`'s lock: the snapshot says Silver, a review set Gold meanwhile; the upgrade
    to Platinum is recorded from Gold."""
    m = await world.member()
    await world.earn_alone(m, 6000)  # before any ladder
    await world.set_ladder()
    async with world.engine.begin() as c:
        await c.execute(
            text(
                "INSERT INTO member_tiers (member_id, tier_name, since, reason, ladder_id) "
                "VALUES (:m, 'Silver', :at, 'upgrade', :l)"
            ),
            {"m": m, "at": utcnow() - timedelta(days=1), "l": world.ladder and world.ladder.id},
        )
    batcher = EarnBatcher(world.pool)
    async with world.engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM accounts WHERE kind = 'wallet' AND owner_id = :m FOR UPDATE"),
            {"m": m},
        )
        task = asyncio.create_task(batcher.earn(world.request(m, 10000)))
        await waiting_on_locks(world.engine, 1, still=[task])
        async with world.engine.begin() as c:
            await tiers.review(c, as_of=utcnow(), currency="RUB")  # 6,000: Gold
        await holder.rollback()
    result = await task
    assert result.follow_up == "Platinum" and await world.tier(m) == "Platinum"
    assert await world.changes(m) == [("Silver", "Gold", "review"), ("Gold", "Platinum", "upgrade")]
