"""The ledger under real concurrency: separate connections, one committed transaction each,
all launched at once. Serialisation happens in PostgreSQL (row locks, the unique index of
idempotency keys); these tests check that it is enough and that it never deadlocks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.clock import utcnow
from core.db import create_engine
from ledger import service as ledger
from ledger.errors import HoldNotActive, IdempotencyConflict, InsufficientPoints, LedgerValidation
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """A database of this module's own: what it commits cannot disturb other tests (whose
    jobs sweep the whole database) and its invariant checks see only its own data."""
    admin, uri = create_test_database("coalition_concurrency")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=60)
    yield eng
    await eng.dispose()


T = TypeVar("T")


def key() -> str:
    return f"k-{uuid.uuid4()}"


async def gather_on_connections(
    engine: AsyncEngine, work: list[Callable[[AsyncConnection], Awaitable[T]]]
) -> list[T | BaseException]:
    """Run each piece of work in its own committed transaction on its own connection, all
    released at the same moment (a barrier), and return results or exceptions in order."""
    barrier = asyncio.Barrier(len(work))

    async def one(fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with contextlib.AsyncExitStack() as stack:
            try:
                c = await stack.enter_async_context(engine.connect())
                await c.execute(text("SELECT 1"))  # the connection is really open
                await c.rollback()
            except BaseException:
                await barrier.abort()  # the others must not wait for this one forever
                raise
            await barrier.wait()
            async with c.begin():
                return await fn(c)

    return await asyncio.gather(*(one(fn) for fn in work), return_exceptions=True)


def unexpected(
    results: list[Any], allowed: tuple[type[BaseException], ...] = ()
) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException) and not isinstance(r, allowed)]


async def new_partner(
    engine: AsyncEngine, name: str = "P", hold_days: int = 0
) -> partners.PartnerRecord:
    async with engine.begin() as c:
        return await partners.create(
            c, name=name, category="shop", currency="RUB", hold_days=hold_days
        )


async def new_members(engine: AsyncEngine, n: int) -> list[members.MemberRecord]:
    async with engine.begin() as c:
        return [await members.create(c, name=f"m{i}") for i in range(n)]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as c:
        return (await c.execute(text(sql), params)).scalar_one()


# ---------------------------------------------------------------------------------------------
# Spends racing for the same points


@pytest.mark.parametrize("with_capture", [False, True], ids=["authorize", "authorize+capture"])
async def test_concurrent_spends_never_overdraw(engine: AsyncEngine, with_capture: bool) -> None:
    issuer, shop = await new_partner(engine, "issuer"), await new_partner(engine, "shop")
    (m,) = await new_members(engine, 1)
    t0 = utcnow()
    async with engine.begin() as c:
        # Available: 60 + 70 + 20 = 150, of which a live hold takes 50 -> exactly 100 spendable.
        # Pending points (still in the return window) must not be spendable either.
        for pts in (60, 70, 20):
            await ledger.earn(
                c,
                actor="issuer",
                idempotency_key=key(),
                member_id=m.id,
                partner_id=issuer.id,
                points=pts,
                at=t0 - timedelta(minutes=1),
            )
        await ledger.earn(
            c,
            actor="issuer",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=issuer.id,
            points=40,
            hold_days=14,
            at=t0 - timedelta(minutes=1),
        )
        await ledger.authorize(
            c,
            actor="shop",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=shop.id,
            points=50,
            ttl=timedelta(days=1),
            at=t0,
        )
        before = await ledger.balance(c, member_id=m.id, at=t0)
    assert (before.wallet, before.available, before.pending, before.on_hold) == (190, 100, 40, 50)

    async def spend(c: AsyncConnection) -> Any:
        h = await ledger.authorize(
            c,
            actor="shop",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=shop.id,
            points=10,
            ttl=timedelta(days=1),
            at=t0,
        )
        if with_capture:
            return await ledger.capture(
                c,
                actor="shop",
                idempotency_key=key(),
                partner_id=shop.id,
                hold_id=h.hold_id,
                points=10,
                at=t0,
            )
        return h

    results = await gather_on_connections(engine, [spend] * 50)

    assert not unexpected(results, (InsufficientPoints,)), unexpected(
        results, (InsufficientPoints,)
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InsufficientPoints)]
    assert (len(ok), len(refused)) == (10, 40)
    assert all(e.code == "INSUFFICIENT_POINTS" for e in refused)

    async with engine.connect() as c:
        after = await ledger.balance(c, member_id=m.id, at=t0)
        redeemed = await ledger.account_balance(c, kind="redemption", owner_id=shop.id)
        holds = (
            await c.execute(
                text(
                    "SELECT status, count(*), sum(points) FROM holds WHERE member_id = :m "
                    "GROUP BY status"
                ),
                {"m": m.id},
            )
        ).all()
        lots = (
            await c.execute(
                text("SELECT sum(remaining) FROM lots WHERE member_id = :m AND available_at <= :t"),
                {"m": m.id, "t": t0},
            )
        ).scalar_one()
    assert after.available == 0 and lots == 0
    assert after.pending == 40
    if with_capture:
        assert (after.wallet, after.on_hold, redeemed) == (90, 50, 100)
        assert sorted(tuple(h) for h in holds) == [("active", 1, 50), ("captured", 10, 100)]
    else:
        assert (after.wallet, after.on_hold, redeemed) == (190, 150, 0)
        assert sorted(tuple(h) for h in holds) == [("active", 11, 150)]
    # 40 refused requests left no idempotency key behind (they rolled back): a retry runs again.
    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM idempotency_keys WHERE actor = 'shop' "
            "AND operation = 'authorize' AND result->>'hold_id' IN "
            "(SELECT id::text FROM holds WHERE member_id = :m)",
            m=m.id,
        )
        == 11
    )
    await assert_invariants(engine)


# ---------------------------------------------------------------------------------------------
# Earns: a hot partner does not serialise anything, a hot member serialises correctly


@pytest.mark.parametrize("same_member", [False, True], ids=["50-members", "one-member"])
async def test_concurrent_earns_for_one_partner_all_land(
    engine: AsyncEngine, same_member: bool
) -> None:
    p = await new_partner(engine, "hot")
    ms = await new_members(engine, 1 if same_member else 50)
    member_of = [ms[0 if same_member else i].id for i in range(50)]
    t0 = utcnow()

    def earn(i: int) -> Callable[[AsyncConnection], Awaitable[ledger.EarnResult]]:
        return lambda c: ledger.earn(
            c,
            actor="hot",
            idempotency_key=key(),
            member_id=member_of[i],
            partner_id=p.id,
            points=i + 1,
            at=t0,
        )

    results = await gather_on_connections(engine, [earn(i) for i in range(50)])
    assert not unexpected(results), unexpected(results)
    assert len({r.transaction_id for r in results}) == 50  # type: ignore[union-attr]

    total = sum(range(1, 51))
    async with engine.connect() as c:
        n_tx = (
            await c.execute(
                text(
                    "SELECT count(*), sum(points) FROM transactions "
                    "WHERE partner_id = :p AND kind = 'earn'"
                ),
                {"p": p.id},
            )
        ).one()
        assert tuple(n_tx) == (50, total)
        assert await ledger.account_balance(c, kind="issuance", owner_id=p.id) == -total
        lots = (
            await c.execute(text("SELECT count(*) FROM lots WHERE issuer_id = :p"), {"p": p.id})
        ).scalar_one()
        assert lots == 50
        for m in ms:
            expected = sum(i + 1 for i in range(50) if member_of[i] == m.id)
            assert (await ledger.balance(c, member_id=m.id, at=t0)).wallet == expected
    await assert_invariants(engine)


# ---------------------------------------------------------------------------------------------
# One idempotency key from many connections at once


@pytest.mark.parametrize("operation", ["earn", "authorize"])
async def test_one_key_from_twenty_connections_applies_once(
    engine: AsyncEngine, operation: str
) -> None:
    p = await new_partner(engine, "p")
    (m,) = await new_members(engine, 1)
    actor, k, t0 = f"p-{uuid.uuid4()}", key(), utcnow()
    if operation == "authorize":
        async with engine.begin() as c:
            await ledger.earn(
                c,
                actor=actor,
                idempotency_key=key(),
                member_id=m.id,
                partner_id=p.id,
                points=100,
                at=t0,
            )

    async def call(c: AsyncConnection) -> Any:
        if operation == "earn":
            return await ledger.earn(
                c,
                actor=actor,
                idempotency_key=k,
                member_id=m.id,
                partner_id=p.id,
                points=70,
                hold_days=3,
                ref="order-1",
                at=t0,
            )
        return await ledger.authorize(
            c,
            actor=actor,
            idempotency_key=k,
            member_id=m.id,
            partner_id=p.id,
            points=70,
            ref="order-1",
            at=t0,
        )

    results = await gather_on_connections(engine, [call] * 20)
    assert not unexpected(results), unexpected(results)

    fresh = [r for r in results if not r.replayed]  # type: ignore[union-attr]
    assert len(fresh) == 1 and sum(r.replayed for r in results) == 19  # type: ignore[union-attr]
    original = fresh[0]
    # Every caller gets the original result, unchanged.
    assert all(dataclasses.replace(r, replayed=False) == original for r in results)  # type: ignore[type-var]

    async with engine.connect() as c:
        keys = (
            await c.execute(
                text("SELECT count(*) FROM idempotency_keys WHERE actor = :a AND key = :k"),
                {"a": actor, "k": k},
            )
        ).scalar_one()
        assert keys == 1
        if operation == "earn":
            assert isinstance(original, ledger.EarnResult)
            rows = (
                (
                    await c.execute(
                        text("SELECT id FROM transactions WHERE member_id = :m"), {"m": m.id}
                    )
                )
                .scalars()
                .all()
            )
            assert rows == [original.transaction_id]
            lots = (
                await c.execute(
                    text("SELECT count(*), sum(points) FROM lots WHERE member_id = :m"), {"m": m.id}
                )
            ).one()
            assert tuple(lots) == (1, 70)
            assert (await ledger.balance(c, member_id=m.id, at=t0)).pending == 70
        else:
            assert isinstance(original, ledger.HoldResult)
            holds = (
                (await c.execute(text("SELECT id FROM holds WHERE member_id = :m"), {"m": m.id}))
                .scalars()
                .all()
            )
            assert holds == [original.hold_id]
            b = await ledger.balance(c, member_id=m.id, at=t0)
            assert (b.available, b.on_hold) == (30, 70)
    await assert_invariants(engine)


async def test_one_key_with_different_requests_applies_one_and_conflicts_the_rest(
    engine: AsyncEngine,
) -> None:
    p = await new_partner(engine, "p")
    (m,) = await new_members(engine, 1)
    actor, k, t0 = f"p-{uuid.uuid4()}", key(), utcnow()

    def call(points: int) -> Callable[[AsyncConnection], Awaitable[ledger.EarnResult]]:
        return lambda c: ledger.earn(
            c, actor=actor, idempotency_key=k, member_id=m.id, partner_id=p.id, points=points, at=t0
        )

    results = await gather_on_connections(engine, [call(1 + i % 2) for i in range(20)])

    assert not unexpected(results, (IdempotencyConflict,)), unexpected(
        results, (IdempotencyConflict,)
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    fresh = [r for r in ok if not r.replayed]
    assert len(fresh) == 1 and len(ok) == 10  # the winner's request, and its 9 replays
    assert {r.transaction_id for r in ok} == {fresh[0].transaction_id}
    assert all(
        isinstance(r, IdempotencyConflict) and r.code == "IDEMPOTENCY_CONFLICT"
        for r in results
        if isinstance(r, BaseException)
    )
    async with engine.connect() as c:
        assert (await ledger.balance(c, member_id=m.id, at=t0)).wallet == fresh[0].points
    await assert_invariants(engine)


async def test_one_refused_key_from_twenty_connections_stays_free(engine: AsyncEngine) -> None:
    """Each waiter runs the request itself once the one before rolled back: all are refused,
    the key is not stored, and a later retry with the same key runs (and succeeds)."""
    p = await new_partner(engine, "p")
    (m,) = await new_members(engine, 1)
    actor, k, t0 = f"p-{uuid.uuid4()}", key(), utcnow()
    async with engine.begin() as c:
        await ledger.earn(
            c, actor=actor, idempotency_key=key(), member_id=m.id, partner_id=p.id, points=69, at=t0
        )

    def call(c: AsyncConnection) -> Awaitable[ledger.HoldResult]:
        return ledger.authorize(
            c, actor=actor, idempotency_key=k, member_id=m.id, partner_id=p.id, points=70, at=t0
        )

    results = await gather_on_connections(engine, [call] * 20)
    assert all(isinstance(r, InsufficientPoints) for r in results), results
    assert await scalar(engine, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=k) == 0

    async with engine.begin() as c:
        await ledger.earn(
            c, actor=actor, idempotency_key=key(), member_id=m.id, partner_id=p.id, points=1, at=t0
        )
    async with engine.begin() as c:
        h = await call(c)
    assert not h.replayed and h.points == 70
    await assert_invariants(engine)


# ---------------------------------------------------------------------------------------------
# Everything at once on a few members


EXPECTED = (InsufficientPoints, HoldNotActive, LedgerValidation)


async def test_mixed_operations_on_few_members_never_deadlock(engine: AsyncEngine) -> None:
    issuers = [
        await new_partner(engine, "i1", hold_days=0),
        await new_partner(engine, "i2", hold_days=7),
    ]
    shop = await new_partner(engine, "shop")
    ms = await new_members(engine, 3)
    rnd = random.Random(20261122)
    t0 = utcnow()

    earns: list[tuple[uuid.UUID, uuid.UUID]] = []  # (earn transaction, issuer)
    holds: list[uuid.UUID] = []
    async with engine.begin() as c:
        for m in ms:
            for issuer in issuers * 2:
                e = await ledger.earn(
                    c,
                    actor="i",
                    idempotency_key=key(),
                    member_id=m.id,
                    partner_id=issuer.id,
                    points=100,
                    at=t0,
                    hold_days=issuer.hold_days,
                )
                earns.append((e.transaction_id, issuer.id))
            for _ in range(4):
                h = await ledger.authorize(
                    c,
                    actor="shop",
                    idempotency_key=key(),
                    member_id=m.id,
                    partner_id=shop.id,
                    points=15,
                    at=t0,
                )
                holds.append(h.hold_id)

    # Each factory draws its arguments now (reproducible from the seed) and returns the work.
    Work = Callable[[AsyncConnection], Awaitable[Any]]

    def earn() -> Work:
        issuer, m, points = rnd.choice(issuers), rnd.choice(ms), rnd.randint(1, 60)
        return lambda c: ledger.earn(
            c,
            actor="i",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=issuer.id,
            points=points,
            at=t0,
            hold_days=issuer.hold_days,
        )

    def authorize() -> Work:
        m, points = rnd.choice(ms), rnd.randint(1, 90)
        return lambda c: ledger.authorize(
            c,
            actor="shop",
            idempotency_key=key(),
            member_id=m.id,
            partner_id=shop.id,
            points=points,
            at=t0,
        )

    def spend() -> Work:
        m, points = rnd.choice(ms), rnd.randint(1, 80)
        taken = rnd.randint(1, points)
        back = rnd.randint(0, taken)

        async def run(c: AsyncConnection) -> Any:
            h = await ledger.authorize(
                c,
                actor="shop",
                idempotency_key=key(),
                member_id=m.id,
                partner_id=shop.id,
                points=points,
                at=t0,
            )
            await ledger.capture(
                c,
                actor="shop",
                idempotency_key=key(),
                partner_id=shop.id,
                hold_id=h.hold_id,
                points=taken,
                at=t0,
            )
            if back:
                await ledger.return_points(
                    c,
                    actor="shop",
                    idempotency_key=key(),
                    partner_id=shop.id,
                    hold_id=h.hold_id,
                    points=back,
                    at=t0,
                )

        return run

    def capture() -> Work:
        hold, points = rnd.choice(holds), rnd.randint(1, 15)
        return lambda c: ledger.capture(
            c,
            actor="shop",
            idempotency_key=key(),
            partner_id=shop.id,
            hold_id=hold,
            points=points,
            at=t0,
        )

    def void() -> Work:
        hold = rnd.choice(holds)
        return lambda c: ledger.void(
            c, actor="shop", idempotency_key=key(), partner_id=shop.id, hold_id=hold, at=t0
        )

    def reverse() -> Work:
        (tx, issuer), points = rnd.choice(earns), rnd.randint(1, 70)
        return lambda c: ledger.reverse_earn(
            c,
            actor="i",
            idempotency_key=key(),
            partner_id=issuer,
            earn_transaction_id=tx,
            points=points,
            at=t0,
        )

    async def jobs(last: bool) -> list[Any]:
        """The batch jobs, which lock many wallets at once, racing with the operations: hold
        expiry (an hour on, when every 30-minute hold ran out) and, in the last round, the
        expiry of every lot (37 months on)."""
        hour = t0 + timedelta(hours=1)  # in the test's future: `now` says when it is
        released = ledger.release_expired_holds(engine, at=hour, now=hour, batch_size=2)
        if not last:
            return [await released]
        later = t0 + timedelta(days=37 * 31)
        expired = ledger.expire_points(engine, at=later, now=later, batch_size=2)
        return list(await asyncio.gather(released, expired))

    kinds = [earn, authorize, spend, capture, void, reverse]
    outcomes: dict[str, int] = {}
    rounds = 4
    for n in range(rounds):
        work = [rnd.choice(kinds)() for _ in range(60)]
        results, job_results = await asyncio.gather(
            gather_on_connections(engine, work), jobs(last=n == rounds - 1)
        )
        bad = unexpected(results, EXPECTED)
        assert not bad, f"unexpected failures (deadlocks?): {bad!r}"
        for r in results:
            name = type(r).__name__ if isinstance(r, BaseException) else "ok"
            outcomes[name] = outcomes.get(name, 0) + 1
        await assert_invariants(engine)
    # The workload really raced: both successes and refusals happened.
    assert outcomes.get("ok", 0) > 0 and outcomes.get("HoldNotActive", 0) > 0, outcomes
    assert job_results[1].points > 0

    async with engine.connect() as c:
        # Every point is accounted for: issued - reversed = wallets + redeemed - returned
        # + expired - debts.
        issued = -sum(
            [await ledger.account_balance(c, kind="issuance", owner_id=p.id) for p in issuers]
        )
        redeemed = await ledger.account_balance(c, kind="redemption", owner_id=shop.id)
        expired = (
            await c.execute(
                text(
                    "SELECT -sum(e.amount) FROM entries e "
                    "JOIN transactions t ON t.id = e.transaction_id AND t.kind = 'expiry' "
                    "JOIN accounts a ON a.id = e.account_id AND a.kind = 'wallet' "
                    "WHERE a.owner_id = ANY(:ms)"
                ),
                {"ms": [m.id for m in ms]},
            )
        ).scalar_one()
        wallets = sum([(await ledger.balance(c, member_id=m.id, at=t0)).wallet for m in ms])
        debts = sum([(await ledger.balance(c, member_id=m.id, at=t0)).debt for m in ms])
    assert issued == wallets + redeemed + expired - debts
