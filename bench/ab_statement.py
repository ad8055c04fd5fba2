"""A/B of the group-commit statement: an older commit's SQL against this checkout's, alternating.

    python -m bench.ab_statement BASE_COMMIT [--chunks 24] [--chunk 10000] [--database-url URL]

A fresh database seeded like `bench.import_statement` (one partner, 2,000 members, 20,000
earns of history). One connection writes `--chunks` chunks of prepared earns, one transaction
each, alternating base and this checkout (ABBA, so that neither side always runs on the larger
tables): the backend's CPU per earn of each chunk, and each side's median. The base's
`_EARN_BATCH` is read from `git show BASE_COMMIT:ledger/batch.py`; it must take the same
parameters as this checkout's (rows, common, iso). Alternating on one connection is what makes
a few microseconds visible on a VM whose speed drifts by 20 % between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import uuid
from typing import Any

from bench.earn_setup import create_database, seed
from bench.earn_statement import _backend_cpu
from bench.import_statement import _requests
from loyalty.imports import CHUNK_WORK_MEM


def _base_sql(commit: str) -> str:
    source = subprocess.check_output(["git", "show", f"{commit}:ledger/batch.py"], text=True)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"{commit}:ledger/batch.py", "exec"), namespace)
    return str(namespace["_EARN_BATCH"])


async def run(args: argparse.Namespace) -> None:
    import psycopg

    from ledger import batch
    from tests.db import drop_database

    base = _base_sql(args.base)
    admin, uri, mode = create_database(args.database_url)
    print(f"database: {mode}; base {args.base} against this checkout", flush=True)
    try:
        ms_, ps = await seed(uri, 2000, 1, history=20000)
        ms, partner = [uuid.UUID(m) for m in ms_], uuid.UUID(ps[0])
        rng = random.Random(1)
        cpu: dict[str, list[float]] = {"base": [], "this": []}
        async with await psycopg.AsyncConnection.connect(uri) as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            assert row is not None
            pid = row[0]
            await conn.commit()
            for c in range(args.chunks):
                side = "base" if c % 4 in (0, 3) else "this"  # ABBA
                prepared = await batch.prepare_earns(
                    _requests(ms, partner, f"c{c}", args.chunk, rng)
                )
                if side == "base":
                    prepared.sql = base
                cpu0 = _backend_cpu(pid)
                await conn.execute(CHUNK_WORK_MEM)
                written = await batch.write_prepared(conn, prepared)
                await conn.commit()
                assert all(x is not None for x in written), "a chunk's earn was not written"
                cpu[side].append((_backend_cpu(pid) - cpu0) / args.chunk * 1e6)
        for side, values in cpu.items():
            median = sorted(values)[len(values) // 2]
            print(f"{side:5s} median {median:5.1f} us/earn:", " ".join(f"{v:.0f}" for v in values))
    finally:
        drop_database(admin, uri)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab_statement", description=__doc__)
    ap.add_argument("base")
    ap.add_argument("--chunks", type=int, default=24)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    asyncio.run(run(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
