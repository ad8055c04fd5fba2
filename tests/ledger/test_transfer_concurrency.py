"""Reward spends and transfers under real concurrency (separate connections, one committed
transaction each). Where a lock is what makes a test pass, the race is made deterministic as in
test_lock_guards: the test holds the lock the contenders must wait for, waits until they all
wait (pg_stat_activity), then lets them go."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import create_engine
from ledger import service as ledger
from ledger.errors import InsufficientPoints, TransferLimitExceeded
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants
from tests.ledger.test_concurrency import gather_on_connections, unexpected
from tests.ledger.test_lock_guards import waiting_on_locks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """A database of this module's own: its invariant checks see only its own rows."""
    admin, uri = create_test_database("coalition_transfers")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=20)
    yield eng
    await eng.dispose()


def common(prefix: str) -> dict[str, str]:
    k = f"{prefix}-{uuid.uuid4()}"
    return {"actor": "test", "key_space": "test", "idempotency_key": k, "digest": k}


async def new_members(engine: AsyncEngine, n: int) -> list[uuid.UUID]:
    """n members, in the order of their wallet ids (opened one after the other)."""
    async with engine.begin() as c:
        return [(await members.create(c, name=f"m{i}")).id for i in range(n)]


async def give(engine: AsyncEngine, member_id: uuid.UUID, points: int) -> None:
    async with engine.begin() as c:
        await ledger.award_bonus(
            c,
            ledger.BonusRequest(
                **common("b"), member_id=member_id, issuer_id=None, points=points, reason="signup"
            ),
        )


def transfer(
    sender: uuid.UUID, receiver: uuid.UUID, points: int, limit: int | None = None
) -> ledger.TransferRequest:
    return ledger.TransferRequest(
        **common("t"),
        from_member_id=sender,
        to_member_id=receiver,
        points=points,
        daily_limit=limit,
    )


async def wallets(engine: AsyncEngine, *member_ids: uuid.UUID) -> list[int]:
    async with engine.connect() as c:
        return [(await ledger.balance(c, member_id=m)).wallet for m in member_ids]


async def holding_wallet(
    engine: AsyncEngine, member_id: uuid.UUID, contenders: list[Any], waiting: int
) -> list[Any]:
    """Run the contenders (coroutine factories taking a connection, each in its own committed
    transaction) while this test holds `member_id`'s wallet row; release it once `waiting`
    sessions wait for a lock. Returns their results or exceptions."""
    async with engine.connect() as holder:
        await holder.begin()
        await holder.execute(
            text("SELECT id FROM accounts WHERE owner_id = :m AND kind = 'wallet' FOR UPDATE"),
            {"m": member_id},
        )

        async def run(work: Any) -> Any:
            async with engine.begin() as c:
                return await work(c)

        tasks = [asyncio.ensure_future(run(w)) for w in contenders]
        await waiting_on_locks(engine, waiting, still=tasks)
        await holder.rollback()
        return await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Reward spends racing for one member's points


async def test_parallel_reward_spends_take_only_what_the_member_has(engine: AsyncEngine) -> None:
    async with engine.begin() as c:
        shop = await partners.create(c, name="Shop", category="shop", currency="RUB")
    (m,) = await new_members(engine, 1)
    await give(engine, m, 300)
    await give(engine, m, 250)

    def spend(c: AsyncConnection) -> Any:
        request = ledger.RewardSpendRequest(
            **common("r"), member_id=m, partner_id=shop.id, points=100, ref="reward:r"
        )
        return ledger.redeem_reward_points(c, request)

    results = await holding_wallet(engine, m, [spend] * 8, 8)
    assert unexpected(results, (InsufficientPoints,)) == []
    assert sum(isinstance(r, ledger.RewardSpendResult) for r in results) == 5
    assert await wallets(engine, m) == [50]
    async with engine.connect() as c:
        redeemed = await ledger.account_balance(c, kind="redemption", owner_id=shop.id)
    assert redeemed == 500
    await assert_invariants(engine)


async def test_reward_spends_released_at_once_never_overdraw(engine: AsyncEngine) -> None:
    async with engine.begin() as c:
        shop = await partners.create(c, name="Shop", category="shop", currency="RUB")
    (m,) = await new_members(engine, 1)
    await give(engine, m, 370)

    def spend(c: AsyncConnection) -> Any:
        request = ledger.RewardSpendRequest(
            **common("r"), member_id=m, partner_id=shop.id, points=75, ref="reward:r"
        )
        return ledger.redeem_reward_points(c, request)

    results = await gather_on_connections(engine, [spend] * 8)
    assert unexpected(results, (InsufficientPoints,)) == []
    assert sum(isinstance(r, ledger.RewardSpendResult) for r in results) == 4
    assert await wallets(engine, m) == [70]
    await assert_invariants(engine)


# ---------------------------------------------------------------------------------------------
# Transfers


async def test_two_transfers_by_one_sender_over_the_daily_limit_one_passes(
    engine: AsyncEngine,
) -> None:
    sender, r1, r2 = await new_members(engine, 3)
    await give(engine, sender, 1000)

    def send(receiver: uuid.UUID) -> Any:
        return lambda c: ledger.transfer_points(c, transfer(sender, receiver, 300, limit=500))

    results = await holding_wallet(engine, sender, [send(r1), send(r2)], 2)
    assert unexpected(results, (TransferLimitExceeded,)) == []
    assert sum(isinstance(r, ledger.TransferResult) for r in results) == 1
    assert sum(isinstance(r, TransferLimitExceeded) for r in results) == 1
    assert sorted(await wallets(engine, sender, r1, r2)) == [0, 300, 700]
    await assert_invariants(engine)


async def test_transfers_both_ways_at_once_never_deadlock(engine: AsyncEngine) -> None:
    # The test holds the lower wallet (a's): a->b waits for it first, and so must b->a (both
    # lock in ascending account id); were b->a to lock its sender first, it would hold b's
    # wallet while waiting for a's, which a->b holds while waiting for b's: a deadlock.
    a, b = await new_members(engine, 2)
    await give(engine, a, 100)
    await give(engine, b, 100)
    results = await holding_wallet(
        engine,
        a,
        [
            lambda c: ledger.transfer_points(c, transfer(a, b, 30)),
            lambda c: ledger.transfer_points(c, transfer(b, a, 50)),
        ],
        2,
    )
    assert unexpected(results) == []
    assert await wallets(engine, a, b) == [120, 80]
    await assert_invariants(engine)


async def test_many_transfers_in_a_ring_all_land(engine: AsyncEngine) -> None:
    ms = await new_members(engine, 4)
    for m in ms:
        await give(engine, m, 100)
    work = [
        (lambda s, r: lambda c: ledger.transfer_points(c, transfer(s, r, 10)))(
            ms[i % 4], ms[(i + 1 + i // 4) % 4]
        )
        for i in range(12)
    ]
    results = await gather_on_connections(engine, work)
    assert unexpected(results) == []
    assert sum(await wallets(engine, *ms)) == 400
    await assert_invariants(engine)
