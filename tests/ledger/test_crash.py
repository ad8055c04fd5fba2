"""A connection that dies in the middle of a transaction leaves nothing half-written, and a
retry with the same idempotency key then completes exactly once.

The victim is stopped at a known point without any sleep: a control connection holds an
ACCESS EXCLUSIVE lock on a table the victim's next statement needs, we wait until
pg_stat_activity shows the victim waiting for that lock, and terminate its backend.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.clock import utcnow
from core.db import create_engine
from ledger import service as ledger
from members import service as members
from partners import service as partners
from tests.db import create_test_database, drop_database
from tests.ledger.invariants import assert_invariants, row_counts, table_digest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def db_uri() -> Iterator[str]:
    """A database of this module's own: what it commits cannot disturb other tests (whose
    jobs sweep the whole database) and its invariant checks see only its own data."""
    admin, uri = create_test_database("coalition_crash")
    yield uri
    drop_database(admin, uri)


@pytest.fixture(scope="module")
async def engine(db_uri: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_uri, pool_size=20, max_overflow=60)
    yield eng
    await eng.dispose()


POLL_LIMIT = 2000  # polls of pg_stat_activity before giving up (about 10 s)


async def backend_pid(c: AsyncConnection) -> int:
    pid = (await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    await c.commit()
    return int(pid)


async def wait_until_blocked(
    engine: AsyncEngine, pid: int, blocker: int, task: asyncio.Task[Any]
) -> str:
    """Poll until backend `pid` waits for a lock held by backend `blocker`; its query (as
    pg_stat_activity shows it)."""
    for _ in range(POLL_LIMIT):
        if task.done():  # the victim finished (or failed) without blocking: the test is wrong
            await task
            pytest.fail("the victim's transaction never blocked")
        # A fresh transaction per poll: pg_stat_activity is a per-transaction snapshot.
        async with engine.connect() as c:
            row = (
                await c.execute(
                    text(
                        "SELECT wait_event_type, query, "
                        ":blocker = ANY(pg_blocking_pids(pid)) AS by "
                        "FROM pg_stat_activity WHERE pid = :pid"
                    ),
                    {"pid": pid, "blocker": blocker},
                )
            ).one()
        if row.wait_event_type == "Lock" and row.by:
            return str(row.query)
        await asyncio.sleep(0.005)  # poll interval, not synchronisation: the state above is
    pytest.fail(f"backend {pid} never waited for the control lock")


async def kill_mid_transaction(
    engine: AsyncEngine,
    *,
    lock_table: str,
    work: Callable[[AsyncConnection], Awaitable[Any]],
    holds_locks_on: tuple[str, ...],
) -> BaseException:
    """Run `work` in a transaction, block it on `lock_table`, terminate its backend there.

    Returns the exception the victim got. Checks that when it was killed the victim had
    already written (holds row-exclusive locks on `holds_locks_on`)."""
    victim = await engine.connect()
    control = await engine.connect()
    try:
        pid = await backend_pid(victim)
        control_pid = await backend_pid(control)
        await control.execute(text(f"LOCK TABLE {lock_table} IN ACCESS EXCLUSIVE MODE"))

        async def run() -> Any:
            async with victim.begin():
                return await work(victim)

        task = asyncio.create_task(run())
        try:
            await wait_until_blocked(engine, pid, control_pid, task)
            async with engine.connect() as c:
                # Blocked on `lock_table` itself (its lock request waits): pg_stat_activity's
                # query text can still show the statement before while the next one is parsed.
                waiting = set(
                    (
                        await c.execute(
                            text(
                                "SELECT relation::regclass::text FROM pg_locks WHERE pid = :pid "
                                "AND NOT granted"
                            ),
                            {"pid": pid},
                        )
                    ).scalars()
                )
                assert waiting == {lock_table}, waiting
                written = set(
                    (
                        await c.execute(
                            text(
                                "SELECT relation::regclass::text FROM pg_locks WHERE pid = :pid "
                                "AND granted AND mode = 'RowExclusiveLock'"
                            ),
                            {"pid": pid},
                        )
                    ).scalars()
                )
                assert set(holds_locks_on) <= written, written
                killed = (
                    await c.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
                ).scalar_one()
                assert killed
        finally:
            await control.rollback()  # release the lock
        with pytest.raises(DBAPIError) as info:
            await task
        # The victim saw its connection die (and the pool threw that connection away).
        assert isinstance(info.value.orig, psycopg.errors.AdminShutdown), info.value
        assert info.value.connection_invalidated
        return info.value
    finally:
        await control.close()
        await victim.close()


async def setup(engine: AsyncEngine) -> tuple[partners.PartnerRecord, members.MemberRecord]:
    async with engine.begin() as c:
        p = await partners.create(c, name="P", category="fuel", currency="RUB")
        m = await members.create(c, name="victim")
    return p, m


async def test_killed_earn_leaves_nothing_and_retry_applies_once(engine: AsyncEngine) -> None:
    p, m = await setup(engine)
    actor, key, t0 = f"p-{uuid.uuid4()}", f"k-{uuid.uuid4()}", utcnow()

    def earn(c: AsyncConnection) -> Awaitable[ledger.EarnResult]:
        return ledger.earn(
            c, actor=actor, idempotency_key=key, member_id=m.id, partner_id=p.id, points=42, at=t0
        )

    async with engine.connect() as c:
        counts, digest = await row_counts(c), await table_digest(c)

    # The earn's first statement claims the key and locks the wallet; its second (transaction,
    # entries, lot, result) needs `lots`: it is killed there, key claimed but nothing posted.
    error = await kill_mid_transaction(
        engine, lock_table="lots", work=earn, holds_locks_on=("idempotency_keys",)
    )
    assert "INSERT INTO lots" in str(error)

    async with engine.connect() as c:
        assert await row_counts(c) == counts
        assert await table_digest(c) == digest  # not even an update survived
        assert (await ledger.balance(c, member_id=m.id)).wallet == 0

    async with engine.begin() as c:
        first = await earn(c)
    assert not first.replayed
    async with engine.begin() as c:
        second = await earn(c)
    assert second.replayed and second.transaction_id == first.transaction_id

    async with engine.connect() as c:
        after = await row_counts(c)
        assert {t: after[t] - counts[t] for t in counts} == {
            **dict.fromkeys(counts, 0),
            "transactions": 1,
            "entries": 2,
            "lots": 1,
            "idempotency_keys": 1,
        }
        assert (await ledger.balance(c, member_id=m.id, at=t0)).wallet == 42
        assert await ledger.account_balance(c, kind="issuance", owner_id=p.id) == -42
    await assert_invariants(engine)


async def test_killed_authorize_and_capture_leaves_nothing_and_retry_applies_once(
    engine: AsyncEngine,
) -> None:
    p, m = await setup(engine)
    shop = p.id
    actor, t0 = f"p-{uuid.uuid4()}", utcnow()
    async with engine.begin() as c:
        for pts in (30, 50):
            await ledger.earn(
                c,
                actor=actor,
                idempotency_key=f"e-{uuid.uuid4()}",
                member_id=m.id,
                partner_id=p.id,
                points=pts,
                at=t0 - timedelta(minutes=1),
            )
    auth_key, cap_key = f"a-{uuid.uuid4()}", f"c-{uuid.uuid4()}"

    async def spend(c: AsyncConnection) -> ledger.CaptureResult:
        h = await ledger.authorize(
            c,
            actor=actor,
            idempotency_key=auth_key,
            member_id=m.id,
            partner_id=shop,
            points=60,
            at=t0,
        )
        return await ledger.capture(
            c,
            actor=actor,
            idempotency_key=cap_key,
            partner_id=shop,
            hold_id=h.hold_id,
            points=45,
            at=t0,
        )

    async with engine.connect() as c:
        counts, digest = await row_counts(c), await table_digest(c)

    # The authorization is fully written (hold, allocations, lots drawn down, key + result)
    # and the capture has claimed its key when its posting statement waits for `entries`.
    await kill_mid_transaction(
        engine,
        lock_table="entries",
        work=spend,
        holds_locks_on=("holds", "hold_allocations", "lots", "idempotency_keys"),
    )

    async with engine.connect() as c:
        assert await row_counts(c) == counts
        assert await table_digest(c) == digest
        b = await ledger.balance(c, member_id=m.id, at=t0)
        assert (b.wallet, b.available, b.on_hold) == (80, 80, 0)

    async with engine.begin() as c:
        first = await spend(c)
    assert not first.replayed and (first.points, first.released) == (45, 15)
    async with engine.begin() as c:
        second = await spend(c)
    assert second.replayed and second == ledger.CaptureResult(
        transaction_id=first.transaction_id,
        hold_id=first.hold_id,
        points=45,
        released=15,
        replayed=True,
    )

    async with engine.connect() as c:
        after = await row_counts(c)
        assert {t: after[t] - counts[t] for t in counts} == {
            **dict.fromkeys(counts, 0),
            "transactions": 1,
            "entries": 2,
            "holds": 1,
            "hold_allocations": 2,
            "lot_postings": 2,
            "idempotency_keys": 2,
        }
        b = await ledger.balance(c, member_id=m.id, at=t0)
        assert (b.wallet, b.available, b.on_hold) == (35, 35, 0)
        assert await ledger.account_balance(c, kind="redemption", owner_id=shop) == 45
    await assert_invariants(engine)
