"""Locks that only a race can show: each test fails when its lock is removed.

The race is made deterministic by holding a lock the code under test must wait for: the
contenders are started, the test waits (in PostgreSQL's own view, `pg_stat_activity`) until
they are all blocked, then lets them go. Without the guarded lock they read stale state before
blocking; with it they are serialised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import create_driver_pool, create_engine
from core.money import Money
from ledger import service as ledger
from ledger.batch import EarnBatcher
from members import service as members
from partners import refunds
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """A database of this module's own: its invariant checks see only its own rows."""
    admin, uri = create_test_database("coalition_locks")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=10, max_overflow=10)
    yield eng
    await eng.dispose()


def key() -> str:
    return f"k-{uuid.uuid4()}"


async def waiting_on_locks(engine: AsyncEngine, n: int, *, still: list[asyncio.Task]) -> None:
    """Return once `n` sessions of this database wait for a lock (or a contender has finished,
    which the test's assertions then judge). Polls PostgreSQL: no sleep stands for an event."""
    async with engine.connect() as c:
        for _ in range(10_000):
            blocked = (
                await c.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
            await c.rollback()
            if blocked >= n or any(t.done() for t in still):
                return
            await asyncio.sleep(0.002)
    raise AssertionError(f"{n} sessions never waited for a lock")


async def balances(engine: AsyncEngine, member_id: uuid.UUID) -> dict[str, int]:
    async with engine.connect() as c:
        rows = await c.execute(
            text(
                "SELECT kind, balance FROM accounts "
                "WHERE owner_id = :m AND kind IN ('wallet', 'debt')"
            ),
            {"m": member_id},
        )
        return {r.kind: int(r.balance) for r in rows}


async def test_concurrent_partial_refunds_of_one_order_reverse_exactly_the_pro_rata_share(
    engine: AsyncEngine,
) -> None:
    """Guards the refund's advisory lock on (partner, order) (partners/refunds.py): without it
    each refund computes its share against the refunds it saw before the others committed, and
    the floors of the parts no longer add up to the floor of the whole."""
    async with engine.begin() as c:
        shop = await partners.create(c, name="Shop", category="shop", currency="RUB")
        m = await members.create(c, name="refunded")
        earn = await ledger.earn(
            c,
            actor="shop",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=shop.id,
            points=1000,
            ref="order-1",
            amount=Decimal("3.00"),
            currency="RUB",
        )
    parts = 3  # 1.00 of 3.00 each: 333 + 333 + 334 when serialised, 3 x 333 when not

    async def one_refund() -> refunds.RefundResult:
        async with engine.begin() as c:
            return await refunds.refund(
                c,
                actor="shop",
                partner_id=shop.id,
                order_ref="order-1",
                amount=Money.of(Decimal("1.00"), "RUB"),
                idempotency_key=key(),
            )

    # The member's wallet row, locked here, is where each refund's ledger reversal must wait:
    # every refund gets as far as the ledger before any of them can commit.
    blocker: AsyncConnection
    async with engine.connect() as blocker:
        await blocker.begin()
        await blocker.execute(
            text("SELECT id FROM accounts WHERE owner_id = :m FOR UPDATE"), {"m": m.id}
        )
        tasks = [asyncio.create_task(one_refund()) for _ in range(parts)]
        await waiting_on_locks(engine, parts, still=tasks)
        await blocker.rollback()
    results = await asyncio.gather(*tasks)

    reversed_total = sum(r.points_reversed for r in results)
    assert reversed_total == 1000 == earn.points  # floor(1000 x 3.00 / 3.00)
    assert sorted(r.points_reversed for r in results) == [333, 333, 334]
    async with engine.connect() as c:
        lot_reversed = (
            await c.execute(
                text("SELECT reversed FROM lots WHERE earn_tx_id = :tx"),
                {"tx": earn.transaction_id},
            )
        ).scalar_one()
    assert lot_reversed == reversed_total
    assert await balances(engine, m.id) == {"wallet": 0, "debt": 0}
    await assert_invariants(engine)


@pytest.fixture
async def pool(db_uri: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_driver_pool(db_uri, max_size=4)
    await p.open(wait=True)
    yield p
    await p.close()


async def test_a_batch_earn_racing_a_reversal_repays_the_debt_it_creates(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    """Guards the `FOR UPDATE` on the members' wallet and debt rows in the group-commit
    statement (ledger/batch.py): without it the statement reads the debt before a concurrent
    reversal commits it, credits the wallet, and the member holds points while owing points."""
    async with engine.begin() as c:
        issuer = await partners.create(c, name="Issuer", category="shop", currency="RUB")
        shop = await partners.create(c, name="Redeemer", category="shop", currency="RUB")
        m = await members.create(c, name="in debt")
        first = await ledger.earn(
            c,
            actor="issuer",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=issuer.id,
            points=100,
            ref="bought",
        )
        hold = await ledger.authorize(
            c, actor="shop", idempotency_key=key(), member_id=m.id, partner_id=shop.id, points=100
        )
        await ledger.capture(
            c,
            actor="shop",
            idempotency_key=key(),
            partner_id=shop.id,
            hold_id=hold.hold_id,
            points=100,
        )
    assert await balances(engine, m.id) == {"wallet": 0, "debt": 0}

    batcher = EarnBatcher(pool, max_batch=8, max_in_flight=1)
    # The reversal (the points were spent: all of it becomes debt) holds the member's rows
    # until it commits; the batch earn starts meanwhile.
    async with engine.connect() as r:
        await r.begin()
        rev = await ledger.reverse_earn(
            r,
            actor="issuer",
            idempotency_key=key(),
            partner_id=issuer.id,
            earn_transaction_id=first.transaction_id,
            points=100,
        )
        assert rev.to_debt == 100
        earn = asyncio.create_task(
            batcher.earn(
                actor="issuer",
                idempotency_key=key(),
                member_id=m.id,
                partner_id=issuer.id,
                points=60,
                ref="bought-again",
            )
        )
        await waiting_on_locks(engine, 1, still=[earn])
        await r.commit()
    await earn
    await batcher.drain()

    # The new earnings repay the debt first: 60 of the 100 owed, nothing to spend.
    assert await balances(engine, m.id) == {"wallet": 0, "debt": -40}
    assert batcher.stats.refused_batches == 1  # the statement saw the debt under its lock
    await assert_invariants(engine)
