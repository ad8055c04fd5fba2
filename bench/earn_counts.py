"""SQL statements and protocol round trips per earn (single path) and per group commit."""

from __future__ import annotations

import asyncio
import random
import tempfile
import uuid
from typing import Any


async def count_per_earn(
    uri: str, members: list[str], partners: list[str], n: int = 50
) -> dict[str, Any]:
    """The single path: SQL statements and protocol round trips per earn, over `n` earns."""
    from sqlalchemy import event

    from core.db import create_engine
    from ledger import service as ledger

    engine = create_engine(uri, pool_size=1, max_overflow=0)
    statements: list[str] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    prefix = f"count-{uuid.uuid4().hex[:8]}"
    rng = random.Random(1)

    async def one(i: int) -> None:
        partner = uuid.UUID(rng.choice(partners))
        async with engine.begin() as conn:
            await ledger.earn(
                conn,
                actor=f"partner:{partner}",
                idempotency_key=f"{prefix}-{i}",
                member_id=uuid.UUID(rng.choice(members)),
                partner_id=partner,
                points=10,
            )

    for i in range(4):  # warm-up: connection open, statements prepared (one extra trip each, once)
        await one(-1 - i)
    statements.clear()
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pgconn = raw.driver_connection.pgconn  # type: ignore[union-attr]
    with tempfile.NamedTemporaryFile("w+", suffix=".trace") as trace:
        pgconn.trace(trace.fileno())
        for i in range(n):
            await one(i)
        pgconn.untrace()
        trace.seek(0)
        lines = trace.read().splitlines()
    await engine.dispose()
    ready = sum(1 for ln in lines if "\tReadyForQuery" in ln and ln.split("\t")[1] == "B")
    frontend = [
        ln.split("\t")[3] for ln in lines if len(ln.split("\t")) > 3 and ln.split("\t")[1] == "F"
    ]
    return {
        "earns": n,
        "sql_statements_per_earn": len(statements) / n,
        "round_trips_per_earn": ready / n,
        "frontend_messages_per_earn": {m: frontend.count(m) / n for m in sorted(set(frontend))},
        "statements": sorted({" ".join(s.split())[:90] for s in statements}),
    }


async def count_per_batch(
    uri: str, members: list[str], partners: list[str], n: int = 50
) -> dict[str, Any]:
    """The group-commit path (`--unit batch`): statements and round trips per batch, for lone
    earns (a batch of one each, the worst case) and for bursts of 8."""
    import psycopg

    from core.db import create_driver_pool
    from ledger.batch import EarnBatcher

    pool = create_driver_pool(uri, max_size=1)
    await pool.open(wait=True)
    prefix = f"count-batch-{uuid.uuid4().hex[:8]}"
    rng = random.Random(2)
    batcher = EarnBatcher(pool, max_in_flight=1)
    statements = [0]
    original = psycopg.AsyncCursor.execute

    async def counting(self, query, params=None, **kw):  # type: ignore[no-untyped-def]
        statements[0] += 1
        return await original(self, query, params, **kw)

    async def burst(tag: str, size: int) -> None:
        await asyncio.gather(
            *(
                batcher.earn(
                    actor="count",
                    idempotency_key=f"{prefix}-{tag}-{j}",
                    member_id=uuid.UUID(rng.choice(members)),
                    partner_id=uuid.UUID(rng.choice(partners)),
                    points=10,
                )
                for j in range(size)
            )
        )

    out: dict[str, Any] = {}
    for size in (1, 8):
        for i in range(4):  # warm-up: the statement prepared
            await burst(f"warm-{size}-{i}", size)
        async with pool.connection() as conn:
            pgconn = conn.pgconn
        batches0, statements[0] = batcher.stats.batches, 0
        psycopg.AsyncCursor.execute = counting  # type: ignore[method-assign]
        try:
            with tempfile.NamedTemporaryFile("w+", suffix=".trace") as trace:
                pgconn.trace(trace.fileno())
                for i in range(n):
                    await burst(f"{size}-{i}", size)
                pgconn.untrace()
                trace.seek(0)
                lines = trace.read().splitlines()
        finally:
            psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]
        batches = batcher.stats.batches - batches0
        ready = sum(1 for ln in lines if "\tReadyForQuery" in ln and ln.split("\t")[1] == "B")
        out[f"burst_{size}"] = {
            "earns": n * size,
            "batches": batches,
            "sql_statements_per_batch": statements[0] / batches,
            "round_trips_per_batch": ready / batches,
            "round_trips_per_earn": ready / (n * size),
        }
    await pool.close()
    return out
