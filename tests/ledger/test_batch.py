"""Group commit (`ledger.batch.EarnBatcher`): earns that arrive together share a transaction,
with exactly the single path's results, errors, idempotency and invariants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.clock import utcnow
from core.db import create_driver_pool, create_engine
from ledger import service as ledger
from ledger.batch import EarnBatcher
from ledger.errors import (
    DuplicateOrder,
    IdempotencyConflict,
    LedgerValidation,
    MemberNotFound,
    PartnerNotFound,
)
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_batch")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=5, max_overflow=10)
    yield eng
    await eng.dispose()


@pytest.fixture
async def pool(db_uri: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_driver_pool(db_uri, max_size=10)
    await p.open(wait=True)
    yield p
    await p.close()


def key() -> str:
    return f"k-{uuid.uuid4()}"


async def new_partner(engine: AsyncEngine, name: str = "P") -> partners.PartnerRecord:
    async with engine.begin() as c:
        return await partners.create(c, name=name, category="shop", currency="RUB")


async def new_members(engine: AsyncEngine, n: int) -> list[members.MemberRecord]:
    async with engine.begin() as c:
        return [await members.create(c, name=f"m{i}") for i in range(n)]


async def test_a_burst_commits_in_batches_with_the_single_paths_results(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    p, q = await new_partner(engine, "A"), await new_partner(engine, "B")
    ms = await new_members(engine, 20)
    batcher = EarnBatcher(pool, max_batch=16, max_in_flight=2)
    requests = [
        {
            "actor": f"client-{i % 2}",
            "idempotency_key": key(),
            "member_id": ms[i % len(ms)].id,
            "partner_id": (p, q)[i % 2].id,
            "points": 10 + i,
            "hold_days": 14 if i % 5 == 0 else 0,
            "ref": f"order-{i}",
        }
        for i in range(100)
    ]
    results = await asyncio.gather(*(batcher.earn(**r) for r in requests))

    # Batches formed: far fewer transactions than earns, none of them sent alone.
    assert batcher.stats.batched_earns == 100 and batcher.stats.single_path == 0
    assert 1 < batcher.stats.largest_batch <= 16
    assert batcher.stats.batches < 100
    assert not any(r.replayed for r in results)
    assert len({r.transaction_id for r in results}) == 100
    for r, req in zip(results, requests, strict=True):
        assert r.points == req["points"]
        assert r.status == ("pending" if req["hold_days"] else "available")
        assert r.available_at - r.expires_at < timedelta(0)

    async with engine.begin() as c:
        for i in (0, 1, 57):  # the single path replays what the batch stored
            again = await ledger.earn(c, **requests[i])
            assert again.replayed and again.transaction_id == results[i].transaction_id
            assert (again.points, again.status, again.available_at, again.expires_at) == (
                results[i].points,
                results[i].status,
                results[i].available_at,
                results[i].expires_at,
            )
        with pytest.raises(IdempotencyConflict):
            await ledger.earn(c, **{**requests[3], "points": 1})
    async with engine.connect() as c:
        issued = -await ledger.account_balance(c, kind="issuance", owner_id=p.id)
        issued -= await ledger.account_balance(c, kind="issuance", owner_id=q.id)
        wallets = sum([(await ledger.balance(c, member_id=m.id)).wallet for m in ms])
        per_tx = (
            await c.execute(
                text(
                    "SELECT count(DISTINCT t.id), count(e.id), count(DISTINCT l.id) "
                    "FROM transactions t JOIN entries e ON e.transaction_id = t.id "
                    "JOIN lots l ON l.earn_tx_id = t.id WHERE t.id = ANY(:ids)"
                ),
                {"ids": [r.transaction_id for r in results]},
            )
        ).one()
    await assert_invariants(engine)
    total = sum(r["points"] for r in requests)
    assert issued == total and wallets == total
    assert tuple(per_tx) == (100, 200, 100)


@pytest.mark.parametrize(("split_at", "sizes"), [(32, {32: 2}), (1000, {64: 1})])
async def test_many_waiting_earns_are_shared_by_the_starting_batches(
    engine: AsyncEngine, pool: AsyncConnectionPool, split_at: int, sizes: dict[int, int]
) -> None:
    p = await new_partner(engine)
    ms = await new_members(engine, 64)
    batcher = EarnBatcher(pool, max_batch=64, max_in_flight=2, split_at=split_at)
    results = await asyncio.gather(
        *(
            batcher.earn(
                actor="c", idempotency_key=key(), member_id=m.id, partner_id=p.id, points=3
            )
            for m in ms
        )
    )
    # 64 earns waiting, two batches starting: from `split_at` on they take 32 each (two
    # statements side by side); below it the first takes them all.
    assert batcher.stats.sizes == sizes and batcher.stats.single_path == 0
    assert len({r.transaction_id for r in results}) == 64
    await assert_invariants(engine)


async def test_debt_is_repaid_in_arrival_order_as_on_the_single_path(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    p = await new_partner(engine)
    batched, single = await new_members(engine, 2)
    t0 = utcnow() - timedelta(minutes=5)
    async with engine.begin() as c:  # both members owe 100: earned 100, spent 100, refunded
        shop = await partners.create(c, name="shop", category="shop", currency="RUB")
        for m in (batched, single):
            e = await ledger.earn(
                c,
                actor="a",
                idempotency_key=key(),
                member_id=m.id,
                partner_id=p.id,
                points=100,
                at=t0,
            )
            h = await ledger.authorize(
                c,
                actor="s",
                idempotency_key=key(),
                member_id=m.id,
                partner_id=shop.id,
                points=100,
                at=t0,
            )
            await ledger.capture(
                c,
                actor="s",
                idempotency_key=key(),
                partner_id=shop.id,
                hold_id=h.hold_id,
                points=100,
                at=t0,
            )
            await ledger.reverse_earn(
                c,
                actor="a",
                idempotency_key=key(),
                partner_id=p.id,
                earn_transaction_id=e.transaction_id,
                points=100,
                at=t0,
            )
            assert (await ledger.balance(c, member_id=m.id)).debt == 100
    amounts = [30, 50, 40, 10]
    (bystander,) = await new_members(engine, 1)
    batcher = EarnBatcher(pool, max_batch=64, max_in_flight=1)
    got = await asyncio.gather(
        *(
            batcher.earn(
                actor="a", idempotency_key=key(), member_id=batched.id, partner_id=p.id, points=n
            )
            for n in amounts
        ),
        batcher.earn(
            actor="a", idempotency_key=key(), member_id=bystander.id, partner_id=p.id, points=9
        ),
    )
    # The batch saw the debt under its locks, refused itself (writing nothing), and each earn
    # ran alone, a member's in arrival order.
    assert batcher.stats.refused_batches == 1 and batcher.stats.single_path == 5
    assert got.pop().points == 9
    want = []
    async with engine.begin() as c:
        for n in amounts:
            want.append(
                await ledger.earn(
                    c,
                    actor="a",
                    idempotency_key=key(),
                    member_id=single.id,
                    partner_id=p.id,
                    points=n,
                )
            )
    await assert_invariants(engine)
    assert [r.debt_repaid for r in got] == [r.debt_repaid for r in want] == [30, 50, 20, 0]
    async with engine.connect() as c:
        b1 = await ledger.balance(c, member_id=batched.id)
        b2 = await ledger.balance(c, member_id=single.id)
    assert (b1.wallet, b1.debt) == (b2.wallet, b2.debt) == (30, 0)
    # Debt repaid: the member's next burst is batched again.
    again = await asyncio.gather(
        *(
            batcher.earn(
                actor="a", idempotency_key=key(), member_id=batched.id, partner_id=p.id, points=1
            )
            for _ in range(3)
        )
    )
    assert [r.debt_repaid for r in again] == [0, 0, 0] and batcher.stats.batched_earns == 3


async def test_odd_requests_get_exactly_the_single_paths_answers(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    p = await new_partner(engine)
    m1, m2 = await new_members(engine, 2)
    async with engine.begin() as c:
        await ledger.earn(
            c,
            actor="a",
            idempotency_key="already-there",
            member_id=m1.id,
            partner_id=p.id,
            points=5,
            ref="old-order",
        )
    batcher = EarnBatcher(pool, max_batch=64, max_in_flight=1)
    same = {"actor": "a", "idempotency_key": key(), "member_id": m1.id, "partner_id": p.id}
    calls: list[dict[str, Any]] = [
        {**same, "points": 7},  # 0 and 1: the same request twice in one burst
        {**same, "points": 7},
        {**same, "points": 8},  # 2: same key, different request
        {
            "actor": "a",
            "idempotency_key": key(),
            "member_id": uuid.uuid4(),
            "partner_id": p.id,
            "points": 1,
        },  # 3: unknown member
        {
            "actor": "a",
            "idempotency_key": key(),
            "member_id": m1.id,
            "partner_id": uuid.uuid4(),
            "points": 1,
        },  # 4: unknown partner
        {
            "actor": "a",
            "idempotency_key": key(),
            "member_id": m2.id,
            "partner_id": p.id,
            "points": 3,
            "ref": "new-order",
        },  # 5 and 6: one order earned twice in the burst
        {
            "actor": "a",
            "idempotency_key": key(),
            "member_id": m1.id,
            "partner_id": p.id,
            "points": 3,
            "ref": "new-order",
        },
        {
            "actor": "a",
            "idempotency_key": key(),
            "member_id": m2.id,
            "partner_id": p.id,
            "points": 4,
            "ref": "old-order",
        },  # 7: an order earned before
        {
            "actor": "a",
            "idempotency_key": "already-there",
            "member_id": m1.id,
            "partner_id": p.id,
            "points": 5,
            "ref": "old-order",
        },  # 8: a replay of that earn
        {
            "actor": "a",
            "idempotency_key": key(),
            "member_id": m2.id,
            "partner_id": p.id,
            "points": 11,
        },  # 9: ordinary
    ]
    r = await asyncio.gather(*(batcher.earn(**c) for c in calls), return_exceptions=True)

    ok = [x for x in r if not isinstance(x, BaseException)]
    assert len(ok) == 5, r
    assert not r[0].replayed and r[1].replayed and r[1].transaction_id == r[0].transaction_id
    assert isinstance(r[2], IdempotencyConflict)
    assert isinstance(r[3], MemberNotFound) and isinstance(r[4], PartnerNotFound)
    assert not isinstance(r[5], BaseException) and isinstance(r[6], DuplicateOrder)
    assert isinstance(r[7], DuplicateOrder)
    assert r[8].replayed and r[8].points == 5
    assert r[9].points == 11 and not r[9].replayed
    async with engine.connect() as c:
        assert (await ledger.balance(c, member_id=m1.id)).wallet == 5 + 7
        assert (await ledger.balance(c, member_id=m2.id)).wallet == 3 + 11
        keys = (
            await c.execute(text("SELECT count(*) FROM idempotency_keys WHERE result IS NULL"))
        ).scalar_one()
    await assert_invariants(engine)
    assert keys == 0  # no claim is left behind by a refused request


async def test_a_failing_batch_commits_nothing_and_each_earn_is_retried_alone(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    p = await new_partner(engine)
    ms = await new_members(engine, 3)
    # A real database failure inside the batch's write statement, for one order only.
    async with engine.begin() as c:
        await c.execute(
            text(
                "CREATE FUNCTION test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.ref = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$"
            )
        )
        await c.execute(
            text(
                "CREATE TRIGGER test_boom BEFORE INSERT ON transactions "
                "FOR EACH ROW EXECUTE FUNCTION test_boom()"
            )
        )
    try:
        batcher = EarnBatcher(pool, max_batch=64, max_in_flight=1)
        calls = [
            {
                "actor": "a",
                "idempotency_key": key(),
                "member_id": m.id,
                "partner_id": p.id,
                "points": 10 + i,
                "ref": "boom" if i == 1 else f"fine-{i}",
            }
            for i, m in enumerate(ms)
        ]
        r = await asyncio.gather(*(batcher.earn(**c) for c in calls), return_exceptions=True)
    finally:
        async with engine.begin() as c:
            await c.execute(text("DROP TRIGGER test_boom ON transactions"))
            await c.execute(text("DROP FUNCTION test_boom()"))
    assert batcher.stats.failed_batches == 1 and batcher.stats.single_path == 3
    assert isinstance(r[1], Exception) and "boom" in str(r[1])
    assert r[0].points == 10 and r[2].points == 12
    async with engine.connect() as c:
        wallets = [(await ledger.balance(c, member_id=m.id)).wallet for m in ms]
    await assert_invariants(engine)
    assert wallets == [10, 0, 12]
    # The failed earn left its key free: a retry runs.
    async with engine.begin() as c:
        again = await ledger.earn(c, **{**calls[1], "ref": "boom-retried"})
    assert again.points == 11 and not again.replayed


async def test_batchers_in_two_processes_with_spends_never_deadlock(
    engine: AsyncEngine, db_uri: str
) -> None:
    issuer, shop = await new_partner(engine, "issuer"), await new_partner(engine, "shop")
    ms = await new_members(engine, 4)
    async with engine.begin() as c:
        for m in ms:
            await ledger.earn(
                c,
                actor="i",
                idempotency_key=key(),
                member_id=m.id,
                partner_id=issuer.id,
                points=1000,
                at=utcnow() - timedelta(minutes=1),
            )
    pools = [create_driver_pool(db_uri, max_size=4) for _ in range(2)]
    for pl in pools:
        await pl.open(wait=True)
    try:
        batchers = [EarnBatcher(pl, max_batch=8, max_in_flight=2) for pl in pools]
        earns = [
            batchers[i % 2].earn(
                actor="i",
                idempotency_key=key(),
                member_id=ms[(i * 7) % 4].id,
                partner_id=issuer.id,
                points=1,
            )
            for i in range(200)
        ]

        async def spend(m: members.MemberRecord) -> Any:
            async with engine.begin() as c:
                return await ledger.authorize(
                    c,
                    actor="s",
                    idempotency_key=key(),
                    member_id=m.id,
                    partner_id=shop.id,
                    points=1,
                )

        spends = [spend(ms[i % 4]) for i in range(40)]
        results = await asyncio.wait_for(
            asyncio.gather(*earns, *spends, return_exceptions=True), timeout=120
        )
    finally:
        for pl in pools:
            await pl.close()
    errors = [x for x in results if isinstance(x, BaseException)]
    assert errors == []
    assert sum(b.stats.batched_earns + b.stats.single_path for b in batchers) == 200
    async with engine.connect() as c:
        wallets = sum([(await ledger.balance(c, member_id=m.id)).wallet for m in ms])
    await assert_invariants(engine)
    assert wallets == 4 * 1000 + 200  # holds keep their points in the wallet until capture


async def test_a_key_space_is_shared_by_its_actors_in_the_batch_and_alone(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    """Two clients of one partner share its key space on both paths; the digest the caller
    gives (the client's request) decides replay or conflict, whatever points it derived."""
    p = await new_partner(engine, "Spaces")
    (m,) = await new_members(engine, 1)
    space = ledger.partner_key_space(p.id)
    batcher = EarnBatcher(pool, max_batch=16, max_in_flight=2)

    def request(actor: str, k: str, points: int, digest: str, ref: str) -> dict[str, Any]:
        return {
            "actor": actor,
            "key_space": space,
            "digest": digest,
            "idempotency_key": k,
            "member_id": m.id,
            "partner_id": p.id,
            "points": points,
            "ref": ref,
        }

    k1, k2 = key(), key()
    # Same key, same request, two clients, in one burst: one earn, the other replays it.
    first, second = await asyncio.gather(
        batcher.earn(**request("till-1", k1, 10, "d1", "S-1")),
        batcher.earn(**request("till-2", k1, 99, "d1", "S-1")),
    )
    # Either may be written first (the batch or the single path); the other gets its result.
    assert first.transaction_id == second.transaction_id and first.points == second.points
    assert first.points in (10, 99)
    assert [first.replayed, second.replayed].count(True) == 1
    # Through the batch, then retried on the single path by the other client, after the
    # derived points and hold days changed: the original result.
    original = await batcher.earn(**request("till-1", k2, 20, "d2", "S-2"))
    assert not original.replayed
    async with engine.begin() as c:
        again = await ledger.earn(c, **request("till-2", k2, 40, "d2", "S-2"), hold_days=9)
        assert again.replayed and again == ledger.EarnResult(
            **{**original.stored_values(), "replayed": True}
        )
        with pytest.raises(IdempotencyConflict):
            await ledger.earn(c, **request("till-2", k2, 20, "other", "S-2"))
    retried = await batcher.earn(**request("till-2", k2, 40, "d2", "S-2"))
    assert retried.replayed and retried.transaction_id == original.transaction_id
    async with engine.connect() as c:
        rows = (
            await c.execute(
                text("SELECT key_space, actor FROM idempotency_keys WHERE key = ANY(:k)"),
                {"k": [k1, k2]},
            )
        ).all()
    # Who claimed each key is kept: k2 by till-1; k1 by whichever of the two was written first.
    claimed = {"till-2" if first.replayed else "till-1", "till-1"}
    assert {r.key_space for r in rows} == {space} and len(rows) == 2
    assert {r.actor for r in rows} == claimed
    # Another partner's key space is its own.
    q = await new_partner(engine, "Other space")
    other = await batcher.earn(
        **{
            **request("till-9", k2, 5, "d2", "S-2"),
            "partner_id": q.id,
            "key_space": ledger.partner_key_space(q.id),
        }
    )
    assert not other.replayed and other.transaction_id != original.transaction_id


async def test_breakdown_lines_are_stored_in_the_batch_and_on_the_single_path(
    engine: AsyncEngine, pool: AsyncConnectionPool
) -> None:
    """An earn with more than its BASE line stores its lines with it, whichever path writes it
    (a burst of two members goes in one batch; a replay and a single-path earn too); an earn of
    a BASE line alone stores none and reads back as one; lines not summing to the points are
    refused before anything is written."""
    p = await new_partner(engine, "Lines")
    a, b = await new_members(engine, 2)
    batcher = EarnBatcher(pool)
    offer = uuid.uuid4()
    tiered = (
        ledger.BreakdownLine("BASE", 123),
        ledger.BreakdownLine("TIER", 185),
        ledger.BreakdownLine("OFFER", 600, offer, "PARTNER"),
    )

    def req(member: uuid.UUID, points: int, lines: tuple[ledger.BreakdownLine, ...]) -> Any:
        return ledger.EarnRequest(
            actor="t",
            idempotency_key=key(),
            member_id=member,
            partner_id=p.id,
            points=points,
            ref=key(),
            lines=lines,
        )

    batches = batcher.stats.batches
    x, y = await asyncio.gather(
        batcher.earn(req(a.id, 908, tiered)),
        batcher.earn(req(b.id, 15, (ledger.BreakdownLine("BASE", 15),))),
    )
    assert batcher.stats.batches > batches and batcher.stats.single_path == 0
    async with engine.begin() as c:
        alone = await ledger.earn(c, req(a.id, 908, tiered))
    with pytest.raises(LedgerValidation):
        await batcher.earn(req(a.id, 900, tiered))
    async with engine.connect() as c:
        got = await ledger.earn_lines(
            c, transaction_ids=[x.transaction_id, y.transaction_id, alone.transaction_id]
        )
        stored = (
            await c.execute(
                text("SELECT count(*) FROM earn_breakdowns WHERE transaction_id = :t"),
                {"t": y.transaction_id},
            )
        ).scalar_one()
    assert got[x.transaction_id] == got[alone.transaction_id] == tiered
    assert got[y.transaction_id] == (ledger.BreakdownLine("BASE", 15),) and stored == 0
    await batcher.drain()
