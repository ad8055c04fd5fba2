"""A batch file's chunk planned in process: the Python side of an import, without the database.

    python -m bench.import_plan [--lines 10000] [--rounds 5] [--database-url URL]

A fresh database seeded like `bench.imports` (one partner with an earn rule, 2,000 members);
a chunk of `--lines` earn lines of `bench.imports`' file is planned (`loyalty.imports._plan`:
parse, price, the statement's parameter) once to warm the caches, then `--rounds` times: CPU
µs per line of each round (process time; the cyclic GC off, as an import runs).

This VM changes speed by itself (`bench.speed`), by up to 40 % between two runs: to compare two
versions of the plan, count instructions instead, which do not depend on it:

    valgrind --tool=cachegrind --cache-sim=no python -m bench.import_plan --rounds 1
    valgrind --tool=cachegrind --cache-sim=no python -m bench.import_plan --rounds 3

The difference of the two totals ("I refs") over 2 x `--lines` is the instructions per line of
a plan (set PYTHONHASHSEED=0 for both).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time

from bench.graphql_earn import seed
from bench.imports import csv_file


async def run(args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    from core.db import create_driver_pool, create_engine
    from core.settings import Settings
    from ledger.batch import EarnBatcher
    from loyalty import imports
    from loyalty.caches import Caches
    from loyalty.runtime import Services
    from partners import imports as store
    from tests.db import create_test_database, drop_database

    admin, uri = create_test_database("coalition_bench_plan")
    try:
        await seed(uri, 2000)
        engine = create_engine(uri)
        pool = create_driver_pool(uri, max_size=4)
        await pool.open()
        rt = Services(engine, pool, EarnBatcher(pool), Settings(), Caches())
        try:
            async with engine.begin() as conn:
                partner = (await conn.execute(sa.text("SELECT id FROM partners"))).scalar_one()
                cards = list(
                    (
                        await conn.execute(
                            sa.text("SELECT card_number FROM members ORDER BY card_number")
                        )
                    ).scalars()
                )
                body = csv_file(cards, args.lines)
                record = await store.create(
                    conn, partner_id=partner, actor="bench", fmt="csv", body=body, lines=args.lines
                )
            lines = imports.data_lines(body, "csv")
            await imports._plan(rt, record, lines)  # the partner's terms and the cards, cached
            gc.disable()
            for _ in range(args.rounds):
                t0 = time.process_time()
                plan = await imports._plan(rt, record, lines)
                us = (time.process_time() - t0) / len(lines) * 1e6
                print(f"{us:6.1f} us per line ({len(plan.first)} earns for the statement)")
                del plan
                gc.collect()
        finally:
            await pool.close()
            await engine.dispose()
    finally:
        drop_database(admin, uri)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.import_plan", description=__doc__)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = ap.parse_args(argv)
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
