"""Coalition-wide (operator-funded) offer points in the ledger, with exact numbers: one earn
transaction whose OPERATOR lines are issued from `promotions` into a lot with no issuer, the
partner's lines from its issuance account into its own lot (migration 0019); the same rows from
the group commit (`ledger.batch`) and from the single path (`ledger.earn`); the member's debt
repaid from the partner's lot first; reversals split pro rata by the total reversed, each share
back to its funder, from its own lot first, then the earn's other lot, then the member's other
points, then debt."""

from __future__ import annotations

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
from ledger.errors import IdempotencyConflict, LedgerValidation, TransactionNotFound
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants, row_counts

X2 = uuid.uuid4()  # the partner's x2 offer
WIDE = uuid.uuid4()  # the coalition-wide +100 bonus offer
LINES = (
    ledger.BreakdownLine("BASE", 150),
    ledger.BreakdownLine("OFFER", 150, X2, "PARTNER"),
    ledger.BreakdownLine("OFFER", 100, WIDE, "OPERATOR"),
)
PATHS = ["batch", "single"]


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    admin, uri = create_test_database("coalition_operator_offers")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=5, max_overflow=10)
    yield eng
    await eng.dispose()


@pytest.fixture
async def pool(db_uri: str) -> AsyncIterator[AsyncConnectionPool]:
    p = create_driver_pool(db_uri, max_size=4)
    await p.open(wait=True)
    yield p
    await p.close()


def key() -> str:
    return f"k-{uuid.uuid4()}"


async def setup(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A partner that earns, one that redeems, a member."""
    async with engine.begin() as c:
        p = await partners.create(c, name="Earns", category="shop", currency="RUB")
        r = await partners.create(c, name="Redeems", category="shop", currency="RUB")
        m = await members.create(c, name="m")
    return p.id, r.id, m.id


def request(
    partner: uuid.UUID, member: uuid.UUID, lines: tuple[ledger.BreakdownLine, ...] = LINES
) -> ledger.EarnRequest:
    return ledger.EarnRequest(
        actor="t",
        idempotency_key=key(),
        member_id=member,
        partner_id=partner,
        points=sum(line.points for line in lines),
        ref=key(),
        lines=lines,
    )


async def record(
    engine: AsyncEngine,
    pool: AsyncConnectionPool,
    path: str,
    req: ledger.EarnRequest,
    *,
    alone: int = 0,
) -> ledger.EarnResult:
    """The earn on `path`; in the batch, `alone` of it sent to the single path (a replay, a
    member who owes points)."""
    if path == "single":
        async with engine.begin() as c:
            return await ledger.earn(c, req)
    batcher = EarnBatcher(pool, max_in_flight=1)
    result = await batcher.earn(req)
    await batcher.drain()
    assert batcher.stats.single_path == alone
    return result


async def rows(engine: AsyncEngine, tx: uuid.UUID) -> dict[str, Any]:
    """A transaction's points, its entries by account and the lots it made, in id order."""
    async with engine.connect() as c:
        t = (
            await c.execute(
                text("SELECT points, operator_points FROM transactions WHERE id = :t"), {"t": tx}
            )
        ).one()
        entries = (
            await c.execute(
                text(
                    "SELECT a.kind, a.owner_id, e.amount FROM entries e "
                    "JOIN accounts a ON a.id = e.account_id WHERE e.transaction_id = :t "
                    "ORDER BY a.kind, e.amount"
                ),
                {"t": tx},
            )
        ).all()
        lots = (
            await c.execute(
                text(
                    "SELECT issuer_id, points, remaining, reversed FROM lots "
                    "WHERE earn_tx_id = :t AND transfer_tx_id IS NULL ORDER BY id"
                ),
                {"t": tx},
            )
        ).all()
    return {
        "points": (t.points, t.operator_points),
        "entries": [(e.kind, e.owner_id, e.amount) for e in entries],
        "lots": [tuple(lot) for lot in lots],
    }


async def lots_of(engine: AsyncEngine, tx: uuid.UUID) -> list[tuple[Any, ...]]:
    return (await rows(engine, tx))["lots"]


async def reverse(
    engine: AsyncEngine, partner: uuid.UUID, tx: uuid.UUID, points: int
) -> ledger.ReversalResult:
    async with engine.begin() as c:
        return await ledger.reverse_earn(
            c,
            actor="t",
            idempotency_key=key(),
            partner_id=partner,
            earn_transaction_id=tx,
            points=points,
        )


@pytest.mark.parametrize("path", PATHS)
async def test_the_operators_points_of_an_earn_are_a_lot_of_their_own_funded_by_promotions(
    engine: AsyncEngine, pool: AsyncConnectionPool, path: str
) -> None:
    p, _, m = await setup(engine)
    req = request(p, m)
    r = await record(engine, pool, path, req)
    assert (r.points, r.lines, r.debt_repaid) == (400, LINES, 0)
    assert await rows(engine, r.transaction_id) == {
        "points": (400, 100),
        "entries": [("issuance", p, -300), ("promotions", None, -100), ("wallet", m, 400)],
        # The partner's lot (its BASE and x2 lines), then the operator's: no issuer.
        "lots": [(p, 300, 300, 0), (None, 100, 100, 0)],
    }
    async with engine.connect() as c:
        stored = await ledger.earn_lines(c, transaction_ids=[r.transaction_id])
        before = await row_counts(c)
        bal = await ledger.balance(c, member_id=m)
    assert stored[r.transaction_id] == LINES
    assert bal.available == 400
    # A retry answers as the original did and writes nothing.
    again = await record(engine, pool, path, req, alone=1)
    assert again.replayed and (again.transaction_id, again.points) == (r.transaction_id, 400)
    async with engine.connect() as c:
        assert await row_counts(c) == before
    await assert_invariants(engine)


@pytest.mark.parametrize("path", PATHS)
async def test_an_earn_of_operator_points_alone_has_no_partner_lot(
    engine: AsyncEngine, pool: AsyncConnectionPool, path: str
) -> None:
    """A small purchase (BASE 0) with a coalition-wide bonus: all of its points are the
    operator's; its partner may still refund it, another partner may not."""
    p, other, m = await setup(engine)
    lines = (ledger.BreakdownLine("BASE", 0), ledger.BreakdownLine("OFFER", 100, WIDE, "OPERATOR"))
    r = await record(engine, pool, path, request(p, m, lines))
    assert await rows(engine, r.transaction_id) == {
        "points": (100, 100),
        "entries": [("promotions", None, -100), ("wallet", m, 100)],
        "lots": [(None, 100, 100, 0)],
    }
    with pytest.raises(TransactionNotFound):
        await reverse(engine, other, r.transaction_id, 40)
    back = await reverse(engine, p, r.transaction_id, 40)
    assert await rows(engine, back.transaction_id) == {
        "points": (40, 40),
        "entries": [("promotions", None, 40), ("wallet", m, -40)],
        "lots": [],
    }
    assert await lots_of(engine, r.transaction_id) == [(None, 100, 60, 40)]
    await assert_invariants(engine)


@pytest.mark.parametrize("path", PATHS)
async def test_a_members_debt_is_repaid_from_the_partners_lot_first(
    engine: AsyncEngine, pool: AsyncConnectionPool, path: str
) -> None:
    """The batch refuses a member who owes points: the earn runs alone, with the same rows."""
    p, r, m = await setup(engine)
    t0 = utcnow() - timedelta(minutes=5)
    async with engine.begin() as c:  # m owes 350: earned 350, spent them, refunded
        e = await ledger.earn(
            c, actor="t", idempotency_key=key(), member_id=m, partner_id=p, points=350, at=t0
        )
        h = await ledger.authorize(
            c, actor="s", idempotency_key=key(), member_id=m, partner_id=r, points=350, at=t0
        )
        await ledger.capture(
            c, actor="s", idempotency_key=key(), partner_id=r, hold_id=h.hold_id, points=350, at=t0
        )
        await ledger.reverse_earn(
            c,
            actor="t",
            idempotency_key=key(),
            partner_id=p,
            earn_transaction_id=e.transaction_id,
            points=350,
            at=t0,
        )
    got = await record(engine, pool, path, request(p, m), alone=1)
    assert got.debt_repaid == 350
    assert await rows(engine, got.transaction_id) == {
        "points": (400, 100),
        "entries": [
            ("debt", m, 350),
            ("issuance", p, -300),
            ("promotions", None, -100),
            ("wallet", m, 50),
        ],
        # 300 of the 350 owed from the partner's lot, the other 50 from the operator's.
        "lots": [(p, 300, 0, 0), (None, 100, 50, 0)],
    }
    await assert_invariants(engine)


def _fields(req: ledger.EarnRequest) -> dict[str, Any]:
    return {f: getattr(req, f) for f in req.__dataclass_fields__}


@pytest.mark.parametrize("path", PATHS)
async def test_refunds_in_parts_split_pro_rata_between_the_partner_and_the_operator(
    engine: AsyncEngine, pool: AsyncConnectionPool, path: str
) -> None:
    p, _, m = await setup(engine)
    r = await record(engine, pool, path, request(p, m))
    tx = r.transaction_id
    # 100 of 400: the operator's share floor(100 x 100 / 400) = 25, the partner's 75, each back
    # to its funder and taken from its own lot.
    first = await reverse(engine, p, tx, 100)
    assert await rows(engine, first.transaction_id) == {
        "points": (100, 25),
        "entries": [("issuance", p, 75), ("promotions", None, 25), ("wallet", m, -100)],
        "lots": [],
    }
    assert await lots_of(engine, tx) == [(p, 300, 225, 75), (None, 100, 75, 25)]
    await assert_invariants(engine)
    # 150 more (250 reversed in all): the operator's floor(100 x 250 / 400) = 62, 37 of them now.
    second = await reverse(engine, p, tx, 150)
    assert (await rows(engine, second.transaction_id))["points"] == (150, 37)
    assert await lots_of(engine, tx) == [(p, 300, 112, 188), (None, 100, 38, 62)]
    # The rest: the whole earn is reversed, exactly 300 to the partner and 100 to the operator.
    last = await reverse(engine, p, tx, 150)
    assert (await rows(engine, last.transaction_id))["points"] == (150, 38)
    assert await lots_of(engine, tx) == [(p, 300, 0, 300), (None, 100, 0, 100)]
    with pytest.raises(LedgerValidation):
        await reverse(engine, p, tx, 1)
    await assert_invariants(engine)


async def test_a_refund_of_spent_points_takes_each_share_from_its_lot_then_the_rest_then_debt(
    engine: AsyncEngine,
) -> None:
    p, r, m = await setup(engine)
    async with engine.begin() as c:
        e = await ledger.earn(c, request(p, m))
        h = await ledger.authorize(
            c, actor="s", idempotency_key=key(), member_id=m, partner_id=r, points=230
        )
        await ledger.capture(
            c, actor="s", idempotency_key=key(), partner_id=r, hold_id=h.hold_id, points=230
        )
    # The payment took 230 of the partner's lot (spent first: created first): 70 and the
    # operator's 100 remain.
    assert await lots_of(engine, e.transaction_id) == [(p, 300, 70, 0), (None, 100, 100, 0)]
    back = await reverse(engine, p, e.transaction_id, 200)
    # Shares: the operator's 50, the partner's 150. The partner's lot gives its 70, the
    # operator's its 50, then what is left of the earn's lots (the operator's other 50); the
    # last 30 are the member's debt.
    assert (back.from_wallet, back.to_debt) == (170, 30)
    assert await rows(engine, back.transaction_id) == {
        "points": (200, 50),
        "entries": [
            ("debt", m, -30),
            ("issuance", p, 150),
            ("promotions", None, 50),
            ("wallet", m, -170),
        ],
        "lots": [],
    }
    assert await lots_of(engine, e.transaction_id) == [(p, 300, 0, 150), (None, 100, 0, 50)]
    await assert_invariants(engine)


async def test_the_same_key_with_another_split_is_a_conflict(engine: AsyncEngine) -> None:
    """Without the client's digest, the ledger's own digest covers the operator's share."""
    p, _, m = await setup(engine)
    req = request(p, m)
    moved = (
        ledger.BreakdownLine("BASE", 150),
        ledger.BreakdownLine("OFFER", 250, X2, "PARTNER"),
    )
    async with engine.begin() as c:
        await ledger.earn(c, req)
    with pytest.raises(IdempotencyConflict):
        async with engine.begin() as c:
            await ledger.earn(c, ledger.EarnRequest(**{**_fields(req), "lines": moved}))
