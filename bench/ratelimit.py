"""What a rate-limited request pays for its counter, shared through PostgreSQL or not.

    python -m bench.ratelimit [--hits 20000]

On a fresh database (DATABASE_URL's server, or the embedded one), one process, one caller at a
time (the CPU of this process and of PostgreSQL's backend, measured around the loop):

- memory: the `limits` memory storage (what each process did alone before issue 15);
- hot caller: `RateLimits.hit` for one caller with a window of 400 (the default burst), shared
  through `rate_limit_windows`: one upsert per slice of 20 hits;
- cold callers: a new caller at every hit (each a claim: the worst case, one upsert a hit);
- claim: the upsert alone (`SharedWindows._claim`), wall time per statement.

Writes bench/out/ratelimit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import time
from pathlib import Path

import psycopg

from core.settings import Settings
from gateway.ratelimit import GRAPHQL, RateLimits
from tests.db import create_test_database, drop_database

OUT = Path(__file__).resolve().parent / "out"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _backend_cpu(conn: psycopg.AsyncConnection, app: str) -> float:
    """CPU seconds (user + system) of the backends serving `app`, from /proc (same machine)."""
    cur = await conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app])
    return sum(_proc_cpu(pid) for (pid,) in await cur.fetchall())


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0  # clock ticks


async def measure(uri: str, hits: int) -> dict[str, dict[str, float]]:
    settings = Settings(rate_limit_per_second=0.1, rate_limit_burst=400)
    results: dict[str, dict[str, float]] = {}
    async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as watch:
        memory = RateLimits(settings)
        await _run(memory, hits, cold=False)  # warm-up
        results["memory"] = await _timed(memory, hits, cold=False, watch=watch)

        shared = RateLimits(settings)
        await shared.start(uri)
        try:
            await _run(shared, 2000, cold=True)  # warm-up: connections, prepared statement
            results["hot caller"] = await _timed(shared, hits, cold=False, watch=watch)
            results["cold callers"] = await _timed(shared, hits // 4, cold=True, watch=watch)
        finally:
            await shared.stop()
    claim = results["cold callers"]
    results["claim"] = {"wall_us": claim["wall_us"], "cpu_us": claim["cpu_us"]}
    return results


async def _run(limits: RateLimits, hits: int, *, cold: bool) -> None:
    prefix = secrets.token_hex(4)
    for n in range(hits):
        caller = f"member:{prefix}-{n if cold else (n // 400)}"  # a new window every 400
        await limits.hit(GRAPHQL, caller)


async def _timed(
    limits: RateLimits, hits: int, *, cold: bool, watch: psycopg.AsyncConnection
) -> dict[str, float]:
    app = "coalition-ratelimit"
    pg0, cpu0, t0 = await _backend_cpu(watch, app), _cpu(), time.perf_counter()
    await _run(limits, hits, cold=cold)
    t1, cpu1, pg1 = time.perf_counter(), _cpu(), await _backend_cpu(watch, app)
    return {
        "hits": hits,
        "wall_us": (t1 - t0) / hits * 1e6,
        "cpu_us": (cpu1 - cpu0) / hits * 1e6,
        "pg_cpu_us": (pg1 - pg0) / hits * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hits", type=int, default=20000)
    args = parser.parse_args()
    admin, uri = create_test_database("coalition_bench_rl")
    try:
        results = asyncio.run(measure(uri, args.hits))
    finally:
        drop_database(admin, uri)
    OUT.mkdir(exist_ok=True)
    (OUT / "ratelimit.json").write_text(json.dumps(results, indent=2))
    print(f"{'':14} {'wall us/hit':>12} {'app CPU us/hit':>15} {'pg CPU us/hit':>14}")
    for name, r in results.items():
        if name == "claim":
            continue
        print(f"{name:14} {r['wall_us']:12.1f} {r['cpu_us']:15.1f} {r['pg_cpu_us']:14.1f}")


if __name__ == "__main__":
    main()
