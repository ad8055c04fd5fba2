"""Reward redemptions under real concurrency: separate connections, one committed unit of work
each (`loyalty.rewards.redeem`), all launched at once. The stock, the voucher pool and the
idempotency key must hold whatever the interleaving; balances, stock, codes and ledger rows
are checked to the point.

Where a guard only shows under one interleaving, the test forces it by holding the lock the
contenders must wait for (as tests/ledger/test_lock_guards.py does): each such test fails when
its guard is removed (the stock condition, the voucher code's lock, the replay of a key).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from catalog import service as catalog
from catalog.errors import OutOfStock
from catalog.service import RewardDraft
from core.db import create_engine
from ledger import service as ledger
from loyalty import rewards
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants
from tests.ledger.test_lock_guards import waiting_on_locks

pytestmark = pytest.mark.slow

CONTENDERS = 8


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """A database of this module's own: its invariant checks see only its own rows."""
    admin, uri = create_test_database("coalition_catalog_race")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=20)
    yield eng
    await eng.dispose()


@dataclass
class Rt:
    """What `loyalty.rewards.redeem` runs on: the database."""

    engine: AsyncEngine


@dataclass
class Shop:
    shop_id: uuid.UUID
    issuer_id: uuid.UUID


@pytest.fixture(scope="module")
async def shop(engine: AsyncEngine) -> Shop:
    async with engine.begin() as c:
        issuer = await partners.create(c, name="Issuer", category="fuel", currency="RUB")
        deliverer = await partners.create(c, name="Deliverer", category="shop", currency="RUB")
        await partners.set_agreement(
            c,
            partner_id=deliverer.id,
            issue_price="1",
            redemption_price="0.9",
            effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            currency="RUB",
            actor="op",
        )
    return Shop(deliverer.id, issuer.id)


async def members_with(engine: AsyncEngine, shop: Shop, n: int, points: int) -> list[uuid.UUID]:
    """`n` members holding `points` available points each (earned at the issuer)."""
    ids = []
    async with engine.begin() as c:
        for i in range(n):
            m = await members.create(c, name=f"racer {i}")
            await ledger.earn(
                c,
                actor="issuer",
                idempotency_key=f"e-{uuid.uuid4()}",
                member_id=m.id,
                partner_id=shop.issuer_id,
                points=points,
                at=datetime.now(UTC) - timedelta(days=1),
            )
            ids.append(m.id)
    return ids


async def reward(
    engine: AsyncEngine,
    shop: Shop,
    *,
    kind: str = "GOODS",
    price: int = 300,
    stock: int | None = None,
    codes: list[str] | None = None,
) -> uuid.UUID:
    async with engine.begin() as c:
        r = await catalog.publish(
            c,
            partner_id=shop.shop_id,
            draft=RewardDraft("Prize", "", kind, price, stock, None, None, None),
            voucher_codes=codes or [],
            actor="shop",
        )
    return r.id


async def at_once(work: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run each piece of work as its own task, all released at the same moment."""
    barrier = asyncio.Barrier(len(work))

    async def one(fn: Callable[[], Awaitable[Any]]) -> Any:
        await barrier.wait()
        return await fn()

    return await asyncio.gather(*(one(fn) for fn in work), return_exceptions=True)


async def finished_or_blocked(engine: AsyncEngine, tasks: list[asyncio.Task[Any]]) -> None:
    """Return once every task has finished or waits for a lock in PostgreSQL. Polls
    PostgreSQL: no sleep stands for an event."""
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
            if blocked + sum(t.done() for t in tasks) >= len(tasks):
                return
            await asyncio.sleep(0.002)
    raise AssertionError("the contenders neither finished nor waited")


def redeemer(engine: AsyncEngine, member_id: uuid.UUID, reward_id: uuid.UUID, key: str):
    async def go() -> rewards.Redeemed:
        return await rewards.redeem(
            Rt(engine),  # type: ignore[arg-type]
            actor="app",
            member_id=member_id,
            reward_id=str(reward_id),
            idempotency_key=key,
        )

    return go


async def state(engine: AsyncEngine, member_ids: list[uuid.UUID], reward_id: uuid.UUID):
    """Wallets, the reward's stock, its redemptions and codes handed out, the members' reward
    transactions and the claimed keys of reward spends."""
    async with engine.connect() as c:
        wallets = dict(
            (
                await c.execute(
                    text(
                        "SELECT owner_id, balance FROM accounts "
                        "WHERE kind = 'wallet' AND owner_id = ANY(:ids)"
                    ),
                    {"ids": member_ids},
                )
            ).all()
        )
        stock = (
            await c.execute(text("SELECT stock FROM rewards WHERE id = :r"), {"r": reward_id})
        ).scalar_one()
        redemptions = (
            await c.execute(
                text(
                    "SELECT member_id, points, voucher_code, transaction_id "
                    "FROM reward_redemptions WHERE reward_id = :r ORDER BY member_id"
                ),
                {"r": reward_id},
            )
        ).all()
        used = (
            await c.execute(
                text(
                    "SELECT code, redemption_id FROM voucher_codes "
                    "WHERE reward_id = :r AND redemption_id IS NOT NULL ORDER BY code"
                ),
                {"r": reward_id},
            )
        ).all()
        txs = (
            await c.execute(
                text(
                    "SELECT id, member_id, partner_id, points FROM transactions "
                    "WHERE kind = 'reward' AND member_id = ANY(:ids)"
                ),
                {"ids": member_ids},
            )
        ).all()
        keys = (
            await c.execute(
                text(
                    "SELECT count(*) FROM idempotency_keys "
                    "WHERE operation = 'reward' AND key_space = ANY(:spaces)"
                ),
                {"spaces": [ledger.member_key_space(m) for m in member_ids]},
            )
        ).scalar_one()
    return wallets, stock, redemptions, used, txs, keys


def winners_and_losers(results: list[Any]) -> tuple[list[rewards.Redeemed], list[Any]]:
    wins = [r for r in results if isinstance(r, rewards.Redeemed)]
    return wins, [r for r in results if not isinstance(r, rewards.Redeemed)]


async def check_outcome(
    engine: AsyncEngine,
    shop: Shop,
    racers: list[uuid.UUID],
    reward_id: uuid.UUID,
    results: list[Any],
    *,
    winners: int,
    price: int,
    points: int,
    stock_after: int | None,
) -> list[rewards.Redeemed]:
    """Exactly `winners` redemptions, every other contender refused OUT_OF_STOCK, and nothing
    taken from anyone but the winners, once each."""
    wins, losses = winners_and_losers(results)
    assert len(wins) == winners, results
    assert all(isinstance(x, OutOfStock) for x in losses), losses
    won = {w.redemption.member_id for w in wins}
    wallets, stock, redemptions, _, txs, keys = await state(engine, racers, reward_id)
    assert wallets == {m: points - price if m in won else points for m in racers}
    assert stock == stock_after
    assert sorted((r.member_id, r.points) for r in redemptions) == sorted((m, price) for m in won)
    assert sorted((t.member_id, t.partner_id, t.points) for t in txs) == sorted(
        (m, shop.shop_id, price) for m in won
    )
    assert {t.id for t in txs} == {r.transaction_id for r in redemptions}
    assert keys == winners  # the refused spends left no key behind
    await assert_invariants(engine)
    return wins


async def test_the_last_item_goes_to_exactly_one_of_eight_racing_members(engine, shop):
    racers = await members_with(engine, shop, CONTENDERS, 500)
    rid = await reward(engine, shop, stock=1)
    results = await at_once([redeemer(engine, m, rid, "last") for m in racers])
    await check_outcome(
        engine, shop, racers, rid, results, winners=1, price=300, points=500, stock_after=0
    )


async def test_the_stock_condition_holds_when_all_eight_reach_it_together(engine, shop):
    """Guards `stock > 0` in the decrement (catalog.redemptions._TAKE_STOCK): every contender has
    taken its points and waits on the reward's row; released together, one finds 1 left, the
    others 0. Without the condition the second takes the stock below zero (refused by the
    table's check: an error instead of OUT_OF_STOCK), and with no such check it would oversell."""
    racers = await members_with(engine, shop, CONTENDERS, 500)
    rid = await reward(engine, shop, stock=2)
    async with engine.connect() as blocker:
        await blocker.begin()
        await blocker.execute(text("SELECT 1 FROM rewards WHERE id = :r FOR UPDATE"), {"r": rid})
        tasks = [asyncio.create_task(redeemer(engine, m, rid, "two")()) for m in racers]
        await waiting_on_locks(engine, CONTENDERS, still=tasks)
        await blocker.rollback()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await check_outcome(
        engine, shop, racers, rid, results, winners=2, price=300, points=500, stock_after=0
    )


async def test_a_voucher_pool_never_hands_a_code_twice(engine, shop):
    racers = await members_with(engine, shop, CONTENDERS, 500)
    codes = [f"CODE-{i}" for i in range(5)]
    rid = await reward(engine, shop, kind="VOUCHER", price=100, codes=codes)
    results = await at_once([redeemer(engine, m, rid, "voucher") for m in racers])
    wins = await check_outcome(
        engine, shop, racers, rid, results, winners=5, price=100, points=500, stock_after=None
    )
    handed = sorted(w.redemption.voucher_code for w in wins)
    assert handed == codes  # five codes, five members, none twice
    _, _, redemptions, used, _, _ = await state(engine, racers, rid)
    assert [u.code for u in used] == codes
    assert {u.redemption_id for u in used} == {w.redemption.id for w in wins}
    assert sorted(r.voucher_code for r in redemptions) == codes


async def test_a_code_held_by_another_redeemer_is_skipped_not_shared(engine, shop):
    """Guards `FOR UPDATE SKIP LOCKED` on the unused code (catalog.redemptions._TAKE_CODE): the first
    code is held by an unfinished redemption; the contenders take the other codes. Without the
    lock clause they all read that same unused code, queue on it, and each is handed it."""
    racers = await members_with(engine, shop, CONTENDERS, 500)
    codes = [f"HELD-{i}" for i in range(4)]
    rid = await reward(engine, shop, kind="VOUCHER", price=100, codes=codes)
    async with engine.connect() as blocker:
        await blocker.begin()
        await blocker.execute(
            text("SELECT 1 FROM voucher_codes WHERE reward_id = :r AND code = 'HELD-0' FOR UPDATE"),
            {"r": rid},
        )
        tasks = [asyncio.create_task(redeemer(engine, m, rid, "held")()) for m in racers]
        await finished_or_blocked(engine, tasks)  # with the guard: all finished
        await blocker.rollback()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    wins = await check_outcome(
        engine, shop, racers, rid, results, winners=3, price=100, points=500, stock_after=None
    )
    assert sorted(w.redemption.voucher_code for w in wins) == ["HELD-1", "HELD-2", "HELD-3"]


async def test_one_key_sent_four_times_at_once_redeems_once(engine, shop):
    """Guards the replay of a key claimed by a concurrent request (loyalty.rewards.redeem_in,
    `spent.replayed`): the four requests pass the stored-result check together (nothing is
    stored yet), the first claims the key and waits on the member's wallet, the others on the
    key. Released, the first commits and the others replay it: one redemption, one code, the
    same answer four times. Without the replay each would take a code of its own."""
    (member,) = await members_with(engine, shop, 1, 1000)
    rid = await reward(engine, shop, kind="VOUCHER", price=100, codes=["K-1", "K-2", "K-3"])
    async with engine.connect() as blocker:
        await blocker.begin()
        await blocker.execute(
            text("SELECT id FROM accounts WHERE owner_id = :m FOR UPDATE"), {"m": member}
        )
        tasks = [asyncio.create_task(redeemer(engine, member, rid, "same")()) for _ in range(4)]
        await waiting_on_locks(engine, 4, still=tasks)
        await blocker.rollback()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, rewards.Redeemed) for r in results), results
    assert len({r.redemption.id for r in results}) == 1
    assert {r.redemption.voucher_code for r in results} == {"K-1"}
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    wallets, _, redemptions, used, txs, keys = await state(engine, [member], rid)
    assert wallets == {member: 900} and len(redemptions) == 1 and len(txs) == 1 and keys == 1
    assert [u.code for u in used] == ["K-1"]
    await assert_invariants(engine)


@pytest.mark.parametrize("stock", [3, None], ids=["limited", "unlimited"])
async def test_a_reward_repriced_or_retired_meanwhile_is_not_sold_at_the_old_terms(
    engine, shop, stock
):
    """Guards the reward's terms rechecked under its lock (`price_points = :price`,
    `retired_at IS NULL` in catalog.redemptions._TAKE_STOCK and _HOLD_REWARD): the contenders read
    the reward, take its old price and wait on its row while an editor changes it; once the
    change commits, none of them buys at the old price or a retired reward."""
    racers = await members_with(engine, shop, 2, 500)
    repriced = await reward(engine, shop, price=100, stock=stock)
    retired = await reward(engine, shop, price=100, stock=stock)
    for rid, change in ((repriced, "price"), (retired, "retire")):
        async with engine.connect() as editor:
            await editor.begin()
            await editor.execute(text("SELECT 1 FROM rewards WHERE id = :r FOR UPDATE"), {"r": rid})
            tasks = [asyncio.create_task(redeemer(engine, m, rid, change)()) for m in racers]
            await waiting_on_locks(engine, len(racers), still=tasks)
            if change == "price":
                await catalog.update(
                    editor, reward_id=rid, owner=None, changes={"price_points": 200}
                )
            else:
                await catalog.retire(editor, reward_id=rid, owner=None, at=datetime.now(UTC))
            await editor.commit()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        codes = {getattr(r, "code", r) for r in results}
        assert codes == {"VALIDATION" if change == "price" else "NOT_FOUND"}, results
        wallets, left, redemptions, _, txs, keys = await state(engine, racers, rid)
        assert wallets == {m: 500 for m in racers} and left == stock
        assert (redemptions, txs, keys) == ([], [], 0)
    await assert_invariants(engine)
