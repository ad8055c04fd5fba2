"""The database's floor under a batch file: the group-commit statement alone, by chunk.

    python -m bench.import_statement [--chunk 10000] [--chunks 4] [--lanes 2] [--database-url URL]

A fresh migrated database (`--database-url` / `DATABASE_URL`, else the embedded PostgreSQL)
seeded like `bench.imports` (one partner, 2,000 members) with a history of 20,000 earns and
ANALYZE. One connection writes `--chunks` chunks of `--chunk` prepared earns (an order and a
purchase each, as a file's lines) with `ledger.batch.write_earns`, one transaction per chunk as
`loyalty.imports` does: earns/s and the server backend's CPU per earn (from
/proc/<pid>/schedstat, in nanoseconds: the server must run on this machine).

With `--lanes N`, also N connections side by side, each writing `--chunks` chunks of earns of
its own members (member index modulo N, as `loyalty.imports` splits a file into lanes), the
chunks' parameters prepared beforehand: the database's earns/s with N backends at once, and
their CPU per earn (more than one backend's alone: they insert into the same right-most pages
of the indexes keyed by a sequence or by time).

Then the statement's cost by stage, each stage the statement cut after one more CTE and rolled
back (`--stages`): the JSON input alone, the lookups, the key claims, the wallet locks, the
transactions, the entries (with their trigger), the lots (with their foreign keys), all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from decimal import Decimal
from typing import Any

from bench.earn_setup import create_database, seed
from bench.earn_statement import _backend_cpu
from loyalty.imports import CHUNK_WORK_MEM


def _requests(
    ms: list[uuid.UUID], partner: uuid.UUID, tag: str, n: int, rng: random.Random
) -> list[Any]:
    from core.clock import utcnow
    from ledger import service

    at = utcnow()  # a chunk's lines share their instant (`loyalty.imports`)
    return [
        service.EarnRequest(
            at=at,
            actor="bench",
            key_space=f"partner:{partner}",
            idempotency_key=f"{tag}-{k}",
            member_id=rng.choice(ms),
            partner_id=partner,
            points=rng.randint(1, 1000),
            ref=f"{tag}-o{k}",
            amount=Decimal("123.50"),
            currency="RUB",
            category="fuel",
            digest="x" * 64,
        )
        for k in range(n)
    ]


def _stages() -> dict[str, str]:
    from ledger import batch

    ctes = batch._EARN_BATCH_CTES
    cut = {
        "lookups (req)": "), promo AS",
        "+ key claims": "), ok AS",
        "+ wallet locks": "), go AS",
        "+ transactions": "), share AS",
        "+ entries, trigger": "), l AS",
        "+ lots, foreign keys": "), bl AS",
    }
    source = ctes.split("), promo AS")[0].split("    FROM (", 1)[1].split("    ) r\n")[0]
    shared = ctes.split("), req AS")[0] + ")\n"  # `c`: the values the rows share
    stages = {"JSON input alone": shared + "SELECT count(*) FROM (" + source + ") r"}
    for name, at in cut.items():
        stages[name] = ctes.split(at)[0] + ") SELECT count(*) FROM req"
    stages["the whole statement"] = batch._EARN_BATCH
    return stages


async def run(args: argparse.Namespace) -> None:
    from core.db import create_driver_pool
    from ledger import batch
    from tests.db import drop_database

    admin, uri, mode = create_database(args.database_url)
    print(f"database: {mode}", flush=True)
    try:
        ms_, ps = await seed(uri, 2000, 1, history=20000)
        if args.sql:
            import psycopg

            with psycopg.connect(uri, autocommit=True) as c:
                for statement in args.sql:
                    c.execute(statement)
        ms, partner = [uuid.UUID(m) for m in ms_], uuid.UUID(ps[0])
        pool = create_driver_pool(uri, max_size=1)
        await pool.open(wait=True)
        rng = random.Random(1)
        try:
            async with pool.connection() as conn:
                pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]  # type: ignore[index]
                await conn.set_autocommit(False)
                print(f"chunk of {args.chunk}: earns/s, backend CPU per earn")
                for c in range(args.chunks):
                    requests = _requests(ms, partner, f"c{c}", args.chunk, rng)
                    cpu0, t0 = _backend_cpu(pid), time.perf_counter()
                    async with conn.transaction():
                        await conn.execute(CHUNK_WORK_MEM)  # as `loyalty.imports` does
                        results = await batch.write_earns(conn, requests)
                    wall, cpu = time.perf_counter() - t0, _backend_cpu(pid) - cpu0
                    n = sum(r is not None for r in results)
                    print(f"  {n / wall:8,.0f} earns/s  {cpu / n * 1e6:5.1f} us", flush=True)
                if args.lanes > 1:
                    await _lanes(pool_uri=uri, ms=ms, partner=partner, args=args)
                if args.stages:
                    print("by stage (cumulative), backend CPU per earn:")
                    for name, sql in _stages().items():
                        cpu = 0.0
                        for rep in range(args.repeat):
                            prepared = await batch.prepare_earns(
                                _requests(ms, partner, f"s{name}{rep}", args.chunk, rng)
                            )
                            params: dict[str, Any] = prepared.params
                            cpu0 = _backend_cpu(pid)
                            await conn.execute(CHUNK_WORK_MEM)
                            await conn.execute(sql, params)
                            await conn.rollback()
                            cpu += _backend_cpu(pid) - cpu0
                        print(f"  {name:22s} {cpu / args.repeat / args.chunk * 1e6:5.1f} us")
        finally:
            await pool.close()
    finally:
        drop_database(admin, uri)


async def _lanes(
    *, pool_uri: str, ms: list[uuid.UUID], partner: uuid.UUID, args: argparse.Namespace
) -> None:
    """`args.lanes` connections at once, each its own members' chunks (prepared beforehand)."""
    from core.db import create_driver_pool
    from ledger import batch

    n = args.lanes
    rng = random.Random(2)
    prepared = [
        [
            await batch.prepare_earns(
                _requests(
                    [m for i, m in enumerate(ms) if i % n == lane],
                    partner,
                    f"l{lane}c{c}",
                    args.chunk,
                    rng,
                )
            )
            for c in range(args.chunks)
        ]
        for lane in range(n)
    ]
    pool = create_driver_pool(pool_uri, max_size=n)
    await pool.open(wait=True)

    pids: list[int] = []

    async def lane(chunks: list[Any]) -> int:
        async with pool.connection() as conn:
            pids.append(conn.info.backend_pid)
            await conn.set_autocommit(False)
            done = 0
            for p in chunks:
                async with conn.transaction():
                    await conn.execute(CHUNK_WORK_MEM)
                    results = await batch.write_prepared(conn, p)
                done += sum(r is not None for r in results)
            return done

    try:
        await pool.wait()
        async with contextlib.AsyncExitStack() as held:  # every backend's pid, before the clock
            for _ in range(n):
                c = await held.enter_async_context(pool.connection())
                pids.append(c.info.backend_pid)
        cpu0 = sum(_backend_cpu(p) for p in set(pids))
        pids.clear()
        t0 = time.perf_counter()
        done = await asyncio.gather(*(lane(c) for c in prepared))
        wall = time.perf_counter() - t0
        cpu = sum(_backend_cpu(p) for p in set(pids)) - cpu0
        print(
            f"{n} lanes side by side: {sum(done) / wall:8,.0f} earns/s ({sum(done)} earns), "
            f"backends' CPU per earn {cpu / sum(done) * 1e6:5.1f} us"
        )
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.import_statement", description=__doc__)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--lanes", type=int, default=1)
    ap.add_argument("--stages", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--sql", action="append", help="SQL run after seeding, to try a change (repeatable)"
    )
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    asyncio.run(run(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
