"""What one group-commit statement costs the database, per earn, by batch size.

    python -m bench.earn_statement [--sizes 1,4,8,16,32,64] [--earns 8000] [--repeat 2]
                                   [--database-url URL]

A fresh migrated database (`--database-url` / `DATABASE_URL`, else the embedded PostgreSQL) with
the same seed as `bench.earn` (1000 members, 100 partners, a history of 20,000 earns, ANALYZE).
One connection sends the batch statement of `ledger.batch.EarnBatcher` (`_write`: one autocommit
statement per batch) back to back, `--earns` earns per size, after a warm-up of 20 batches. The
server backend's own CPU time (utime + stime from /proc/<pid>/stat, so the server must run on
this machine) is divided by the earns written: the database's cost of an earn, with no other
client or concurrency in the picture. The wall time per earn is printed too (it includes the
client building each batch and the WAL flush of each commit).

It shows the fixed cost of a statement against the cost of each earn it carries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid

from bench.earn_setup import create_database, seed


def _backend_cpu(pid: int) -> float:
    """A process's CPU seconds so far: from /proc/<pid>/schedstat (nanoseconds) where the
    kernel keeps it, else utime + stime (10 ms ticks: 2.5 % of a chunk's statement)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (FileNotFoundError, IndexError, ValueError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(uri: str, ms: list[uuid.UUID], ps: list[uuid.UUID], size: int, earns: int):  # type: ignore[no-untyped-def]
    from core.db import create_driver_pool
    from ledger import service
    from ledger.batch import EarnBatcher, _Earn

    pool = create_driver_pool(uri, max_size=1)
    await pool.open(wait=True)
    try:
        batcher = EarnBatcher(pool, max_batch=size)
        async with pool.connection() as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]  # type: ignore[index]
        rng = random.Random(size)
        loop = asyncio.get_running_loop()
        tag = uuid.uuid4().hex[:8]

        def earn(n: str) -> _Earn:
            member, partner, points = rng.choice(ms), rng.choice(ps), rng.randint(1, 1000)
            request = service.EarnRequest(
                actor="bench", idempotency_key=f"{tag}-{n}", member_id=member,
                partner_id=partner, points=points, validity_months=36,
            )  # fmt: skip
            at, digest = service.check_earn(request)
            return _Earn(request, "bench", digest, at, loop.create_future())

        for w in range(20):
            await batcher._write([earn(f"w{w}-{k}") for k in range(size)])
        batches = max(1, earns // size)
        cpu0, t0, written = _backend_cpu(pid), time.perf_counter(), 0
        for b in range(batches):
            done, alone = await batcher._write([earn(f"{b}-{k}") for k in range(size)])
            if alone:
                raise RuntimeError(f"{len(alone)} earns of a batch were not written")
            written += len(done)
        cpu, wall = _backend_cpu(pid) - cpu0, time.perf_counter() - t0
        return cpu / written * 1e6, wall / written * 1e6
    finally:
        await pool.close()


async def run(args: argparse.Namespace) -> None:
    from tests.db import drop_database

    admin, uri, mode = create_database(args.database_url)
    print(f"database: {mode}, {uri}", flush=True)
    try:
        ms, ps = await seed(uri, 1000, 100, history=20000)
        members, partners = [uuid.UUID(m) for m in ms], [uuid.UUID(p) for p in ps]
        print("batch  server CPU/earn  wall/earn  (us)")
        for _ in range(args.repeat):
            for size in args.sizes:
                cpu, wall = await measure(uri, members, partners, size, args.earns)
                print(f"{size:5d}  {cpu:15.1f}  {wall:9.1f}", flush=True)
    finally:
        drop_database(admin, uri)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.earn_statement", description=__doc__)
    ap.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16, 32, 64]
    )
    ap.add_argument("--earns", type=int, default=8000, help="earns written per size")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--database-url", default=None)
    asyncio.run(run(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
